//! `Uplink`: the drain loop every transport runs under. It takes batches
//! from the buffer in drain order into a window of at most
//! `Transport::window()` batches in flight, and settles each one by what
//! the broker reported:
//!
//! - delivered: removed from the buffer and counted, never before;
//! - refused (queue full), failed, or in flight when the link broke: handed
//!   back to the buffer untouched, so it goes again with the same bytes and
//!   sequence number.
//!
//! After a failure nothing new is sent until every batch in flight has
//! reported; then the transport recovers and, after a backoff (250 ms
//! doubling to 10 s, reset by the next delivery), sending starts again from
//! the oldest unacknowledged batch in drain order. On stop the loop keeps
//! draining until the buffer is empty and nothing is in flight, or `grace`
//! has passed; whatever is left stays in the buffer for the next start.

use futures::FutureExt as _;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use bess_protocol::BatchSeq;

use super::{DrainOrder, Report, Transport};
use crate::backoff::Backoff;
use crate::buffer::BufferHandle;
use crate::clock::now_ms;
use crate::status::{AgentStatus, Totals};

const RETRY_DELAY_MIN: Duration = Duration::from_millis(250);
const RETRY_DELAY_MAX: Duration = Duration::from_secs(10);
/// How often an idle uplink looks at the buffer without being woken.
const IDLE_CHECK: Duration = Duration::from_millis(500);

pub struct Uplink<T> {
    transport: T,
    buffer: BufferHandle,
    status: Arc<AgentStatus>,
    sealed: Arc<Notify>,
    drain: DrainOrder,
}

/// What one wake-up's reports settled.
#[derive(Default)]
struct Settled {
    delivered: Vec<BatchSeq>,
    undelivered: Vec<BatchSeq>,
    failure: Option<String>,
}

impl Settled {
    fn record(&mut self, report: Report, in_flight: &mut BTreeSet<BatchSeq>) {
        match report {
            Report::Delivered(seq) => {
                if in_flight.remove(&seq) {
                    self.delivered.push(seq);
                }
            }
            Report::Failed(seq, error) => {
                if in_flight.remove(&seq) {
                    self.undelivered.push(seq);
                    self.failure.get_or_insert(error);
                }
            }
            Report::LinkLost(error) => {
                self.undelivered.extend(std::mem::take(in_flight));
                self.failure.get_or_insert(error);
            }
            Report::Connected => {}
        }
    }
}

impl<T: Transport> Uplink<T> {
    /// Drains `buffer` over `transport`, live first (see [`DrainOrder`]);
    /// `sealed` wakes it when a new batch is sealed.
    pub fn with_transport(
        transport: T,
        buffer: BufferHandle,
        status: Arc<AgentStatus>,
        sealed: Arc<Notify>,
    ) -> Self {
        Self {
            transport,
            buffer,
            status,
            sealed,
            drain: DrainOrder::default(),
        }
    }

    /// Choose the drain order (default: live first with a 10 s window).
    pub fn with_drain_order(mut self, drain: DrainOrder) -> Self {
        self.drain = drain;
        self
    }

    /// Send until `stop` fires and then until the buffer is empty or
    /// `grace` has passed; what is left stays in the buffer for next time.
    pub async fn run(mut self, stop: CancellationToken, grace: Duration) {
        let mut backoff = Backoff::new(RETRY_DELAY_MIN, RETRY_DELAY_MAX);
        let mut in_flight: BTreeSet<BatchSeq> = BTreeSet::new();
        let mut deadline: Option<Instant> = None;
        loop {
            if stop.is_cancelled() {
                let at = *deadline.get_or_insert_with(|| Instant::now() + grace);
                if Instant::now() >= at {
                    tracing::warn!("shutdown grace period over; unsent batches stay in the buffer");
                    break;
                }
            }
            let drained = self.fill(&mut in_flight).await;
            if stop.is_cancelled() && drained && in_flight.is_empty() {
                break;
            }
            let wait = deadline.map_or(IDLE_CHECK, |d| {
                d.saturating_duration_since(Instant::now()).min(IDLE_CHECK)
            });
            let first = tokio::select! {
                report = self.transport.next_report() => report,
                () = self.sealed.notified() => continue,
                () = stop.cancelled(), if deadline.is_none() => continue,
                () = tokio::time::sleep(wait) => continue,
            };
            // Take every report that is already there, up to the first failure.
            let mut settled = Settled::default();
            settled.record(first, &mut in_flight);
            while settled.failure.is_none() && !in_flight.is_empty() {
                let Some(report) = self.transport.next_report().now_or_never() else {
                    break;
                };
                settled.record(report, &mut in_flight);
            }
            if self
                .acknowledge(std::mem::take(&mut settled.delivered))
                .await
            {
                backoff.reset();
            }
            if let Some(error) = settled.failure.take() {
                self.after_failure(
                    error,
                    settled,
                    &mut in_flight,
                    &mut backoff,
                    &stop,
                    deadline,
                )
                .await;
            }
        }
        self.transport.close().await;
        let _ = self.buffer.settle_all().await;
    }

