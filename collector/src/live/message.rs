//! `LiveMessage`: one polled frame as published through the hub. It
//! carries the [`PolledFrame`] (for the latest-value cache and for
//! clients that filter by device or point), and builds the frame's
//! WebSocket view and its JSON message when the first client needs them;
//! every other client then shares the same bytes. Nothing is built for a
//! frame no WebSocket client follows.

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use std::sync::{Arc, OnceLock};

use super::frame::{LiveFrame, PolledFrame};

/// A polled frame as published to live readers; cheap to clone.
#[derive(Debug, Clone)]
pub struct LiveMessage {
    pub site: Arc<str>,
    pub frame: Arc<PolledFrame>,
    view: Arc<OnceLock<LiveFrame>>,
    json: Arc<OnceLock<Utf8Bytes>>,
    /// Publication order, set by [`super::LiveHub::publish`].
    pub seq: u64,
}

/// `{"type": "frame", "frame": {...}}`.
#[derive(Serialize)]
struct FrameMessage<'a> {
    r#type: &'static str,
    frame: &'a LiveFrame,
}

impl LiveMessage {
    pub fn new(frame: PolledFrame) -> Self {
        Self {
            site: frame.site.clone(),
            frame: Arc::new(frame),
            view: Arc::default(),
            json: Arc::default(),
            seq: 0,
        }
    }

    /// The frame as clients see it, built once.
    pub fn view(&self) -> &LiveFrame {
        self.view.get_or_init(|| LiveFrame::from(&*self.frame))
    }

    /// The message clients receive for this frame (cheap to clone).
    pub fn json(&self) -> Utf8Bytes {
        self.json
            .get_or_init(|| {
                let message = FrameMessage {
                    r#type: "frame",
                    frame: self.view(),
                };
                serde_json::to_string(&message)
                    .expect("a frame serializes")
                    .into()
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::frame::tests::committed;
    use bess_protocol::Reading;

    #[test]
    fn every_clone_shares_one_view_and_one_serialization() {
        let message = LiveMessage::new(committed("s", 1_000, &[("soc", "%", Reading::Int(2))]));
        let other = message.clone();
        let json = message.json();
        assert!(std::ptr::eq(message.view(), other.view()));
        assert_eq!(json.as_str(), other.json().as_str());
        assert!(std::ptr::eq(
            json.as_str().as_ptr(),
            other.json().as_str().as_ptr()
        ));
        let parsed: serde_json::Value = serde_json::from_str(json.as_str()).unwrap();
        assert_eq!(parsed["type"], "frame");
        assert_eq!(parsed["frame"]["site"], "s");
        assert_eq!(parsed["frame"]["values"][0]["value"], 1.0);
    }
}
