//! Alert notifications: delivers the rows the rules write to
//! `notification_outbox` (one per episode transition and receiver, inserted
//! in the transaction that opens or closes the episode) to webhooks
//! ([`webhook`]) and Alertmanager ([`alertmanager`]), and keeps open
//! episodes alive in Alertmanager.
//!
//! # Delivery: claim under a lease, then POST without holding locks
//!
//! Every `poll_interval`, one short statement (`claim.sql`) picks up to
//! `batch_size` due rows (`delivered_at IS NULL AND next_attempt_at <=
//! now()`, oldest due first) with `FOR UPDATE SKIP LOCKED` and, in the same
//! statement, moves their `next_attempt_at` forward by the lease. It commits
//! at once: while the HTTP calls run, no transaction is open and no row of
//! any table is locked, so a slow receiver never holds back the rules, the
//! ingest path or vacuum. Another collector instance (same statement, same
//! database) skips the rows while they are locked and, once committed, sees
//! them as not due until the lease ends.
//!
//! Invariant: **no row is delivered by two instances at once.** A claim's
//! lease is at least `3 × request_timeout + LEASE_MARGIN` (60 s by
//! default) on the database clock, measured from the statement's start. No
//! request of a claim starts later than `lease − request_timeout −
//! LEASE_MARGIN` after the claim was sent (rows not started by then are
//! handed back, due at once), and each request ends within
//! `request_timeout`, so every attempt, and the statement recording it, is
//! over before anyone else can claim the row. The statements that reschedule
//! or hand back a row are fenced by the lease value they claimed it under.
//!
//! Delivery is at least once: if the collector dies between a 2xx and
//! recording it, the row is delivered again when its lease runs out. The
//! `Idempotency-Key` (webhook) is the same on every attempt, so receivers
//! can drop the repeat; Alertmanager deduplicates by labels.
//!
//! Order: a row is not claimed while an earlier row of the same episode and
//! receiver is undelivered, so `resolved` never overtakes `firing`, also
//! across retries.
//!
//! Outcomes: a 2xx sets `delivered_at`. Anything else (a refusal, no
//! answer, the timeout) increments `attempts`, keeps `last_error` and makes
//! the row due again after 1 s, doubling up to 5 min; there is no last
//! attempt, so once an operator fixes the receiver the backlog goes out.
//! A row naming a receiver that is not in the current rule set is
//! undeliverable: `last_error` says so and `next_attempt_at` becomes
//! `infinity` (requeue with `UPDATE notification_outbox SET next_attempt_at
//! = now() WHERE next_attempt_at = 'infinity'`). The rule set this task
//! sees must therefore be the loaded one before it starts.
//!
//! # Alertmanager re-sends
//!
//! Alertmanager resolves an alert by itself once it has not been posted for
//! its `resolve_timeout` (5 min by default). Every `alertmanager_resend`
//! (60 s), each open episode (`ended_at IS NULL`, read from
//! `alert_episodes`) is posted again to each Alertmanager receiver of its
//! rule (`Rule.receivers`, empty meaning all) that has taken its `firing`
//! notification: an episode never announced to a receiver (silenced, or a
//! backlog the rule does not page) is not announced by a re-send either,
//! and an episode whose rule is gone is not re-sent. Re-sends and outbox
//! deliveries run one after the other in one task; should another instance
//! re-send an episode just as it resolves, the alert fires again until
//! `resolve_timeout` at worst. Pruning delivered outbox rows must keep those
//! of open episodes, or their re-sends stop.
//!
//! # Metrics
//!
//! `bess_collector_notifications_delivered_total{receiver}`,
//! `bess_collector_notification_failures_total{receiver}` (failed attempts,
//! undeliverable rows and failed re-sends),
//! `bess_collector_alertmanager_resent_total{receiver}` (alerts re-sent) and
//! the gauge `bess_collector_notifications_pending` (rows not delivered).

pub mod alertmanager;
mod episode;
mod http;
mod outbox;
pub mod webhook;

pub use episode::{Episode, Transition};
pub use http::DeliveryError;

use deadpool_postgres::Pool;
use futures::StreamExt as _;
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::rules::model::{Receiver, ReceiverKind, RuleSet};
use outbox::Claimed;

