//! Live frames, the domain side of the WebSocket: the live lane
//! (`lane.rs`) reads every site's live messages off the live topic on every
//! instance, decodes them into [`PolledFrame`]s and publishes them through
//! the [`LiveHub`] to the WebSocket clients and the latest-value cache.
//! The stored history never passes through here: batches go to the
//! database only.
//!
//! Invariants: a frame's readings are exactly what the edge read (the
//! value shown live is the value stored later for that point and time);
//! each layout's frames are published in timestamp order; the hub never
//! waits for a reader (a slow one lags and is told so); a frame's
//! WebSocket view ([`LiveFrame`]) and its JSON are built at most once, when
//! the first client needs them, and shared by all (never, when no client
//! follows its site); point names and units are the catalog's `Arc<str>`,
//! shared rather than copied per value.
//!
//! - `lane`: [`LiveLane`], the live topic's reader.
//! - `frame`: [`PolledFrame`] (a decoded frame and its layouts) and its view
//!   [`LiveFrame`] (RFC 3339 time, engineering values, units, quality names).
//! - `message`: [`LiveMessage`], one published frame with its lazily built
//!   view and JSON.
//! - `hub`: [`LiveHub`], the broadcast channels (all sites, and one per
//!   followed site).

mod frame;
mod hub;
mod lane;
mod message;

pub use frame::{LiveFrame, LiveValue, PolledFrame};
pub use hub::{LiveHub, Subscription, ALL_SITES_CHANNEL, SITE_CHANNEL};
pub use lane::{live_consumer_config, LiveLane};
pub use message::LiveMessage;

/// A polled frame for tests of the modules that read frames.
#[cfg(test)]
pub(crate) use frame::tests::committed;