    /// Take batches into the free part of the window and send them. True
    /// when the buffer had nothing left to take.
    async fn fill(&mut self, in_flight: &mut BTreeSet<BatchSeq>) -> bool {
        let window = self.transport.window();
        if !self.transport.is_ready() || in_flight.len() >= window {
            return false;
        }
        let live_since = self.drain.live_since_ms(now_ms());
        // Taking marks the batches in flight, so the disk cap leaves them alone.
        let batches = match self
            .buffer
            .take_for_sending(live_since, window - in_flight.len())
            .await
        {
            Ok(batches) => batches,
            Err(e) => {
                tracing::error!("reading buffer: {e}");
                return false;
            }
        };
        let drained = batches.is_empty();
        let mut unsent = Vec::new();
        for batch in batches {
            if !unsent.is_empty() {
                unsent.push(batch.seq);
                continue;
            }
            match self.transport.send(batch.seq, batch.payload) {
                Ok(()) => {
                    in_flight.insert(batch.seq);
                }
                // Wait for deliveries to make room.
                Err(e) => {
                    tracing::debug!(uplink = T::NAME, "{e}");
                    unsent.push(batch.seq);
                }
            }
        }
        if !unsent.is_empty() {
            let _ = self.buffer.settle(unsent).await;
        }
        drained
    }

