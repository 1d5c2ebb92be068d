//! Live frames: each frame, once committed, is published to a broadcast
//! channel that WebSocket clients subscribe to.

use serde::Serialize;
use std::sync::Arc;

use bess_protocol::{MissingReason, Reading};

use crate::catalog::Layout;

#[derive(Debug, Clone, Serialize)]
pub struct LiveValue {
    pub point: String,
    pub value: Option<f64>,
    pub unit: String,
    pub quality: &'static str,
    /// Why the value is missing (kept for `/latest`; not sent in frames).
    #[serde(skip)]
    pub reason: Option<MissingReason>,
}

/// One frame as pushed to live clients.
#[derive(Debug, Clone, Serialize)]
pub struct LiveFrame {
    pub site: String,
    pub device: String,
    pub group: String,
    pub ts: String,
    pub ts_ms: i64,
    /// When the collector took the Kafka message carrying this frame off the
    /// consumer (Unix epoch milliseconds, the collector's clock). The frame
    /// reaches clients only after its transaction committed, so the time
    /// from here to a client's receipt covers decoding, the database write
    /// and the fan-out.
    pub received_ms: i64,
    pub values: Vec<LiveValue>,
}

impl LiveFrame {
    pub fn new(
        site: &str,
        layout: &Layout,
        ts_ms: i64,
        received_ms: i64,
        values: &[Option<f64>],
        readings: &[Reading],
    ) -> Self {
        Self {
            site: site.to_owned(),
            device: layout.device.clone(),
            group: layout.group.clone(),
            ts: crate::api::rfc3339(crate::writer::timestamp(ts_ms)),
            ts_ms,
            received_ms,
            values: layout
                .points
                .iter()
                .zip(values)
                .zip(readings)
                .map(|((point, value), reading)| LiveValue {
                    point: point.name.clone(),
                    value: *value,
                    unit: point.unit.clone(),
                    quality: reading.quality().as_str(),
                    reason: match reading {
                        Reading::Missing(reason) => Some(*reason),
                        _ => None,
                    },
                })
                .collect(),
        }
    }
}

/// A frame serialized once, shared by every subscriber, with the frame
/// itself for subscribers that filter points or keep latest values.
#[derive(Debug, Clone)]
pub struct LiveMessage {
    pub site: Arc<str>,
    pub json: Arc<str>,
    pub frame: Arc<LiveFrame>,
}

impl From<&LiveFrame> for LiveMessage {
    fn from(frame: &LiveFrame) -> Self {
        let json = serde_json::to_string(&serde_json::json!({ "type": "frame", "frame": frame }))
            .expect("serializes");
        Self {
            site: frame.site.as_str().into(),
            json: json.into(),
            frame: Arc::new(frame.clone()),
        }
    }
}
