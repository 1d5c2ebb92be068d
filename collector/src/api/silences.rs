//! Silences (maintenance windows, `alert_silences`): `GET /api/v1/silences`
//! lists the active and future ones, `POST /api/v1/silences` creates one
//! and `DELETE /api/v1/silences/{silence_id}` ends one now (both role
//! `operate`).
//!
//! A silence matches by site, device and rule, each `null` for any; an
//! episode it covers is recorded but not notified (`crate::rules::store`).
//! The alert list shows covered alerts as `silenced`; a silence for any
//! rule also covers the device alarms of its site and device.
//!
//! Scope: a token sees the silences of its sites and those of every site;
//! it creates and ends silences of its own sites only. A silence of every
//! site is for a `admin` token of every site alone. Ending keeps the row,
//! with `ends_at` now, as the record of the window.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Deserializer, Serialize};
use std::time::Duration;
use time::OffsetDateTime;

use super::error::{bad_query, ApiErrors, AppError, Conflict, NotFound};
use super::handlers::parse_time;
use super::page::{Page, PageQuery};
use super::params::name_list;
use super::state::ApiState;
use crate::auth::{Access, Role, SiteScope};
use crate::time::rfc3339;

/// Longest silence, in days.
const MAX_DAYS: u64 = 30;
const MAX_SPAN: Duration = Duration::from_secs(MAX_DAYS * 86_400);
/// Longest comment.
const MAX_COMMENT: usize = 1000;

/// The silences in effect now, to tell which alerts they cover.
#[derive(Debug, Default)]
pub struct ActiveSilences(Vec<Matcher>);

#[derive(Debug)]
struct Matcher {
    site: Option<String>,
    device: Option<String>,
    rule: Option<String>,
}

impl ActiveSilences {
    /// The silences in effect now that may cover the given sites (`None`: any).
    pub async fn load(
        client: &tokio_postgres::Client,
        sites: &Option<Vec<String>>,
    ) -> Result<Self, AppError> {
        let rows = client
            .query(
                "SELECT s.name, a.device, a.rule
                 FROM alert_silences a LEFT JOIN sites s ON s.site_id = a.site_id
                 WHERE now() >= a.starts_at AND now() < a.ends_at
                   AND (a.site_id IS NULL OR $1::text[] IS NULL OR s.name = ANY($1))",
                &[sites],
            )
            .await?;
        Ok(Self(
            rows.iter()
                .map(|r| Matcher {
                    site: r.get(0),
                    device: r.get(1),
                    rule: r.get(2),
                })
                .collect(),
        ))
    }

