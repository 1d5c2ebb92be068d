//! `KafkaLiveSink`: live messages to the live topic, key = site id (so a
//! site's messages stay in order on one partition). Unlike the batch
//! producer it is not idempotent and waits only for the leader (acks=1): a
//! live message is worth sending once, promptly, and never after
//! `live.max_age`, when it would be history.

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use bess_protocol::SiteId;

use super::LiveSink;
use crate::config::{KafkaConfig, LiveConfig};

/// librdkafka settings of the live producer: the uplink's brokers,
/// properties and `[kafka.tls]` with the live lane's delivery settings on top.
pub fn live_producer_config(kafka: &KafkaConfig, live: &LiveConfig) -> ClientConfig {
    let mut config = crate::uplink::tls::kafka_client_config(kafka);
    config
        .set("client.id", "bess-edge-live")
        .set("enable.idempotence", "false")
        .set("acks", "1")
        .set("linger.ms", "0")
        .set("compression.type", "none")
        // One request at a time keeps a site's messages in order on retries.
        .set("max.in.flight.requests.per.connection", "1")
        .set(
            "message.timeout.ms",
            live.max_age.as_millis().max(1).to_string(),
        )
        .set("queue.buffering.max.kbytes", "8192");
    config
}

pub struct KafkaLiveSink {
    producer: FutureProducer,
    topic: String,
    site: SiteId,
    deliveries: FuturesUnordered<DeliveryFuture>,
}

impl KafkaLiveSink {
    pub fn new(kafka: &KafkaConfig, live: &LiveConfig, site: SiteId) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: live_producer_config(kafka, live).create()?,
            topic: kafka.live_topic.clone(),
            site,
            deliveries: FuturesUnordered::new(),
        })
    }
}

impl LiveSink for KafkaLiveSink {
    const NAME: &'static str = "kafka";

    fn send(&mut self, message: Vec<u8>) -> bool {
        let record = FutureRecord::to(&self.topic)
            .key(self.site.as_str())
            .payload(&message);
        match self.producer.send_result(record) {
            Ok(delivery) => {
                self.deliveries.push(delivery);
                true
            }
            Err(_) => false,
        }
    }

    async fn next_loss(&mut self) {
        loop {
            match self.deliveries.next().await {
                Some(Ok(Ok(_))) => {}
                Some(Ok(Err((error, _)))) => {
                    tracing::debug!("live message not delivered: {error}");
                    return;
                }
                Some(Err(_canceled)) => return,
                None => std::future::pending().await,
            }
        }
    }
}
