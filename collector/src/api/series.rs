//! `GET /api/v1/series`: samples of one or more points in `[from, to)`, at
//! the resolution that fits `max_points`: raw samples when the points' poll
//! interval gives at most that many, else 1-minute rollups if there are at
//! most that many minutes, else 1-hour rollups (`resolution=raw|1m|1h`
//! forces one). The answer says which it used. One point keeps the original
//! flat shape (`point`, `unit`, `count`, `samples`, ...); several points
//! (`point` repeated or comma-separated) come as a `series` array.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use super::error::{bad_query, AppError};
use super::handlers::parse_time;
use super::series_render::{render, Envelope, RenderedSeries, SeriesData, SeriesFormat};
use super::state::ApiState;
use crate::series;
use crate::series::Resolution;
use crate::time::unix_ms;

/// Most samples or buckets one series returns.
const MAX_POINTS: i64 = 100_000;
/// The default `max_points`: the old default `limit`, so every request that
/// used to come back raw still does.
const DEFAULT_MAX_POINTS: i64 = 10_000;
/// Most points in one request.
const MAX_SERIES: usize = 50;

struct Request {
    points: Vec<String>,
    from: OffsetDateTime,
    to: OffsetDateTime,
    max_points: i64,
    limit: Option<i64>,
    resolution: Option<Resolution>,
    format: Option<SeriesFormat>,
}

