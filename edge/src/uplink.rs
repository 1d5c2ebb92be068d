//! `KafkaUplink`: forwards sealed batches from the buffer to Kafka, oldest
//! first, with an idempotent producer (acks=all, key = site id). A batch
//! leaves the buffer only after its delivery report; a failed delivery is
//! retried from the buffer with the same bytes and the same sequence.

use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use bess_protocol::{BatchSeq, SiteId};

use crate::buffer::BufferHandle;
use crate::clock::now_ms;
use crate::config::KafkaConfig;
use crate::status::{AgentStatus, Totals};

/// Batches in flight at once; the idempotent producer keeps their order.
const WINDOW: usize = 64;
const RETRY_DELAY_MIN: Duration = Duration::from_millis(250);
const RETRY_DELAY_MAX: Duration = Duration::from_secs(10);

pub struct KafkaUplink {
    producer: FutureProducer,
    /// To build a fresh producer when the current one hits a fatal error.
    client_config: ClientConfig,
    topic: String,
    site: SiteId,
    buffer: BufferHandle,
    status: Arc<AgentStatus>,
    sealed: Arc<Notify>,
    drain: DrainOrder,
}

/// In which order buffered batches are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOrder {
    /// Strictly oldest first.
    OldestFirst,
    /// Batches sealed within the window first (dashboards stay live while
    /// a backlog drains), then the backlog oldest first.
    LiveFirst { window: Duration },
}

impl DrainOrder {
    pub(crate) fn live_window(self) -> Option<Duration> {
        match self {
            DrainOrder::OldestFirst => None,
            DrainOrder::LiveFirst { window } => Some(window),
        }
    }
}

/// librdkafka settings for delivery that loses nothing and doubles nothing.
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "none")
        .set("linger.ms", "5")
        .set(
            "message.timeout.ms",
            kafka.delivery_timeout.as_millis().to_string(),
        )
        .set("client.id", "bess-edge");
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    config
}

impl KafkaUplink {
    pub fn new(
        kafka: &KafkaConfig,
        site: SiteId,
        buffer: BufferHandle,
        status: Arc<AgentStatus>,
        sealed: Arc<Notify>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        Ok(Self {
            producer: producer_config(kafka).create()?,
            client_config: producer_config(kafka),
            topic: kafka.topic.clone(),
            site,
            buffer,
            status,
            sealed,
            drain: DrainOrder::LiveFirst {
                window: Duration::from_secs(10),
            },
        })
    }

    /// Choose the drain order (default: live first with a 10 s window).
    pub fn with_drain_order(mut self, drain: DrainOrder) -> Self {
        self.drain = drain;
        self
    }

