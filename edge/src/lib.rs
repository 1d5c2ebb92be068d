//! `bess-edge`: the site agent. Polls Modbus devices, seals readings into
//! numbered batches in a SQLite buffer and forwards them to Kafka; a batch
//! leaves the buffer only once the broker has acknowledged it.
//!
//! See `docs/architecture.md` for the task graph.

pub mod agent;
pub mod buffer;
pub mod clock;
pub mod config;
pub mod poller;
pub mod recorder;
pub mod register;
pub mod sealer;
pub mod status;
pub mod uplink;
