//! Episodes of the alert rules (`alert_episodes`, written by
//! `crate::rules::store`): `GET /api/v1/alerts/history` pages through them,
//! open and ended, newest first, and
//! `POST /api/v1/sites/{site}/episodes/{episode_id}/ack` lets an operator
//! (role `operate`) acknowledge one. The rows are also what the alert list
//! (`alerts.rs`) shows for the episodes still firing.
//!
//! An acknowledgement covers the whole episode and is kept when it ends; an
//! ended episode may be acknowledged too (it records who looked at it).
//! Acknowledging again replaces the earlier acknowledgement.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::error::{bad_query, ApiErrors, AppError, NotFound};
use super::handlers::parse_time;
use super::page::{Page, PageQuery};
use super::params::{name_list, parse_list};
use super::state::ApiState;
use crate::auth::{Access, Role};
use crate::rules::model;
use crate::time::rfc3339;

/// Longest note on an acknowledgement.
const MAX_NOTE: usize = 1000;

/// How urgent an alert is: a rule's severity; device alarms are `warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        model::Severity::from(self).as_str()
    }
}

impl From<model::Severity> for Severity {
    fn from(s: model::Severity) -> Self {
        match s {
            model::Severity::Info => Severity::Info,
            model::Severity::Warning => Severity::Warning,
            model::Severity::Critical => Severity::Critical,
        }
    }
}

impl From<Severity> for model::Severity {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Info => model::Severity::Info,
            Severity::Warning => model::Severity::Warning,
            Severity::Critical => model::Severity::Critical,
        }
    }
}

/// Who acknowledged an episode, when, and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EpisodeAck {
    /// Name of the token that acknowledged.
    pub by: String,
    #[schema(format = DateTime)]
    pub at: String,
    pub note: String,
}

/// One row of `alert_episodes`, with its site's name.
#[derive(Debug, Clone)]
pub struct EpisodeRow {
    pub id: i64,
    pub site: String,
    pub rule: String,
    /// `DEVICE/POINT`, `DEVICE` or `""` (the whole site).
    pub target: String,
    pub severity: Severity,
    pub summary: String,
    pub started_at: OffsetDateTime,
    pub ended_at: Option<OffsetDateTime>,
    pub peak: Option<f64>,
    pub late: bool,
    pub detected_at: OffsetDateTime,
    pub ack: Option<EpisodeAck>,
}

/// The columns [`EpisodeRow::from_row`] reads, for `alert_episodes e JOIN sites s`.
pub const EPISODE_COLUMNS: &str = "e.episode_id, s.name, e.rule, e.target, e.severity, e.summary, \
     e.started_at, e.ended_at, e.peak, e.late, e.detected_at, \
     e.acknowledged_by, e.acknowledged_at, e.ack_note";

impl EpisodeRow {
    pub fn from_row(r: &tokio_postgres::Row) -> Self {
        let severity: &str = r.get(4);
        let ack = match (r.get::<_, Option<String>>(11), r.get(12)) {
            (Some(by), Some(at)) => Some(EpisodeAck {
                by,
                at: rfc3339(at),
                note: r.get::<_, Option<String>>(13).unwrap_or_default(),
            }),
            _ => None,
        };
        Self {
            id: r.get(0),
            site: r.get(1),
            rule: r.get(2),
            target: r.get(3),
            // Written from a rule's severity; anything else reads as the default.
            severity: model::Severity::parse(severity).map_or(Severity::Warning, Severity::from),
            summary: r.get(5),
            started_at: r.get(6),
            ended_at: r.get(7),
            peak: r.get(8),
            late: r.get(9),
            detected_at: r.get(10),
            ack,
        }
    }

    /// The device of the target (`""` for the whole site) and its point
    /// (`""` unless the target is a point), as silences match them.
    pub fn device_and_point(&self) -> (&str, &str) {
        self.target.split_once('/').unwrap_or((&self.target, ""))
    }
}

/// Episodes still firing on the given sites (`None`: every site), with one
/// of the given severities (`None`: any).
pub async fn open_episodes(
    client: &tokio_postgres::Client,
    sites: &Option<Vec<String>>,
    severities: &Option<Vec<&str>>,
) -> Result<Vec<EpisodeRow>, AppError> {
    let rows = client
        .query(
            &format!(
                "SELECT {EPISODE_COLUMNS}
                 FROM alert_episodes e JOIN sites s ON s.site_id = e.site_id
                 WHERE e.ended_at IS NULL
                   AND ($1::text[] IS NULL OR s.name = ANY($1))
                   AND ($2::text[] IS NULL OR e.severity = ANY($2))"
            ),
            &[sites, severities],
        )
        .await?;
    Ok(rows.iter().map(EpisodeRow::from_row).collect())
}

