//! Reading stored series back: raw samples and rollups of points, column by
//! column, for the API to render.
//!
//! A point's samples live in the frames of every layout (poll group of one
//! catalog version) that contains it, at that layout's slot. Reads follow the
//! storage shape instead of fighting it:
//!
//! - **One index range scan per layout, in index order, as one row.** Each
//!   layout is read with `layout_id = $1 AND ts >= $2 AND ts < $3 ORDER BY
//!   ts`, which the `(layout_id, ts)` index answers without a sort, and
//!   aggregated into arrays (`array_agg`), so a day crosses the wire as a
//!   few binary arrays rather than 86 400 rows; the result is merged by
//!   timestamp here (almost always one layout: a catalog change is rare).
//!   Joining layouts to frames and sorting the union in SQL made PostgreSQL
//!   sort a whole day on disk (`work_mem`) before the first row came back.
//! - **Every requested point of a layout in the same scan.** Points of one
//!   poll group share their frames, so a request for several of them reads
//!   each frame row once and picks their slots (`vals[$n]`).
//! - **Every layout's query at once.** The queries are sent together on one
//!   connection (tokio-postgres pipelines them), so several layouts or
//!   several groups cost about one round trip.
//! - **Rollups per (layout, slot) by their primary key**, merged here for a
//!   bucket that two catalog versions share (min of minima, max of maxima,
//!   sums and counts added, the last value by its timestamp) — the same
//!   answer as grouping in SQL, without an ordered aggregate per bucket.
//!
//! Columns, not rows: a day of one point at 1 s is 86 400 timestamps and
//! values in two vectors, which every output format renders from directly.

use std::collections::BTreeMap;

use futures::future::try_join_all;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row, Statement};

use crate::time::{timestamp, unix_ms};

/// A connection the series are read over. A pooled connection keeps its
/// prepared statements, so a query is planned once per connection rather
/// than once per request (TimescaleDB plans a continuous aggregate's union
/// with the raw chunks in milliseconds); a plain client prepares each time.
pub trait SeriesConnection: Sync {
    /// The statement for `sql`.
    fn statement(
        &self,
        sql: &str,
    ) -> impl std::future::Future<Output = Result<Statement, Error>> + Send;
    /// The connection that runs it.
    fn client(&self) -> &tokio_postgres::Client;

    /// Run `sql` with `params`.
    fn rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl std::future::Future<Output = Result<Vec<Row>, Error>> + Send {
        async move {
            let statement = self.statement(sql).await?;
            self.client().query(&statement, params).await
        }
    }
}

impl SeriesConnection for tokio_postgres::Client {
    async fn statement(&self, sql: &str) -> Result<Statement, Error> {
        self.prepare(sql).await
    }

    fn client(&self) -> &tokio_postgres::Client {
        self
    }
}

impl SeriesConnection for deadpool_postgres::ClientWrapper {
    async fn statement(&self, sql: &str) -> Result<Statement, Error> {
        self.prepare_cached(sql).await
    }

    fn client(&self) -> &tokio_postgres::Client {
        self
    }
}

/// Where one point's samples are stored: a layout and its (1-based) slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placement {
    layout_id: i32,
    slot: i32,
}

/// Raw samples of one point, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawColumns {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: Vec<i64>,
    /// The stored value; `None` when the reading was missing.
    pub value: Vec<Option<f64>>,
    /// The missing-reason code of a missing value (`MissingReason`), `None`
    /// or 0 when the value is good.
    pub status: Vec<Option<i16>>,
}

impl RawColumns {
    /// Reorder by timestamp (stable).
    fn sort_by_time(&mut self) {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by_key(|&i| self.ts_ms[i]);
        self.ts_ms = order.iter().map(|&i| self.ts_ms[i]).collect();
        self.value = order.iter().map(|&i| self.value[i]).collect();
        self.status = order.iter().map(|&i| self.status[i]).collect();
    }

    pub fn len(&self) -> usize {
        self.ts_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts_ms.is_empty()
    }

    pub fn truncate(&mut self, len: usize) {
        self.ts_ms.truncate(len);
        self.value.truncate(len);
        self.status.truncate(len);
    }
}

/// Rollup buckets of one point, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RollupColumns {
    /// Bucket start, milliseconds since the Unix epoch.
    pub bucket_ms: Vec<i64>,
    pub min: Vec<f64>,
    pub max: Vec<f64>,
    /// `sum / count` of the values present in the bucket.
    pub avg: Vec<f64>,
    /// The bucket's last present value.
    pub last: Vec<f64>,
    /// How many values were present in the bucket.
    pub count: Vec<i64>,
}

impl RollupColumns {
    pub fn len(&self) -> usize {
        self.bucket_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bucket_ms.is_empty()
    }

