//! Data-quality reports of a site: `GET /api/v1/sites/{site}/gaps` (the gap
//! records edges sent: readings they had to drop) and
//! `GET /api/v1/sites/{site}/completeness` (per device and UTC day, or for
//! the whole range: samples expected from the configured poll intervals,
//! received, covered by gap records, and the completeness percentage).
//!
//! Expected samples of a device: for each of its poll groups (newest
//! catalog version), `points × ⌈window / interval⌉`, where the window is the
//! bucket clipped to `[first reading or gap of the device, now)`, so a device
//! is not counted before it was first seen nor in the future.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use time::OffsetDateTime;

use super::error::{bad_query, AppError};
use super::handlers::parse_time;
use super::inventory::site_id;
use super::page::{Page, PageQuery};
use super::state::ApiState;
use crate::time::{rfc3339, unix_ms};

const MS_PER_DAY: i64 = 86_400_000;
/// Longest completeness range in one request.
const MAX_DAYS: i64 = 400;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// Start (RFC 3339), inclusive.
    #[param(format = DateTime)]
    from: Option<String>,
    /// End (RFC 3339), exclusive.
    #[param(format = DateTime)]
    to: Option<String>,
    /// Completeness only: `day` (default, per UTC day) or `range` (one total).
    #[param(ignore)]
    by: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct GapRecord {
    /// `null`: the whole site (e.g. a corrupt edge buffer).
    device: Option<String>,
    #[schema(format = DateTime)]
    first_ts: String,
    #[schema(format = DateTime)]
    last_ts: String,
    /// Samples (values) dropped.
    samples: i64,
    /// disk_cap, buffer_corrupt or downsampled.
    reason: String,
    /// Sequence number of the batch that reported it.
    seq: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct GapsPage {
    site: String,
    gaps: Vec<GapRecord>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// Gap records the edges reported: samples dropped at the edge, with the reason.
///
/// Ordered by start time. `from` and `to` select gaps overlapping the range.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/gaps",
    operation_id = "list_gaps",
    tag = "reports",
    params(("site" = String, Path, description = "Site name, e.g. site-001"), RangeQuery, PageQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of gap records", body = GapsPage), super::error::NotFound, super::error::ApiErrors)
)]
pub async fn gaps(
    State(state): State<ApiState>,
    Path(site): Path<String>,
    query: Result<Query<RangeQuery>, QueryRejection>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<GapsPage>, AppError> {
    let Query(query) = query.map_err(bad_query)?;
    let page = Page::from_query(page)?;
    // Key: (first_ts in µs since the epoch, gap_id).
    let (after_ts, after_id) = match page.after_key(2)? {
        Some(k) => {
            let parse = |s: &str| {
                s.parse::<i64>()
                    .map_err(|_| AppError::BadRequest("`cursor` is not valid here".into()))
            };
            (Some(parse(&k[0])?), Some(parse(&k[1])?))
        }
        None => (None, None),
    };
    let from = query
        .from
        .as_deref()
        .map(|v| parse_time("from", v))
        .transpose()?
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let to = query
        .to
        .as_deref()
        .map(|v| parse_time("to", v))
        .transpose()?;
    let client = state.history().get().await?;
    let site_id = site_id(&client, &site).await?;
    let rows = client
        .query(
            "SELECT d.name, g.first_ts, g.last_ts, g.samples, g.reason, g.seq,
                    (extract(epoch FROM g.first_ts) * 1000000)::bigint, g.gap_id
             FROM gaps g LEFT JOIN devices d ON d.device_id = g.device_id
             WHERE g.site_id = $1 AND g.last_ts >= $2 AND ($3::timestamptz IS NULL OR g.first_ts < $3)
               AND ($4::bigint IS NULL
                    OR (g.first_ts, g.gap_id) > (timestamptz 'epoch' + $4::bigint * interval '1 microsecond', $5::bigint))
             ORDER BY g.first_ts, g.gap_id LIMIT $6",
            &[&site_id, &from, &to, &after_ts, &after_id, &page.fetch_limit()],
        )
        .await?;
    let gaps: Vec<(GapRecord, [i64; 2])> = rows
        .iter()
        .map(|r| {
            let gap = GapRecord {
                device: r.get(0),
                first_ts: rfc3339(r.get(1)),
                last_ts: rfc3339(r.get(2)),
                samples: r.get(3),
                reason: r.get(4),
                seq: r.get(5),
            };
            (gap, [r.get(6), r.get(7)])
        })
        .collect();
    let (gaps, next_cursor) = page.finish(gaps, |(_, key)| key.map(|k| k.to_string()).to_vec());
    let gaps: Vec<_> = gaps.into_iter().map(|(gap, _)| gap).collect();
    Ok(Json(GapsPage {
        site,
        gaps,
        next_cursor,
    }))
}

#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq)]
pub struct Tally {
    pub expected: i64,
    pub received: i64,
    /// Received with a value (quality good).
    pub good: i64,
    pub gap_samples: i64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.expected += other.expected;
        self.received += other.received;
        self.good += other.good;
        self.gap_samples += other.gap_samples;
    }

    fn json(&self) -> serde_json::Value {
        let pct = |n: i64| {
            (self.expected > 0).then(|| (100.0 * n as f64 / self.expected as f64).min(100.0))
        };
        serde_json::json!({
            "expected": self.expected,
            "received": self.received,
            "good": self.good,
            "gap_samples": self.gap_samples,
            "missing": (self.expected - self.received - self.gap_samples).max(0),
            "completeness_pct": pct(self.received),
            "good_pct": pct(self.good),
        })
    }
}

/// Expected samples in `[lo, hi)` for groups of `(points, interval_ms)`.
pub fn expected(groups: &[(i64, i64)], lo: i64, hi: i64) -> i64 {
    if hi <= lo {
        return 0;
    }
    groups
        .iter()
        .map(|(points, interval)| points * ((hi - lo + interval.max(&1) - 1) / interval.max(&1)))
        .sum()
}

/// Part of a gap's samples that falls in `[lo, hi)`, prorated by time.
pub fn gap_share(first: i64, last: i64, samples: i64, lo: i64, hi: i64) -> i64 {
    if last <= first {
        return if (lo..hi).contains(&first) {
            samples
        } else {
            0
        };
    }
    let overlap = (last.min(hi) - first.max(lo)).max(0);
    ((samples as i128 * overlap as i128) / (last - first) as i128) as i64
}

/// Stored samples against what the poll intervals promise, per device (and day).
///
/// Answers `{site, from, to, by, devices: [{device, expected, received, good,
/// gap_samples, missing, completeness_pct, good_pct, days?}]}`. `from` and
/// `to` are required; at most 400 days.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/completeness",
    operation_id = "completeness",
    tag = "reports",
    params(
        ("site" = String, Path, description = "Site name, e.g. site-001"),
        ("from" = String, Query, format = DateTime, description = "Start (RFC 3339), inclusive"),
        ("to" = String, Query, format = DateTime, description = "End (RFC 3339), exclusive; at most 400 days after `from`"),
        ("by" = Option<String>, Query, description = "`day` (default, per UTC day) or `range` (one total)"),
    ),
    security(("bearer" = [])),
    responses((status = 200, description = "Completeness per device", body = Object), super::error::NotFound, super::error::ApiErrors)
)]
pub async fn completeness(
    State(state): State<ApiState>,
    Path(site): Path<String>,
    query: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let Query(query) = query.map_err(bad_query)?;
    let missing = |f: &str| AppError::BadRequest(format!("missing parameter `{f}`"));
    let from = parse_time(
        "from",
        query.from.as_deref().ok_or_else(|| missing("from"))?,
    )?;
    let to = parse_time("to", query.to.as_deref().ok_or_else(|| missing("to"))?)?;
    // `from == to` is an empty range: a valid question with an empty answer.
    if from > to {
        return Err(AppError::BadRequest("`from` must not be after `to`".into()));
    }
    let by_day = match query
        .by
        .as_deref()
        .filter(|b| !b.is_empty())
        .unwrap_or("day")
    {
        "day" => true,
        "range" => false,
        other => {
            return Err(AppError::BadRequest(format!(
                "`by` must be day or range, got {other:?}"
            )))
        }
    };
    let (from_ms, to_ms) = (unix_ms(from), unix_ms(to));
    if (to_ms - from_ms) / MS_PER_DAY > MAX_DAYS {
        return Err(AppError::BadRequest(format!(
            "at most {MAX_DAYS} days per request"
        )));
    }
    let client = state.history().get().await?;
    let site_id = site_id(&client, &site).await?;

    let devices: Vec<(i32, String)> = client
        .query(
            "SELECT device_id, name FROM devices WHERE site_id = $1 ORDER BY name",
            &[&site_id],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut groups: HashMap<i32, Vec<(i64, i64)>> = HashMap::new();
    for r in client
        .query(
            "SELECT DISTINCT ON (device_id, group_name) device_id, interval_ms, cardinality(point_ids)
             FROM layouts WHERE site_id = $1 ORDER BY device_id, group_name, layout_id DESC",
            &[&site_id],
        )
        .await?
    {
        groups.entry(r.get(0)).or_default().push((i64::from(r.get::<_, i32>(2)), i64::from(r.get::<_, i32>(1))));
    }
    let mut first_seen: HashMap<i32, i64> = HashMap::new();
    for r in client
        .query(
            "SELECT device_id, min(first) FROM (
                 SELECT l.device_id, (SELECT min(ts) FROM frames f WHERE f.layout_id = l.layout_id) AS first
                 FROM layouts l WHERE l.site_id = $1
                 UNION ALL
                 SELECT device_id, min(first_ts) FROM gaps WHERE site_id = $1 GROUP BY device_id) t
             WHERE first IS NOT NULL GROUP BY device_id",
            &[&site_id],
        )
        .await?
    {
        first_seen.insert(r.get(0), unix_ms(r.get(1)));
    }
    // Received per device and bucket start.
    let bucket_of = |t: i64| {
        if by_day {
            t.div_euclid(MS_PER_DAY) * MS_PER_DAY
        } else {
            from_ms
        }
    };
    let mut received: HashMap<(i32, i64), Tally> = HashMap::new();
    for r in client
        .query(
            "SELECT l.device_id, date_bin('1 day', f.ts, timestamptz '2000-01-01 00:00:00+00'),
                    sum(cardinality(f.vals))::int8, sum(cardinality(array_remove(f.vals, NULL)))::int8
             FROM layouts l JOIN frames f ON f.layout_id = l.layout_id AND f.ts >= $2 AND f.ts < $3
             WHERE l.site_id = $1 GROUP BY 1, 2",
            &[&site_id, &from, &to],
        )
        .await?
    {
        let tally = received.entry((r.get(0), bucket_of(unix_ms(r.get(1))))).or_default();
        tally.received += r.get::<_, i64>(2);
        tally.good += r.get::<_, i64>(3);
    }
    let gap_rows: Vec<(i32, i64, i64, i64)> = client
        .query(
            "SELECT device_id, first_ts, last_ts, samples FROM gaps
             WHERE site_id = $1 AND last_ts >= $2 AND first_ts < $3",
            &[&site_id, &from, &to],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), unix_ms(r.get(1)), unix_ms(r.get(2)), r.get(3)))
        .collect();

    let now_ms = crate::time::unix_ms_now();
    let buckets: Vec<(i64, i64)> = if by_day {
        let mut out = Vec::new();
        let mut day = from_ms.div_euclid(MS_PER_DAY) * MS_PER_DAY;
        while day < to_ms {
            out.push((day.max(from_ms), (day + MS_PER_DAY).min(to_ms)));
            day += MS_PER_DAY;
        }
        out
    } else {
        vec![(from_ms, to_ms)]
    };
    let mut report = Vec::with_capacity(devices.len());
    for (device_id, name) in &devices {
        let device_groups = groups.get(device_id).map(Vec::as_slice).unwrap_or_default();
        let start = first_seen.get(device_id).copied().unwrap_or(i64::MAX);
        let mut total = Tally::default();
        let mut days = Vec::new();
        for &(lo, hi) in &buckets {
            let mut tally = received
                .get(&(*device_id, bucket_of(lo)))
                .copied()
                .unwrap_or_default();
            tally.expected = expected(device_groups, lo.max(start), hi.min(now_ms));
            tally.gap_samples = gap_rows
                .iter()
                .filter(|g| g.0 == *device_id)
                .map(|g| gap_share(g.1, g.2, g.3, lo, hi))
                .sum();
            total.add(&tally);
            if by_day {
                let mut day = tally.json();
                day["from"] = rfc3339(crate::time::timestamp(lo)).into();
                day["to"] = rfc3339(crate::time::timestamp(hi)).into();
                day["day"] = rfc3339(crate::time::timestamp(
                    lo.div_euclid(MS_PER_DAY) * MS_PER_DAY,
                ))[..10]
                    .into();
                days.push(day);
            }
        }
        let mut entry = total.json();
        entry["device"] = name.clone().into();
        if by_day {
            entry["days"] = days.into();
        }
        report.push(entry);
    }
    Ok(Json(serde_json::json!({
        "site": site, "from": rfc3339(from), "to": rfc3339(to), "by": if by_day { "day" } else { "range" }, "devices": report,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_of_one_second_polls_expects_86400_per_point() {
        assert_eq!(expected(&[(3, 1000)], 0, MS_PER_DAY), 3 * 86_400);
        assert_eq!(
            expected(&[(3, 1000), (2, 10_000)], 0, 10_001),
            3 * 11 + 2 * 2
        );
        assert_eq!(expected(&[(3, 1000)], 5, 5), 0);
    }

    #[test]
    fn a_gap_over_midnight_is_split_by_time() {
        let noon = MS_PER_DAY / 2;
        assert_eq!(gap_share(noon, noon + MS_PER_DAY, 100, 0, MS_PER_DAY), 50);
        assert_eq!(
            gap_share(noon, noon + MS_PER_DAY, 100, MS_PER_DAY, 2 * MS_PER_DAY),
            50
        );
        assert_eq!(gap_share(noon, noon, 7, 0, MS_PER_DAY), 7);
    }
}