    /// Let everything in flight report (or the grace period end), hand the
    /// undelivered batches back to the buffer, recover and back off.
    async fn after_failure(
        &mut self,
        error: String,
        mut settled: Settled,
        in_flight: &mut BTreeSet<BatchSeq>,
        backoff: &mut Backoff,
        stop: &CancellationToken,
        deadline: Option<Instant>,
    ) {
        while !in_flight.is_empty() {
            let wait = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            tokio::select! {
                report = self.transport.next_report() => settled.record(report, in_flight),
                () = tokio::time::sleep(wait) => settled.undelivered.extend(std::mem::take(in_flight)),
            }
        }
        let _ = self.buffer.settle(settled.undelivered).await;
        self.acknowledge(settled.delivered).await;

        metrics::counter!("bess_edge_delivery_failures_total").increment(1);
        let delay = backoff.next_delay();
        tracing::warn!(uplink = T::NAME, retry_in = ?delay, "delivery failed: {error}");
        self.status.record_uplink_error(error.clone());
        self.transport.recover(&error);
        let wait = deadline.map_or(delay, |d| {
            delay.min(d.saturating_duration_since(Instant::now()))
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled(), if deadline.is_none() => {}
        }
    }

    /// Remove delivered batches from the buffer and count them. True if
    /// anything was acknowledged. (`&mut self`: a transport need not be
    /// `Sync` for the loop to run on any worker.)
    async fn acknowledge(&mut self, delivered: Vec<BatchSeq>) -> bool {
        let Some(&last) = delivered.last() else {
            return false;
        };
        let n = delivered.len();
        match self.buffer.remove(delivered).await {
            Ok(()) => {
                metrics::counter!("bess_edge_batches_acked_total").increment(n as u64);
                metrics::gauge!("bess_edge_buffer_batches").decrement(n as f64);
                Totals::add(&self.status.totals.batches_acked, n as u64);
                self.status.record_ack(last.0, now_ms());
                true
            }
            Err(e) => {
                tracing::error!("removing acknowledged batches: {e}");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{SealSummary, SqliteBuffer};
    use crate::uplink::QueueFull;
    use std::collections::{HashSet, VecDeque};
    use std::sync::Mutex;

    /// What the fake broker does with what it is sent, and what it saw.
    #[derive(Default)]
    struct Script {
        /// Every send, in order, with its bytes.
        sent: Vec<(BatchSeq, Vec<u8>)>,
        /// Sent and not yet reported, oldest first.
        waiting: VecDeque<BatchSeq>,
        /// These batches are reported failed the next time they are sent.
        fail: HashSet<BatchSeq>,
        /// Report the link lost once this many batches are waiting.
        lose_link_at: Option<usize>,
        /// Refuse this many sends (queue full).
        refuse: usize,
        /// Never report anything.
        silent: bool,
        recoveries: usize,
    }

    struct FakeTransport(Arc<Mutex<Script>>);

    impl Transport for FakeTransport {
        const NAME: &'static str = "fake";

        fn window(&self) -> usize {
            4
        }

        fn is_ready(&self) -> bool {
            true
        }

        fn send(&mut self, seq: BatchSeq, payload: Vec<u8>) -> Result<(), QueueFull> {
            let mut script = self.0.lock().unwrap();
            if script.refuse > 0 {
                script.refuse -= 1;
                return Err(QueueFull("full".into()));
            }
            script.sent.push((seq, payload));
            script.waiting.push_back(seq);
            Ok(())
        }

        async fn next_report(&mut self) -> Report {
            let report = {
                let mut script = self.0.lock().unwrap();
                if script.silent {
                    None
                } else if script
                    .lose_link_at
                    .is_some_and(|n| script.waiting.len() >= n)
                {
                    script.lose_link_at = None;
                    script.waiting.clear();
                    Some(Report::LinkLost("connection reset".into()))
                } else {
                    let next = script.waiting.pop_front();
                    next.map(|seq| {
                        if script.fail.remove(&seq) {
                            Report::Failed(seq, "broker said no".into())
                        } else {
                            Report::Delivered(seq)
                        }
                    })
                }
            };
            match report {
                Some(report) => report,
                None => std::future::pending().await,
            }
        }

        fn recover(&mut self, _error: &str) {
            let mut script = self.0.lock().unwrap();
            script.recoveries += 1;
            script.waiting.clear();
        }

        async fn close(&mut self) {}
    }

    struct Rig {
        _dir: tempfile::TempDir,
        buffer: BufferHandle,
        status: Arc<AgentStatus>,
        script: Arc<Mutex<Script>>,
    }

    impl Rig {
        fn new(script: Script) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let buffer = SqliteBuffer::open(&dir.path().join("buffer.sqlite"), 1).unwrap();
            Self {
                _dir: dir,
                buffer: BufferHandle::new(buffer),
                status: Arc::new(AgentStatus::new("site-t".into(), Vec::new())),
                script: Arc::new(Mutex::new(script)),
            }
        }

        async fn seal(&self, label: &str, sealed_at_ms: i64, n: usize) {
            for i in 0..n {
                let label = label.to_owned();
                let summary = SealSummary {
                    sealed_at_ms,
                    ..SealSummary::default()
                };
                self.buffer
                    .seal(summary, move |seq, _| {
                        Ok(format!("{label} {i} seq {}", seq.0).into_bytes())
                    })
                    .await
                    .unwrap();
            }
        }

        fn uplink(&self) -> Uplink<FakeTransport> {
            Uplink::with_transport(
                FakeTransport(self.script.clone()),
                self.buffer.clone(),
                self.status.clone(),
                Arc::new(Notify::new()),
            )
        }

        async fn drain(&self, uplink: Uplink<FakeTransport>) {
            let stop = CancellationToken::new();
            let task = tokio::spawn(uplink.run(stop.clone(), Duration::from_secs(5)));
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.buffer.stats().await.unwrap().batches > 0 {
                assert!(Instant::now() < deadline, "the buffer drains within 20 s");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop.cancel();
            task.await.unwrap();
        }

        fn sent(&self) -> Vec<(u64, String)> {
            let script = self.script.lock().unwrap();
            script
                .sent
                .iter()
                .map(|(seq, bytes)| (seq.0, String::from_utf8(bytes.clone()).unwrap()))
                .collect()
        }
    }

    fn batch(seq: u64, label: &str, i: usize) -> (u64, String) {
        (seq, format!("{label} {i} seq {seq}"))
    }

    #[tokio::test]
    async fn a_failed_batch_goes_again_with_the_same_bytes_and_sequence() {
        let rig = Rig::new(Script {
            fail: HashSet::from([BatchSeq(1001)]),
            ..Script::default()
        });
        rig.seal("old", 0, 3).await;
        rig.drain(rig.uplink()).await;

        let sent = rig.sent();
        assert_eq!(
            sent[..3],
            [
                batch(1000, "old", 0),
                batch(1001, "old", 1),
                batch(1002, "old", 2)
            ]
        );
        assert_eq!(
            sent[3..],
            [batch(1001, "old", 1)],
            "only the failed batch again"
        );
        assert_eq!(Totals::get(&rig.status.totals.batches_acked), 3);
        let uplink = rig.status.uplink();
        assert_eq!(uplink.last_acked_seq, Some(1002));
        assert_eq!(uplink.last_error, None, "the resend cleared the error");
        assert_eq!(rig.script.lock().unwrap().recoveries, 1);
    }

    #[tokio::test]
    async fn a_lost_link_hands_every_batch_in_flight_back_for_resending() {
        let rig = Rig::new(Script {
            lose_link_at: Some(3),
            ..Script::default()
        });
        rig.seal("old", 0, 3).await;
        rig.drain(rig.uplink()).await;

        let sent = rig.sent();
        let first: Vec<_> = (0..3).map(|i| batch(1000 + i as u64, "old", i)).collect();
        assert_eq!(sent[..3], first[..]);
        assert_eq!(
            sent[3..],
            first[..],
            "the same bytes and sequence numbers again"
        );
        assert_eq!(Totals::get(&rig.status.totals.batches_acked), 3);
        assert_eq!(rig.script.lock().unwrap().recoveries, 1);
    }

    #[tokio::test]
    async fn nothing_leaves_the_buffer_before_the_broker_confirms_it() {
        let rig = Rig::new(Script {
            silent: true,
            ..Script::default()
        });
        rig.seal("old", 0, 6).await;
        let stop = CancellationToken::new();
        let task = tokio::spawn(rig.uplink().run(stop.clone(), Duration::from_millis(200)));
        while rig.script.lock().unwrap().sent.len() < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        task.await.unwrap();

        assert_eq!(rig.sent().len(), 4, "a window of four, never more");
        assert_eq!(rig.buffer.stats().await.unwrap().batches, 6);
        assert_eq!(Totals::get(&rig.status.totals.batches_acked), 0);
        let again = rig.buffer.take_for_sending(None, 10).await.unwrap();
        assert_eq!(
            again.len(),
            6,
            "after stopping, every batch can be taken again"
        );
    }

    #[tokio::test]
    async fn a_refused_send_keeps_the_batch_for_later() {
        let rig = Rig::new(Script {
            refuse: 1,
            ..Script::default()
        });
        rig.seal("old", 0, 2).await;
        rig.drain(rig.uplink()).await;

        assert_eq!(rig.sent(), [batch(1000, "old", 0), batch(1001, "old", 1)]);
        assert_eq!(Totals::get(&rig.status.totals.batches_acked), 2);
    }

    #[tokio::test]
    async fn live_first_sends_the_live_window_before_the_backlog() {
        let rig = Rig::new(Script::default());
        rig.seal("old", 0, 3).await;
        rig.seal("live", now_ms(), 2).await;
        rig.drain(rig.uplink()).await;

        assert_eq!(
            rig.sent(),
            [
                batch(1003, "live", 0),
                batch(1004, "live", 1),
                batch(1000, "old", 0),
                batch(1001, "old", 1),
                batch(1002, "old", 2),
            ]
        );
    }

    #[tokio::test]
    async fn oldest_first_sends_strictly_in_sequence_order() {
        let rig = Rig::new(Script::default());
        rig.seal("old", 0, 3).await;
        rig.seal("live", now_ms(), 2).await;
        rig.drain(rig.uplink().with_drain_order(DrainOrder::OldestFirst))
            .await;

        assert_eq!(
            rig.sent(),
            [
                batch(1000, "old", 0),
                batch(1001, "old", 1),
                batch(1002, "old", 2),
                batch(1003, "live", 0),
                batch(1004, "live", 1),
            ]
        );
    }
}