    pub fn truncate(&mut self, len: usize) {
        self.bucket_ms.truncate(len);
        self.min.truncate(len);
        self.max.truncate(len);
        self.avg.truncate(len);
        self.last.truncate(len);
        self.count.truncate(len);
    }
}

/// The layouts and slots of each point, in the order of `point_ids`: one
/// query for all of them.
async fn placements(
    client: &impl SeriesConnection,
    point_ids: &[i32],
) -> Result<Vec<Vec<Placement>>, tokio_postgres::Error> {
    let rows = client
        .rows(
            "SELECT q.ord::int4, l.layout_id, array_position(l.point_ids, q.point_id)
             FROM unnest($1::int4[]) WITH ORDINALITY AS q(point_id, ord)
             JOIN layouts l ON l.point_ids @> ARRAY[q.point_id]
             ORDER BY q.ord, l.layout_id",
            &[&point_ids],
        )
        .await?;
    let mut out = vec![Vec::new(); point_ids.len()];
    for row in rows {
        let ord: i32 = row.get(0);
        let slot: Option<i32> = row.get(2);
        if let (Some(placements), Some(slot)) = (out.get_mut(ord as usize - 1), slot) {
            placements.push(Placement {
                layout_id: row.get(1),
                slot,
            });
        }
    }
    Ok(out)
}

/// The points (by index into the request) each layout holds, with their slot.
fn by_layout(placements: &[Vec<Placement>]) -> BTreeMap<i32, Vec<(usize, i32)>> {
    let mut layouts: BTreeMap<i32, Vec<(usize, i32)>> = BTreeMap::new();
    for (point, places) in placements.iter().enumerate() {
        for place in places {
            layouts
                .entry(place.layout_id)
                .or_default()
                .push((point, place.slot));
        }
    }
    layouts
}

/// Raw samples of each point in `[from, to)`, oldest first, at most `limit`
/// per point (ask for one more than you show to learn that there were more).
pub async fn raw(
    client: &impl SeriesConnection,
    point_ids: &[i32],
    from: OffsetDateTime,
    to: OffsetDateTime,
    limit: i64,
) -> Result<Vec<RawColumns>, tokio_postgres::Error> {
    let placements = placements(client, point_ids).await?;
    let layouts = by_layout(&placements);
    let scans = layouts.iter().map(|(&layout_id, points)| async move {
        // One row of arrays: ts, then values and statuses of each requested
        // slot, aggregated from the index-ordered scan. A day is 86 400
        // frames; as one row it crosses the wire protocol as a few binary
        // arrays instead of 86 400 data rows, each parsed on its own.
        let picks: Vec<String> = (0..points.len())
            .map(|i| {
                format!(
                    ", array_agg(f.vals[${n}]), array_agg(f.status[${n}])",
                    n = i + 5
                )
            })
            .collect();
        let sql = format!(
            "SELECT array_agg(f.ts){} FROM (
                 SELECT ts, vals, status FROM frames
                 WHERE layout_id = $1 AND ts >= $2 AND ts < $3
                 ORDER BY ts LIMIT $4) f",
            picks.concat()
        );
        let slots: Vec<i32> = points.iter().map(|&(_, slot)| slot).collect();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&layout_id, &from, &to, &limit];
        params.extend(slots.iter().map(|s| s as &(dyn ToSql + Sync)));
        let rows = client.rows(&sql, &params).await?;
        let row = rows.first().expect("an aggregate returns one row");
        let ts: Vec<OffsetDateTime> = row.get::<_, Option<_>>(0).unwrap_or_default();
        let ts_ms: Vec<i64> = ts.into_iter().map(unix_ms).collect();
        let mut columns: Vec<RawColumns> = (0..points.len())
            .map(|i| RawColumns {
                ts_ms: ts_ms.clone(),
                value: row.get::<_, Option<_>>(1 + 2 * i).unwrap_or_default(),
                status: row.get::<_, Option<_>>(2 + 2 * i).unwrap_or_default(),
            })
            .collect();
        // The aggregate takes the rows in the subquery's order, as
        // PostgreSQL does for a plain scan; should a plan ever differ, put
        // them back in order here rather than answer out of order.
        if !ts_ms.is_sorted() {
            for column in &mut columns {
                column.sort_by_time();
            }
        }
        Ok::<_, tokio_postgres::Error>(
            points
                .iter()
                .map(|&(point, _)| point)
                .zip(columns)
                .collect::<Vec<_>>(),
        )
    });
    let mut parts: Vec<Vec<RawColumns>> = vec![Vec::new(); point_ids.len()];
    for scan in try_join_all(scans).await? {
        for (point, columns) in scan {
            parts[point].push(columns);
        }
    }
    Ok(parts
        .into_iter()
        .map(|parts| merge_raw(parts, limit.max(0) as usize))
        .collect())
}

