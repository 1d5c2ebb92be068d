//! The alert rules: `GET /api/v1/rules` lists those in force and their
//! receivers, with the rules file's field names (`crate::rules::model`);
//! durations as humantime text (`30s`, `1h 30m`). `POST /api/v1/rules`,
//! `PUT /api/v1/rules/{name}`, `POST .../enable`, `POST .../disable` and
//! `DELETE /api/v1/rules/{name}` manage the rules kept in the database
//! beside the file's (role `admin`; `crate::rules::managed` owns the
//! merge, the checks and the scope).
//!
//! Each rule says where it is defined (`source`: `file` or `api`) and
//! whether it is evaluated (`enabled`); disabled API rules are listed too,
//! and API rules that are not in force (the file took their name, or they
//! no longer check against the file) are listed under `skipped`. A rule
//! body is the rule's fields as in a `[[rule]]` table of the file; its
//! problems come back together as one 400, each naming its field.
//!
//! Receivers' secrets are never shown: a webhook says only whether it signs
//! (`signed`), and credentials in a receiver's URL (user info, the query)
//! read `redacted`. A site-scoped token sees the rules whose site pattern
//! matches one of its sites, and the receivers those rules notify; as an
//! admin it manages only rules of one of its sites, by name.

use std::collections::{HashMap, HashSet};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;

use super::episodes::Severity;
use super::error::{ApiErrors, AppError, Conflict, NotFound};
use super::state::ApiState;
use crate::auth::{Access, Role, SiteScope};
use crate::rules::managed::{
    Actor, ApiRuleRecord, ApiRuleStatus, ChangedRule, ManagedRuleError, RuleDefinition, Sources,
};
use crate::rules::model::{Bound, Condition, Pattern, Receiver, ReceiverKind, Rule, RuleSet};
use crate::time::rfc3339;

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

/// Where a rule is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleSource {
    /// The rules file: change it by editing the file (and SIGHUP).
    File,
    /// Created over this API (role `admin`).
    Api,
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
    source: RuleSource,
    /// Whether it is evaluated: `false` for a disabled API rule.
    enabled: bool,
    /// API rules: the name of the token that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    /// API rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    created_at: Option<String>,
    /// API rules: the name of the token that changed it last.
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_by: Option<String>,
    /// API rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    updated_at: Option<String>,
}

