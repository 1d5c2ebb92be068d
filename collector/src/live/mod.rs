//! Live frames, the domain side of the WebSocket: every frame, once its
//! transaction committed, is handed on by the writer as a
//! [`CommittedFrame`] and published through the [`LiveHub`] to the
//! WebSocket clients and the latest-value cache.
//!
//! Invariants: a frame reaches the hub only after COMMIT; the hub never
//! waits for a reader (a slow one lags and is told so); a frame's
//! WebSocket view ([`LiveFrame`]) and its JSON are built at most once, when
//! the first client needs them, and shared by all (never, when no client
//! follows its site); point names and units are the catalog's `Arc<str>`,
//! shared rather than copied per value.
//!
//! - `frame`: [`CommittedFrame`] (what the writer committed) and its view
//!   [`LiveFrame`] (RFC 3339 time, engineering values, units, quality names).
//! - `message`: [`LiveMessage`], one published frame with its lazily built
//!   view and JSON.
//! - `hub`: [`LiveHub`], the broadcast channels (all sites, and one per
//!   followed site).

mod frame;
mod hub;
mod message;

pub use frame::{CommittedFrame, LiveFrame, LiveValue};
pub use hub::{LiveHub, Subscription, ALL_SITES_CHANNEL, SITE_CHANNEL};
pub use message::LiveMessage;

/// A committed frame for tests of the modules that read frames.
#[cfg(test)]
pub(crate) use frame::tests::committed;
