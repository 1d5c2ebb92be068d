//! The lake's bookkeeping in the database (`007_lake.sql`): which
//! site-hours wait for export (`lake_pending`, marked by the writer), the
//! claim that keeps two exporters off the same site-hour, reading a
//! site-hour's samples, and settling an export (`lake_exports`).
//!
//! Every function takes the exporter's open transaction: the claim is a
//! transaction-level advisory lock, held from the read to the settle and
//! released by COMMIT, ROLLBACK or a lost connection (a killed exporter).

use std::collections::HashMap;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::{GenericClient, Transaction};

use super::schema::{SampleRow, Series, SliceRows};
use crate::time::{timestamp, unix_ms};

const MS_PER_HOUR: i64 = 3_600_000;

/// One unit of export: a site and a UTC hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SliceKey {
    pub site_id: i32,
    /// Start of the hour, epoch milliseconds.
    pub hour_ms: i64,
}

impl SliceKey {
    fn hour(&self) -> OffsetDateTime {
        timestamp(self.hour_ms)
    }

    fn end(&self) -> OffsetDateTime {
        timestamp(self.hour_ms + MS_PER_HOUR)
    }
}

/// Pending site-hours to export now, oldest first: those whose hour ended
/// more than `grace` ago and that nothing was written to for `grace` (a
/// backlog being delivered is exported once, after it), or every one with
/// `open_hours`.
pub async fn eligible(
    client: &impl GenericClient,
    grace: Duration,
    open_hours: bool,
    limit: i64,
) -> Result<Vec<SliceKey>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT site_id, hour FROM lake_pending
             WHERE $1 OR (hour + interval '1 hour' + make_interval(secs => $2) <= now()
                          AND marked_at + make_interval(secs => $2) <= now())
             ORDER BY hour, site_id LIMIT $3",
            &[&open_hours, &grace.as_secs_f64(), &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| SliceKey {
            site_id: r.get(0),
            hour_ms: unix_ms(r.get(1)),
        })
        .collect())
}

/// Site-hours marked and not yet exported.
pub async fn pending_count(client: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT count(*) FROM lake_pending", &[])
        .await?
        .get(0))
}

/// Mark every site-hour that has stored frames: the backfill of history
/// written before the exporter existed (or to rewrite the whole lake).
/// Returns the number of site-hours marked.
pub async fn mark_all_stored(client: &impl GenericClient) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO lake_pending (site_id, hour)
             SELECT l.site_id, h.hour
             FROM layouts l
             CROSS JOIN LATERAL (
                 SELECT DISTINCT date_trunc('hour', f.ts, 'UTC') AS hour
                 FROM frames f WHERE f.layout_id = l.layout_id
             ) h
             GROUP BY 1, 2
             ORDER BY 1, 2
             ON CONFLICT (site_id, hour) DO UPDATE
             SET generation = lake_pending.generation + 1, marked_at = now()",
            &[],
        )
        .await
}

/// Claim a site-hour for this transaction; `false` when another exporter
/// holds it. The two-key advisory lock space is (site_id, hours since the
/// epoch); no other lock of the collector uses the two-key form.
pub async fn try_claim(tx: &Transaction<'_>, key: SliceKey) -> Result<bool, tokio_postgres::Error> {
    let hour = (key.hour_ms.div_euclid(MS_PER_HOUR)) as i32;
    Ok(tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1, $2)",
            &[&key.site_id, &hour],
        )
        .await?
        .get(0))
}

/// The mark's generation now; `None` when the site-hour is not pending
/// (another exporter finished it).
pub async fn generation(
    tx: &Transaction<'_>,
    key: SliceKey,
) -> Result<Option<i64>, tokio_postgres::Error> {
    Ok(tx
        .query_opt(
            "SELECT generation FROM lake_pending WHERE site_id = $1 AND hour = $2",
            &[&key.site_id, &key.hour()],
        )
        .await?
        .map(|r| r.get(0)))
}

/// The site's name (its partition value).
pub async fn site_name(
    tx: &Transaction<'_>,
    site_id: i32,
) -> Result<String, tokio_postgres::Error> {
    Ok(tx
        .query_one("SELECT name FROM sites WHERE site_id = $1", &[&site_id])
        .await?
        .get(0))
}

