//! REST handlers.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use bess_protocol::MissingReason;

use super::{bad_query, rfc3339, ApiState, AppError};

/// Most samples one series request returns.
const MAX_SERIES_LIMIT: i64 = 100_000;
const DEFAULT_SERIES_LIMIT: i64 = 10_000;

pub async fn health(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, AppError> {
    let client = state.pool.get().await?;
    client.query_one("SELECT 1", &[]).await?;
    Ok(Json(serde_json::json!({ "status": "ok", "database": "ok", "storage": "postgresql" })))
}

pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

#[derive(Serialize)]
pub struct SiteSummary {
    site: String,
    first_seen: String,
    last_seen: Option<String>,
    devices: i64,
}

pub async fn sites(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, AppError> {
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT s.name, s.first_seen, s.last_seen, (SELECT count(*) FROM devices d WHERE d.site_id = s.site_id)
             FROM sites s ORDER BY s.name",
            &[],
        )
        .await?;
    let sites: Vec<SiteSummary> = rows
        .iter()
        .map(|r| SiteSummary {
            site: r.get(0),
            first_seen: rfc3339(r.get(1)),
            last_seen: r.get::<_, Option<OffsetDateTime>>(2).map(rfc3339),
            devices: r.get(3),
        })
        .collect();
    Ok(Json(serde_json::json!({ "sites": sites })))
}

#[derive(Serialize)]
pub struct LatestPoint {
    point: String,
    device: String,
    name: String,
    value: Option<f64>,
    unit: String,
    quality: &'static str,
    reason: Option<String>,
    ts: String,
}

/// The newest value of every point of a site, over all catalog versions.
pub async fn latest(State(state): State<ApiState>, Path(site): Path<String>) -> Result<Json<serde_json::Value>, AppError> {
    let client = state.pool.get().await?;
    let site_row = client.query_opt("SELECT site_id FROM sites WHERE name = $1", &[&site]).await?;
    let Some(site_row) = site_row else {
        return Err(AppError::NotFound(format!("no site named {site:?}")));
    };
    let site_id: i32 = site_row.get(0);
    let rows = client
        .query(
            "SELECT d.name, p.name, p.unit, f.ts, f.vals[slot.i], f.status[slot.i]
             FROM layouts l
             JOIN devices d ON d.device_id = l.device_id
             CROSS JOIN LATERAL (
                 SELECT ts, vals, status FROM frames WHERE layout_id = l.layout_id ORDER BY ts DESC LIMIT 1
             ) f
             CROSS JOIN LATERAL generate_subscripts(l.point_ids, 1) AS slot(i)
             JOIN points p ON p.point_id = l.point_ids[slot.i]
             WHERE l.site_id = $1",
            &[&site_id],
        )
        .await?;
    // A point may sit in layouts of several catalog versions: keep the newest.
    let mut newest: BTreeMap<(String, String), LatestPoint> = BTreeMap::new();
    let mut newest_ts: BTreeMap<(String, String), OffsetDateTime> = BTreeMap::new();
    for r in &rows {
        let device: String = r.get(0);
        let name: String = r.get(1);
        let ts: OffsetDateTime = r.get(3);
        let key = (device.clone(), name.clone());
        if newest_ts.get(&key).is_some_and(|t| *t >= ts) {
            continue;
        }
        let status: Option<i16> = r.get(5);
        let reason = status.filter(|s| *s != 0).and_then(|s| MissingReason::from_code(s as u16));
        newest_ts.insert(key.clone(), ts);
        newest.insert(
            key,
            LatestPoint {
                point: format!("{site}/{device}/{name}"),
                device,
                name,
                value: r.get(4),
                unit: r.get(2),
                quality: reason.map_or("good", |r| r.quality().as_str()),
                reason: reason.map(MissingReason::describe),
                ts: rfc3339(ts),
            },
        );
    }
    Ok(Json(serde_json::json!({ "site": site, "points": newest.into_values().collect::<Vec<_>>() })))
}

#[derive(Deserialize)]
pub struct SeriesQuery {
    /// `site/device/point`
    point: String,
    from: String,
    to: String,
    limit: Option<i64>,
}

#[derive(Serialize)]
struct Sample {
    ts: String,
    value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quality: Option<&'static str>,
}

/// Raw samples of one point in `[from, to)`.
pub async fn series(
    State(state): State<ApiState>,
    query: Result<Query<SeriesQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let Query(query) = query.map_err(bad_query)?;
    let from = parse_time("from", &query.from)?;
    let to = parse_time("to", &query.to)?;
    if from >= to {
        return Err(AppError::BadRequest("`from` must be before `to`".into()));
    }
    let limit = query.limit.unwrap_or(DEFAULT_SERIES_LIMIT);
    if !(1..=MAX_SERIES_LIMIT).contains(&limit) {
        return Err(AppError::BadRequest(format!("`limit` must be between 1 and {MAX_SERIES_LIMIT}")));
    }
    let mut parts = query.point.splitn(3, '/');
    let (Some(site), Some(device), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(AppError::BadRequest("`point` must be site/device/point, e.g. site-001/bms-1/soc".into()));
    };
    let client = state.pool.get().await?;
    let point = client
        .query_opt(
            "SELECT p.point_id, p.unit FROM points p
             JOIN devices d ON d.device_id = p.device_id
             JOIN sites s ON s.site_id = d.site_id
             WHERE s.name = $1 AND d.name = $2 AND p.name = $3",
            &[&site, &device, &name],
        )
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no point {:?}", query.point)))?;
    let point_id: i32 = point.get(0);
    let unit: String = point.get(1);
    let rows = client
        .query(
            "SELECT f.ts, f.vals[l.slot], f.status[l.slot]
             FROM (SELECT layout_id, array_position(point_ids, $1) AS slot FROM layouts WHERE point_ids @> ARRAY[$1]) l
             JOIN frames f ON f.layout_id = l.layout_id AND f.ts >= $2 AND f.ts < $3
             ORDER BY f.ts
             LIMIT $4",
            &[&point_id, &from, &to, &(limit + 1)],
        )
        .await?;
    let truncated = rows.len() as i64 > limit;
    let samples: Vec<Sample> = rows
        .iter()
        .take(limit as usize)
        .map(|r| {
            let status: Option<i16> = r.get(2);
            Sample {
                ts: rfc3339(r.get(0)),
                value: r.get(1),
                quality: status
                    .filter(|s| *s != 0)
                    .and_then(|s| MissingReason::from_code(s as u16))
                    .map(|reason| reason.quality().as_str()),
            }
        })
        .collect();
    Ok(Json(serde_json::json!({
        "point": query.point,
        "unit": unit,
        "resolution": "raw",
        "from": rfc3339(from),
        "to": rfc3339(to),
        "count": samples.len(),
        "truncated": truncated,
        "samples": samples,
    })))
}

fn parse_time(field: &str, value: &str) -> Result<OffsetDateTime, AppError> {
    OffsetDateTime::parse(value, &Rfc3339)
        .map_err(|e| AppError::BadRequest(format!("`{field}` is not an RFC 3339 time ({value:?}): {e}")))
}
