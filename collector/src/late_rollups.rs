//! TimescaleDB: rollups for frames that arrive older than the refresh
//! policies' window.
//!
//! The continuous-aggregate policies refresh only the last
//! [`REFRESH_WINDOW`]: a site's backlog after a longer outage would be
//! stored but never rolled up. A window over all time is no fix: it also
//! covers ranges retention has dropped and erases their rollups. So the
//! writer marks each hour that receives such frames (`rollup_late_hours`,
//! in the transaction that stores them), and the collector's upkeep
//! refreshes both rollups over exactly those hours ([`refresh_late_hours`]).
//! Hours already past `--retention` are cleared without a refresh: their
//! frames are about to be dropped, and a refresh there would erase the
//! rollups that outlive them.

use std::collections::BTreeSet;
use std::time::Duration;

use time::OffsetDateTime;

use crate::time::{rfc3339, timestamp, unix_ms, unix_ms_now};

const MS_PER_HOUR: i64 = 3_600_000;

/// How far back the refresh policies reach (`start_offset` in
/// `sql/003_timescaledb_storage.sql`).
pub const REFRESH_WINDOW: Duration = Duration::from_secs(3 * 24 * 3600);

/// Hours refreshed per pass.
const BATCH: i64 = 48;

/// TimescaleDB's "lock not available": a refresh policy is running over the
/// same range. The marks stay and the next pass tries again.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// The hours of `minutes` (bucket starts, Unix ms) that the refresh policies
/// no longer reach, with an hour's margin for a policy run in progress.
pub fn late_hours(minutes: &BTreeSet<i64>, now_ms: i64) -> Vec<OffsetDateTime> {
    let reach = now_ms - REFRESH_WINDOW.as_millis() as i64 + MS_PER_HOUR;
    let hours: BTreeSet<i64> = minutes
        .iter()
        .filter(|&&minute| minute < reach)
        .map(|minute| minute.div_euclid(MS_PER_HOUR) * MS_PER_HOUR)
        .collect();
    hours.into_iter().map(timestamp).collect()
}

/// Mark `hours` for a refresh, inside the writer's transaction.
pub async fn mark(
    tx: &tokio_postgres::Transaction<'_>,
    hours: &[OffsetDateTime],
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO rollup_late_hours (hour) SELECT unnest($1::timestamptz[])
         ON CONFLICT (hour) DO UPDATE SET generation = rollup_late_hours.generation + 1",
        &[&hours],
    )
    .await?;
    Ok(())
}

/// What one upkeep pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LateRefresh {
    /// Hours whose rollups were refreshed.
    pub refreshed: u64,
    /// Hours past retention, cleared without a refresh.
    pub expired: u64,
}

/// Refresh `rollup_1m`, then `rollup_1h`, over every marked hour, oldest
/// first; clear each mark unless it was marked again meanwhile. Safe to run
/// from several instances at once (a refresh is idempotent; a clash with a
/// policy run leaves the marks for the next pass).
pub async fn refresh_late_hours(
    client: &tokio_postgres::Client,
    retention: Option<Duration>,
) -> Result<LateRefresh, tokio_postgres::Error> {
    let mut outcome = LateRefresh::default();
    if let Some(retention) = retention {
        let horizon = timestamp(unix_ms_now() - retention.as_millis() as i64);
        outcome.expired = client
            .execute(
                "DELETE FROM rollup_late_hours WHERE hour + interval '1 hour' <= $1",
                &[&horizon],
            )
            .await?;
    }
    let marks: Vec<(OffsetDateTime, i64)> = client
        .query(
            "SELECT hour, generation FROM rollup_late_hours ORDER BY hour LIMIT $1",
            &[&BATCH],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let hours: Vec<i64> = marks.iter().map(|(hour, _)| unix_ms(*hour)).collect();
    for (lo, hi) in crate::storage::ranges(&hours, MS_PER_HOUR) {
        for view in ["rollup_1m", "rollup_1h"] {
            // CALL cannot take bind parameters here: the range is ours, as
            // RFC 3339 literals.
            let sql = format!(
                "CALL refresh_continuous_aggregate('{view}', '{}'::timestamptz, '{}'::timestamptz)",
                rfc3339(timestamp(lo)),
                rfc3339(timestamp(hi))
            );
            if let Err(e) = client.batch_execute(&sql).await {
                if e.code().map(|c| c.code()) == Some(LOCK_NOT_AVAILABLE) {
                    return Ok(outcome);
                }
                return Err(e);
            }
        }
        let (hours, generations): (Vec<OffsetDateTime>, Vec<i64>) = marks
            .iter()
            .filter(|(hour, _)| (lo..hi).contains(&unix_ms(*hour)))
            .cloned()
            .unzip();
        client
            .execute(
                "DELETE FROM rollup_late_hours m USING unnest($1::timestamptz[], $2::int8[]) AS seen(hour, generation)
                 WHERE m.hour = seen.hour AND m.generation = seen.generation",
                &[&hours, &generations],
            )
            .await?;
        outcome.refreshed += hours.len() as u64;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * MS_PER_HOUR;

    #[test]
    fn only_hours_the_policies_no_longer_reach_are_late() {
        let now = 100 * DAY;
        let minutes: BTreeSet<i64> = [
            now - 5 * DAY,
            now - 5 * DAY + 60_000,
            now - 5 * DAY + MS_PER_HOUR,
            now - 3 * DAY + 2 * MS_PER_HOUR,
            now - 60_000,
        ]
        .into();
        let late: Vec<i64> = late_hours(&minutes, now).into_iter().map(unix_ms).collect();
        assert_eq!(late, vec![now - 5 * DAY, now - 5 * DAY + MS_PER_HOUR]);
    }
}
