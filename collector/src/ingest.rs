//! `KafkaIngest`: consumes the telemetry topic in a consumer group and
//! writes it to the database, in four stages joined by bounded channels:
//!
//! ```text
//! read_messages ─(QUEUE msgs)─► prepare_chunks ─(PREPARED)─► write_chunks ─(ACKS)─► acknowledge
//!  StreamConsumer                decode (blocking pool),      one DB transaction      dead letters: produce,
//!                                catalogs, COPY encoding      per chunk               await delivery; then
//!                                (blocking pool)                                      store offsets, in order
//! ```
//!
//! Decoding and encoding of the next chunk overlap the database write of
//! the current one. Offsets are stored (`enable.auto.offset.store = false`)
//! only after the chunk's transaction committed and its dead letters were
//! acknowledged by the broker; librdkafka commits stored offsets every
//! second and once more at shutdown. A failed write is retried with backoff;
//! as every channel is bounded, a slow or absent database slows consumption
//! (backpressure) instead of growing memory or losing data.
//!
//! The stored lane feeds no live view: the live lane (`live/lane.rs`) does,
//! on every instance, so this pipeline builds no per-frame objects beyond
//! the COPY rows.
//!
//! Memory bound: `QUEUE` messages waiting, plus `MAX_CHUNK` messages in each
//! of: the chunk being prepared, `PREPARED` prepared chunks, the chunk being
//! written; plus the rejected messages of `ACKS` committed chunks; plus
//! librdkafka's prefetch (`queued.max.messages.kbytes`, 16 MiB here).

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dead_letter::{DeadLetterProducer, RejectClass, Rejection};
use crate::message::IngestMessage;
use crate::writer::{decode_chunk, PreparedChunk, SampleWriter};

/// Messages queued between the consumer and the prepare stage.
pub const QUEUE: usize = 1024;
/// Most messages written in one transaction.
pub const MAX_CHUNK: usize = 256;
/// Prepared chunks waiting for the writer.
const PREPARED: usize = 2;
/// Committed chunks waiting for dead-letter acks and offset storage.
const ACKS: usize = 8;
/// First wait before retrying a failed database step.
const DATABASE_RETRY: Duration = Duration::from_millis(100);
/// First wait before retrying a dead letter the broker did not acknowledge.
const DEAD_LETTER_RETRY: Duration = Duration::from_millis(200);
/// Longest wait between retries.
const MAX_RETRY: Duration = Duration::from_secs(10);

/// Waits between retries of one failed step: `first`, doubling up to
/// [`MAX_RETRY`], without end (a step is retried until it succeeds or the
/// ingest stops). Each step builds its own, so a success resets it.
fn retry_delays(first: Duration) -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(MAX_RETRY)
        .with_factor(2.0)
        .without_max_times()
        .build()
}

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub session_timeout: Duration,
    /// Extra librdkafka properties (`key=value`).
    pub properties: Vec<(String, String)>,
    /// Where set-aside messages are produced; `None` keeps them only in
    /// `rejected_messages`.
    pub dead_letter_topic: Option<String>,
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
        .set(
            "session.timeout.ms",
            settings.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (settings.session_timeout.as_millis() / 3)
                .max(100)
                .to_string(),
        )
        .set("queued.max.messages.kbytes", "16384")
        .set("enable.partition.eof", "false");
    for (key, value) in &settings.properties {
        config.set(key, value);
    }
    config
}

/// Settings shared by the producer side (without consumer-only keys).
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers);
    for (key, value) in &settings.properties {
        config.set(key, value);
    }
    config
}

pub struct KafkaIngest {
    pub consumer: Arc<StreamConsumer>,
    pub writer: Arc<SampleWriter>,
    pub dead_letters: Option<DeadLetterProducer>,
}

/// A committed chunk on its way to offset storage.
struct Committed {
    /// Next offset per (topic, partition).
    offsets: BTreeMap<(String, i32), i64>,
    dead_letters: Vec<(IngestMessage, Rejection)>,
}