/// An episode of a rule: when its condition started and stopped holding.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Episode {
    episode_id: i64,
    site: String,
    rule: String,
    /// What the episode is about: `DEVICE/POINT`, `DEVICE` or `""` (the whole site), by the rule's kind.
    target: String,
    severity: Severity,
    summary: String,
    /// When the condition began to hold for its hold time (event time: the readings' timestamps).
    #[schema(format = DateTime)]
    started_at: String,
    /// When it stopped holding; `null` while firing.
    #[schema(format = DateTime)]
    ended_at: Option<String>,
    /// The extreme value seen; `null` for rules that track none (stale, offline).
    peak: Option<f64>,
    /// Detected a while after the readings that started or ended it (a backlog after an outage).
    late: bool,
    /// When the collector opened it.
    #[schema(format = DateTime)]
    detected_at: String,
    /// `null` until someone acknowledges it.
    acknowledged: Option<EpisodeAck>,
}

impl From<EpisodeRow> for Episode {
    fn from(e: EpisodeRow) -> Self {
        Self {
            episode_id: e.id,
            site: e.site,
            rule: e.rule,
            target: e.target,
            severity: e.severity,
            summary: e.summary,
            started_at: rfc3339(e.started_at),
            ended_at: e.ended_at.map(rfc3339),
            peak: e.peak,
            late: e.late,
            detected_at: rfc3339(e.detected_at),
            acknowledged: e.ack,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EpisodesPage {
    episodes: Vec<Episode>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Comma-separated sites; default: every site the token may see.
    site: Option<String>,
    /// Comma-separated rule names.
    rule: Option<String>,
    /// Comma-separated severities: info, warning, critical.
    severity: Option<String>,
    /// Episodes that started at or after this time (RFC 3339).
    #[param(format = DateTime)]
    from: Option<String>,
    /// Episodes that started before this time (RFC 3339).
    #[param(format = DateTime)]
    to: Option<String>,
}

/// Episodes of the alert rules, open and ended, newest first.
///
/// On the sites the token may see. `from` and `to` select by start time,
/// `[from, to)`. Ordered by episode id, descending (the order they were
/// opened in). Read from the replica when there is one.
#[utoipa::path(
    get,
    path = "/api/v1/alerts/history",
    operation_id = "list_alert_history",
    tag = "alerts",
    params(HistoryQuery, PageQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of episodes", body = EpisodesPage), ApiErrors)
)]
pub async fn history(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<EpisodesPage>, AppError> {
    let Query(query) = query.map_err(bad_query)?;
    let page = Page::from_query(page)?;
    let before = match page.after_key(1)? {
        Some(k) => Some(
            k[0].parse::<i64>()
                .map_err(|_| AppError::BadRequest("`cursor` is not valid here".into()))?,
        ),
        None => None,
    };
    // The middleware has already refused sites outside the token's scope.
    let sites = name_list(query.site.as_deref()).or_else(|| access.site_filter());
    let rules = name_list(query.rule.as_deref());
    let severities: Option<Vec<&str>> =
        parse_list("severity", query.severity.as_deref(), &Severity::ALL, |s| {
            s.as_str()
        })?
        .map(|list| list.into_iter().map(Severity::as_str).collect());
    let time = |field: &str, value: &Option<String>| {
        value
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| parse_time(field, v))
            .transpose()
    };
    let (from, to) = (time("from", &query.from)?, time("to", &query.to)?);
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(AppError::BadRequest("`from` must not be after `to`".into()));
        }
    }
    let client = state.history().get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {EPISODE_COLUMNS}
                 FROM alert_episodes e JOIN sites s ON s.site_id = e.site_id
                 WHERE ($1::text[] IS NULL OR s.name = ANY($1))
                   AND ($2::text[] IS NULL OR e.rule = ANY($2))
                   AND ($3::text[] IS NULL OR e.severity = ANY($3))
                   AND ($4::timestamptz IS NULL OR e.started_at >= $4)
                   AND ($5::timestamptz IS NULL OR e.started_at < $5)
                   AND ($6::int8 IS NULL OR e.episode_id < $6)
                 ORDER BY e.episode_id DESC LIMIT $7"
            ),
            &[
                &sites,
                &rules,
                &severities,
                &from,
                &to,
                &before,
                &page.fetch_limit(),
            ],
        )
        .await?;
    let episodes: Vec<Episode> = rows
        .iter()
        .map(|r| Episode::from(EpisodeRow::from_row(r)))
        .collect();
    let (episodes, next_cursor) = page.finish(episodes, |e| vec![e.episode_id.to_string()]);
    Ok(Json(EpisodesPage {
        episodes,
        next_cursor,
    }))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// Up to 1000 bytes, e.g. who is on it.
    #[serde(default)]
    note: String,
}

