//! `bess-collector`: consumes BESS batches from Kafka, stores them in
//! PostgreSQL exactly once (ledger + offsets after COMMIT), and serves the
//! REST/WebSocket API.
//!
//! See `docs/architecture.md` for the task graph.

pub mod api;
pub mod auth;
pub mod catalog;
pub mod copy;
pub mod dead_letter;
pub mod ingest;
pub mod live;
pub mod migrations;
pub mod series;
pub mod service;
pub mod storage;
pub mod writer;