impl KafkaIngest {
    pub fn new(settings: &KafkaSettings, writer: SampleWriter) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = consumer_config(settings).create()?;
        consumer.subscribe(&[&settings.topic])?;
        let dead_letters = match &settings.dead_letter_topic {
            Some(topic) => Some(DeadLetterProducer::new(&client_config(settings), topic)?),
            None => None,
        };
        for class in RejectClass::ALL {
            metrics::counter!("bess_collector_messages_rejected_by_reason_total", "reason" => class.as_str()).absolute(0);
        }
        Ok(Self {
            consumer: Arc::new(consumer),
            writer: Arc::new(writer),
            dead_letters,
        })
    }

    /// Consume until cancelled; then finish the chunk in hand and commit.
    pub async fn run(self, cancel: CancellationToken) {
        let (messages_tx, messages_rx) = mpsc::channel(QUEUE);
        let (prepared_tx, prepared_rx) = mpsc::channel(PREPARED);
        let (acks_tx, acks_rx) = mpsc::channel(ACKS);
        let reader = tokio::spawn(read_messages(
            self.consumer.clone(),
            messages_tx,
            cancel.clone(),
        ));
        let preparer = tokio::spawn(prepare_chunks(
            self.writer.clone(),
            messages_rx,
            prepared_tx,
            cancel.clone(),
        ));
        let acknowledger = tokio::spawn(acknowledge(
            self.consumer.clone(),
            self.dead_letters.clone(),
            acks_rx,
            cancel.clone(),
        ));
        write_chunks(&self.writer, prepared_rx, acks_tx, cancel).await;
        reader.await.ok();
        preparer.await.ok();
        acknowledger.await.ok();
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("committed offsets"),
            Err(e) => tracing::debug!("final commit: {e}"),
        }
    }
}

