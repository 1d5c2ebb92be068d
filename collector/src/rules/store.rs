//! The rules' persisted state: loading a site's phases (`rule_state`,
//! open `alert_episodes`) into the engine, and writing the engine's
//! transitions — episodes opened and closed, pending phases, notification
//! outbox rows — inside the writer's transaction.
//!
//! The database is the arbiter between instances: at most one open episode
//! per (rule, site, target) (a unique partial index), so an instance that
//! evaluates readings another already evaluated fires nothing, and closing
//! an episode that is not open does nothing.
//!
//! Notifications: a fired episode gets one outbox row per receiver of its
//! rule unless a silence covers it, or it was already over when detected
//! and the rule does not ask for past episodes; a resolved episode gets one
//! row per receiver its firing went to, so a receiver never hears an end
//! without a start.

use std::collections::HashSet;
use std::sync::Arc;

use tokio_postgres::GenericClient;

use super::engine::{Change, PersistedPhase, Transition};
use super::model::RuleSet;
use crate::time::{timestamp, unix_ms};

/// A site's persisted phases: `(rule, target, phase)`.
pub async fn load_site(
    client: &impl GenericClient,
    site_id: i32,
) -> Result<Vec<(String, String, PersistedPhase)>, tokio_postgres::Error> {
    let mut out = Vec::new();
    for row in client
        .query(
            "SELECT rule, target, since, peak FROM rule_state WHERE site_id = $1",
            &[&site_id],
        )
        .await?
    {
        out.push((
            row.get(0),
            row.get(1),
            PersistedPhase::Pending {
                since_ms: unix_ms(row.get(2)),
                peak: row.get(3),
            },
        ));
    }
    for row in client
        .query(
            "SELECT rule, target, started_at, peak FROM alert_episodes
             WHERE site_id = $1 AND ended_at IS NULL",
            &[&site_id],
        )
        .await?
    {
        out.push((
            row.get(0),
            row.get(1),
            PersistedPhase::Firing {
                since_ms: unix_ms(row.get(2)),
                peak: row.get(3),
            },
        ));
    }
    Ok(out)
}

/// What [`persist`] wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Persisted {
    pub fired: u64,
    pub resolved: u64,
    pub notifications: u64,
}

