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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;

use super::engine::{Change, PersistedPhase, Transition};
use super::model::RuleSet;
use crate::time::{timestamp, unix_ms};

/// Sites' persisted phases: site id → `(rule, target, phase)`s.
pub async fn load_sites(
    client: &impl GenericClient,
    site_ids: &[i32],
) -> Result<HashMap<i32, Vec<(String, String, PersistedPhase)>>, tokio_postgres::Error> {
    let mut out: HashMap<i32, Vec<_>> = site_ids.iter().map(|id| (*id, Vec::new())).collect();
    for row in client
        .query(
            "SELECT site_id, rule, target, since, peak, false FROM rule_state WHERE site_id = ANY($1)
             UNION ALL
             SELECT site_id, rule, target, started_at, peak, true FROM alert_episodes
             WHERE site_id = ANY($1) AND ended_at IS NULL",
            &[&site_ids],
        )
        .await?
    {
        let (since_ms, peak) = (unix_ms(row.get(3)), row.get(4));
        let phase = if row.get::<_, bool>(5) {
            PersistedPhase::Firing { since_ms, peak }
        } else {
            PersistedPhase::Pending { since_ms, peak }
        };
        out.entry(row.get(0)).or_default().push((row.get(1), row.get(2), phase));
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

/// Opens an episode unless one is open for its key, and queues its
/// notifications (`$9`: the receivers; `$10`: whether to notify at all)
/// unless a silence covers it; counts both.
const FIRE: &str = "
WITH opened AS (
    INSERT INTO alert_episodes (rule, site_id, target, severity, summary, started_at, peak, late)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (rule, site_id, target) WHERE ended_at IS NULL DO NOTHING
    RETURNING episode_id),
queued AS (
    INSERT INTO notification_outbox (episode_id, transition, receiver, idempotency_key)
    SELECT o.episode_id, 'firing', r, 'episode-' || o.episode_id::text || '-firing-' || r
    FROM opened o, unnest($9::text[]) AS r
    WHERE $10 AND NOT EXISTS (
        SELECT 1 FROM alert_silences s
        WHERE now() >= s.starts_at AND now() < s.ends_at
          AND (s.site_id IS NULL OR s.site_id = $2)
          AND (s.device IS NULL OR s.device = $11)
          AND (s.rule IS NULL OR s.rule = $1))
    RETURNING 1)
SELECT (SELECT count(*) FROM opened), (SELECT count(*) FROM queued)";

/// Closes the open episode of a key, and queues a `resolved` for every
/// receiver its firing went to; counts both.
const RESOLVE: &str = "
WITH closed AS (
    UPDATE alert_episodes
    SET ended_at = $4, peak = coalesce($5, peak), late = late OR $6, resolved_detected_at = now()
    WHERE rule = $1 AND site_id = $2 AND target = $3 AND ended_at IS NULL
    RETURNING episode_id),
queued AS (
    INSERT INTO notification_outbox (episode_id, transition, receiver, idempotency_key)
    SELECT n.episode_id, 'resolved', n.receiver, 'episode-' || n.episode_id::text || '-resolved-' || n.receiver
    FROM notification_outbox n JOIN closed USING (episode_id)
    WHERE n.transition = 'firing'
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING 1)
SELECT (SELECT count(*) FROM closed), (SELECT count(*) FROM queued)";

/// Each (rule, site, target)'s pending phase as a transaction leaves it:
/// `Some((since, peak))` to write, `None` to delete.
type FinalPhases<'a> = HashMap<(usize, i32, &'a str), Option<(i64, Option<f64>)>>;

/// One statement parameter, owned, so statements can be pipelined.
type Param = Box<dyn ToSql + Sync + Send>;

/// Records an episode a backlog held whole, closed, and queues
/// its notifications only when `$9` (the rule's `notify_past`) asks.
const BACKFILL: &str = "
WITH recorded AS (
    INSERT INTO alert_episodes (rule, site_id, target, severity, summary, started_at, ended_at, peak, late, resolved_detected_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $11, now())
    RETURNING episode_id),
queued AS (
    INSERT INTO notification_outbox (episode_id, transition, receiver, idempotency_key)
    SELECT e.episode_id, t, r, 'episode-' || e.episode_id::text || '-' || t || '-' || r
    FROM recorded e, unnest($10::text[]) AS r, unnest(ARRAY['firing', 'resolved']) AS t
    WHERE $9
    RETURNING 1)
SELECT (SELECT count(*) FROM recorded), (SELECT count(*) FROM queued)";

/// Moves an open episode's start back to where a backlog shows it began.
const EXTEND: &str = "
WITH moved AS (
    UPDATE alert_episodes SET started_at = least(started_at, $4), late = late OR $5
    WHERE rule = $1 AND site_id = $2 AND target = $3 AND ended_at IS NULL
    RETURNING 1)
SELECT 0::int8, 0::int8 FROM (SELECT count(*) FROM moved) AS done";

/// Write the transitions of one transaction.
///
/// Pending phases are written as each key's final state (two statements
/// for the whole transaction); episodes open and close one statement per
/// transition, in order, pipelined on the connection (no round trip
/// waits for the one before).
pub async fn persist(
    tx: &impl GenericClient,
    rules: &RuleSet,
    changes: &[Change],
) -> Result<Persisted, tokio_postgres::Error> {
    // Episodes that fire and resolve in the same transaction were over
    // before anyone could be told.
    let resolved_here: HashSet<(i32, usize, &Arc<str>)> = changes
        .iter()
        .filter(|c| matches!(c.transition, Transition::Resolved { .. }))
        .map(|c| (c.site_id, c.rule, &c.target))
        .collect();
    // The final pending phase of each key: `Some` to write, `None` to delete.
    let mut phases: FinalPhases = HashMap::new();
    let mut episodes = Vec::new();
    let mut fires = Vec::new();
    for change in changes {
        let rule = &rules.rules[change.rule];
        let target: &str = &change.target;
        let key = (change.rule, change.site_id, target);
        match &change.transition {
            Transition::Pending { since_ms, peak } => {
                phases.insert(key, Some((*since_ms, *peak)));
            }
            Transition::PendingCleared => {
                phases.insert(key, None);
            }
            Transition::Fired {
                start_ms,
                peak,
                late,
            } => {
                phases.insert(key, None);
                let over = resolved_here.contains(&(change.site_id, change.rule, &change.target));
                let notify = !over || rule.notify_past;
                let receivers: Vec<&str> = if rule.receivers.is_empty() {
                    rules.receivers.iter().map(|r| r.name.as_str()).collect()
                } else {
                    rule.receivers.iter().map(String::as_str).collect()
                };
                let device = target.split('/').next().unwrap_or(target);
                fires.push(true);
                let params: Vec<Param> = vec![
                    Box::new(rule.name.clone()),
                    Box::new(change.site_id),
                    Box::new(target.to_owned()),
                    Box::new(rule.severity.as_str()),
                    Box::new(rule.summary.clone()),
                    Box::new(timestamp(*start_ms)),
                    Box::new(*peak),
                    Box::new(*late),
                    Box::new(receivers.iter().map(|r| r.to_string()).collect::<Vec<_>>()),
                    Box::new(notify),
                    Box::new(device.to_owned()),
                ];
                episodes.push((FIRE, params));
            }
            Transition::Backfilled {
                start_ms,
                end_ms,
                peak,
                late,
            } => {
                fires.push(true);
                let receivers: Vec<String> = if rule.receivers.is_empty() {
                    rules.receivers.iter().map(|r| r.name.clone()).collect()
                } else {
                    rule.receivers.clone()
                };
                let params: Vec<Param> = vec![
                    Box::new(rule.name.clone()),
                    Box::new(change.site_id),
                    Box::new(target.to_owned()),
                    Box::new(rule.severity.as_str()),
                    Box::new(rule.summary.clone()),
                    Box::new(timestamp(*start_ms)),
                    Box::new(timestamp(*end_ms)),
                    Box::new(*peak),
                    Box::new(rule.notify_past),
                    Box::new(receivers),
                    Box::new(*late),
                ];
                episodes.push((BACKFILL, params));
            }
            Transition::Extended { start_ms, late } => {
                fires.push(false);
                let params: Vec<Param> = vec![
                    Box::new(rule.name.clone()),
                    Box::new(change.site_id),
                    Box::new(target.to_owned()),
                    Box::new(timestamp(*start_ms)),
                    Box::new(*late),
                ];
                episodes.push((EXTEND, params));
            }
            Transition::Resolved { end_ms, peak, late } => {
                fires.push(false);
                let params: Vec<Param> = vec![
                    Box::new(rule.name.clone()),
                    Box::new(change.site_id),
                    Box::new(target.to_owned()),
                    Box::new(timestamp(*end_ms)),
                    Box::new(*peak),
                    Box::new(*late),
                ];
                episodes.push((RESOLVE, params));
            }
        }
    }
    let mut out = Persisted::default();
    let rows = futures::future::try_join_all(episodes.iter().map(|(sql, params)| {
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
        async move { tx.query_one(*sql, &params).await }
    }))
    .await?;
    for (row, fire) in rows.iter().zip(fires) {
        let (episodes, notifications): (i64, i64) = (row.get(0), row.get(1));
        if fire {
            out.fired += episodes as u64;
        } else {
            out.resolved += episodes as u64;
        }
        out.notifications += notifications as u64;
    }
    write_phases(tx, rules, &phases).await?;
    Ok(out)
}

/// Pending phases as each key ended up: one upsert, one delete.
async fn write_phases(
    tx: &impl GenericClient,
    rules: &RuleSet,
    phases: &FinalPhases<'_>,
) -> Result<(), tokio_postgres::Error> {
    let (mut set, mut cleared) = (PhaseColumns::default(), PhaseColumns::default());
    let mut keys: Vec<_> = phases.iter().collect();
    // In key order, so concurrent writers lock rows in the same order.
    keys.sort_by(|a, b| a.0.cmp(b.0));
    for ((rule, site_id, target), phase) in keys {
        let columns = if phase.is_some() {
            &mut set
        } else {
            &mut cleared
        };
        columns.rules.push(rules.rules[*rule].name.as_str());
        columns.sites.push(*site_id);
        columns.targets.push(target);
        if let Some((since_ms, peak)) = phase {
            columns.since.push(timestamp(*since_ms));
            columns.peaks.push(*peak);
        }
    }
    if !set.rules.is_empty() {
        tx.execute(
            "INSERT INTO rule_state (rule, site_id, target, phase, since, peak)
             SELECT r, s, t, 'pending', since, peak
             FROM unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::float8[]) AS v(r, s, t, since, peak)
             ON CONFLICT (rule, site_id, target)
             DO UPDATE SET since = excluded.since, peak = excluded.peak, updated_at = now()",
            &[&set.rules, &set.sites, &set.targets, &set.since, &set.peaks],
        )
        .await?;
    }
    if !cleared.rules.is_empty() {
        tx.execute(
            "DELETE FROM rule_state s USING unnest($1::text[], $2::int[], $3::text[]) AS v(r, site, t)
             WHERE s.rule = v.r AND s.site_id = v.site AND s.target = v.t",
            &[&cleared.rules, &cleared.sites, &cleared.targets],
        )
        .await?;
    }
    Ok(())
}

#[derive(Default)]
struct PhaseColumns<'a> {
    rules: Vec<&'a str>,
    sites: Vec<i32>,
    targets: Vec<&'a str>,
    since: Vec<time::OffsetDateTime>,
    peaks: Vec<Option<f64>>,
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
