//! The storage backend: TimescaleDB when the extension is available, plain
//! PostgreSQL otherwise (chosen once by the migrations, see
//! `migrations.rs`), and the upkeep the plain-PostgreSQL path needs:
//! daily `frames` partitions created ahead, old partitions dropped for
//! retention, and the 1-minute and 1-hour rollups recomputed for the minutes
//! the writer touched. With TimescaleDB, hypertable chunks, compression,
//! retention and continuous aggregates are the extension's own jobs; the
//! collector only sets the retention policy.
//!
//! Both backends expose the same relations to queries: `frames`,
//! `rollup_1m` and `rollup_1h` (tables here, continuous aggregates there),
//! with the same columns and bucket alignment, so the series reader (`series.rs`) and the
//! API do not know which one they read.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;
use time::{Date, OffsetDateTime};
use tokio_postgres::GenericClient;

const MS_PER_DAY: i64 = 86_400_000;
const MS_PER_MINUTE: i64 = 60_000;
const MS_PER_HOUR: i64 = 3_600_000;
/// Days of partitions the maintenance task keeps ready ahead of today.
pub const PARTITIONS_AHEAD: i64 = 2;
/// Most pending minutes recomputed in one refresh transaction.
const REFRESH_BATCH: i64 = 720;
/// Arbitrary, fixed key: one instance refreshes rollups at a time.
const REFRESH_LOCK: i64 = 0x4245_5353_524f_4c4c;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageBackend {
    TimescaleDb,
    PostgreSql,
}

impl StorageBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageBackend::TimescaleDb => "timescaledb",
            StorageBackend::PostgreSql => "postgresql",
        }
    }
}