/// Write the transitions of one transaction, in order.
pub async fn persist(
    tx: &impl GenericClient,
    rules: &RuleSet,
    changes: &[Change],
) -> Result<Persisted, tokio_postgres::Error> {
    let mut out = Persisted::default();
    // Episodes that fire and resolve in the same transaction were over
    // before anyone could be told.
    let resolved_here: HashSet<(i32, usize, &Arc<str>)> = changes
        .iter()
        .filter(|c| matches!(c.transition, Transition::Resolved { .. }))
        .map(|c| (c.site_id, c.rule, &c.target))
        .collect();
    for change in changes {
        let rule = &rules.rules[change.rule];
        let target: &str = &change.target;
        match &change.transition {
            Transition::Pending { since_ms, peak } => {
                tx.execute(
                    "INSERT INTO rule_state (rule, site_id, target, phase, since, peak)
                     VALUES ($1, $2, $3, 'pending', $4, $5)
                     ON CONFLICT (rule, site_id, target)
                     DO UPDATE SET since = excluded.since, peak = excluded.peak, updated_at = now()",
                    &[&rule.name, &change.site_id, &target, &timestamp(*since_ms), peak],
                )
                .await?;
            }
            Transition::PendingCleared => {
                delete_state(tx, &rule.name, change.site_id, target).await?;
            }
            Transition::Fired {
                start_ms,
                peak,
                late,
            } => {
                delete_state(tx, &rule.name, change.site_id, target).await?;
                let opened = tx
                    .query_opt(
                        "INSERT INTO alert_episodes (rule, site_id, target, severity, summary, started_at, peak, late)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                         ON CONFLICT (rule, site_id, target) WHERE ended_at IS NULL DO NOTHING
                         RETURNING episode_id",
                        &[
                            &rule.name,
                            &change.site_id,
                            &target,
                            &rule.severity.as_str(),
                            &rule.summary,
                            &timestamp(*start_ms),
                            peak,
                            late,
                        ],
                    )
                    .await?;
                let Some(row) = opened else { continue };
                out.fired += 1;
                let episode: i64 = row.get(0);
                let over = resolved_here.contains(&(change.site_id, change.rule, &change.target));
                if over && !rule.notify_past {
                    continue;
                }
                let receivers: Vec<&str> = if rule.receivers.is_empty() {
                    rules.receivers.iter().map(|r| r.name.as_str()).collect()
                } else {
                    rule.receivers.iter().map(String::as_str).collect()
                };
                if receivers.is_empty() {
                    continue;
                }
                let device = target.split('/').next().unwrap_or(target);
                out.notifications += tx
                    .execute(
                        "INSERT INTO notification_outbox (episode_id, transition, receiver, idempotency_key)
                         SELECT $1::int8, 'firing', r, 'episode-' || $1::int8::text || '-firing-' || r
                         FROM unnest($2::text[]) AS r
                         WHERE NOT EXISTS (
                             SELECT 1 FROM alert_silences s
                             WHERE now() >= s.starts_at AND now() < s.ends_at
                               AND (s.site_id IS NULL OR s.site_id = $3)
                               AND (s.device IS NULL OR s.device = $4)
                               AND (s.rule IS NULL OR s.rule = $5))",
                        &[&episode, &receivers, &change.site_id, &device, &rule.name],
                    )
                    .await?;
            }
            Transition::Resolved { end_ms, peak, late } => {
                let closed = tx
                    .query_opt(
                        "UPDATE alert_episodes
                         SET ended_at = $4, peak = coalesce($5, peak), late = late OR $6,
                             resolved_detected_at = now()
                         WHERE rule = $1 AND site_id = $2 AND target = $3 AND ended_at IS NULL
                         RETURNING episode_id",
                        &[
                            &rule.name,
                            &change.site_id,
                            &target,
                            &timestamp(*end_ms),
                            peak,
                            late,
                        ],
                    )
                    .await?;
                let Some(row) = closed else { continue };
                out.resolved += 1;
                out.notifications += notify_resolved(tx, row.get(0)).await?;
            }
        }
    }
    Ok(out)
}

/// One `resolved` row per receiver the episode's firing went to.
pub async fn notify_resolved(
    tx: &impl GenericClient,
    episode: i64,
) -> Result<u64, tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO notification_outbox (episode_id, transition, receiver, idempotency_key)
         SELECT episode_id, 'resolved', receiver, 'episode-' || episode_id || '-resolved-' || receiver
         FROM notification_outbox WHERE episode_id = $1 AND transition = 'firing'
         ON CONFLICT (idempotency_key) DO NOTHING",
        &[&episode],
    )
    .await
}

async fn delete_state(
    tx: &impl GenericClient,
    rule: &str,
    site_id: i32,
    target: &str,
) -> Result<u64, tokio_postgres::Error> {
    tx.execute(
        "DELETE FROM rule_state WHERE rule = $1 AND site_id = $2 AND target = $3",
        &[&rule, &site_id, &target],
    )
    .await
}

/// Close the open episodes of rules that are no longer in the set (after a
/// reload), without notifications: nobody evaluates them any more.
pub async fn close_removed_rules(
    client: &impl GenericClient,
    rules: &RuleSet,
) -> Result<u64, tokio_postgres::Error> {
    let names: Vec<&str> = rules.rules.iter().map(|r| r.name.as_str()).collect();
    client
        .execute(
            "UPDATE alert_episodes SET ended_at = now(), resolved_detected_at = now()
             WHERE ended_at IS NULL AND NOT (rule = ANY($1))",
            &[&names],
        )
        .await?;
    client
        .execute(
            "DELETE FROM rule_state WHERE NOT (rule = ANY($1))",
            &[&names],
        )
        .await
}