/// Time kept, at the end of a lease, for recording the outcome of its
/// last request.
pub const LEASE_MARGIN: Duration = Duration::from_secs(15);
/// The shortest lease a claim takes.
pub const MIN_LEASE: Duration = Duration::from_secs(60);
/// The delay after a first failed attempt; it doubles with each failure...
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// ...up to this.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// How the notifier paces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifierSettings {
    /// How often due rows are claimed.
    pub poll_interval: Duration,
    /// How often open episodes are posted to Alertmanager again; well
    /// below Alertmanager's `resolve_timeout`.
    pub alertmanager_resend: Duration,
    /// The longest one POST may take, answer included.
    pub request_timeout: Duration,
    /// Rows per claim.
    pub batch_size: NonZeroUsize,
    /// POSTs in flight at once within a claim.
    pub concurrency: NonZeroUsize,
}

impl NotifierSettings {
    pub const fn new() -> Self {
        Self {
            poll_interval: Duration::from_millis(500),
            alertmanager_resend: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
            batch_size: NonZeroUsize::new(100).expect("non-zero"),
            concurrency: NonZeroUsize::new(8).expect("non-zero"),
        }
    }

    /// How long a claim holds its rows.
    pub fn lease(&self) -> Duration {
        (self.request_timeout * 3 + LEASE_MARGIN).max(MIN_LEASE)
    }

    /// How long after a claim its last request may start.
    fn start_window(&self) -> Duration {
        self.lease() - self.request_timeout - LEASE_MARGIN
    }
}

impl Default for NotifierSettings {
    fn default() -> Self {
        Self::new()
    }
}

/// The delay before the next attempt, after `failures` failed attempts
/// (this one included): 1 s, 2 s, 4 s, ... at most 5 min.
pub fn retry_delay(failures: i32) -> Duration {
    let doublings = u32::try_from(failures.saturating_sub(1)).unwrap_or(0);
    RETRY_FIRST
        .checked_mul(2u32.saturating_pow(doublings))
        .map_or(RETRY_MAX, |delay| delay.min(RETRY_MAX))
}

/// A database problem that ended a cycle early; the rows stay in the
/// outbox and the next cycle tries again.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// What one delivery cycle did with the rows it claimed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cycle {
    pub claimed: usize,
    pub delivered: usize,
    /// Failed attempts, scheduled for a retry.
    pub failed: usize,
    /// Rows whose receiver is gone, set aside.
    pub undeliverable: usize,
    /// Rows handed back unattempted (shutdown, or the lease running short).
    pub released: usize,
    /// Outcomes that could not be recorded (the lease runs out instead).
    pub unrecorded: usize,
}

enum Settled {
    Delivered,
    Failed,
    Undeliverable,
    Released,
    Unrecorded,
}

/// Delivers `notification_outbox` (see the module documentation).
pub struct Notifier {
    pool: Pool,
    rules: watch::Receiver<Arc<RuleSet>>,
    http: reqwest::Client,
    settings: NotifierSettings,
    /// Woken when this instance's writer committed notifications.
    queued: Arc<tokio::sync::Notify>,
}

impl Notifier {
    /// A notifier with the default settings.
    pub fn new(pool: Pool, rules: watch::Receiver<Arc<RuleSet>>, http: reqwest::Client) -> Self {
        Self::with_settings(pool, rules, http, NotifierSettings::default())
    }

    /// `http` needs no timeout of its own: every request gets
    /// `settings.request_timeout`.
    pub fn with_settings(
        pool: Pool,
        rules: watch::Receiver<Arc<RuleSet>>,
        http: reqwest::Client,
        settings: NotifierSettings,
    ) -> Self {
        Self {
            pool,
            rules,
            http,
            settings,
            queued: Arc::default(),
        }
    }

    /// Deliver at once when `queued` is notified (besides polling, which
    /// finds what other instances queued).
    pub fn woken_by(mut self, queued: Arc<tokio::sync::Notify>) -> Self {
        self.queued = queued;
        self
    }