    /// Whether a silence covers an alert of `site` and `device` (`""`: the
    /// whole site) from `rule` (`None`: a device alarm, which only silences
    /// for any rule cover).
    pub fn covers(&self, site: &str, device: &str, rule: Option<&str>) -> bool {
        self.0.iter().any(|m| {
            m.site.as_deref().is_none_or(|s| s == site)
                && m.device.as_deref().is_none_or(|d| d == device)
                && m.rule.as_deref().is_none_or(|r| Some(r) == rule)
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Silence {
    silence_id: i64,
    /// `null`: every site.
    site: Option<String>,
    /// `null`: every device.
    device: Option<String>,
    /// `null`: every rule (and the device alarms).
    rule: Option<String>,
    #[schema(format = DateTime)]
    starts_at: String,
    #[schema(format = DateTime)]
    ends_at: String,
    /// In effect now (else it starts later, or has ended).
    active: bool,
    /// Name of the token that created it.
    created_by: String,
    comment: String,
    #[schema(format = DateTime)]
    created_at: String,
}

const SILENCE_COLUMNS: &str = "a.silence_id, s.name, a.device, a.rule, a.starts_at, a.ends_at, \
     now() >= a.starts_at AND now() < a.ends_at, a.created_by, a.comment, a.created_at";

impl Silence {
    fn from_row(r: &tokio_postgres::Row) -> Self {
        Self {
            silence_id: r.get(0),
            site: r.get(1),
            device: r.get(2),
            rule: r.get(3),
            starts_at: rfc3339(r.get(4)),
            ends_at: rfc3339(r.get(5)),
            active: r.get(6),
            created_by: r.get(7),
            comment: r.get(8),
            created_at: rfc3339(r.get(9)),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SilencesPage {
    silences: Vec<Silence>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SilencesQuery {
    /// Comma-separated sites: their silences and those of every site;
    /// default: every site the token may see.
    site: Option<String>,
}

/// Silences in effect now or later, on the sites the token may see.
///
/// With the silences of every site. Ordered by id (creation order).
#[utoipa::path(
    get,
    path = "/api/v1/silences",
    operation_id = "list_silences",
    tag = "alerts",
    params(SilencesQuery, PageQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of silences", body = SilencesPage), ApiErrors)
)]
pub async fn list(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    query: Result<Query<SilencesQuery>, QueryRejection>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<SilencesPage>, AppError> {
    let Query(query) = query.map_err(bad_query)?;
    let page = Page::from_query(page)?;
    let after = match page.after_key(1)? {
        Some(k) => Some(
            k[0].parse::<i64>()
                .map_err(|_| AppError::BadRequest("`cursor` is not valid here".into()))?,
        ),
        None => None,
    };
    // The middleware has already refused sites outside the token's scope.
    let sites = name_list(query.site.as_deref()).or_else(|| access.site_filter());
    let client = state.pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {SILENCE_COLUMNS}
                 FROM alert_silences a LEFT JOIN sites s ON s.site_id = a.site_id
                 WHERE a.ends_at > now()
                   AND (a.site_id IS NULL OR $1::text[] IS NULL OR s.name = ANY($1))
                   AND ($2::int8 IS NULL OR a.silence_id > $2)
                 ORDER BY a.silence_id LIMIT $3"
            ),
            &[&sites, &after, &page.fetch_limit()],
        )
        .await?;
    let silences: Vec<Silence> = rows.iter().map(Silence::from_row).collect();
    let (silences, next_cursor) = page.finish(silences, |s| vec![s.silence_id.to_string()]);
    Ok(Json(SilencesPage {
        silences,
        next_cursor,
    }))
}

/// A field that must be present, though it may be `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceBody {
    /// A site name, or `null` for every site (an `admin` token of every site only).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = true, example = "site-001")]
    site: Option<Option<String>>,
    /// A device name; `null` or absent: every device.
    #[serde(default)]
    #[schema(example = "bms-1")]
    device: Option<String>,
    /// A rule in force; `null` or absent: every rule, and the device alarms.
    #[serde(default)]
    rule: Option<String>,
    /// Default: now.
    #[serde(default)]
    #[schema(format = DateTime)]
    starts_at: Option<String>,
    /// The end (RFC 3339); give this or `duration`.
    #[serde(default)]
    #[schema(format = DateTime)]
    ends_at: Option<String>,
    /// How long from `starts_at`, e.g. `2h` or `1h 30m`; give this or `ends_at`.
    #[serde(default)]
    #[schema(example = "2h")]
    duration: Option<String>,
    /// Up to 1000 bytes: why.
    #[serde(default)]
    #[schema(example = "inverter firmware update")]
    comment: String,
}

/// A checked request for a silence.
#[derive(Debug, PartialEq)]
struct NewSilence {
    site: Option<String>,
    device: Option<String>,
    rule: Option<String>,
    starts_at: OffsetDateTime,
    ends_at: OffsetDateTime,
    comment: String,
}

/// Every problem of a body at once, each naming its field.
fn check(
    body: SilenceBody,
    rule_known: impl Fn(&str) -> bool,
    known_rules: &str,
    now: OffsetDateTime,
) -> Result<NewSilence, Vec<String>> {
    let mut problems = Vec::new();
    let name = |field: &str, value: Option<String>, problems: &mut Vec<String>| {
        let value = value.map(|v| v.trim().to_owned());
        if value.as_deref() == Some("") {
            problems.push(format!(
                "`{field}`: must not be empty; `null` for every {field}"
            ));
        }
        value
    };
    let site = match body.site {
        None => {
            problems.push("`site`: required: a site name, or `null` for every site".into());
            None
        }
        Some(site) => name("site", site, &mut problems),
    };
    let device = name("device", body.device, &mut problems);
    let rule = name("rule", body.rule, &mut problems);
    if let Some(rule) = rule.as_deref().filter(|r| !r.is_empty()) {
        if !rule_known(rule) {
            problems.push(format!(
                "`rule`: no rule named {rule:?} in the rules in force ({known_rules})"
            ));
        }
    }
    let mut time = |field: &str, value: Option<String>| match value.as_deref() {
        None => None,
        Some(v) => match parse_time(field, v) {
            Ok(t) => Some(t),
            Err(_) => {
                problems.push(format!("`{field}`: not an RFC 3339 time: {v:?}"));
                None
            }
        },
    };
    let starts_at = time("starts_at", body.starts_at);
    let ends_at = time("ends_at", body.ends_at.clone());
    let start = starts_at.unwrap_or(now);
    let end = match (body.ends_at.is_some(), body.duration.as_deref()) {
        (true, Some(_)) => {
            problems.push("`duration`: give `ends_at` or `duration`, not both".into());
            None
        }
        (false, None) => {
            problems.push("`ends_at`: required, or `duration`".into());
            None
        }
        (true, None) => ends_at,
        (false, Some(text)) => match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                problems.push("`duration`: must be more than zero".into());
                None
            }
            Ok(d) if d > MAX_SPAN => {
                problems.push(format!("`duration`: at most {MAX_DAYS} days"));
                None
            }
            Ok(d) => Some(start + d),
            Err(e) => {
                problems.push(format!(
                    "`duration`: not a duration like \"2h\" or \"1h 30m\" ({text:?}): {e}"
                ));
                None
            }
        },
    };
    if let Some(end) = end {
        if end <= start {
            problems.push("`ends_at`: must be after `starts_at`".into());
        } else if end <= now {
            problems.push("`ends_at`: is in the past".into());
        } else if end - start > MAX_SPAN {
            problems.push(format!(
                "`ends_at`: at most {MAX_DAYS} days after `starts_at`"
            ));
        }
    }
    if body.comment.len() > MAX_COMMENT {
        problems.push(format!("`comment`: longer than {MAX_COMMENT} bytes"));
    }
    match end {
        Some(ends_at) if problems.is_empty() => Ok(NewSilence {
            site,
            device,
            rule,
            starts_at: start,
            ends_at,
            comment: body.comment,
        }),
        _ => Err(problems),
    }
}

/// The problems of a request as one 400.
fn invalid(problems: Vec<String>) -> AppError {
    AppError::BadRequest(format!("invalid silence: {}", problems.join("; ")))
}

/// Whether `access` may create or end a silence of `site` (`None`: every site).
fn may_manage(access: &Access, site: Option<&str>) -> Result<(), AppError> {
    match site {
        Some(site) if access.allows_site(site) => Ok(()),
        Some(site) => Err(AppError::Forbidden(format!(
            "this token may not access site {site:?}"
        ))),
        None if access.scope() == SiteScope::All && access.role() >= Role::Admin => Ok(()),
        None => Err(AppError::Forbidden(
            "a silence of every site (`site`: null) needs an admin token of every site".into(),
        )),
    }
}

/// Create a silence (role `operate`).
///
/// Episodes it covers from `starts_at` to `ends_at` are recorded but not
/// notified; the alert list shows them `silenced`. At most 30 days long.
/// A site-scoped token names one of its sites; a silence of every site
/// (`site: null`) needs an `admin` token of every site. Problems come back
/// together as one 400, each naming its field.
#[utoipa::path(
    post,
    path = "/api/v1/silences",
    operation_id = "create_silence",
    tag = "alerts",
    request_body = SilenceBody,
    security(("bearer" = [])),
    responses((status = 201, description = "The new silence", body = Silence), ApiErrors)
)]
pub async fn create(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    body: Bytes,
) -> Result<(StatusCode, Json<Silence>), AppError> {
    access.require(Role::Operate)?;
    let body: SilenceBody = serde_json::from_slice(&body).map_err(|e| {
        AppError::BadRequest(format!(
            "expected {{\"site\": \"...\" or null, \"device\", \"rule\", \"starts_at\", \"ends_at\" or \"duration\", \"comment\"}}: {e}"
        ))
    })?;
    // Outside the token's sites is refused before anything else is said.
    if let Some(site) = body.site.as_ref().and_then(|s| s.as_deref()) {
        if !site.trim().is_empty() {
            may_manage(&access, Some(site.trim()))?;
        }
    }
    let rules = state.rules.current();
    let mut names: Vec<&str> = rules.rules.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    let known = if names.is_empty() {
        "there are none".to_owned()
    } else {
        format!("known: {}", names.join(", "))
    };
    let silence = check(
        body,
        |rule| names.binary_search(&rule).is_ok(),
        &known,
        OffsetDateTime::now_utc(),
    )
    .map_err(invalid)?;
    may_manage(&access, silence.site.as_deref())?;
    let client = state.pool.get().await?;
    let site_id: Option<i32> = match &silence.site {
        None => None,
        Some(site) => Some(
            client
                .query_opt("SELECT site_id FROM sites WHERE name = $1", &[site])
                .await?
                .map(|r| r.get(0))
                .ok_or_else(|| invalid(vec![format!("`site`: no site named {site:?}")]))?,
        ),
    };
    let (by, _) = access.actor();
    let row = client
        .query_one(
            &format!(
                "WITH created AS (
                     INSERT INTO alert_silences (site_id, device, rule, starts_at, ends_at, created_by, comment)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     RETURNING *
                 )
                 SELECT {SILENCE_COLUMNS} FROM created a LEFT JOIN sites s ON s.site_id = a.site_id"
            ),
            &[
                &site_id,
                &silence.device,
                &silence.rule,
                &silence.starts_at,
                &silence.ends_at,
                &by,
                &silence.comment,
            ],
        )
        .await?;
    let silence = Silence::from_row(&row);
    tracing::info!(
        silence_id = silence.silence_id,
        site = silence.site.as_deref().unwrap_or("*"),
        by,
        "silence created"
    );
    Ok((StatusCode::CREATED, Json(silence)))
}