/// The note of an acknowledgement's body: `{"note": "..."}`, `null` or
/// nothing (no note).
pub(super) fn ack_note(body: &[u8]) -> Result<String, AppError> {
    let body: AckBody = if body.iter().all(u8::is_ascii_whitespace) {
        AckBody::default()
    } else {
        serde_json::from_slice::<Option<AckBody>>(body)
            .map(Option::unwrap_or_default)
            .map_err(|e| {
                AppError::BadRequest(format!(
                    "the body must be {{\"note\": \"...\"}} or empty: {e}"
                ))
            })?
    };
    if body.note.len() > MAX_NOTE {
        return Err(AppError::BadRequest(format!(
            "`note` is longer than {MAX_NOTE} bytes"
        )));
    }
    Ok(body.note)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AcknowledgedEpisode {
    episode: Episode,
}

/// Acknowledge an episode of an alert rule (role `operate`).
///
/// Records who acknowledged it, when, and the note; again replaces the
/// earlier acknowledgement. An ended episode may be acknowledged too: it
/// records who looked at it. The body is optional.
#[utoipa::path(
    post,
    path = "/api/v1/sites/{site}/episodes/{episode_id}/ack",
    operation_id = "acknowledge_episode",
    tag = "alerts",
    params(
        ("site" = String, Path, description = "Site name, e.g. site-001"),
        ("episode_id" = i64, Path, description = "Episode id, as listed"),
    ),
    request_body(content = Option<AckBody>, description = "An optional note"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The episode, acknowledged", body = AcknowledgedEpisode),
        NotFound,
        ApiErrors,
    )
)]
pub async fn acknowledge(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Path((site, episode_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<AcknowledgedEpisode>, AppError> {
    access.require(Role::Operate)?;
    let episode_id: i64 = episode_id.parse().map_err(|_| {
        AppError::BadRequest(format!("`episode_id` must be a number, got {episode_id:?}"))
    })?;
    let note = ack_note(&body)?;
    let (by, _) = access.actor();
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            &format!(
                "WITH acked AS (
                     UPDATE alert_episodes e
                     SET acknowledged_by = $3, acknowledged_at = now(), ack_note = $4
                     FROM sites s
                     WHERE s.site_id = e.site_id AND s.name = $1 AND e.episode_id = $2
                     RETURNING e.*
                 )
                 SELECT {EPISODE_COLUMNS} FROM acked e JOIN sites s ON s.site_id = e.site_id"
            ),
            &[&site, &episode_id, &by, &note],
        )
        .await?
        .ok_or_else(|| AppError::NotFound(format!("site {site:?} has no episode {episode_id}")))?;
    let episode = EpisodeRow::from_row(&row);
    tracing::info!(episode_id, site, rule = %episode.rule, by, "episode acknowledged");
    Ok(Json(AcknowledgedEpisode {
        episode: episode.into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_a_device_and_a_point_or_less() {
        let row = |target: &str| EpisodeRow {
            id: 1,
            site: "a".into(),
            rule: "r".into(),
            target: target.into(),
            severity: Severity::Info,
            summary: String::new(),
            started_at: OffsetDateTime::UNIX_EPOCH,
            ended_at: None,
            peak: None,
            late: false,
            detected_at: OffsetDateTime::UNIX_EPOCH,
            ack: None,
        };
        assert_eq!(row("bms-1/soc").device_and_point(), ("bms-1", "soc"));
        assert_eq!(row("bms-1").device_and_point(), ("bms-1", ""));
        assert_eq!(row("").device_and_point(), ("", ""));
    }

    #[test]
    fn an_acknowledgement_body_is_a_note_or_nothing() {
        assert_eq!(ack_note(b"").unwrap(), "");
        assert_eq!(ack_note(b"null").unwrap(), "");
        assert_eq!(ack_note(br#"{"note": "on it"}"#).unwrap(), "on it");
        assert!(ack_note(br#"{"nope": 1}"#).is_err());
        let long = format!(r#"{{"note": "{}"}}"#, "x".repeat(MAX_NOTE + 1));
        assert!(ack_note(long.as_bytes()).is_err());
    }
}