/// Every stored sample of a site-hour, in file order.
///
/// Read after the mark's generation (each statement sees everything
/// committed before it): whatever this returns includes every batch that
/// had bumped the mark to that generation.
pub async fn read_rows(
    tx: &Transaction<'_>,
    key: SliceKey,
) -> Result<SliceRows, tokio_postgres::Error> {
    // Which (layout, slot) holds which (device, point).
    let slots = tx
        .query(
            "SELECT l.layout_id, s.i::int, d.name, p.name, p.unit
             FROM layouts l
             JOIN devices d ON d.device_id = l.device_id
             CROSS JOIN LATERAL generate_subscripts(l.point_ids, 1) AS s(i)
             JOIN points p ON p.point_id = l.point_ids[s.i]
             WHERE l.site_id = $1",
            &[&key.site_id],
        )
        .await?;
    let mut out = SliceRows::default();
    let mut series_index: HashMap<(String, String), u32> = HashMap::new();
    let mut slot_series: HashMap<(i32, i32), u32> = HashMap::new();
    let mut layout_ids = Vec::new();
    for r in &slots {
        let layout_id: i32 = r.get(0);
        let slot: i32 = r.get(1);
        let device: String = r.get(2);
        let point: String = r.get(3);
        let unit: String = r.get(4);
        let next = out.series.len() as u32;
        let index = *series_index
            .entry((device.clone(), point.clone()))
            .or_insert_with(|| {
                out.series.push(Series {
                    device,
                    point,
                    unit: Some(unit).filter(|u| !u.is_empty()),
                });
                next
            });
        slot_series.insert((layout_id, slot), index);
        if !layout_ids.contains(&layout_id) {
            layout_ids.push(layout_id);
        }
    }
    if layout_ids.is_empty() {
        return Ok(out);
    }
    let frames = tx
        .query(
            "SELECT layout_id, ts, vals, status FROM frames
             WHERE layout_id = ANY($1) AND ts >= $2 AND ts < $3",
            &[&layout_ids, &key.hour(), &key.end()],
        )
        .await?;
    for f in &frames {
        let layout_id: i32 = f.get(0);
        let ts_ms = unix_ms(f.get(1));
        let vals: Vec<Option<f64>> = f.get(2);
        let status: Option<Vec<Option<i16>>> = f.get(3);
        for (i, value) in vals.into_iter().enumerate() {
            let slot = i as i32 + 1;
            let Some(series) = slot_series.get(&(layout_id, slot)) else {
                continue; // a layout always covers its slots; nothing to export otherwise
            };
            let status = status
                .as_ref()
                .and_then(|s| s.get(i).copied().flatten())
                .unwrap_or(0);
            out.rows.push(SampleRow {
                series: *series,
                ts_ms,
                layout_id,
                slot,
                value,
                status,
            });
        }
    }
    out.sort();
    Ok(out)
}

/// Rows of the object the lake holds for a site-hour, if any.
pub async fn exported_rows(
    tx: &Transaction<'_>,
    key: SliceKey,
) -> Result<Option<i64>, tokio_postgres::Error> {
    Ok(tx
        .query_opt(
            "SELECT rows FROM lake_exports WHERE site_id = $1 AND hour = $2",
            &[&key.site_id, &key.hour()],
        )
        .await?
        .map(|r| r.get(0)))
}

/// What was uploaded for a site-hour.
#[derive(Debug, Clone)]
pub struct ExportRecord {
    pub object: String,
    pub rows: i64,
    pub bytes: i64,
}

/// Finish a site-hour: record the object (when one was written) and clear
/// the mark if its generation is still `generation`. Returns whether the
/// mark was cleared; `false` means a batch for that hour was committed
/// after the read, and the site-hour stays pending to be written again.
pub async fn settle(
    tx: &Transaction<'_>,
    key: SliceKey,
    generation: i64,
    record: Option<&ExportRecord>,
) -> Result<bool, tokio_postgres::Error> {
    if let Some(record) = record {
        tx.execute(
            "INSERT INTO lake_exports (site_id, hour, object, rows, bytes)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (site_id, hour) DO UPDATE
             SET object = excluded.object, rows = excluded.rows, bytes = excluded.bytes,
                 writes = lake_exports.writes + 1, exported_at = now()",
            &[
                &key.site_id,
                &key.hour(),
                &record.object,
                &record.rows,
                &record.bytes,
            ],
        )
        .await?;
    }
    let cleared = tx
        .execute(
            "DELETE FROM lake_pending WHERE site_id = $1 AND hour = $2 AND generation = $3",
            &[&key.site_id, &key.hour(), &generation],
        )
        .await?;
    Ok(cleared == 1)
}
