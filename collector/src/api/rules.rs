//! `GET /api/v1/rules`: the alert rules in force and their receivers, as
//! the rules file declared them (`crate::rules::model`), with the same
//! field names; durations as humantime text (`30s`, `1h 30m`).
//!
//! Receivers' secrets are never shown: a webhook says only whether it signs
//! (`signed`), and credentials in a receiver's URL (user info, the query)
//! read `redacted`. A site-scoped token sees the rules whose site pattern
//! matches one of its sites, and the receivers those rules notify.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;

use super::episodes::Severity;
use super::error::{ApiErrors, AppError};
use super::state::ApiState;
use crate::auth::{Access, SiteScope};
use crate::rules::model::{Bound, Condition, Receiver, ReceiverKind, Rule, RuleSet};

fn duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A rule's parameters, named as in the rules file; only those of its kind.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ConditionView {
    /// threshold: holds while the value is above this.
    #[serde(skip_serializing_if = "Option::is_none")]
    above: Option<f64>,
    /// threshold: holds while the value is below this.
    #[serde(skip_serializing_if = "Option::is_none")]
    below: Option<f64>,
    /// threshold: holds while the value is below this or above `outside_high`.
    #[serde(skip_serializing_if = "Option::is_none")]
    outside_low: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outside_high: Option<f64>,
    /// threshold and deviation: how far back the value must come to clear.
    #[serde(skip_serializing_if = "Option::is_none")]
    hysteresis: Option<f64>,
    /// threshold and deviation: how long the condition holds before it fires, e.g. `30s`.
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    #[schema(example = "30s")]
    hold: Option<String>,
    /// rate_of_change: largest change (either direction) within `window`.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_change: Option<f64>,
    /// rate_of_change.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "1m")]
    window: Option<String>,
    /// stale (quality not good) and offline (nothing arrives): for how long.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "2m")]
    after: Option<String>,
    /// deviation: largest max − min of the matched points of one device.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_spread: Option<f64>,
    /// flag: glob over the names of a bitfield's flags, e.g. `fault`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "fault")]
    flag: Option<String>,
}

