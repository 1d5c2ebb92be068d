//! Alerts: `GET /api/v1/alerts` lists what is wrong now — the alarms
//! devices raise and the episodes of alert rules still firing — and
//! `POST /api/v1/sites/{site}/alerts/{device}/{point}/ack` lets an operator
//! (role `operate`) acknowledge a device alarm (episodes are acknowledged
//! in `episodes.rs`).
//!
//! A device alarm is an *alarm point* — a `bitfield` or `flag` point whose
//! name contains `alarm` or `fault` — whose latest value (from the
//! in-memory latest-value cache) is non-zero. An acknowledgement records
//! the value it saw (`alert_acks`, migration 5); when the value changes
//! (another bit set), the alert is shown unacknowledged again. A rule
//! episode (`alert_episodes`) is listed from its start until it ends.
//!
//! Both kinds are one list in one order, by (site, source, device, name,
//! rule): a site's device alarms, then its rule episodes. The cursor is that
//! key, so a page never skips or repeats an alert of either kind.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::episodes::{self, ack_note, AckBody, EpisodeRow, Severity};
use super::error::{bad_query, AppError};
use super::error::{ApiErrors, Conflict, NotFound};
use super::inventory::site_id;
use super::page::{Page, PageQuery};
use super::params::{name_list, parse_list};
use super::silences::ActiveSilences;
use super::state::ApiState;
use crate::auth::{Access, Role};
use crate::latest::LatestPoint;
use crate::time::rfc3339;

/// The SQL condition that makes a point (`p`) an alarm point.
const ALARM_POINT: &str =
    "p.kind IN ('bitfield', 'flag') AND (p.name ILIKE '%alarm%' OR p.name ILIKE '%fault%')";

/// The severity of every device alarm.
const DEVICE_ALARM_SEVERITY: Severity = Severity::Warning;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Acknowledgement {
    /// Name of the token that acknowledged.
    by: String,
    #[schema(format = DateTime)]
    at: String,
    note: String,
    /// The value that was acknowledged; `null` for a rule episode (the
    /// acknowledgement covers the whole episode).
    value: Option<f64>,
}

/// Where an alert comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertSource {
    /// An alarm point of a device with a non-zero value.
    Device,
    /// An episode of an alert rule, still firing.
    Rule,
}

impl AlertSource {
    const ALL: [AlertSource; 2] = [AlertSource::Device, AlertSource::Rule];

    fn as_str(self) -> &'static str {
        match self {
            AlertSource::Device => "device",
            AlertSource::Rule => "rule",
        }
    }
}

/// Where an alert stands: someone acknowledged it, else a silence covers
/// it, else it is firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Acknowledged,
    Silenced,
}

impl AlertState {
    const ALL: [AlertState; 3] = [
        AlertState::Firing,
        AlertState::Acknowledged,
        AlertState::Silenced,
    ];

    fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Silenced => "silenced",
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Alert {
    site: String,
    /// The device; `""` for a rule episode about the whole site.
    device: String,
    /// `SITE/DEVICE/POINT`; for a rule episode `SITE/` and its target
    /// (`SITE/DEVICE/POINT`, `SITE/DEVICE`), `SITE` for the whole site.
    point: String,
    /// The alarm point's name; for a rule episode the point of its target,
    /// `""` when the target is a device or the whole site.
    name: String,
    /// The alarm point's value; for a rule episode its peak so far, `null`
    /// for rules that track none (stale, offline).
    value: Option<f64>,
    /// When the device last reported this value; for a rule episode when it started.
    #[schema(format = DateTime)]
    ts: String,
    /// `null` until acknowledged (a device alarm: at its current value).
    acknowledged: Option<Acknowledgement>,
    source: AlertSource,
    /// A rule's severity; device alarms are `warning`.
    severity: Severity,
    state: AlertState,
    /// The rule of an episode; `null` for a device alarm.
    rule: Option<String>,
    /// The episode (see `/api/v1/alerts/history`); `null` for a device alarm.
    episode_id: Option<i64>,
    /// When the episode started (event time); `null` for a device alarm.
    #[schema(format = DateTime)]
    started_at: Option<String>,
    /// For people: the rule's summary, or the alarm point and its value.
    summary: String,
    /// A rule episode detected a while after its readings (a backlog); `false` for device alarms.
    late: bool,
}

impl Alert {
    /// The alert's place in the list: (site, source, device, name, rule).
    fn key(&self) -> Vec<String> {
        vec![
            self.site.clone(),
            self.source.as_str().to_owned(),
            self.device.clone(),
            self.name.clone(),
            self.rule.clone().unwrap_or_default(),
        ]
    }
}

type PointKey = (String, String, String);

/// Alarm points of the given sites (`None`: every site), by (site, device, point).
async fn alarm_points(
    client: &tokio_postgres::Client,
    sites: &Option<Vec<String>>,
) -> Result<BTreeSet<PointKey>, AppError> {
    let rows = client
        .query(
            &format!(
                "SELECT s.name, d.name, p.name
                 FROM points p JOIN devices d ON d.device_id = p.device_id
                 JOIN sites s ON s.site_id = d.site_id
                 WHERE {ALARM_POINT} AND ($1::text[] IS NULL OR s.name = ANY($1))"
            ),
            &[sites],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

async fn acknowledgements(
    client: &tokio_postgres::Client,
    sites: &[String],
) -> Result<HashMap<PointKey, Acknowledgement>, AppError> {
    let rows = client
        .query(
            "SELECT s.name, a.device, a.point, a.value, a.acknowledged_by, a.acknowledged_at, a.note
             FROM alert_acks a JOIN sites s ON s.site_id = a.site_id
             WHERE s.name = ANY($1)",
            &[&sites],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                (r.get(0), r.get(1), r.get(2)),
                Acknowledgement {
                    value: r.get(3),
                    by: r.get(4),
                    at: rfc3339(r.get(5)),
                    note: r.get(6),
                },
            )
        })
        .collect())
}

fn active_value(point: &LatestPoint) -> Option<f64> {
    point.value.filter(|v| *v != 0.0 && !v.is_nan())
}

fn device_alert(
    site: &str,
    point: &LatestPoint,
    value: f64,
    ack: Option<&Acknowledgement>,
    silences: &ActiveSilences,
) -> Alert {
    let acknowledged = ack.filter(|a| a.value == Some(value)).cloned();
    let state = if acknowledged.is_some() {
        AlertState::Acknowledged
    } else if silences.covers(site, &point.device, None) {
        AlertState::Silenced
    } else {
        AlertState::Firing
    };
    Alert {
        site: site.to_owned(),
        device: point.device.clone(),
        point: point.point.clone(),
        name: point.name.clone(),
        value: Some(value),
        ts: point.ts.clone(),
        acknowledged,
        source: AlertSource::Device,
        severity: DEVICE_ALARM_SEVERITY,
        state,
        rule: None,
        episode_id: None,
        started_at: None,
        summary: format!("{} = {value}", point.name),
        late: false,
    }
}