    /// Deliver and re-send until `cancel`. A cycle under way when it
    /// fires starts no new request and hands its unattempted rows back.
    pub async fn run(self, cancel: CancellationToken) {
        // `interval` takes no zero period.
        let shortest = Duration::from_millis(1);
        let mut poll = tokio::time::interval(self.settings.poll_interval.max(shortest));
        poll.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut resend = tokio::time::interval(self.settings.alertmanager_resend.max(shortest));
        resend.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut rule_changes = self.rules.clone();
        rule_changes.mark_changed();
        tracing::info!(
            poll_interval = ?self.settings.poll_interval,
            alertmanager_resend = ?self.settings.alertmanager_resend,
            "notifier started"
        );
        loop {
            if rule_changes.has_changed().unwrap_or(false) {
                let rules = rule_changes.borrow_and_update().clone();
                register_receivers(&rules);
            }
            // Not biased: a busy outbox must not starve the re-sends.
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = poll.tick() => {
                    if let Err(e) = self.cycle(&cancel).await {
                        tracing::warn!("notification delivery: {e}");
                    }
                }
                // This instance just queued notifications: deliver them now
                // rather than at the next poll.
                () = self.queued.notified() => {
                    if let Err(e) = self.cycle(&cancel).await {
                        tracing::warn!("notification delivery: {e}");
                    }
                }
                _ = resend.tick() => {
                    if let Err(e) = self.resend_open().await {
                        tracing::warn!("alertmanager re-send: {e}");
                    }
                }
            }
        }
        tracing::info!("notifier stopped");
    }

    /// One delivery cycle: claim the due rows and settle each.
    pub async fn deliver_due(&self) -> Result<Cycle, NotifyError> {
        self.cycle(&CancellationToken::new()).await
    }

    /// Notifications not delivered yet (the
    /// `bess_collector_notifications_pending` gauge).
    pub async fn pending(&self) -> Result<i64, NotifyError> {
        let client = self.pool.get().await?;
        Ok(outbox::pending(&client).await?)
    }

    async fn cycle(&self, cancel: &CancellationToken) -> Result<Cycle, NotifyError> {
        let client = self.pool.get().await?;
        let start_by = Instant::now() + self.settings.start_window();
        let limit = i64::try_from(self.settings.batch_size.get()).unwrap_or(i64::MAX);
        let claimed = outbox::claim(&client, limit, self.settings.lease()).await?;
        let mut cycle = Cycle {
            claimed: claimed.len(),
            ..Cycle::default()
        };
        if !claimed.is_empty() {
            let rules = self.rules.borrow().clone();
            let outcomes: Vec<Settled> = futures::stream::iter(claimed)
                .map(|row| self.settle(&client, &rules, row, start_by, cancel))
                .buffer_unordered(self.settings.concurrency.get())
                .collect()
                .await;
            for outcome in outcomes {
                match outcome {
                    Settled::Delivered => cycle.delivered += 1,
                    Settled::Failed => cycle.failed += 1,
                    Settled::Undeliverable => cycle.undeliverable += 1,
                    Settled::Released => cycle.released += 1,
                    Settled::Unrecorded => cycle.unrecorded += 1,
                }
            }
        }
        let pending = outbox::pending(&client).await?;
        metrics::gauge!("bess_collector_notifications_pending").set(pending as f64);
        Ok(cycle)
    }

    /// Attempt one claimed row and record the outcome.
    async fn settle(
        &self,
        client: &deadpool_postgres::Client,
        rules: &RuleSet,
        row: Claimed,
        start_by: Instant,
        cancel: &CancellationToken,
    ) -> Settled {
        let id = row.notification_id;
        if cancel.is_cancelled() || Instant::now() >= start_by {
            return match outbox::release(client, &row).await {
                Ok(()) => Settled::Released,
                Err(e) => unrecorded(id, e),
            };
        }
        let Some(receiver) = rules.receiver(&row.receiver) else {
            let error = format!("receiver {:?} is not in the rule set", row.receiver);
            tracing::warn!(notification = id, "undeliverable: {error}");
            count_failure(&row.receiver);
            return match outbox::mark_undeliverable(client, &row, &error).await {
                Ok(()) => Settled::Undeliverable,
                Err(e) => unrecorded(id, e),
            };
        };
        match self.send(receiver, &row).await {
            Ok(()) => {
                metrics::counter!(
                    "bess_collector_notifications_delivered_total",
                    "receiver" => row.receiver.clone()
                )
                .increment(1);
                match outbox::mark_delivered(client, id).await {
                    Ok(_) => Settled::Delivered,
                    Err(e) => unrecorded(id, e),
                }
            }
            Err(error) => {
                let delay = retry_delay(row.attempts.saturating_add(1));
                tracing::warn!(
                    notification = id,
                    receiver = row.receiver,
                    attempts = row.attempts + 1,
                    retry_in = ?delay,
                    "notification not delivered: {error}"
                );
                count_failure(&row.receiver);
                match outbox::schedule_retry(client, &row, &error.to_string(), delay).await {
                    Ok(()) => Settled::Failed,
                    Err(e) => unrecorded(id, e),
                }
            }
        }
    }

    async fn send(&self, receiver: &Receiver, row: &Claimed) -> Result<(), DeliveryError> {
        let timeout = self.settings.request_timeout;
        match &receiver.kind {
            ReceiverKind::Webhook { url, secret } => {
                webhook::deliver(
                    &self.http,
                    url,
                    secret.as_deref(),
                    &row.idempotency_key,
                    row.transition,
                    &row.episode,
                    timeout,
                )
                .await
            }
            ReceiverKind::Alertmanager { url } => {
                alertmanager::deliver(&self.http, url, row.transition, &row.episode, timeout).await
            }
        }
    }

    /// Post every open episode again to the Alertmanager receivers that
    /// took its `firing` notification; the number of alerts posted. A
    /// receiver that fails is not tried again until the next round.
    pub async fn resend_open(&self) -> Result<usize, NotifyError> {
        let rules = self.rules.borrow().clone();
        let targets: Vec<&str> = rules
            .receivers
            .iter()
            .filter(|r| matches!(r.kind, ReceiverKind::Alertmanager { .. }))
            .map(|r| r.name.as_str())
            .collect();
        if targets.is_empty() {
            return Ok(0);
        }
        let open = {
            let client = self.pool.get().await?;
            outbox::open_episodes(&client, &targets).await?
        };
        let mut by_receiver: BTreeMap<String, Vec<Episode>> = BTreeMap::new();
        for (receiver, episode) in open {
            let Some(rule) = rules.rules.iter().find(|r| r.name == episode.rule) else {
                continue;
            };
            if rule.receivers.is_empty() || rule.receivers.contains(&receiver) {
                by_receiver.entry(receiver).or_default().push(episode);
            }
        }
        let mut resent = 0;
        for (name, episodes) in &by_receiver {
            let Some(ReceiverKind::Alertmanager { url }) = rules.receiver(name).map(|r| &r.kind)
            else {
                continue;
            };
            for chunk in episodes.chunks(alertmanager::RESEND_CHUNK) {
                let sent =
                    alertmanager::resend(&self.http, url, chunk, self.settings.request_timeout)
                        .await;
                if let Err(error) = sent {
                    tracing::warn!(receiver = name, "re-sending open alerts: {error}");
                    count_failure(name);
                    break;
                }
                resent += chunk.len();
                metrics::counter!(
                    "bess_collector_alertmanager_resent_total",
                    "receiver" => name.clone()
                )
                .increment(chunk.len() as u64);
            }
        }
        Ok(resent)
    }
}

