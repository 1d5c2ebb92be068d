//! `bess-edge`: the site agent. Polls Modbus devices (TCP, RTU over serial,
//! RTU over TCP, hand-written maps or SunSpec discovery), seals readings
//! into numbered batches in a SQLite buffer and forwards them to Kafka or
//! MQTT; a batch leaves the buffer only once the broker has acknowledged it.
//! Beside the batches, the live lane sends every frame the moment it is
//! read, unbuffered, for dashboards.
//!
//! See `docs/architecture.md` for the task graph.

pub mod agent;
pub mod backoff;
pub mod buffer;
pub mod clock;
pub mod config;
pub mod link;
pub mod live;
pub mod mirror;
pub mod poller;
pub mod recorder;
pub mod register;
pub mod sealer;
pub mod signing;
pub mod site_plan;
pub mod status;
pub mod sunspec;
pub mod uplink;
