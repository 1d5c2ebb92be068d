//! `GET /api/v1/series`: samples of one or more points in `[from, to)`, at
//! the resolution that fits `max_points`: raw samples when the points' poll
//! interval gives at most that many, else 1-minute rollups if there are at
//! most that many minutes, else 1-hour rollups (`resolution=raw|1m|1h`
//! forces one). The answer says which it used. One point keeps the original
//! flat shape (`point`, `unit`, `count`, `samples`, ...); several points
//! (`point` repeated or comma-separated) come as a `series` array.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Serialize;
use time::OffsetDateTime;

use bess_protocol::MissingReason;

use super::error::{bad_query, AppError};
use super::handlers::parse_time;
use super::state::ApiState;
use crate::storage::{rollup_series, Resolution};
use crate::time::rfc3339;

/// Most samples or buckets one series returns.
const MAX_POINTS: i64 = 100_000;
/// The default `max_points`: the old default `limit`, so every request that
/// used to come back raw still does.
const DEFAULT_MAX_POINTS: i64 = 10_000;
/// Most points in one request.
const MAX_SERIES: usize = 50;

#[derive(Serialize)]
struct RawSample {
    ts: String,
    value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quality: Option<&'static str>,
}

#[derive(Serialize)]
struct RollupSample {
    ts: String,
    /// The average, so a chart can plot `value` at any resolution.
    value: f64,
    min: f64,
    max: f64,
    avg: f64,
    last: f64,
    count: i64,
}

struct Request {
    points: Vec<String>,
    from: OffsetDateTime,
    to: OffsetDateTime,
    max_points: i64,
    limit: Option<i64>,
    resolution: Option<Resolution>,
}

fn parse(pairs: Vec<(String, String)>) -> Result<Request, AppError> {
    let mut points = Vec::new();
    let (mut from, mut to, mut max_points, mut limit, mut resolution) =
        (None, None, None, None, None);
    let number = |field: &str, v: &str| -> Result<i64, AppError> {
        let n: i64 = v
            .parse()
            .map_err(|_| AppError::BadRequest(format!("`{field}` must be a number, got {v:?}")))?;
        if !(1..=MAX_POINTS).contains(&n) {
            return Err(AppError::BadRequest(format!(
                "`{field}` must be between 1 and {MAX_POINTS}"
            )));
        }
        Ok(n)
    };
    for (key, value) in pairs {
        match key.as_str() {
            "point" => points.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned),
            ),
            "from" => from = Some(parse_time("from", &value)?),
            "to" => to = Some(parse_time("to", &value)?),
            "max_points" => max_points = Some(number("max_points", &value)?),
            "limit" => limit = Some(number("limit", &value)?),
            "resolution" => {
                resolution = match value.as_str() {
                    "auto" => None,
                    other => Some(Resolution::parse(other).ok_or_else(|| {
                        AppError::BadRequest(format!(
                            "`resolution` must be auto, raw, 1m or 1h, got {other:?}"
                        ))
                    })?),
                }
            }
            _ => {} // ignored, as before (e.g. cache busters)
        }
    }
    let missing = |f: &str| AppError::BadRequest(format!("missing parameter `{f}`"));
    let (from, to) = (
        from.ok_or_else(|| missing("from"))?,
        to.ok_or_else(|| missing("to"))?,
    );
    if points.is_empty() {
        return Err(missing("point"));
    }
    if points.len() > MAX_SERIES {
        return Err(AppError::BadRequest(format!(
            "at most {MAX_SERIES} points per request"
        )));
    }
    // `from == to` is an empty range: a valid question with an empty answer.
    if from > to {
        return Err(AppError::BadRequest("`from` must not be after `to`".into()));
    }
    Ok(Request {
        points,
        from,
        to,
        max_points: max_points.unwrap_or(DEFAULT_MAX_POINTS),
        limit,
        resolution,
    })
}

/// The coarsest resolution needed to stay within `max_points`, given the
/// fastest poll interval among the points.
pub fn choose_resolution(range_ms: i64, interval_ms: i64, max_points: i64) -> Resolution {
    if range_ms / interval_ms.max(1) <= max_points {
        Resolution::Raw
    } else if range_ms / 60_000 <= max_points {
        Resolution::Minute
    } else {
        Resolution::Hour
    }
}

