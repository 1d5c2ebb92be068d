//! `bess-collector`: consumes BESS batches from Kafka, stores them in
//! PostgreSQL exactly once (ledger + offsets after COMMIT), and serves the
//! REST/WebSocket API.
//!
//! See `docs/architecture.md` for the task graph.

//!
//! Layers: `api` (HTTP) reads the domain modules — `auth`, `latest`,
//! `live`, `storage`, `catalog` — and none of them imports `api`. The
//! ingest path (`ingest` → `writer` → `copy`, `catalog`, `site_keys`,
//! `storage`, `dead_letter`) shares `message` and `time` and hands committed frames
//! to `live`. `service` wires everything together.

pub mod api;
pub mod auth;
pub mod catalog;
pub mod copy;
pub mod dead_letter;
pub mod derived;
pub mod ingest;
pub mod lake;
pub mod last_seen;
pub mod late_rollups;
pub mod latest;
pub mod live;
pub mod message;
pub mod migrations;
pub mod notify;
pub mod pattern;
pub mod polled;
pub mod rules;
pub mod series;
pub mod service;
pub mod site_keys;
pub mod storage;
pub mod storage_health;
pub mod time;
pub mod writer;