impl RuleView {
    /// A rule of the file; `set` gives the receivers it notifies.
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
            source: RuleSource::File,
            enabled: true,
            created_by: None,
            created_at: None,
            updated_by: None,
            updated_at: None,
        }
    }

    /// A rule created over the API.
    fn api(rule: &Rule, set: &RuleSet, record: &ApiRuleRecord) -> Self {
        Self {
            source: RuleSource::Api,
            enabled: record.enabled,
            created_by: Some(record.created_by.clone()),
            created_at: Some(rfc3339(record.created_at)),
            updated_by: Some(record.updated_by.clone()),
            updated_at: Some(rfc3339(record.updated_at)),
            ..Self::new(rule, set)
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

/// An API rule that is not in force, and why.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SkippedRule {
    name: String,
    /// The rules file defines a rule of this name (the file's is in force),
    /// or the rule no longer checks against the file (a receiver it names is gone).
    reason: String,
    created_by: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RulesInForce {
    /// The rules in force (the file's, then the API's), then the disabled API rules.
    rules: Vec<RuleView>,
    receivers: Vec<ReceiverView>,
    /// API rules that are not in force although stored.
    skipped: Vec<SkippedRule>,
}

/// The alert rules and their receivers (never their secrets).
///
/// The rules file's (as last (re)loaded) and those created over the API,
/// each with its `source` and whether it is `enabled`; disabled API rules
/// are listed after those in force, API rules the file overrides under
/// `skipped`. A site-scoped token sees the rules whose site pattern matches
/// one of its sites and the receivers those notify.
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
    Ok(Json(in_force(
        &state.rules.current(),
        &state.rules.sources(),
        &access.scope(),
    )))
}

fn in_force(set: &RuleSet, sources: &Sources, scope: &SiteScope) -> RulesInForce {
    let visible = |site: &Pattern| match scope {
        SiteScope::All => true,
        SiteScope::Only(sites) => sites.iter().any(|s| site.matches(s)),
    };
    let api_in_force: HashMap<&str, &ApiRuleRecord> = sources
        .api
        .iter()
        .filter(|a| matches!(a.status, ApiRuleStatus::InForce(_)))
        .map(|a| (a.record.name.as_str(), &a.record))
        .collect();
    let mut rules = Vec::new();
    let mut notified = HashSet::new();
    for rule in set.rules.iter().filter(|r| visible(&r.target.site)) {
        notified.extend(receivers_of(rule, set));
        rules.push(match api_in_force.get(rule.name.as_str()) {
            Some(record) => RuleView::api(rule, set, record),
            None => RuleView::new(rule, set),
        });
    }
    let mut skipped = Vec::new();
    for api in &sources.api {
        match &api.status {
            ApiRuleStatus::Disabled(rule) if visible(&rule.target.site) => {
                rules.push(RuleView::api(rule, set, &api.record));
            }
            ApiRuleStatus::Skipped(reason)
                if visible(&Pattern(
                    api.record.definition.site().unwrap_or("*").to_owned(),
                )) =>
            {
                skipped.push(SkippedRule {
                    name: api.record.name.clone(),
                    reason: reason.clone(),
                    created_by: api.record.created_by.clone(),
                    updated_at: rfc3339(api.record.updated_at),
                });
            }
            _ => {}
        }
    }
    RulesInForce {
        rules,
        receivers: set
            .receivers
            .iter()
            .filter(|r| *scope == SiteScope::All || notified.contains(&r.name))
            .map(ReceiverView::from)
            .collect(),
        skipped,
    }
}

/// A rule's fields, named as in a `[[rule]]` table of the rules file: the
/// common ones and those of its kind (see the listing's `condition`).
/// Durations are text such as `30s` or `1h 30m`. Documentation only: the
/// body is read by the rules file's parser.
#[allow(dead_code)]
#[derive(Serialize, utoipa::ToSchema)]
pub struct RuleBody {
    /// Unique among the file's and the API's rules; 1 to 100 of `A-Z a-z 0-9 _ . -`. Required to create; in a replacement the path's (it cannot change).
    #[schema(example = "soc-high")]
    name: Option<String>,
    /// threshold, rate_of_change, stale, offline, deviation or flag.
    #[schema(example = "threshold")]
    kind: String,
    /// Default empty.
    summary: Option<String>,
    /// info, warning (default) or critical.
    #[schema(example = "critical")]
    severity: Option<String>,
    /// Glob over site names, default `*`. A site-scoped token: one of its sites, by name.
    #[schema(example = "site-001")]
    site: Option<String>,
    /// Glob over device names, default `*`; not for offline rules.
    #[schema(example = "bms*")]
    device: Option<String>,
    /// Glob over point names, default `*`; not for offline rules.
    #[schema(example = "soc")]
    point: Option<String>,
    /// threshold: exactly one of `above`, `below`, or `outside_low` with `outside_high`.
    #[schema(example = 95.0)]
    above: Option<f64>,
    below: Option<f64>,
    outside_low: Option<f64>,
    outside_high: Option<f64>,
    /// threshold and deviation: at least 0, default 0.
    hysteresis: Option<f64>,
    /// threshold, deviation and flag: how long it holds before it fires, default `0s`.
    #[serde(rename = "for")]
    #[schema(example = "30s")]
    hold: Option<String>,
    /// rate_of_change: more than 0.
    max_change: Option<f64>,
    /// rate_of_change: more than 0.
    window: Option<String>,
    /// stale (more than 0) and offline (at least `30s`).
    after: Option<String>,
    /// deviation: more than 0.
    max_spread: Option<f64>,
    /// flag: glob over a bitfield's flag names.
    flag: Option<String>,
    /// Receivers of the rules file to notify; default every receiver.
    receivers: Option<Vec<String>>,
    /// Notify episodes already over when detected (a backlog); default false.
    notify_past: Option<bool>,
}

fn actor(access: &Access) -> Actor {
    Actor {
        name: access.actor().0,
        scope: access.scope(),
    }
}

fn definition_of(body: &Bytes) -> Result<RuleDefinition, AppError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        AppError::BadRequest(format!(
            "expected a JSON object of the rule's fields, as in a [[rule]] table of the rules file: {e}"
        ))
    })?;
    RuleDefinition::from_json(value).map_err(|p| refused(ManagedRuleError::Invalid(vec![p])))
}

fn refused(e: ManagedRuleError) -> AppError {
    match e {
        ManagedRuleError::Invalid(_) => AppError::BadRequest(e.to_string()),
        ManagedRuleError::NameInFile(_)
        | ManagedRuleError::NameTaken(_)
        | ManagedRuleError::FileRule(_)
        | ManagedRuleError::NoLongerValid { .. } => AppError::Conflict(e.to_string()),
        ManagedRuleError::NotFound(_) => AppError::NotFound(e.to_string()),
        ManagedRuleError::OutOfScope(_) => AppError::Forbidden(e.to_string()),
        ManagedRuleError::Database(e) => e.into(),
    }
}

/// The view of an API rule just changed.
fn view_of(state: &ApiState, changed: &ChangedRule) -> RuleView {
    RuleView::api(&changed.rule, &state.rules.sources().file, &changed.record)
}

