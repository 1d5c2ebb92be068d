//! Prometheus Alertmanager receivers, API v2: `POST {url}/api/v2/alerts`
//! with a JSON array of alerts.
//!
//! An episode is one alert, identified by its labels `alertname` (the
//! rule), `site`, `target` (left out for a whole-site episode) and
//! `severity`, with annotations `summary` and `episode_id`. `startsAt` is
//! the episode's start; a resolved episode carries `endsAt`, its end,
//! which Alertmanager takes as "resolved". A firing alert has no `endsAt`,
//! so Alertmanager resolves it by itself after its `resolve_timeout`
//! (5 min by default) unless it is posted again: the notifier re-posts every
//! open episode well within that ([`super::NotifierSettings::alertmanager_resend`]).

use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;

use super::episode::{Episode, Transition};
use super::http::{post_json, DeliveryError};
use crate::time::rfc3339;

/// Alerts per POST when re-sending open episodes.
pub const RESEND_CHUNK: usize = 500;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Alert<'a> {
    labels: BTreeMap<&'static str, &'a str>,
    annotations: BTreeMap<&'static str, String>,
    starts_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ends_at: Option<String>,
}

fn alert(episode: &Episode, transition: Transition) -> Alert<'_> {
    let mut labels = BTreeMap::from([
        ("alertname", episode.rule.as_str()),
        ("site", episode.site.as_str()),
        ("severity", episode.severity.as_str()),
    ]);
    // Alertmanager treats an empty label as no label; say so plainly.
    if !episode.target.is_empty() {
        labels.insert("target", episode.target.as_str());
    }
    let annotations = BTreeMap::from([
        ("summary", episode.summary.clone()),
        ("episode_id", episode.id.to_string()),
    ]);
    let ends_at = match transition {
        Transition::Firing => None,
        // A resolved episode has its end; were it missing, "now" still
        // resolves the alert.
        Transition::Resolved => Some(episode.ended_at.unwrap_or_else(OffsetDateTime::now_utc)),
    };
    Alert {
        labels,
        annotations,
        starts_at: rfc3339(episode.started_at),
        ends_at: ends_at.map(rfc3339),
    }
}

/// The body of a POST announcing `transition` of each episode.
pub fn body<'a>(
    episodes: impl IntoIterator<Item = &'a Episode>,
    transition: Transition,
) -> Vec<u8> {
    let alerts: Vec<Alert<'_>> = episodes.into_iter().map(|e| alert(e, transition)).collect();
    serde_json::to_vec(&alerts).expect("a list of string maps serializes")
}

/// The alerts endpoint under a receiver's base URL.
pub fn alerts_url(base: &str) -> String {
    format!("{}/api/v2/alerts", base.trim_end_matches('/'))
}

/// POST one transition of one episode.
pub async fn deliver(
    http: &reqwest::Client,
    base: &str,
    transition: Transition,
    episode: &Episode,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let body = body([episode], transition);
    post_json(http, &alerts_url(base), body, &[], timeout).await
}

/// POST open episodes again as firing, so Alertmanager keeps them active.
pub async fn resend(
    http: &reqwest::Client,
    base: &str,
    episodes: &[Episode],
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let body = body(episodes, Transition::Firing);
    post_json(http, &alerts_url(base), body, &[], timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn episode() -> Episode {
        Episode {
            id: 7,
            rule: "soc_low".into(),
            severity: "warning".into(),
            site: "site-001".into(),
            target: "bms-1/soc".into(),
            summary: "state of charge below 10 %".into(),
            started_at: datetime!(2026-01-01 00:00:00 UTC),
            ended_at: None,
            peak: Some(8.0),
            late: false,
        }
    }

    #[test]
    fn firing_alert_has_labels_annotations_and_no_end() {
        let body: serde_json::Value =
            serde_json::from_slice(&body([&episode()], Transition::Firing)).unwrap();
        assert_eq!(
            body,
            serde_json::json!([{
                "labels": {
                    "alertname": "soc_low",
                    "site": "site-001",
                    "target": "bms-1/soc",
                    "severity": "warning"
                },
                "annotations": {"summary": "state of charge below 10 %", "episode_id": "7"},
                "startsAt": "2026-01-01T00:00:00Z"
            }])
        );
    }

    #[test]
    fn resolved_alert_ends_at_the_episode_end() {
        let mut episode = episode();
        episode.ended_at = Some(datetime!(2026-01-01 00:05:00 UTC));
        let body: serde_json::Value =
            serde_json::from_slice(&body([&episode], Transition::Resolved)).unwrap();
        assert_eq!(body[0]["endsAt"], "2026-01-01T00:05:00Z");
    }

    #[test]
    fn whole_site_episode_has_no_target_label() {
        let mut episode = episode();
        episode.target = String::new();
        let body: serde_json::Value =
            serde_json::from_slice(&body([&episode], Transition::Firing)).unwrap();
        assert!(body[0]["labels"].get("target").is_none());
    }

    #[test]
    fn alerts_url_joins_with_or_without_a_trailing_slash() {
        assert_eq!(alerts_url("http://am:9093"), "http://am:9093/api/v2/alerts");
        assert_eq!(
            alerts_url("http://am:9093/"),
            "http://am:9093/api/v2/alerts"
        );
    }
}