/// Samples of one or more points in `[from, to)`.
///
/// Raw, or rolled up (1-minute or 1-hour buckets with min, max, avg, last
/// and count) so that each series stays within `max_points`. One point
/// answers `{point, unit, count, truncated, resolution, samples: [{ts, value,
/// quality?}]}`; several answer `{series: [...]}` with that shape each.
#[utoipa::path(
    get,
    path = "/api/v1/series",
    operation_id = "series",
    tag = "fleet",
    params(
        ("point" = String, Query, pattern = "^[^/]+/[^/]+/.+$", description = "SITE/DEVICE/POINT; repeat or comma-separate for several (up to 20)"),
        ("from" = String, Query, format = DateTime, description = "Start (RFC 3339), inclusive"),
        ("to" = String, Query, format = DateTime, description = "End (RFC 3339), exclusive"),
        ("max_points" = Option<u32>, Query, minimum = 1, maximum = 100000, description = "Most samples or buckets per series (default 10000)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100000, description = "Raw samples per series"),
        ("resolution" = Option<String>, Query, description = "auto (default), raw, 1m or 1h"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The series", body = Object),
        super::error::NotFound,
        super::error::ApiErrors,
    )
)]
pub async fn series(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let Query(pairs) = query.map_err(bad_query)?;
    let request = parse(pairs)?;
    let client = state.pool.get().await?;

    let mut resolved = Vec::with_capacity(request.points.len());
    for name in &request.points {
        let mut parts = name.splitn(3, '/');
        let (Some(site), Some(device), Some(point)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(AppError::BadRequest(
                "`point` must be site/device/point, e.g. site-001/bms-1/soc".into(),
            ));
        };
        let row = client
            .query_opt(
                "SELECT p.point_id, p.unit,
                        (SELECT min(interval_ms) FROM layouts WHERE point_ids @> ARRAY[p.point_id])
                 FROM points p
                 JOIN devices d ON d.device_id = p.device_id
                 JOIN sites s ON s.site_id = d.site_id
                 WHERE s.name = $1 AND d.name = $2 AND p.name = $3",
                &[&site, &device, &point],
            )
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no point {name:?}")))?;
        let interval: Option<i32> = row.get(2);
        resolved.push((
            name.clone(),
            row.get::<_, i32>(0),
            row.get::<_, String>(1),
            i64::from(interval.unwrap_or(1000)),
        ));
    }
    let range_ms = ((request.to - request.from).whole_milliseconds()) as i64;
    let fastest = resolved.iter().map(|r| r.3).min().unwrap_or(1000);
    let resolution = request
        .resolution
        .unwrap_or_else(|| choose_resolution(range_ms, fastest, request.max_points));
    let limit = match resolution {
        Resolution::Raw => request.limit.unwrap_or(request.max_points),
        _ => request.max_points,
    };

    let mut series = Vec::with_capacity(resolved.len());
    for (name, point_id, unit, _) in resolved {
        let (count, truncated, samples) = match resolution {
            Resolution::Raw => {
                let rows = client
                    .query(
                        "SELECT f.ts, f.vals[l.slot], f.status[l.slot]
                         FROM (SELECT layout_id, array_position(point_ids, $1) AS slot FROM layouts WHERE point_ids @> ARRAY[$1]) l
                         JOIN frames f ON f.layout_id = l.layout_id AND f.ts >= $2 AND f.ts < $3
                         ORDER BY f.ts
                         LIMIT $4",
                        &[&point_id, &request.from, &request.to, &(limit + 1)],
                    )
                    .await?;
                let samples: Vec<RawSample> = rows
                    .iter()
                    .take(limit as usize)
                    .map(|r| {
                        let status: Option<i16> = r.get(2);
                        RawSample {
                            ts: rfc3339(r.get(0)),
                            value: r.get(1),
                            quality: status
                                .filter(|s| *s != 0)
                                .and_then(|s| MissingReason::from_code(s as u16))
                                .map(|reason| reason.quality().as_str()),
                        }
                    })
                    .collect();
                (
                    samples.len(),
                    rows.len() as i64 > limit,
                    serde_json::to_value(samples).map_err(AppError::internal)?,
                )
            }
            rollup => {
                let rows = rollup_series(
                    &**client,
                    point_id,
                    rollup,
                    request.from,
                    request.to,
                    limit + 1,
                )
                .await?;
                let samples: Vec<RollupSample> = rows
                    .iter()
                    .take(limit as usize)
                    .map(|r| RollupSample {
                        ts: rfc3339(r.bucket),
                        value: r.avg,
                        min: r.min,
                        max: r.max,
                        avg: r.avg,
                        last: r.last,
                        count: r.count,
                    })
                    .collect();
                (
                    samples.len(),
                    rows.len() as i64 > limit,
                    serde_json::to_value(samples).map_err(AppError::internal)?,
                )
            }
        };
        series.push(serde_json::json!({
            "point": name, "unit": unit, "count": count, "truncated": truncated, "samples": samples,
        }));
    }

    let (from, to) = (rfc3339(request.from), rfc3339(request.to));
    if series.len() == 1 {
        let mut one = series.pop().expect("one");
        one["resolution"] = resolution.as_str().into();
        one["from"] = from.into();
        one["to"] = to.into();
        return Ok(Json(one));
    }
    Ok(Json(
        serde_json::json!({ "resolution": resolution.as_str(), "from": from, "to": to, "series": series }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_grows_coarser_as_the_range_grows() {
        let hour = 3_600_000;
        assert_eq!(choose_resolution(hour, 1000, 10_000), Resolution::Raw);
        assert_eq!(
            choose_resolution(24 * hour, 1000, 10_000),
            Resolution::Minute
        );
        assert_eq!(choose_resolution(24 * hour, 1000, 1000), Resolution::Hour);
        assert_eq!(
            choose_resolution(24 * hour, 10_000, 10_000),
            Resolution::Raw
        );
    }

    #[test]
    fn points_may_be_repeated_or_comma_separated() {
        let pairs = vec![
            ("point".to_owned(), "s/d/a,s/d/b".to_owned()),
            ("point".to_owned(), "s/d/c".to_owned()),
            ("from".to_owned(), "2026-01-01T00:00:00Z".to_owned()),
            ("to".to_owned(), "2026-01-02T00:00:00Z".to_owned()),
        ];
        let request = parse(pairs).unwrap_or_else(|_| panic!("parses"));
        assert_eq!(request.points, ["s/d/a", "s/d/b", "s/d/c"]);
        assert_eq!(request.max_points, DEFAULT_MAX_POINTS);
    }
}