fn count_failure(receiver: &str) {
    metrics::counter!(
        "bess_collector_notification_failures_total",
        "receiver" => receiver.to_owned()
    )
    .increment(1);
}

fn unrecorded(id: i64, error: tokio_postgres::Error) -> Settled {
    tracing::warn!(
        notification = id,
        "recording the outcome failed (retried when its lease ends): {error}"
    );
    Settled::Unrecorded
}

/// Export every receiver's counters from zero, before its first event.
fn register_receivers(rules: &RuleSet) {
    for receiver in &rules.receivers {
        let name = receiver.name.clone();
        metrics::counter!("bess_collector_notifications_delivered_total", "receiver" => name.clone())
            .increment(0);
        metrics::counter!("bess_collector_notification_failures_total", "receiver" => name)
            .increment(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_from_one_second_up_to_five_minutes() {
        let secs: Vec<u64> = (1..=11).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_delay(i32::MAX), RETRY_MAX);
        assert_eq!(retry_delay(0), RETRY_FIRST);
    }

    #[test]
    fn every_request_of_a_claim_ends_before_its_lease() {
        for timeout in [1, 5, 20, 60] {
            let settings = NotifierSettings {
                request_timeout: Duration::from_secs(timeout),
                ..NotifierSettings::new()
            };
            assert!(settings.lease() >= MIN_LEASE);
            assert!(
                settings.start_window() + settings.request_timeout + LEASE_MARGIN
                    <= settings.lease()
            );
            assert!(settings.start_window() >= settings.request_timeout);
        }
    }
}