/// Create an alert rule (role `admin`).
///
/// The body is the rule's fields as in a `[[rule]]` table of the rules
/// file, checked by the same parser: every problem comes back in one 400,
/// each naming its field. A name the file or another rule uses is a 409.
/// The rule is in force on this instance when this returns, on every other
/// within seconds. A site-scoped token creates rules of one of its sites,
/// named (`site`, no pattern).
#[utoipa::path(
    post,
    path = "/api/v1/rules",
    operation_id = "create_rule",
    tag = "alerts",
    request_body = RuleBody,
    security(("bearer" = [])),
    responses((status = 201, description = "The new rule, in force", body = RuleView), Conflict, ApiErrors)
)]
pub async fn create(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    body: Bytes,
) -> Result<(StatusCode, Json<RuleView>), AppError> {
    access.require(Role::Admin)?;
    let definition = definition_of(&body)?;
    let mut client = state.pool.get().await?;
    let rule = state
        .rules
        .create_api_rule(&mut client, definition, &actor(&access))
        .await
        .map_err(refused)?;
    Ok((StatusCode::CREATED, Json(view_of(&state, &rule))))
}

/// Replace an API rule's definition (role `admin`).
///
/// The body is as for creating; `name` may be left out and cannot change.
/// Whether the rule is enabled stays. A rule of the rules file is a 409
/// (edit the file).
#[utoipa::path(
    put,
    path = "/api/v1/rules/{name}",
    operation_id = "replace_rule",
    tag = "alerts",
    params(("name" = String, Path, description = "The rule's name")),
    request_body = RuleBody,
    security(("bearer" = [])),
    responses((status = 200, description = "The rule as it now is", body = RuleView), NotFound, Conflict, ApiErrors)
)]
pub async fn replace(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<RuleView>, AppError> {
    access.require(Role::Admin)?;
    let definition = definition_of(&body)?;
    let mut client = state.pool.get().await?;
    let rule = state
        .rules
        .replace_api_rule(&mut client, &name, definition, &actor(&access))
        .await
        .map_err(refused)?;
    Ok(Json(view_of(&state, &rule)))
}

async fn set_enabled(
    state: &ApiState,
    access: &Access,
    name: &str,
    enabled: bool,
) -> Result<Json<RuleView>, AppError> {
    access.require(Role::Admin)?;
    let mut client = state.pool.get().await?;
    let rule = state
        .rules
        .set_api_rule_enabled(&mut client, name, enabled, &actor(access))
        .await
        .map_err(refused)?;
    Ok(Json(view_of(state, &rule)))
}

/// Put a disabled API rule back in force (role `admin`).
///
/// Its definition is checked again against the rules file: a 409 names
/// what no longer fits (a receiver the file dropped). A rule of the rules
/// file is a 409.
#[utoipa::path(
    post,
    path = "/api/v1/rules/{name}/enable",
    operation_id = "enable_rule",
    tag = "alerts",
    params(("name" = String, Path, description = "The rule's name")),
    security(("bearer" = [])),
    responses((status = 200, description = "The rule, enabled", body = RuleView), NotFound, Conflict, ApiErrors)
)]
pub async fn enable(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Path(name): Path<String>,
) -> Result<Json<RuleView>, AppError> {
    set_enabled(&state, &access, &name, true).await
}

/// Stop evaluating an API rule and keep it (role `admin`).
///
/// Its open episodes are closed, as for a rule removed from the file. A
/// rule of the rules file, or one that no longer checks against it (out
/// of force already: replace or delete it), is a 409.
#[utoipa::path(
    post,
    path = "/api/v1/rules/{name}/disable",
    operation_id = "disable_rule",
    tag = "alerts",
    params(("name" = String, Path, description = "The rule's name")),
    security(("bearer" = [])),
    responses((status = 200, description = "The rule, disabled", body = RuleView), NotFound, Conflict, ApiErrors)
)]
pub async fn disable(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Path(name): Path<String>,
) -> Result<Json<RuleView>, AppError> {
    set_enabled(&state, &access, &name, false).await
}

/// Delete an API rule (role `admin`).
///
/// Its open episodes are closed; their history stays. A rule of the rules
/// file is a 409.
#[utoipa::path(
    delete,
    path = "/api/v1/rules/{name}",
    operation_id = "delete_rule",
    tag = "alerts",
    params(("name" = String, Path, description = "The rule's name")),
    security(("bearer" = [])),
    responses((status = 204, description = "Deleted"), NotFound, Conflict, ApiErrors)
)]
pub async fn delete(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    access.require(Role::Admin)?;
    let mut client = state.pool.get().await?;
    state
        .rules
        .delete_api_rule(&mut client, &name, &actor(&access))
        .await
        .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
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
