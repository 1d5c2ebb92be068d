//! Simulated BESS battery controllers for testing without hardware: Modbus
//! TCP and RTU devices with realistic LFP behaviour, scripted faults, whole
//! fleets in one process, and a Kafka load generator.
//!
//! Each unit is an LFP pack ([`battery`]) following the built-in cycle or a
//! configured day profile ([`schedule`]), encoded into a device profile
//! ([`profile`]: the "bess-controller v1" map of [`register_map`], or
//! [`sunspec`]) and answered over Modbus TCP ([`server`]) or RTU on a
//! pseudo-terminal ([`rtu`]). A [`site`] ties units, listeners, the clock and
//! the fault timeline ([`fault`]) together; [`fleet`] runs many sites;
//! [`config`] reads it all from TOML; [`load`] writes synthetic batches
//! straight to Kafka; [`bench`] measures the cost per device.
//!
//! Everything is deterministic for a seed: the state of unit `u` after `k`
//! steps of 100 ms depends only on the seed, `u`, `k` and the schedule.
//!
//! ```no_run
//! # async fn run() -> Result<(), bess_sim::SimError> {
//! use bess_sim::{start_site, SiteSimConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! let config = SiteSimConfig { listen: "127.0.0.1:0".parse().unwrap(), ..SiteSimConfig::default() };
//! let site = start_site(config, CancellationToken::new()).await?;
//! println!("unit 1 on {}", site.unit_addr(1).unwrap());
//! site.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod battery;
pub mod bench;
pub mod config;
pub mod fault;
pub mod fleet;
pub mod load;
pub mod profile;
pub mod register_map;
pub mod rtu;
pub mod schedule;
pub mod server;
pub mod site;
pub mod sunspec;

pub use battery::{step, PackSpec, PackState, SimulatedPack, STEP};
pub use fault::{
    FaultClock, FaultEdge, FaultEvent, FaultKind, FaultLog, FaultSpec, FaultTarget, MalformedFrame,
};
pub use profile::Profile;
pub use register_map::{RegisterSnapshot, MAP_NAME};
pub use schedule::Schedule;
pub use site::{start_site, ConfigProblem, RunningSite, SimError, SiteListener, SiteSimConfig};
