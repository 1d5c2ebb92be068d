//! The uplink: forwards sealed batches from the buffer to the cloud over
//! one broker. One drain loop ([`Uplink`], `drain.rs`) owns everything the
//! brokers have in common: the send window, the drain order, settling,
//! backoff and the shutdown grace. A [`Transport`] per broker only sends
//! bytes for a sequence number and reports what the broker confirmed:
//! `kafka.rs` (idempotent producer, delivery reports) and `mqtt.rs`
//! (QoS 1 on a persistent session, PubAck per packet id). TLS for both is
//! one mechanism (`tls.rs`).
//!
//! The guarantees, whatever the broker:
//! - A batch leaves the buffer only after the broker confirmed it (Kafka
//!   delivery report, MQTT PubAck).
//! - A batch that was refused, failed, or was in flight when the link
//!   broke stays in the buffer and goes again later with the same bytes and
//!   the same sequence number; the collector's ledger recognises a repeat.
//! - Batches go in the configured [`DrainOrder`]; the default is live first.

mod drain;
pub mod kafka;
pub mod mqtt;
pub mod tls;

use std::future::Future;
use std::time::Duration;

use bess_protocol::BatchSeq;

use crate::config::{BufferConfig, DrainConfig};

pub use drain::Uplink;
pub use kafka::{producer_config, KafkaTransport, KafkaUplink};
pub use mqtt::{MqttTransport, MqttUplink};

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
    /// Batches sealed at or after this time are live, if there is a live lane.
    fn live_since_ms(self, now_ms: i64) -> Option<i64> {
        match self {
            DrainOrder::OldestFirst => None,
            DrainOrder::LiveFirst { window } => Some(now_ms - window.as_millis() as i64),
        }
    }
}

impl Default for DrainOrder {
    /// Live first with a 10 s window, as `buffer.drain` defaults to.
    fn default() -> Self {
        DrainOrder::LiveFirst {
            window: Duration::from_secs(10),
        }
    }
}

impl From<&BufferConfig> for DrainOrder {
    fn from(buffer: &BufferConfig) -> Self {
        match buffer.drain {
            DrainConfig::LiveFirst => DrainOrder::LiveFirst {
                window: buffer.live_window,
            },
            DrainConfig::OldestFirst => DrainOrder::OldestFirst,
        }
    }
}

/// What a transport learnt from its broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The broker confirmed this batch.
    Delivered(BatchSeq),
    /// This batch was not delivered; the link may still carry the others.
    Failed(BatchSeq, String),
    /// The link is up (again): batches may be sent.
    Connected,
    /// The link broke: nothing in flight will be confirmed on it.
    LinkLost(String),
}

/// The client's send queue is full; the batch stays in the buffer (its
/// bytes are not lost) and is taken again once deliveries make room.
#[derive(Debug, thiserror::Error)]
#[error("send queue full: {0}")]
pub struct QueueFull(pub String);

/// One broker's way of carrying batches. Sending must keep order: batches
/// sent one after another reach the broker in that order.
pub trait Transport: Send {
    /// Name for logs.
    const NAME: &'static str;

    /// Batches in flight at once.
    fn window(&self) -> usize;

    /// Whether [`send`](Transport::send) may be called now.
    fn is_ready(&self) -> bool;

    /// Hand one batch to the client; never waits.
    fn send(&mut self, seq: BatchSeq, payload: Vec<u8>) -> Result<(), QueueFull>;

    /// The next report. Drives the client's connection while awaited, is
    /// cancel-safe, and stays pending while there is nothing to report.
    fn next_report(&mut self) -> impl Future<Output = Report> + Send;

    /// After a failure, once nothing is in flight any more: make the next
    /// attempt possible (a new producer after a fatal error, a new session
    /// after a broken link).
    fn recover(&mut self, error: &str);

    /// The uplink stops: give queued work a moment to leave.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_config_chooses_the_drain_order() {
        let mut buffer = BufferConfig::default();
        assert_eq!(DrainOrder::from(&buffer), DrainOrder::default());
        buffer.drain = DrainConfig::LiveFirst;
        buffer.live_window = Duration::from_secs(3);
        assert_eq!(
            DrainOrder::from(&buffer),
            DrainOrder::LiveFirst {
                window: Duration::from_secs(3)
            }
        );
        buffer.drain = DrainConfig::OldestFirst;
        assert_eq!(DrainOrder::from(&buffer), DrainOrder::OldestFirst);
    }

    #[test]
    fn only_live_first_has_a_live_lane() {
        let live = DrainOrder::LiveFirst {
            window: Duration::from_secs(10),
        };
        assert_eq!(live.live_since_ms(100_000), Some(90_000));
        assert_eq!(DrainOrder::OldestFirst.live_since_ms(100_000), None);
    }
}