async fn read_messages(
    consumer: Arc<StreamConsumer>,
    queue: mpsc::Sender<IngestMessage>,
    cancel: CancellationToken,
) {
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
                    received_ms: crate::time::unix_ms_now(),
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

/// Take whatever is queued (up to `MAX_CHUNK`), decode and encode it off the
/// async workers, and pass it on.
async fn prepare_chunks(
    writer: Arc<SampleWriter>,
    mut queue: mpsc::Receiver<IngestMessage>,
    prepared: mpsc::Sender<PreparedChunk>,
    cancel: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            first = queue.recv() => first,
            () = cancel.cancelled() => None,
        };
        let Some(first) = first else { return };
        let mut chunk = Vec::with_capacity(MAX_CHUNK);
        chunk.push(first);
        while chunk.len() < MAX_CHUNK {
            match queue.try_recv() {
                Ok(message) => chunk.push(message),
                Err(_) => break,
            }
        }
        let keys = writer.site_keys.clone();
        let decoded = match tokio::task::spawn_blocking(move || decode_chunk(chunk, &keys)).await {
            Ok(decoded) => decoded,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let mut decoded = Some(decoded);
        let mut delays = retry_delays(DATABASE_RETRY);
        let chunk = loop {
            // Live views come from the live lane; the stored lane builds
            // frames only for rules and derived points.
            match writer
                .prepare(decoded.take().expect("handed back on error"), false)
                .await
            {
                Ok(chunk) => break chunk,
                Err((e, back)) => {
                    decoded = Some(back);
                    metrics::counter!("bess_collector_write_failures_total").increment(1);
                    let delay = delays.next().unwrap_or(MAX_RETRY);
                    tracing::error!(retry_in = ?delay, "resolving catalogs failed: {e}");
                    if cancel.is_cancelled() {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        };
        if prepared.send(chunk).await.is_err() {
            return;
        }
    }
}

async fn write_chunks(
    writer: &SampleWriter,
    mut prepared: mpsc::Receiver<PreparedChunk>,
    acks: mpsc::Sender<Committed>,
    cancel: CancellationToken,
) {
    loop {
        let chunk = tokio::select! {
            chunk = prepared.recv() => chunk,
            () = cancel.cancelled() => None,
        };
        let Some(mut chunk) = chunk else { break };
        let mut delays = retry_delays(DATABASE_RETRY);
        let outcome = loop {
            match writer.commit(&chunk).await {
                Ok(outcome) => break outcome,
                Err(e) => {
                    metrics::counter!("bess_collector_write_failures_total").increment(1);
                    let delay = delays.next().unwrap_or(MAX_RETRY);
                    tracing::error!(retry_in = ?delay, messages = chunk.messages.len(), "write failed: {e}");
                    // At shutdown, give up: the chunk's offsets were never stored,
                    // so it is redelivered to whichever instance runs next.
                    if cancel.is_cancelled() {
                        tracing::warn!("stopping with an unwritten chunk; it will be redelivered");
                        return;
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        };
        metrics::counter!("bess_collector_transactions_total").increment(1);
        metrics::counter!("bess_collector_batches_written_total")
            .increment(outcome.batches_written);
        metrics::counter!("bess_collector_batches_duplicate_total")
            .increment(outcome.batches_duplicate);
        metrics::counter!("bess_collector_messages_rejected_total")
            .increment(outcome.messages_rejected);
        metrics::counter!("bess_collector_frames_written_total").increment(outcome.frames_written);
        metrics::counter!("bess_collector_samples_written_total")
            .increment(outcome.samples_written);
        metrics::counter!("bess_collector_gaps_written_total").increment(outcome.gaps_written);
        metrics::counter!("bess_collector_derived_frames_written_total")
            .increment(outcome.derived_written);
        for rejection in &outcome.rejected {
            metrics::counter!("bess_collector_messages_rejected_by_reason_total", "reason" => rejection.class.as_str()).increment(1);
        }
        if outcome.batches_duplicate > 0 {
            tracing::info!(
                duplicates = outcome.batches_duplicate,
                "skipped batches already in the ledger"
            );
        }
        if outcome.messages_rejected > 0 {
            tracing::warn!(
                rejected = outcome.messages_rejected,
                "set aside messages that are not valid batches (see rejected_messages)"
            );
        }
        let mut offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for m in &chunk.messages {
            let entry = offsets
                .entry((m.topic.clone(), m.partition))
                .or_insert(m.offset + 1);
            *entry = (*entry).max(m.offset + 1);
        }
        let mut messages: Vec<Option<IngestMessage>> = std::mem::take(&mut chunk.messages)
            .into_iter()
            .map(Some)
            .collect();
        let dead_letters = outcome
            .rejected
            .into_iter()
            .filter_map(|r| messages[r.message].take().map(|m| (m, r)))
            .collect();
        if acks
            .send(Committed {
                offsets,
                dead_letters,
            })
            .await
            .is_err()
        {
            break;
        }
    }
}

/// In commit order: deliver the chunk's dead letters (retrying until the
/// broker acknowledges them), then store its offsets.
async fn acknowledge(
    consumer: Arc<StreamConsumer>,
    producer: Option<DeadLetterProducer>,
    mut acks: mpsc::Receiver<Committed>,
    cancel: CancellationToken,
) {
    while let Some(committed) = acks.recv().await {
        if let Some(producer) = &producer {
            for (message, rejection) in &committed.dead_letters {
                let mut delays = retry_delays(DEAD_LETTER_RETRY);
                loop {
                    match producer
                        .deliver(message, rejection.class, &rejection.reason)
                        .await
                    {
                        Ok(()) => {
                            metrics::counter!("bess_collector_dead_letters_total").increment(1);
                            break;
                        }
                        Err(e) => {
                            metrics::counter!("bess_collector_dead_letter_failures_total")
                                .increment(1);
                            let delay = delays.next().unwrap_or(MAX_RETRY);
                            tracing::error!(retry_in = ?delay, topic = producer.topic(), "{e}");
                            if cancel.is_cancelled() {
                                // Offsets of this chunk and later ones stay unstored:
                                // redelivered, set aside again, delivered then.
                                tracing::warn!("stopping with an undelivered dead letter; its chunk will be redelivered");
                                return;
                            }
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
            }
        }
        store_offsets(&consumer, &committed.offsets);
    }
}

/// Store the next offset per partition.
fn store_offsets(consumer: &StreamConsumer, next: &BTreeMap<(String, i32), i64>) {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        if let Err(e) =
            list.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset))
        {
            tracing::warn!("offset list: {e}");
        }
    }
    // Fails for partitions revoked meanwhile; their new owner re-reads from the
    // last commit and the ledger skips what this instance already wrote.
    if let Err(e) = consumer.store_offsets(&list) {
        tracing::debug!("storing offsets: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(delays: ExponentialBackoff, n: usize) -> Vec<u128> {
        // The builder multiplies in f32: compare to the nearest millisecond.
        delays
            .take(n)
            .map(|d| (d.as_secs_f64() * 1000.0).round() as u128)
            .collect()
    }

    #[test]
    fn retries_double_from_the_first_wait_up_to_ten_seconds_without_end() {
        assert_eq!(
            millis(retry_delays(DATABASE_RETRY), 10),
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        assert_eq!(
            millis(retry_delays(DEAD_LETTER_RETRY), 8),
            [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        assert_eq!(retry_delays(DATABASE_RETRY).nth(1_000), Some(MAX_RETRY));
    }
}