impl From<&Condition> for ConditionView {
    fn from(c: &Condition) -> Self {
        match c {
            Condition::Threshold {
                bound,
                hysteresis,
                hold,
            } => {
                let mut view = Self {
                    hysteresis: Some(*hysteresis),
                    hold: Some(duration(*hold)),
                    ..Self::default()
                };
                match *bound {
                    Bound::Above(limit) => view.above = Some(limit),
                    Bound::Below(limit) => view.below = Some(limit),
                    Bound::Outside { low, high } => {
                        view.outside_low = Some(low);
                        view.outside_high = Some(high);
                    }
                }
                view
            }
            Condition::RateOfChange { max_change, window } => Self {
                max_change: Some(*max_change),
                window: Some(duration(*window)),
                ..Self::default()
            },
            Condition::Stale { after } | Condition::Offline { after } => Self {
                after: Some(duration(*after)),
                ..Self::default()
            },
            Condition::Deviation {
                max_spread,
                hysteresis,
                hold,
            } => Self {
                max_spread: Some(*max_spread),
                hysteresis: Some(*hysteresis),
                hold: Some(duration(*hold)),
                ..Self::default()
            },
            Condition::Flag { flag, hold } => Self {
                flag: Some(flag.0.clone()),
                hold: Some(duration(*hold)),
                ..Self::default()
            },
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RuleView {
    name: String,
    /// threshold, rate_of_change, stale, offline, deviation or flag.
    #[schema(value_type = String, example = "threshold")]
    kind: &'static str,
    severity: Severity,
    summary: String,
    /// Glob (`*`, `?`) over site names.
    #[schema(example = "*")]
    site: String,
    /// Glob over device names.
    #[schema(example = "bms*")]
    device: String,
    /// Glob over point names; `null` for offline rules, which watch devices or sites.
    #[schema(example = "cell_temp_max")]
    point: Option<String>,
    condition: ConditionView,
    /// The receivers it notifies: those it names, else every receiver.
    receivers: Vec<String>,
    /// Whether episodes already over when detected (a backlog) are notified.
    notify_past: bool,
}

impl RuleView {
    fn new(rule: &Rule, set: &RuleSet) -> Self {
        let offline = matches!(rule.condition, Condition::Offline { .. });
        Self {
            name: rule.name.clone(),
            kind: rule.condition.kind(),
            severity: rule.severity.into(),
            summary: rule.summary.clone(),
            site: rule.target.site.0.clone(),
            device: rule.target.device.0.clone(),
            point: (!offline).then(|| rule.target.point.0.clone()),
            condition: (&rule.condition).into(),
            receivers: receivers_of(rule, set),
            notify_past: rule.notify_past,
        }
    }
}

fn receivers_of(rule: &Rule, set: &RuleSet) -> Vec<String> {
    if rule.receivers.is_empty() {
        set.receivers.iter().map(|r| r.name.clone()).collect()
    } else {
        rule.receivers.clone()
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReceiverView {
    name: String,
    /// webhook or alertmanager.
    #[schema(value_type = String, example = "webhook")]
    kind: &'static str,
    /// Where it sends; user info and query read `redacted`.
    #[schema(example = "https://ops.example.com/bess-hook")]
    url: String,
    /// Webhooks: whether bodies are signed (`X-Bess-Signature`); the secret is never shown.
    signed: bool,
}

impl From<&Receiver> for ReceiverView {
    fn from(r: &Receiver) -> Self {
        let (kind, url, signed) = match &r.kind {
            ReceiverKind::Webhook { url, secret } => ("webhook", url, secret.is_some()),
            ReceiverKind::Alertmanager { url } => ("alertmanager", url, false),
        };
        Self {
            name: r.name.clone(),
            kind,
            url: redacted(url),
            signed,
        }
    }
}

/// A URL without the credentials it may carry (user info, query); as
/// written when it carries none.
fn redacted(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        // The rules file only holds parsed URLs; show nothing of anything else.
        return "redacted".into();
    };
    let user_info = !parsed.username().is_empty() || parsed.password().is_some();
    if !user_info && parsed.query().is_none() {
        return url.to_owned();
    }
    if user_info {
        // Cannot fail on http(s) URLs, the only ones the rules file takes.
        let _ = parsed.set_password(None);
        let _ = parsed.set_username("redacted");
    }
    if parsed.query().is_some() {
        parsed.set_query(Some("redacted"));
    }
    parsed.set_fragment(None);
    parsed.to_string()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RulesInForce {
    rules: Vec<RuleView>,
    receivers: Vec<ReceiverView>,
}

/// The alert rules in force and their receivers (never their secrets).
///
/// As the rules file declared them when it was last (re)loaded. A
/// site-scoped token sees the rules whose site pattern matches one of its
/// sites and the receivers those notify.
#[utoipa::path(
    get,
    path = "/api/v1/rules",
    operation_id = "list_rules",
    tag = "alerts",
    security(("bearer" = [])),
    responses((status = 200, description = "The rules and receivers in force", body = RulesInForce), ApiErrors)
)]
pub async fn list(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
) -> Result<Json<RulesInForce>, AppError> {
    Ok(Json(in_force(&state.rules.current(), &access.scope())))
}

fn in_force(set: &RuleSet, scope: &SiteScope) -> RulesInForce {
    let visible: Vec<&Rule> = set
        .rules
        .iter()
        .filter(|r| match scope {
            SiteScope::All => true,
            SiteScope::Only(sites) => sites.iter().any(|s| r.target.site.matches(s)),
        })
        .collect();
    let notified: std::collections::HashSet<String> =
        visible.iter().flat_map(|r| receivers_of(r, set)).collect();
    RulesInForce {
        rules: visible.iter().map(|r| RuleView::new(r, set)).collect(),
        receivers: set
            .receivers
            .iter()
            .filter(|r| *scope == SiteScope::All || notified.contains(&r.name))
            .map(ReceiverView::from)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_receiver_urls_are_redacted() {
        assert_eq!(
            redacted("https://ops.example.com/hook"),
            "https://ops.example.com/hook"
        );
        assert_eq!(
            redacted("https://user:pw@ops.example.com/hook?token=abc#x"),
            "https://redacted@ops.example.com/hook?redacted"
        );
        assert_eq!(redacted("http://am:9093"), "http://am:9093", "as written");
        assert_eq!(redacted("not a url"), "redacted");
    }
}
