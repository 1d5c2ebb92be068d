//! Alerts: `GET /api/v1/alerts` lists the alarms devices are raising now,
//! and `POST /api/v1/sites/{site}/alerts/{device}/{point}/ack` lets an
//! operator (role `operate`) acknowledge one.
//!
//! There are no alert rules (thresholds on measurements) yet. An alert is an
//! *alarm point* — a `bitfield` or `flag` point whose name contains `alarm`
//! or `fault` — whose latest value (from the in-memory latest-value cache)
//! is non-zero. An acknowledgement records the value it saw
//! (`alert_acks`, migration 5); when the value changes (another bit set),
//! the alert is shown unacknowledged again.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::error::{bad_query, AppError};
use super::error::{ApiErrors, Conflict, NotFound};
use super::inventory::site_id;
use super::page::{Page, PageQuery};
use super::state::ApiState;
use crate::auth::{Access, Role};
use crate::latest::LatestPoint;
use crate::time::rfc3339;

/// The SQL condition that makes a point (`p`) an alarm point.
const ALARM_POINT: &str =
    "p.kind IN ('bitfield', 'flag') AND (p.name ILIKE '%alarm%' OR p.name ILIKE '%fault%')";

/// Longest note on an acknowledgement.
const MAX_NOTE: usize = 1000;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Acknowledgement {
    /// Name of the token that acknowledged.
    by: String,
    #[schema(format = DateTime)]
    at: String,
    note: String,
    /// The value that was acknowledged.
    value: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Alert {
    site: String,
    device: String,
    /// `SITE/DEVICE/POINT`.
    point: String,
    name: String,
    value: f64,
    /// When the device last reported this value.
    #[schema(format = DateTime)]
    ts: String,
    /// `null` until acknowledged at the current value.
    acknowledged: Option<Acknowledgement>,
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

fn alert(site: &str, point: &LatestPoint, value: f64, ack: Option<&Acknowledgement>) -> Alert {
    Alert {
        site: site.to_owned(),
        device: point.device.clone(),
        point: point.point.clone(),
        name: point.name.clone(),
        value,
        ts: point.ts.clone(),
        acknowledged: ack.filter(|a| a.value == value).cloned(),
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
}

/// Alarms the devices are raising now, on the sites the token may see.
///
/// An alarm point (a bitfield or flag whose name contains `alarm` or
/// `fault`) with a non-zero latest value. Ordered by site, device, point.
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
    let after: Option<PointKey> = page
        .after_key(3)?
        .map(|k| (k[0].clone(), k[1].clone(), k[2].clone()));
    // The middleware has already refused sites outside the token's scope.
    let sites = match query.site.filter(|s| !s.trim().is_empty()) {
        Some(list) => Some(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        None => access.site_filter(),
    };
    let client = state.pool.get().await?;
    let points = alarm_points(&client, &sites).await?;
    let mut by_site: BTreeMap<&str, BTreeSet<(&str, &str)>> = BTreeMap::new();
    for (site, device, point) in &points {
        if after
            .as_ref()
            .is_none_or(|a| (site, device, point) > (&a.0, &a.1, &a.2))
        {
            by_site
                .entry(site)
                .or_default()
                .insert((device.as_str(), point.as_str()));
        }
    }
    let site_names: Vec<String> = by_site.keys().map(|s| (*s).to_owned()).collect();
    let acks = acknowledgements(&client, &site_names).await?;
    drop(client);
    let mut alerts = Vec::new();
    for (site, wanted) in by_site {
        if alerts.len() > page.limit {
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
                alerts.push(alert(site, point, value, acks.get(&key)));
            }
        }
    }
    let (alerts, next_cursor) = page.finish(alerts, |a| {
        vec![a.site.clone(), a.device.clone(), a.name.clone()]
    });
    Ok(Json(AlertsPage {
        alerts,
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
    let body: AckBody = if body.iter().all(u8::is_ascii_whitespace) {
        AckBody::default()
    } else {
        // `null` is an empty body too.
        serde_json::from_slice::<Option<AckBody>>(&body)
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
            &[&site_id, &device, &name, &value, &by, &token_id, &body.note],
        )
        .await?;
    let acks = acknowledgements(&client, std::slice::from_ref(&site)).await?;
    Ok(Json(AcknowledgedAlert {
        alert: alert(&site, point, value, acks.get(&key)),
    }))
}