fn parse(pairs: Vec<(String, String)>) -> Result<Request, AppError> {
    let mut points = Vec::new();
    let (mut from, mut to, mut max_points, mut limit, mut resolution, mut format) =
        (None, None, None, None, None, None);
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
            "format" => {
                format = Some(SeriesFormat::parse(&value).ok_or_else(|| {
                    AppError::BadRequest(format!(
                        "`format` must be json, columns or csv, got {value:?}"
                    ))
                })?)
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
        format,
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
/// answers `{point, unit, count, truncated, resolution, from, to, samples:
/// [{ts, value, quality?}]}`; several answer `{resolution, from, to, series:
/// [...]}` with that shape each. `format=columns` (or `Accept:
/// application/vnd.bess.series-columns+json`) gives one array per field
/// instead of `samples` (`ts_ms`, `value`, and `quality` where some sample
/// is not good; rollups `min`, `max`, `avg`, `last`, `count`);
/// `format=csv` (or `Accept: text/csv`) gives CSV.
#[utoipa::path(
    get,
    path = "/api/v1/series",
    operation_id = "series",
    tag = "fleet",
    params(
        ("point" = String, Query, pattern = "^[^/]+/[^/]+/.+$", description = "SITE/DEVICE/POINT; repeat or comma-separate for several (up to 50)"),
        ("from" = String, Query, format = DateTime, description = "Start (RFC 3339), inclusive"),
        ("to" = String, Query, format = DateTime, description = "End (RFC 3339), exclusive"),
        ("max_points" = Option<u32>, Query, minimum = 1, maximum = 100000, description = "Most samples or buckets per series (default 10000)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100000, description = "Raw samples per series"),
        ("resolution" = Option<String>, Query, description = "auto (default), raw, 1m or 1h"),
        ("format" = Option<String>, Query, description = "json (default: one object per sample), columns (one array per field, epoch-millisecond `ts_ms`) or csv; overrides `Accept`"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The series", content(
            (Object = "application/json"),
            (String = "text/csv"),
        )),
        super::error::NotFound,
        super::error::ApiErrors,
    )
)]
pub async fn series(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(pairs) = query.map_err(bad_query)?;
    let request = parse(pairs)?;
    let format = request
        .format
        .or_else(|| {
            headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .and_then(SeriesFormat::from_accept)
        })
        .unwrap_or(SeriesFormat::Rows);
    let client = state.history().get().await?;

    let mut names = Vec::with_capacity(request.points.len());
    for name in &request.points {
        let mut parts = name.splitn(3, '/');
        let (Some(site), Some(device), Some(point)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(AppError::BadRequest(
                "`point` must be site/device/point, e.g. site-001/bms-1/soc".into(),
            ));
        };
        names.push((site, device, point));
    }
    let resolved = resolve(&client, &names).await?;
    let point_ids: Vec<i32> = resolved
        .iter()
        .zip(&request.points)
        .map(|(point, name)| {
            point
                .as_ref()
                .map(|p| p.point_id)
                .ok_or_else(|| AppError::NotFound(format!("no point {name:?}")))
        })
        .collect::<Result<_, _>>()?;
    let resolved: Vec<ResolvedPoint> = resolved.into_iter().flatten().collect();

    let range_ms = ((request.to - request.from).whole_milliseconds()) as i64;
    let fastest = resolved.iter().map(|r| r.interval_ms).min().unwrap_or(1000);
    let resolution = request
        .resolution
        .unwrap_or_else(|| choose_resolution(range_ms, fastest, request.max_points));
    let limit = match resolution {
        Resolution::Raw => request.limit.unwrap_or(request.max_points),
        _ => request.max_points,
    };

    // One more than shown per series tells whether there were more.
    let data: Vec<SeriesData> = match resolution {
        Resolution::Raw => series::raw(&*client, &point_ids, request.from, request.to, limit + 1)
            .await?
            .into_iter()
            .map(SeriesData::Raw)
            .collect(),
        rollup => series::rollups(
            &*client,
            &point_ids,
            rollup,
            request.from,
            request.to,
            limit + 1,
        )
        .await?
        .into_iter()
        .map(SeriesData::Rollup)
        .collect(),
    };
    drop(client);
    let limit = limit as usize;
    let rendered: Vec<RenderedSeries<'_>> = request
        .points
        .iter()
        .zip(&resolved)
        .zip(data)
        .map(|((name, point), mut data)| {
            let truncated = data.len() > limit;
            if truncated {
                match &mut data {
                    SeriesData::Raw(raw) => raw.truncate(limit),
                    SeriesData::Rollup(rollup) => rollup.truncate(limit),
                }
            }
            RenderedSeries {
                point: name,
                unit: &point.unit,
                truncated,
                data,
            }
        })
        .collect();
    let envelope = Envelope {
        resolution: resolution.as_str(),
        from_ms: unix_ms(request.from),
        to_ms: unix_ms(request.to),
    };
    let body = render(format, &envelope, &rendered);
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

/// A requested point as stored.
struct ResolvedPoint {
    point_id: i32,
    unit: String,
    /// The fastest poll interval of the groups that hold it.
    interval_ms: i64,
}

/// Every requested point in one query, in request order (`None`: no such
/// point).
async fn resolve(
    client: &deadpool_postgres::Client,
    names: &[(&str, &str, &str)],
) -> Result<Vec<Option<ResolvedPoint>>, AppError> {
    let sites: Vec<&str> = names.iter().map(|n| n.0).collect();
    let devices: Vec<&str> = names.iter().map(|n| n.1).collect();
    let points: Vec<&str> = names.iter().map(|n| n.2).collect();
    let rows = client
        .query(
            "SELECT q.ord::int4, p.point_id, p.unit,
                    (SELECT min(interval_ms) FROM layouts WHERE point_ids @> ARRAY[p.point_id])
             FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS q(site, device, point, ord)
             JOIN sites s ON s.name = q.site
             JOIN devices d ON d.site_id = s.site_id AND d.name = q.device
             JOIN points p ON p.device_id = d.device_id AND p.name = q.point",
            &[&sites, &devices, &points],
        )
        .await?;
    let mut out: Vec<Option<ResolvedPoint>> = names.iter().map(|_| None).collect();
    for row in rows {
        let ord: i32 = row.get(0);
        let interval: Option<i32> = row.get(3);
        out[ord as usize - 1] = Some(ResolvedPoint {
            point_id: row.get(1),
            unit: row.get(2),
            interval_ms: i64::from(interval.unwrap_or(1000)),
        });
    }
    Ok(out)
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
