//! The live lane: every frame, the moment it is read, to the uplink's live
//! topic, so dashboards move when the battery does. It runs beside the
//! buffered batches and never instead of them: the stored history comes
//! only from batches, the live lane only feeds what is shown now.
//!
//! [`LiveLane`] takes frames from the clock gate (after any re-dating, so
//! a frame shown live has the timestamp it is stored with), gathers the
//! frames read within `linger` of the first, drops those older than
//! `max_age` (an old value is history, not live) and encodes the rest with
//! [`LiveEncoder`]: each group whole now and then, else as the change since
//! its previous frame. Nothing is written to disk. A message that could not
//! be handed to the client, or that the broker did not take, starts a new
//! chain: the next message sends every group whole, so a reader never
//! applies a change to a base it did not get.
//!
//! - `kafka.rs`: [`KafkaLiveSink`], acks=1, no retries past `max_age`.
//! - `mqtt.rs`: [`MqttLiveSink`], QoS 0 on its own clean session.

mod kafka;
mod mqtt;

use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;

use bess_protocol::{CatalogHash, Frame, LiveEncoder};

use crate::clock::now_ms;
use crate::config::LiveConfig;

pub use kafka::{live_producer_config, KafkaLiveSink};
pub use mqtt::MqttLiveSink;

/// Frames waiting for the live lane; when it is full, frames are dropped
/// from the live lane only (counted), never held back from the buffer.
pub const LIVE_QUEUE: usize = 4096;
/// Most frames in one live message.
const MAX_FRAMES_PER_MESSAGE: usize = 512;

/// Where live messages go: one broker's client.
pub trait LiveSink: Send {
    /// Name for logs and metrics.
    const NAME: &'static str;

    /// Hand one message to the client without waiting; `false` if it could
    /// not take it (the link is down, the queue is full).
    fn send(&mut self, message: Vec<u8>) -> bool;

    /// Resolves when a message handed over earlier was lost. Cancel-safe;
    /// pending while there is nothing to report.
    fn next_loss(&mut self) -> impl Future<Output = ()> + Send;
}

/// The lane's task: frames in, live messages out.
pub struct LiveLane<S> {
    encoder: LiveEncoder,
    sink: S,
    linger: Duration,
    max_age_ms: i64,
}

impl<S: LiveSink> LiveLane<S> {
    pub fn new(catalog_hash: CatalogHash, config: &LiveConfig, sink: S) -> Self {
        Self {
            encoder: LiveEncoder::new(
                catalog_hash,
                config.keyframe_every.as_millis() as i64,
                now_ms() as u64,
            ),
            sink,
            linger: config.linger,
            max_age_ms: config.max_age.as_millis() as i64,
        }
    }

