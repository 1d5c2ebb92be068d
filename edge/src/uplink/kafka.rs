//! `KafkaTransport`: carries batches to Kafka with an idempotent producer
//! (acks=all, key = site id), so batches of one site keep their order on
//! their partition and a retried send is never stored twice by the broker.
//! A batch is reported delivered only from its delivery report. An
//! idempotent producer that was fenced or hit a fatal error is replaced by
//! a new one; every unacknowledged batch is still in the buffer and goes
//! again with its own sequence number. What librdkafka reports outside
//! any delivery (a refused TLS handshake, an unreachable broker) goes to
//! the agent's status at once and explains the next failed delivery.

use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use bess_protocol::{BatchSeq, SiteId};

use super::tls::{kafka_client_config, LinkErrors};
use super::{QueueFull, Report, Transport, Uplink};
use crate::buffer::BufferHandle;
use crate::config::KafkaConfig;
use crate::status::AgentStatus;

/// Batches in flight at once; the idempotent producer keeps their order.
const WINDOW: usize = 64;

/// The drain loop over Kafka.
pub type KafkaUplink = Uplink<KafkaTransport>;

impl KafkaUplink {
    pub fn new(
        kafka: &KafkaConfig,
        site: SiteId,
        buffer: BufferHandle,
        status: Arc<AgentStatus>,
        sealed: Arc<Notify>,
    ) -> Result<Self, KafkaError> {
        let errors = LinkErrors::reporting_to(status.clone());
        let transport = KafkaTransport::new(kafka, site, errors)?;
        Ok(Uplink::with_transport(transport, buffer, status, sealed))
    }
}

/// librdkafka settings for delivery that loses nothing and doubles nothing.
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = kafka_client_config(kafka);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "none")
        .set("linger.ms", "5")
        .set(
            "message.timeout.ms",
            kafka.delivery_timeout.as_millis().to_string(),
        )
        .set("client.id", "bess-edge");
    config
}

pub struct KafkaTransport {
    producer: FutureProducer<LinkErrors>,
    errors: LinkErrors,
    /// To build a fresh producer when the current one hits a fatal error.
    client_config: ClientConfig,
    topic: String,
    site: SiteId,
    /// Delivery reports, in the order the batches were sent.
    in_flight: FuturesOrdered<InFlight>,
}

impl KafkaTransport {
    pub fn new(kafka: &KafkaConfig, site: SiteId, errors: LinkErrors) -> Result<Self, KafkaError> {
        let client_config = producer_config(kafka);
        Ok(Self {
            producer: client_config.create_with_context(errors.clone())?,
            errors,
            client_config,
            topic: kafka.topic.clone(),
            site,
            in_flight: FuturesOrdered::new(),
        })
    }
}

impl Transport for KafkaTransport {
    const NAME: &'static str = "kafka";

    fn window(&self) -> usize {
        WINDOW
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn send(&mut self, seq: BatchSeq, payload: Vec<u8>) -> Result<(), QueueFull> {
        let record = FutureRecord::to(&self.topic)
            .key(self.site.as_str())
            .payload(&payload);
        match self.producer.send_result(record) {
            Ok(delivery) => {
                self.in_flight.push_back(InFlight { seq, delivery });
                Ok(())
            }
            Err((e, _record)) => Err(QueueFull(e.to_string())),
        }
    }

    async fn next_report(&mut self) -> Report {
        match self.in_flight.next().await {
            Some((seq, Ok(()))) => {
                self.errors.clear();
                Report::Delivered(seq)
            }
            Some((seq, Err(error))) => match self.errors.last() {
                Some(why) => Report::Failed(seq, format!("{error}; the broker link: {why}")),
                None => Report::Failed(seq, error),
            },
            None => std::future::pending().await,
        }
    }

    /// An idempotent producer that was fenced or hit a fatal error (e.g.
    /// after a long outage, when the broker has moved its producer epoch on)
    /// never delivers again: start a new one.
    fn recover(&mut self, error: &str) {
        // Reports still owed by this producer are for batches already
        // handed back to the buffer.
        self.in_flight = FuturesOrdered::new();
        let fatal = self.producer.client().fatal_error();
        if fatal.is_none() && !error.contains("Fenced") {
            return;
        }
        tracing::warn!(
            ?fatal,
            "Kafka producer is no longer usable; starting a new one"
        );
        match self
            .client_config
            .create_with_context::<_, FutureProducer<LinkErrors>>(self.errors.clone())
        {
            Ok(producer) => {
                self.producer = producer;
                metrics::counter!("bess_edge_producer_restarts_total").increment(1);
            }
            Err(e) => tracing::error!("creating a new Kafka producer: {e}"),
        }
    }

    async fn close(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(1));
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