/// End a silence now (role `operate`).
///
/// Sets its end to now and keeps it as the record of the window; a silence
/// that had not started yet gets its start moved to the same instant.
/// Ending an ended silence is a conflict.
#[utoipa::path(
    delete,
    path = "/api/v1/silences/{silence_id}",
    operation_id = "end_silence",
    tag = "alerts",
    params(("silence_id" = i64, Path, description = "Silence id, as listed")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The silence, ended", body = Silence),
        NotFound,
        Conflict,
        ApiErrors,
    )
)]
pub async fn end(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Path(silence_id): Path<String>,
) -> Result<Json<Silence>, AppError> {
    access.require(Role::Operate)?;
    let silence_id: i64 = silence_id.parse().map_err(|_| {
        AppError::BadRequest(format!("`silence_id` must be a number, got {silence_id:?}"))
    })?;
    let client = state.pool.get().await?;
    let not_found = || AppError::NotFound(format!("no silence {silence_id}"));
    let row = client
        .query_opt(
            "SELECT s.name, a.ends_at > now()
             FROM alert_silences a LEFT JOIN sites s ON s.site_id = a.site_id
             WHERE a.silence_id = $1",
            &[&silence_id],
        )
        .await?
        .ok_or_else(not_found)?;
    let (site, running): (Option<String>, bool) = (row.get(0), row.get(1));
    if site.as_deref().is_some_and(|s| !access.allows_site(s)) {
        return Err(not_found());
    }
    may_manage(&access, site.as_deref())?;
    if !running {
        return Err(AppError::Conflict(format!(
            "silence {silence_id} has already ended"
        )));
    }
    // `ends_at > starts_at` holds in the table: a silence that has not
    // started yet starts a microsecond before it ends.
    let row = client
        .query_opt(
            &format!(
                "WITH ended AS (
                     UPDATE alert_silences
                     SET ends_at = now(),
                         starts_at = least(starts_at, now() - interval '1 microsecond')
                     WHERE silence_id = $1 AND ends_at > now()
                     RETURNING *
                 )
                 SELECT {SILENCE_COLUMNS} FROM ended a LEFT JOIN sites s ON s.site_id = a.site_id"
            ),
            &[&silence_id],
        )
        .await?
        .ok_or_else(|| AppError::Conflict(format!("silence {silence_id} has already ended")))?;
    tracing::info!(silence_id, by = %access.actor().0, "silence ended");
    Ok(Json(Silence::from_row(&row)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-01 12:00 UTC);

    fn body(json: serde_json::Value) -> SilenceBody {
        serde_json::from_value(json).expect("a body")
    }

    fn checked(json: serde_json::Value) -> Result<NewSilence, Vec<String>> {
        check(
            body(json),
            |r| r == "cell-overtemp",
            "known: cell-overtemp",
            NOW,
        )
    }

    #[test]
    fn a_duration_counts_from_the_start_or_now() {
        let s = checked(serde_json::json!({ "site": "a", "duration": "2h" })).unwrap();
        assert_eq!(
            (s.starts_at, s.ends_at),
            (NOW, datetime!(2026-03-01 14:00 UTC))
        );
        let s = checked(serde_json::json!({
            "site": null, "rule": "cell-overtemp", "device": "bms-1",
            "starts_at": "2026-03-02T00:00:00Z", "duration": "1h 30m", "comment": "swap",
        }))
        .unwrap();
        assert_eq!(s.site, None);
        assert_eq!(s.ends_at, datetime!(2026-03-02 01:30 UTC));
        assert_eq!(s.comment, "swap");
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let problems = checked(serde_json::json!({
            "device": "", "rule": "nope", "starts_at": "soon", "comment": "x".repeat(1001),
        }))
        .unwrap_err();
        let fields: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "`site`",
                "`device`",
                "`rule`",
                "`starts_at`",
                "`ends_at`",
                "`comment`"
            ],
            "{problems:?}"
        );
        assert!(problems[2].contains("known: cell-overtemp"), "{problems:?}");
    }

    #[test]
    fn windows_end_after_they_start_in_the_future_within_thirty_days() {
        for (json, field) in [
            (
                serde_json::json!({ "site": "a", "ends_at": "2026-03-01T11:00:00Z" }),
                "`ends_at`",
            ),
            (
                serde_json::json!({ "site": "a", "starts_at": "2026-03-01T10:00:00Z", "ends_at": "2026-03-01T11:00:00Z" }),
                "`ends_at`",
            ),
            (
                serde_json::json!({ "site": "a", "duration": "31d" }),
                "`duration`",
            ),
            (
                serde_json::json!({ "site": "a", "duration": "0s" }),
                "`duration`",
            ),
            (
                serde_json::json!({ "site": "a", "duration": "a while" }),
                "`duration`",
            ),
            (
                serde_json::json!({ "site": "a", "duration": "1h", "ends_at": "2026-03-01T14:00:00Z" }),
                "`duration`",
            ),
            (
                serde_json::json!({ "site": "a", "starts_at": "2026-03-01T12:00:00Z", "ends_at": "2026-04-01T12:00:00Z" }),
                "`ends_at`",
            ),
        ] {
            let problems = checked(json.clone()).unwrap_err();
            assert!(
                problems.len() == 1 && problems[0].starts_with(field),
                "{json}: {problems:?}"
            );
        }
    }

    #[test]
    fn silences_cover_by_site_device_and_rule() {
        let silences = ActiveSilences(vec![
            Matcher {
                site: Some("a".into()),
                device: Some("bms-1".into()),
                rule: None,
            },
            Matcher {
                site: None,
                device: None,
                rule: Some("offline".into()),
            },
        ]);
        assert!(silences.covers("a", "bms-1", None), "a device alarm");
        assert!(silences.covers("a", "bms-1", Some("cell-overtemp")));
        assert!(!silences.covers("a", "bms-2", Some("cell-overtemp")));
        assert!(
            !silences.covers("a", "", None),
            "the whole site is not one device"
        );
        assert!(silences.covers("b", "", Some("offline")));
        assert!(!silences.covers("b", "bms-1", None));
    }
}