    /// Run until the frame channel closes (the pollers and the gate stopped).
    pub async fn run(mut self, mut frames: mpsc::Receiver<Frame>) {
        loop {
            let first = tokio::select! {
                frame = frames.recv() => frame,
                () = self.sink.next_loss() => {
                    self.lost();
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut bundle = vec![first];
            let until = tokio::time::Instant::now() + self.linger;
            while bundle.len() < MAX_FRAMES_PER_MESSAGE {
                match tokio::time::timeout_at(until, frames.recv()).await {
                    Ok(Some(frame)) => bundle.push(frame),
                    Ok(None) | Err(_) => break,
                }
            }
            self.send(bundle);
        }
        tracing::debug!(lane = S::NAME, "live lane stopped");
    }

    fn send(&mut self, mut bundle: Vec<Frame>) {
        let oldest_allowed = now_ms() - self.max_age_ms;
        let before = bundle.len();
        bundle.retain(|frame| frame.ts_ms >= oldest_allowed);
        if bundle.len() < before {
            metrics::counter!("bess_edge_live_frames_dropped_total", "reason" => "too_old")
                .increment((before - bundle.len()) as u64);
        }
        if bundle.is_empty() {
            return;
        }
        let samples: usize = bundle.iter().map(|f| f.values.len()).sum();
        let message = self.encoder.encode(&bundle);
        let bytes = message.len();
        if self.sink.send(message) {
            metrics::counter!("bess_edge_live_messages_total").increment(1);
            metrics::counter!("bess_edge_live_bytes_total").increment(bytes as u64);
            metrics::counter!("bess_edge_live_frames_total").increment(bundle.len() as u64);
            metrics::counter!("bess_edge_live_samples_total").increment(samples as u64);
        } else {
            metrics::counter!("bess_edge_live_frames_dropped_total", "reason" => "link_down")
                .increment(bundle.len() as u64);
            self.encoder.restart();
        }
    }

    fn lost(&mut self) {
        metrics::counter!("bess_edge_live_messages_lost_total").increment(1);
        self.encoder.restart();
    }
}

/// The clock gate's hand-off to the lane: never waits, drops (counted) when
/// the lane is behind.
#[derive(Clone)]
pub struct LiveFeed(mpsc::Sender<Frame>);

impl LiveFeed {
    pub fn channel() -> (Self, mpsc::Receiver<Frame>) {
        let (tx, rx) = mpsc::channel(LIVE_QUEUE);
        (Self(tx), rx)
    }

    pub fn offer(&self, frame: &Frame) {
        if self.0.try_send(frame.clone()).is_err() {
            metrics::counter!("bess_edge_live_frames_dropped_total", "reason" => "queue_full")
                .increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bess_protocol::{GroupIndex, LiveDecoder, Reading};
    use std::sync::{Arc, Mutex};

    /// A sink that keeps what it was given and loses what it is told to.
    #[derive(Clone, Default)]
    struct Recording {
        sent: Arc<Mutex<Vec<Vec<u8>>>>,
        refuse: Arc<Mutex<bool>>,
        losses: Arc<tokio::sync::Notify>,
    }

    impl LiveSink for Recording {
        const NAME: &'static str = "recording";
        fn send(&mut self, message: Vec<u8>) -> bool {
            if *self.refuse.lock().unwrap() {
                return false;
            }
            self.sent.lock().unwrap().push(message);
            true
        }
        async fn next_loss(&mut self) {
            self.losses.notified().await;
        }
    }

    fn frame(group: u16, ts_ms: i64, value: i64) -> Frame {
        Frame {
            group: GroupIndex(group),
            ts_ms,
            values: vec![Reading::Int(value), Reading::Int(7)],
        }
    }

    fn config() -> LiveConfig {
        LiveConfig {
            linger: Duration::from_millis(30),
            ..LiveConfig::default()
        }
    }

    #[tokio::test]
    async fn frames_read_together_go_in_one_message_and_decode_to_what_was_read() {
        let sink = Recording::default();
        let lane = LiveLane::new(CatalogHash(5), &config(), sink.clone());
        let (feed, frames) = LiveFeed::channel();
        let task = tokio::spawn(lane.run(frames));
        let now = now_ms();
        feed.offer(&frame(0, now, 1));
        feed.offer(&frame(1, now + 3, 2));
        tokio::time::sleep(Duration::from_millis(120)).await;
        feed.offer(&frame(0, now + 1000, 3));
        drop(feed);
        task.await.unwrap();
        let sent = sink.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 2, "one message per poll cycle");
        let mut decoder = LiveDecoder::new();
        let first = decoder.decode(&sent[0]).unwrap();
        assert_eq!(first.frames, vec![frame(0, now, 1), frame(1, now + 3, 2)]);
        let second = decoder.decode(&sent[1]).unwrap();
        assert_eq!(second.frames, vec![frame(0, now + 1000, 3)]);
        assert!(
            sent[1].len() < sent[0].len(),
            "the second message is a change"
        );
    }

    #[tokio::test]
    async fn old_frames_are_history_and_never_sent_live() {
        let sink = Recording::default();
        let lane = LiveLane::new(CatalogHash(5), &config(), sink.clone());
        let (feed, frames) = LiveFeed::channel();
        let task = tokio::spawn(lane.run(frames));
        feed.offer(&frame(0, now_ms() - 60_000, 1));
        drop(feed);
        task.await.unwrap();
        assert!(sink.sent.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn after_a_refused_or_lost_message_every_group_goes_whole_again() {
        let sink = Recording::default();
        let lane = LiveLane::new(CatalogHash(5), &config(), sink.clone());
        let (feed, frames) = LiveFeed::channel();
        let task = tokio::spawn(lane.run(frames));
        let now = now_ms();
        let settle = || tokio::time::sleep(Duration::from_millis(80));
        feed.offer(&frame(0, now, 1));
        settle().await;
        *sink.refuse.lock().unwrap() = true;
        feed.offer(&frame(0, now + 1000, 2));
        settle().await;
        *sink.refuse.lock().unwrap() = false;
        feed.offer(&frame(0, now + 2000, 3));
        settle().await;
        sink.losses.notify_one();
        settle().await;
        feed.offer(&frame(0, now + 3000, 4));
        drop(feed);
        task.await.unwrap();
        let sent = sink.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 3);
        // A reader that missed everything before each message still decodes it:
        // each is whole.
        for (message, value) in sent.iter().zip([1, 3, 4]) {
            let update = LiveDecoder::new().decode(message).unwrap();
            assert_eq!(update.frames.len(), 1, "message for value {value} is whole");
            assert_eq!(update.frames[0].values[0], Reading::Int(value));
        }
    }
}