/// One point's samples from several layouts, merged by timestamp (stable:
/// equal timestamps keep layout order) and cut at `limit`.
fn merge_raw(mut parts: Vec<RawColumns>, limit: usize) -> RawColumns {
    if parts.len() <= 1 {
        let mut one = parts.pop().unwrap_or_default();
        one.truncate(limit);
        return one;
    }
    let mut merged = RawColumns::default();
    let mut next = vec![0usize; parts.len()];
    while merged.len() < limit {
        let Some(part) = (0..parts.len())
            .filter(|&p| next[p] < parts[p].len())
            .min_by_key(|&p| parts[p].ts_ms[next[p]])
        else {
            break;
        };
        let i = next[part];
        merged.ts_ms.push(parts[part].ts_ms[i]);
        merged.value.push(parts[part].value[i]);
        merged.status.push(parts[part].status[i]);
        next[part] += 1;
    }
    merged
}

/// One bucket of one (layout, slot) as stored.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    bucket_ms: i64,
    min: f64,
    max: f64,
    sum: f64,
    count: i64,
    last: f64,
    last_ts_ms: i64,
}

impl Bucket {
    /// Both buckets' values together (same bucket, another catalog version).
    fn absorb(&mut self, other: &Bucket) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.count += other.count;
        if other.last_ts_ms > self.last_ts_ms {
            self.last = other.last;
            self.last_ts_ms = other.last_ts_ms;
        }
    }
}

/// 1-minute or 1-hour rollups of each point in `[from, to)` (bucket start),
/// oldest first, at most `limit` buckets per point. `Resolution::Raw` reads
/// the 1-minute rollups.
pub async fn rollups(
    client: &impl SeriesConnection,
    point_ids: &[i32],
    resolution: Resolution,
    from: OffsetDateTime,
    to: OffsetDateTime,
    limit: i64,
) -> Result<Vec<RollupColumns>, tokio_postgres::Error> {
    let placements = placements(client, point_ids).await?;
    let (layouts, slots): (Vec<i32>, Vec<i32>) = placements
        .iter()
        .flatten()
        .map(|p| (p.layout_id, p.slot))
        .unzip();
    let table = resolution.table().unwrap_or("rollup_1m");
    // One query for every (layout, slot): each read by its key in bucket order.
    let sql = format!(
        "SELECT s.layout_id, s.slot, r.bucket, r.min, r.max, r.sum, r.count, r.last, r.last_ts
         FROM unnest($1::int4[], $2::int4[]) AS s(layout_id, slot)
         CROSS JOIN LATERAL (
             SELECT bucket, min, max, sum, count, last, last_ts FROM {table}
             WHERE layout_id = s.layout_id AND slot = s.slot AND bucket >= $3 AND bucket < $4
             ORDER BY bucket LIMIT $5
         ) r"
    );
    let rows = client
        .rows(&sql, &[&layouts, &slots, &from, &to, &limit])
        .await?;
    let mut stored: BTreeMap<(i32, i32), Vec<Bucket>> = BTreeMap::new();
    for row in &rows {
        stored
            .entry((row.get(0), row.get(1)))
            .or_default()
            .push(Bucket {
                bucket_ms: unix_ms(row.get(2)),
                min: row.get(3),
                max: row.get(4),
                sum: row.get(5),
                count: row.get(6),
                last: row.get(7),
                last_ts_ms: unix_ms(row.get(8)),
            });
    }
    Ok(placements
        .iter()
        .map(|places| {
            let parts: Vec<&[Bucket]> = places
                .iter()
                .filter_map(|p| stored.get(&(p.layout_id, p.slot)).map(Vec::as_slice))
                .collect();
            merge_rollups(&parts, limit.max(0) as usize)
        })
        .collect())
}

/// One point's buckets from several layouts: a bucket present in more than
/// one is combined; cut at `limit` buckets.
fn merge_rollups(parts: &[&[Bucket]], limit: usize) -> RollupColumns {
    let buckets: Vec<Bucket> = if let [one] = parts {
        one.to_vec()
    } else {
        let mut merged: BTreeMap<i64, Bucket> = BTreeMap::new();
        for bucket in parts.iter().flat_map(|p| p.iter()) {
            merged
                .entry(bucket.bucket_ms)
                .and_modify(|b| b.absorb(bucket))
                .or_insert(*bucket);
        }
        merged.into_values().collect()
    };
    let mut out = RollupColumns::default();
    for b in buckets.iter().take(limit) {
        out.bucket_ms.push(b.bucket_ms);
        out.min.push(b.min);
        out.max.push(b.max);
        out.avg.push(b.sum / b.count as f64);
        out.last.push(b.last);
        out.count.push(b.count);
    }
    out
}

