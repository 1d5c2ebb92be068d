//! The notifier's side of `notification_outbox`: claim due rows under a
//! lease, then settle each one (delivered, retry later, undeliverable, or
//! handed back unattempted). Every settling statement but "delivered" is
//! fenced by the lease it was claimed under, so a row whose lease ran out
//! and was claimed again elsewhere is not rescheduled from here.

use deadpool_postgres::Client;
use std::time::Duration;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;

use super::episode::{Episode, Transition};

/// A notification this instance holds the lease on.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub notification_id: i64,
    pub transition: Transition,
    pub receiver: String,
    pub idempotency_key: String,
    /// Attempts before this one.
    pub attempts: i32,
    /// The lease: `next_attempt_at` as this claim set it.
    pub lease_until: OffsetDateTime,
    pub episode: Episode,
}

impl Claimed {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        let resolved: bool = row.try_get("resolved")?;
        Ok(Claimed {
            notification_id: row.try_get("notification_id")?,
            transition: if resolved {
                Transition::Resolved
            } else {
                Transition::Firing
            },
            receiver: row.try_get("receiver")?,
            idempotency_key: row.try_get("idempotency_key")?,
            attempts: row.try_get("attempts")?,
            lease_until: row.try_get("lease_until")?,
            episode: Episode::from_row(row)?,
        })
    }
}

/// Claim up to `limit` due notifications for `lease` (see `claim.sql`).
pub async fn claim(
    client: &Client,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Claimed>, tokio_postgres::Error> {
    let statement = client.prepare_cached(include_str!("claim.sql")).await?;
    let mut claimed = client
        .query(&statement, &[&limit, &lease.as_secs_f64()])
        .await?
        .iter()
        .map(Claimed::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    // RETURNING has no order; deliver oldest first.
    claimed.sort_by_key(|c| c.notification_id);
    Ok(claimed)
}

/// The receiver took it. Not fenced: it was delivered, whoever holds the
/// lease now. `false` when the row was already marked delivered.
pub async fn mark_delivered(client: &Client, id: i64) -> Result<bool, tokio_postgres::Error> {
    let updated = execute(
        client,
        "UPDATE notification_outbox
             SET delivered_at = now(), attempts = attempts + 1
             WHERE notification_id = $1 AND delivered_at IS NULL",
        &[&id],
    )
    .await?;
    Ok(updated == 1)
}

/// The attempt failed: try again after `delay`.
pub async fn schedule_retry(
    client: &Client,
    claimed: &Claimed,
    error: &str,
    delay: Duration,
) -> Result<(), tokio_postgres::Error> {
    execute(
        client,
        "UPDATE notification_outbox
             SET attempts = attempts + 1, last_error = $3,
                 next_attempt_at = now() + make_interval(secs => $4)
             WHERE notification_id = $1 AND next_attempt_at = $2 AND delivered_at IS NULL",
        &[
            &claimed.notification_id,
            &claimed.lease_until,
            &error,
            &delay.as_secs_f64(),
        ],
    )
    .await?;
    Ok(())
}

/// No attempt can succeed (its receiver is gone): never due again.
/// The row stays undelivered and counted as pending; an operator requeues
/// it with `UPDATE notification_outbox SET next_attempt_at = now() WHERE
/// next_attempt_at = 'infinity'` once the receiver is back.
pub async fn mark_undeliverable(
    client: &Client,
    claimed: &Claimed,
    error: &str,
) -> Result<(), tokio_postgres::Error> {
    execute(
        client,
        "UPDATE notification_outbox
             SET attempts = attempts + 1, last_error = $3, next_attempt_at = 'infinity'
             WHERE notification_id = $1 AND next_attempt_at = $2 AND delivered_at IS NULL",
        &[&claimed.notification_id, &claimed.lease_until, &error],
    )
    .await?;
    Ok(())
}

/// Hand back a claimed row without attempting it: due again at once.
pub async fn release(client: &Client, claimed: &Claimed) -> Result<(), tokio_postgres::Error> {
    execute(
        client,
        "UPDATE notification_outbox SET next_attempt_at = now()
             WHERE notification_id = $1 AND next_attempt_at = $2 AND delivered_at IS NULL",
        &[&claimed.notification_id, &claimed.lease_until],
    )
    .await?;
    Ok(())
}

/// Notifications not delivered yet (due, leased, waiting for a retry, or
/// undeliverable).
pub async fn pending(client: &Client) -> Result<i64, tokio_postgres::Error> {
    let statement = client
        .prepare_cached("SELECT count(*) FROM notification_outbox WHERE delivered_at IS NULL")
        .await?;
    client.query_one(&statement, &[]).await?.try_get(0)
}

/// Open episodes to re-send, by receiver (see `open_episodes.sql`).
pub async fn open_episodes(
    client: &Client,
    receivers: &[&str],
) -> Result<Vec<(String, Episode)>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(include_str!("open_episodes.sql"))
        .await?;
    client
        .query(&statement, &[&receivers])
        .await?
        .iter()
        .map(|row| Ok((row.try_get("receiver")?, Episode::from_row(row)?)))
        .collect()
}

/// Run a statement prepared once per connection.
async fn execute(
    client: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.execute(&statement, params).await
}
