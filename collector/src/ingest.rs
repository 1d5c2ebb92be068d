//! `KafkaIngest`: consumes the telemetry topic in a consumer group and hands
//! chunks of messages to the `SampleWriter`. Offsets are stored only after
//! the chunk's database transaction committed (`enable.auto.offset.store =
//! false`); librdkafka commits stored offsets in the background and once more
//! at shutdown. A failed write is retried with backoff, so a slow or absent
//! database slows consumption instead of losing data.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::live::LiveMessage;
use crate::writer::{IngestMessage, SampleWriter};

/// Messages queued between the consumer and the writer: the memory bound of
/// the ingest path is this many messages plus one chunk.
const QUEUE: usize = 1024;
/// Most messages written in one transaction.
const MAX_CHUNK: usize = 256;

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub session_timeout: Duration,
    /// Extra librdkafka properties (`key=value`).
    pub properties: Vec<(String, String)>,
}

pub fn consumer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group)
        .set("client.id", "bess-collector")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", settings.session_timeout.as_millis().to_string())
        .set("heartbeat.interval.ms", (settings.session_timeout.as_millis() / 3).max(100).to_string())
        .set("enable.partition.eof", "false");
    for (key, value) in &settings.properties {
        config.set(key, value);
    }
    config
}

pub struct KafkaIngest {
    pub consumer: Arc<StreamConsumer>,
    pub writer: SampleWriter,
    pub live: broadcast::Sender<LiveMessage>,
}

impl KafkaIngest {
    pub fn new(settings: &KafkaSettings, writer: SampleWriter, live: broadcast::Sender<LiveMessage>) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = consumer_config(settings).create()?;
        consumer.subscribe(&[&settings.topic])?;
        Ok(Self { consumer: Arc::new(consumer), writer, live })
    }

    /// Consume until cancelled; then finish the chunk in hand and commit.
    pub async fn run(self, cancel: CancellationToken) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let reader = tokio::spawn(read_messages(self.consumer.clone(), tx, cancel.clone()));
        write_chunks(&self.consumer, &self.writer, &self.live, rx, cancel).await;
        reader.await.ok();
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("committed offsets"),
            Err(e) => tracing::debug!("final commit: {e}"),
        }
    }
}

async fn read_messages(consumer: Arc<StreamConsumer>, queue: mpsc::Sender<IngestMessage>, cancel: CancellationToken) {
    loop {
        let received = tokio::select! {
            () = cancel.cancelled() => return,
            received = consumer.recv() => received,
        };
        match received {
            Ok(message) => {
                let owned = IngestMessage {
                    topic: message.topic().to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().unwrap_or_default().to_vec(),
                };
                metrics::counter!("bess_collector_messages_received_total").increment(1);
                if queue.send(owned).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!("kafka: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn write_chunks(
    consumer: &StreamConsumer,
    writer: &SampleWriter,
    live: &broadcast::Sender<LiveMessage>,
    mut queue: mpsc::Receiver<IngestMessage>,
    cancel: CancellationToken,
) {
    let mut chunk = Vec::with_capacity(MAX_CHUNK);
    loop {
        // Wait for one message, then take whatever else is already queued.
        let first = tokio::select! {
            first = queue.recv() => first,
            () = cancel.cancelled() => None,
        };
        let Some(first) = first else { break };
        chunk.push(first);
        while chunk.len() < MAX_CHUNK {
            match queue.try_recv() {
                Ok(message) => chunk.push(message),
                Err(_) => break,
            }
        }
        let mut delay = Duration::from_millis(100);
        loop {
            match writer.write(&chunk).await {
                Ok(outcome) => {
                    store_offsets(consumer, &chunk);
                    metrics::counter!("bess_collector_transactions_total").increment(1);
                    metrics::counter!("bess_collector_batches_written_total").increment(outcome.batches_written);
                    metrics::counter!("bess_collector_batches_duplicate_total").increment(outcome.batches_duplicate);
                    metrics::counter!("bess_collector_messages_rejected_total").increment(outcome.messages_rejected);
                    metrics::counter!("bess_collector_frames_written_total").increment(outcome.frames_written);
                    metrics::counter!("bess_collector_samples_written_total").increment(outcome.samples_written);
                    if outcome.batches_duplicate > 0 {
                        tracing::info!(duplicates = outcome.batches_duplicate, "skipped batches already in the ledger");
                    }
                    if outcome.messages_rejected > 0 {
                        tracing::warn!(rejected = outcome.messages_rejected, "set aside messages that are not valid batches (see rejected_messages)");
                    }
                    for frame in &outcome.live {
                        let _ = live.send(LiveMessage::from(frame));
                    }
                    break;
                }
                Err(e) => {
                    metrics::counter!("bess_collector_write_failures_total").increment(1);
                    tracing::error!(retry_in = ?delay, messages = chunk.len(), "write failed: {e}");
                    // At shutdown, give up: the chunk's offsets were never stored,
                    // so it is redelivered to whichever instance runs next.
                    if cancel.is_cancelled() {
                        tracing::warn!("stopping with an unwritten chunk; it will be redelivered");
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        chunk.clear();
    }
}

/// Store offset+1 of the highest message per partition in the chunk.
fn store_offsets(consumer: &StreamConsumer, chunk: &[IngestMessage]) {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for m in chunk {
        let entry = next.entry((m.topic.as_str(), m.partition)).or_insert(m.offset + 1);
        *entry = (*entry).max(m.offset + 1);
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        if let Err(e) = list.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset)) {
            tracing::warn!("offset list: {e}");
        }
    }
    // Fails for partitions revoked meanwhile; their new owner re-reads from the
    // last commit and the ledger skips what this instance already wrote.
    if let Err(e) = consumer.store_offsets(&list) {
        tracing::debug!("storing offsets: {e}");
    }
}