    /// Send until `stop` fires and then until the buffer is empty or
    /// `grace` has passed; what is left stays in the buffer for next time.
    pub async fn run(mut self, stop: CancellationToken, grace: Duration) {
        let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        let mut retry_delay = RETRY_DELAY_MIN;
        let mut stop_deadline: Option<Instant> = None;
        loop {
            if stop.is_cancelled() {
                let deadline = *stop_deadline.get_or_insert_with(|| Instant::now() + grace);
                if Instant::now() >= deadline {
                    tracing::warn!("shutdown grace period over; unsent batches stay in the buffer");
                    break;
                }
            }
            // Fill the window.
            if in_flight.len() < WINDOW {
                let live_since = self
                    .drain
                    .live_window()
                    .map(|w| now_ms() - w.as_millis() as i64);
                match self
                    .buffer
                    .take_for_sending(live_since, WINDOW - in_flight.len())
                    .await
                {
                    Ok(batches) => {
                        let mut unsent = Vec::new();
                        for batch in batches {
                            if !unsent.is_empty() {
                                unsent.push(batch.seq);
                                continue;
                            }
                            let record = FutureRecord::to(&self.topic)
                                .key(self.site.as_str())
                                .payload(&batch.payload);
                            match self.producer.send_result(record) {
                                Ok(delivery) => {
                                    in_flight.push_back(InFlight {
                                        seq: batch.seq,
                                        delivery,
                                    });
                                }
                                // Queue full: wait for deliveries to make room.
                                Err((e, _)) => {
                                    tracing::debug!("producer queue: {e}");
                                    unsent.push(batch.seq);
                                }
                            }
                        }
                        if !unsent.is_empty() {
                            let _ = self.buffer.settle(unsent).await;
                        }
                    }
                    Err(e) => tracing::error!("reading buffer: {e}"),
                }
            }
            if in_flight.is_empty() {
                if stop.is_cancelled() {
                    break;
                }
                tokio::select! {
                    () = self.sealed.notified() => {}
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
            // Wait for the oldest delivery, then collect any others already done.
            let wait = stop_deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            let first = tokio::select! {
                result = in_flight.next() => result,
                () = tokio::time::sleep(wait) => continue,
            };
            let mut acked = Vec::new();
            let mut failed = None;
            let mut next = first;
            while let Some((seq, result)) = next {
                match result {
                    Ok(()) => acked.push(seq),
                    Err(e) => {
                        failed = Some((seq, e));
                        break;
                    }
                }
                next = futures::FutureExt::now_or_never(in_flight.next()).flatten();
            }
            if !acked.is_empty() {
                let n = acked.len();
                let last = *acked.last().expect("non-empty");
                match self.buffer.remove(acked).await {
                    Ok(()) => {
                        self.count_acked(n);
                        self.status.record_ack(last.0, now_ms());
                        retry_delay = RETRY_DELAY_MIN;
                    }
                    Err(e) => tracing::error!("removing acknowledged batches: {e}"),
                }
            }
            if let Some((seq, error)) = failed {
                metrics::counter!("bess_edge_delivery_failures_total").increment(1);
                tracing::warn!(%seq, retry_in = ?retry_delay, "delivery failed: {error}");
                self.status.record_uplink_error(error.clone());
                self.replace_producer_if_fenced(&error);
                // Let everything in flight settle, then start again from the oldest unacked batch.
                let mut settled = Vec::new();
                let mut unsettled = vec![seq];
                while let Some((seq, result)) = in_flight.next().await {
                    if result.is_ok() {
                        settled.push(seq);
                    } else {
                        unsettled.push(seq);
                    }
                }
                let _ = self.buffer.settle(unsettled).await;
                if !settled.is_empty() {
                    let n = settled.len();
                    if self.buffer.remove(settled).await.is_ok() {
                        self.count_acked(n);
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(retry_delay) => {}
                    () = stop.cancelled(), if !stop.is_cancelled() => {}
                }
                retry_delay = (retry_delay * 2).min(RETRY_DELAY_MAX);
            }
        }
        let _ = self.producer.flush(Duration::from_secs(1));
        let _ = self.buffer.settle_all().await;
    }

    /// An idempotent producer that was fenced or hit a fatal error (e.g.
    /// after a long outage, when the broker has moved its producer epoch on)
    /// never delivers again: start a new one. Safe, because every unacked
    /// batch is still in the buffer and goes again with its own number.
    fn replace_producer_if_fenced(&mut self, error: &str) {
        let fatal = self.producer.client().fatal_error();
        if fatal.is_none() && !error.contains("Fenced") {
            return;
        }
        tracing::warn!(
            ?fatal,
            "Kafka producer is no longer usable; starting a new one"
        );
        match self.client_config.create::<FutureProducer>() {
            Ok(producer) => {
                self.producer = producer;
                metrics::counter!("bess_edge_producer_restarts_total").increment(1);
            }
            Err(e) => tracing::error!("creating a new Kafka producer: {e}"),
        }
    }

    fn count_acked(&self, n: usize) {
        metrics::counter!("bess_edge_batches_acked_total").increment(n as u64);
        metrics::gauge!("bess_edge_buffer_batches").decrement(n as f64);
        Totals::add(&self.status.totals.batches_acked, n as u64);
    }
}

/// A delivery report future that remembers which batch it is for.
struct InFlight {
    seq: BatchSeq,
    delivery: DeliveryFuture,
}

impl std::future::Future for InFlight {
    type Output = (BatchSeq, Result<(), String>);

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let seq = self.seq;
        std::pin::Pin::new(&mut self.delivery)
            .poll(cx)
            .map(|result| {
                let result = match result {
                    Ok(Ok(_delivery)) => Ok(()),
                    Ok(Err((e, _message))) => Err(e.to_string()),
                    Err(_canceled) => Err("producer dropped the delivery".to_owned()),
                };
                (seq, result)
            })
    }
}