impl fmt::Display for StorageBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the operator asked for (`--storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StoragePreference {
    /// TimescaleDB if the extension is available, else plain PostgreSQL.
    #[default]
    Auto,
    /// TimescaleDB; fail if the extension is missing.
    #[value(name = "timescaledb")]
    TimescaleDb,
    /// Plain PostgreSQL even where TimescaleDB is available.
    #[value(name = "postgresql")]
    PostgreSql,
}

impl StoragePreference {
    pub fn forced(self) -> Option<StorageBackend> {
        match self {
            StoragePreference::Auto => None,
            StoragePreference::TimescaleDb => Some(StorageBackend::TimescaleDb),
            StoragePreference::PostgreSql => Some(StorageBackend::PostgreSql),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// Days (UTC) that have a `frames` partition, as far as this instance knows.
/// Only used on plain PostgreSQL.
#[derive(Debug, Default)]
pub struct FramePartitions {
    known: Mutex<BTreeSet<i64>>,
}

impl FramePartitions {
    /// Make sure a partition exists for each day (days since the Unix epoch).
    /// Runs outside the write transaction: creating a partition briefly locks
    /// `frames`, and must not wait inside a transaction that holds rows.
    pub async fn ensure(
        &self,
        client: &impl GenericClient,
        days: &BTreeSet<i64>,
    ) -> Result<(), tokio_postgres::Error> {
        let missing: Vec<i64> = {
            let known = self.known.lock().expect("lock");
            days.difference(&known).copied().collect()
        };
        for day in missing {
            client
                .execute(
                    "SELECT bess_ensure_frames_partition($1)",
                    &[&epoch_day(day)],
                )
                .await?;
            self.known.lock().expect("lock").insert(day);
        }
        Ok(())
    }

    /// Forget a dropped day so it is created again if data for it arrives.
    pub fn forget_before(&self, day: i64) {
        self.known.lock().expect("lock").retain(|d| *d >= day);
    }
}

pub fn day_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(MS_PER_DAY)
}

pub fn minute_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(MS_PER_MINUTE) * MS_PER_MINUTE
}

/// The start of the UTC hour of `ts_ms`, in epoch milliseconds: the lake's
/// unit of export (`lake_pending`).
pub fn hour_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(MS_PER_HOUR) * MS_PER_HOUR
}

fn epoch_day(day: i64) -> Date {
    let days = i32::try_from(day).unwrap_or(0);
    Date::from_julian_day(
        Date::from_calendar_date(1970, time::Month::January, 1)
            .expect("valid")
            .to_julian_day()
            + days,
    )
    .unwrap_or(Date::MIN)
}

/// Set (TimescaleDB) the retention policy; `None` keeps data forever.
pub async fn configure_retention(
    client: &impl GenericClient,
    backend: StorageBackend,
    retention: Option<Duration>,
) -> Result<(), tokio_postgres::Error> {
    if backend != StorageBackend::TimescaleDb {
        return Ok(());
    }
    client
        .execute(
            "SELECT remove_retention_policy('frames', if_exists => true)",
            &[],
        )
        .await?;
    if let Some(retention) = retention {
        let interval = format!("{} seconds", retention.as_secs());
        client
            .execute(
                "SELECT add_retention_policy('frames', drop_after => $1::text::interval)",
                &[&interval],
            )
            .await?;
    }
    Ok(())
}

/// Plain PostgreSQL: create partitions ahead and drop those past retention.
pub async fn maintain_partitions(
    client: &impl GenericClient,
    partitions: &FramePartitions,
    retention: Option<Duration>,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let today = day_of(now_ms);
    partitions
        .ensure(client, &(today..=today + PARTITIONS_AHEAD).collect())
        .await?;
    let Some(retention) = retention else {
        return Ok(Vec::new());
    };
    let cutoff_ms = now_ms - retention.as_millis() as i64;
    let rows = client
        .query(
            "SELECT bess_drop_frames_partitions($1)",
            &[&crate::time::timestamp(cutoff_ms)],
        )
        .await?;
    partitions.forget_before(day_of(cutoff_ms));
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// What one rollup refresh did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RefreshOutcome {
    pub minutes: u64,
    pub hours: u64,
}

/// Plain PostgreSQL: recompute `rollup_1m` for every pending minute that has
/// ended (`bucket + 1 min <= now`), then `rollup_1h` for their hours, until
/// none is left. One instance at a time (advisory lock); a minute written
/// again meanwhile is pending again and recomputed on the next pass.
pub async fn refresh_rollups(
    client: &mut tokio_postgres::Client,
) -> Result<RefreshOutcome, tokio_postgres::Error> {
    let mut total = RefreshOutcome::default();
    loop {
        let tx = client.transaction().await?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&REFRESH_LOCK])
            .await?
            .get(0);
        if !locked {
            return Ok(total);
        }
        let minutes: Vec<OffsetDateTime> = tx
            .query(
                "DELETE FROM rollup_pending WHERE bucket IN (
                     SELECT bucket FROM rollup_pending WHERE bucket + interval '1 minute' <= now()
                     ORDER BY bucket LIMIT $1 FOR UPDATE SKIP LOCKED)
                 RETURNING bucket",
                &[&REFRESH_BATCH],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if minutes.is_empty() {
            tx.commit().await?;
            return Ok(total);
        }
        let minute_ms: Vec<i64> = minutes
            .iter()
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .collect();
        for (lo, hi) in ranges(&minute_ms, MS_PER_MINUTE) {
            let (lo, hi) = (crate::time::timestamp(lo), crate::time::timestamp(hi));
            tx.execute(
                "DELETE FROM rollup_1m WHERE bucket >= $1 AND bucket < $2",
                &[&lo, &hi],
            )
            .await?;
            tx.execute(include_str!("sql/refresh_rollup_1m.sql"), &[&lo, &hi])
                .await?;
        }
        let hour_ms: Vec<i64> = minute_ms
            .iter()
            .map(|m| m.div_euclid(60 * MS_PER_MINUTE) * 60 * MS_PER_MINUTE)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for (lo, hi) in ranges(&hour_ms, 60 * MS_PER_MINUTE) {
            let (lo, hi) = (crate::time::timestamp(lo), crate::time::timestamp(hi));
            tx.execute(
                "DELETE FROM rollup_1h WHERE bucket >= $1 AND bucket < $2",
                &[&lo, &hi],
            )
            .await?;
            tx.execute(include_str!("sql/refresh_rollup_1h.sql"), &[&lo, &hi])
                .await?;
        }
        tx.commit().await?;
        total.minutes += minute_ms.len() as u64;
        total.hours += hour_ms.len() as u64;
    }
}

/// Sorted bucket starts → `[lo, hi)` ranges of consecutive buckets.
pub(crate) fn ranges(starts: &[i64], width: i64) -> Vec<(i64, i64)> {
    let mut sorted = starts.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for start in sorted {
        match out.last_mut() {
            Some((_, hi)) if *hi == start => *hi = start + width,
            _ => out.push((start, start + width)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_buckets_merge_into_one_range() {
        assert_eq!(ranges(&[120, 0, 60, 300], 60), vec![(0, 180), (300, 360)]);
        assert!(ranges(&[], 60).is_empty());
    }

    #[test]
    fn days_and_minutes_are_utc_and_floor_negative_times() {
        assert_eq!(day_of(MS_PER_DAY - 1), 0);
        assert_eq!(day_of(-1), -1);
        assert_eq!(minute_of(61_000), 60_000);
        assert_eq!(epoch_day(19_675), time::macros::date!(2023 - 11 - 14));
    }
}