fn episode_alert(episode: EpisodeRow, silences: &ActiveSilences) -> Alert {
    let (device, name) = episode.device_and_point();
    let (device, name) = (device.to_owned(), name.to_owned());
    let state = if episode.ack.is_some() {
        AlertState::Acknowledged
    } else if silences.covers(&episode.site, &device, Some(&episode.rule)) {
        AlertState::Silenced
    } else {
        AlertState::Firing
    };
    let point = if episode.target.is_empty() {
        episode.site.clone()
    } else {
        format!("{}/{}", episode.site, episode.target)
    };
    let started_at = rfc3339(episode.started_at);
    Alert {
        device,
        point,
        name,
        value: episode.peak,
        ts: started_at.clone(),
        acknowledged: episode.ack.map(|a| Acknowledgement {
            by: a.by,
            at: a.at,
            note: a.note,
            value: None,
        }),
        source: AlertSource::Rule,
        severity: episode.severity,
        state,
        episode_id: Some(episode.id),
        started_at: Some(started_at),
        summary: episode.summary,
        late: episode.late,
        rule: Some(episode.rule),
        site: episode.site,
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AlertsPage {
    alerts: Vec<Alert>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AcknowledgedAlert {
    alert: Alert,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// Comma-separated sites; default: every site the token may see.
    site: Option<String>,
    /// Comma-separated severities: info, warning, critical.
    severity: Option<String>,
    /// Comma-separated states: firing, acknowledged, silenced.
    state: Option<String>,
    /// `device` (alarm points) or `rule` (rule episodes); default both.
    source: Option<String>,
}

/// The key after which a page starts, from its cursor.
fn after_key(page: &Page) -> Result<Option<Vec<String>>, AppError> {
    Ok(match page.after.as_deref() {
        // A cursor of the device alarms alone: (site, device, point).
        Some([site, device, name]) => Some(vec![
            site.clone(),
            AlertSource::Device.as_str().to_owned(),
            device.clone(),
            name.clone(),
            String::new(),
        ]),
        _ => page.after_key(5)?.map(<[String]>::to_vec),
    })
}

/// What is wrong now on the sites the token may see: device alarms and
/// rule episodes still firing.
///
/// A device alarm is an alarm point (a bitfield or flag whose name
/// contains `alarm` or `fault`) with a non-zero latest value, severity
/// `warning`; a rule episode is listed from its start until it ends, with
/// the rule's severity. `state` is `acknowledged` once someone acknowledged
/// the alert (a device alarm: at its current value), else `silenced` when
/// a silence in effect covers it, else `firing`. Ordered by site, source
/// (device alarms first), device, name, rule.
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    operation_id = "list_alerts",
    tag = "alerts",
    params(AlertsQuery, PageQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of active alerts", body = AlertsPage), ApiErrors)
)]
pub async fn list(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    query: Result<Query<AlertsQuery>, QueryRejection>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<AlertsPage>, AppError> {
    let Query(query) = query.map_err(bad_query)?;
    let page = Page::from_query(page)?;
    let after = after_key(&page)?;
    let is_after = |key: &[String]| after.as_deref().is_none_or(|a| key > a);
    let severities = parse_list("severity", query.severity.as_deref(), &Severity::ALL, |s| {
        s.as_str()
    })?;
    let states = parse_list("state", query.state.as_deref(), &AlertState::ALL, |s| {
        s.as_str()
    })?;
    let sources = parse_list("source", query.source.as_deref(), &AlertSource::ALL, |s| {
        s.as_str()
    })?;
    let wants = |source: AlertSource| sources.as_ref().is_none_or(|s| s.contains(&source));
    let wants_state = |state: AlertState| states.as_ref().is_none_or(|s| s.contains(&state));
    // The middleware has already refused sites outside the token's scope.
    let sites = name_list(query.site.as_deref()).or_else(|| access.site_filter());
    let client = state.pool.get().await?;
    let silences = ActiveSilences::load(&client, &sites).await?;

    let mut alerts = Vec::new();
    if wants(AlertSource::Rule) {
        let severities: Option<Vec<&str>> = severities
            .as_ref()
            .map(|list| list.iter().map(|s| s.as_str()).collect());
        for episode in episodes::open_episodes(&client, &sites, &severities).await? {
            let alert = episode_alert(episode, &silences);
            if wants_state(alert.state) && is_after(&alert.key()) {
                alerts.push(alert);
            }
        }
    }

    let device_alarms = wants(AlertSource::Device)
        && severities
            .as_ref()
            .is_none_or(|s| s.contains(&DEVICE_ALARM_SEVERITY));
    let points = if device_alarms {
        alarm_points(&client, &sites).await?
    } else {
        BTreeSet::new()
    };
    let mut by_site: BTreeMap<&str, BTreeSet<(&str, &str)>> = BTreeMap::new();
    for (site, device, point) in &points {
        let key = [
            site.clone(),
            AlertSource::Device.as_str().to_owned(),
            device.clone(),
            point.clone(),
            String::new(),
        ];
        if is_after(&key) {
            by_site
                .entry(site)
                .or_default()
                .insert((device.as_str(), point.as_str()));
        }
    }
    let site_names: Vec<String> = by_site.keys().map(|s| (*s).to_owned()).collect();
    let acks = acknowledgements(&client, &site_names).await?;
    drop(client);
    let mut device_count = 0;
    for (site, wanted) in by_site {
        // Sites in order: once a page's worth of device alarms is found,
        // everything of later sites sorts after them.
        if device_count > page.limit {
            break;
        }
        let latest = state
            .latest
            .fetch(&state.pool, site)
            .await?
            .unwrap_or_default();
        for point in &latest {
            if !wanted.contains(&(point.device.as_str(), point.name.as_str())) {
                continue;
            }
            if let Some(value) = active_value(point) {
                let key = (site.to_owned(), point.device.clone(), point.name.clone());
                let alert = device_alert(site, point, value, acks.get(&key), &silences);
                if wants_state(alert.state) {
                    device_count += 1;
                    alerts.push(alert);
                }
            }
        }
    }
    alerts.sort_by_cached_key(Alert::key);
    let (alerts, next_cursor) = page.finish(alerts, Alert::key);
    Ok(Json(AlertsPage {
        alerts,
        next_cursor,
    }))
}

/// Acknowledge an active alarm (role `operate`).
///
/// Records the value acknowledged; if the value changes later (another bit
/// set), the alert shows unacknowledged again. The body is optional.
#[utoipa::path(
    post,
    path = "/api/v1/sites/{site}/alerts/{device}/{point}/ack",
    operation_id = "acknowledge_alert",
    tag = "alerts",
    params(
        ("site" = String, Path, description = "Site name, e.g. site-001"),
        ("device" = String, Path, description = "Device name, e.g. bms-1"),
        ("point" = String, Path, description = "Alarm point name, e.g. alarms"),
    ),
    request_body(content = Option<AckBody>, description = "An optional note"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The alert, acknowledged", body = AcknowledgedAlert),
        NotFound,
        Conflict,
        ApiErrors,
    )
)]
pub async fn acknowledge(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Path((site, device, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Json<AcknowledgedAlert>, AppError> {
    access.require(Role::Operate)?;
    let note = ack_note(&body)?;
    let client = state.pool.get().await?;
    let site_id = site_id(&client, &site).await?;
    let key = (site.clone(), device.clone(), name.clone());
    if !alarm_points(&client, &Some(vec![site.clone()]))
        .await?
        .contains(&key)
    {
        return Err(AppError::NotFound(format!(
            "site {site:?} has no alarm point {device}/{name}"
        )));
    }
    let latest = state
        .latest
        .fetch(&state.pool, &site)
        .await?
        .unwrap_or_default();
    let point = latest
        .iter()
        .find(|p| p.device == device && p.name == name)
        .ok_or_else(|| AppError::Conflict(format!("{site}/{device}/{name} has no value yet")))?;
    let Some(value) = active_value(point) else {
        return Err(AppError::Conflict(format!(
            "{site}/{device}/{name} is not raising an alarm (value {:?})",
            point.value
        )));
    };
    let (by, token_id) = access.actor();
    client
        .execute(
            "INSERT INTO alert_acks (site_id, device, point, value, acknowledged_by, token_id, note)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (site_id, device, point) DO UPDATE
             SET value = EXCLUDED.value, acknowledged_by = EXCLUDED.acknowledged_by,
                 token_id = EXCLUDED.token_id, note = EXCLUDED.note, acknowledged_at = now()",
            &[&site_id, &device, &name, &value, &by, &token_id, &note],
        )
        .await?;
    let acks = acknowledgements(&client, std::slice::from_ref(&site)).await?;
    let silences = ActiveSilences::load(&client, &Some(vec![site.clone()])).await?;
    Ok(Json(AcknowledgedAlert {
        alert: device_alert(&site, point, value, acks.get(&key), &silences),
    }))
}