/// Resolution of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Raw,
    Minute,
    Hour,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Raw => "raw",
            Resolution::Minute => "1m",
            Resolution::Hour => "1h",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "raw" => Some(Resolution::Raw),
            "1m" => Some(Resolution::Minute),
            "1h" => Some(Resolution::Hour),
            _ => None,
        }
    }

    /// Bucket width in milliseconds (`None` for raw).
    pub fn bucket_ms(self) -> Option<i64> {
        match self {
            Resolution::Raw => None,
            Resolution::Minute => Some(60_000),
            Resolution::Hour => Some(3_600_000),
        }
    }

    /// The rollup relation of this resolution (`None` for raw).
    pub fn table(self) -> Option<&'static str> {
        match self {
            Resolution::Raw => None,
            Resolution::Minute => Some("rollup_1m"),
            Resolution::Hour => Some("rollup_1h"),
        }
    }
}

/// One rollup bucket of one point, merged over the catalog versions the
/// point appears in.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupRow {
    pub bucket: OffsetDateTime,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    pub last: f64,
    pub count: i64,
}

/// Rollup buckets of a point starting in `[from, to)`, oldest first, at most
/// `limit`. `resolution` must not be `Raw`.
pub async fn rollup_series(
    client: &impl SeriesConnection,
    point_id: i32,
    resolution: Resolution,
    from: OffsetDateTime,
    to: OffsetDateTime,
    limit: i64,
) -> Result<Vec<RollupRow>, tokio_postgres::Error> {
    let mut series = rollups(client, &[point_id], resolution, from, to, limit).await?;
    let columns = series.pop().unwrap_or_default();
    Ok((0..columns.len())
        .map(|i| RollupRow {
            bucket: timestamp(columns.bucket_ms[i]),
            min: columns.min[i],
            max: columns.max[i],
            avg: columns.avg[i],
            last: columns.last[i],
            count: columns.count[i],
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(ts: &[i64]) -> RawColumns {
        RawColumns {
            ts_ms: ts.to_vec(),
            value: ts.iter().map(|&t| Some(t as f64)).collect(),
            status: vec![None; ts.len()],
        }
    }

    #[test]
    fn columns_out_of_order_are_put_back_in_time_order_together() {
        let mut columns = RawColumns {
            ts_ms: vec![30, 10, 20, 10],
            value: vec![Some(3.0), Some(1.0), None, Some(1.5)],
            status: vec![None, None, Some(3), None],
        };
        columns.sort_by_time();
        assert_eq!(columns.ts_ms, [10, 10, 20, 30]);
        assert_eq!(columns.value, [Some(1.0), Some(1.5), None, Some(3.0)]);
        assert_eq!(columns.status, [None, None, Some(3), None]);
    }

    #[test]
    fn samples_of_two_catalog_versions_merge_in_timestamp_order_up_to_the_limit() {
        let merged = merge_raw(vec![raw(&[1, 2, 5]), raw(&[3, 4, 6])], 5);
        assert_eq!(merged.ts_ms, [1, 2, 3, 4, 5]);
        assert_eq!(merged.value[2], Some(3.0));
        assert_eq!(merge_raw(vec![raw(&[1, 2, 3])], 2).ts_ms, [1, 2]);
        assert!(merge_raw(Vec::new(), 10).is_empty());
    }

    fn bucket(
        bucket_ms: i64,
        min: f64,
        max: f64,
        sum: f64,
        count: i64,
        last: (f64, i64),
    ) -> Bucket {
        Bucket {
            bucket_ms,
            min,
            max,
            sum,
            count,
            last: last.0,
            last_ts_ms: last.1,
        }
    }

    #[test]
    fn a_bucket_two_catalog_versions_share_combines_like_the_sql_grouping() {
        let old = [
            bucket(0, 1.0, 5.0, 6.0, 2, (5.0, 30)),
            bucket(60, 2.0, 2.0, 2.0, 1, (2.0, 61)),
        ];
        let new = [bucket(60, 0.5, 9.0, 9.5, 2, (9.0, 119))];
        let merged = merge_rollups(&[&old, &new], 10);
        assert_eq!(merged.bucket_ms, [0, 60]);
        assert_eq!(merged.min, [1.0, 0.5]);
        assert_eq!(merged.max, [5.0, 9.0]);
        assert_eq!(merged.count, [2, 3]);
        assert_eq!(merged.avg, [3.0, 11.5 / 3.0]);
        assert_eq!(merged.last, [5.0, 9.0]);
        assert_eq!(merge_rollups(&[&old], 1).len(), 1);
    }
}
