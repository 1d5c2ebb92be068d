//! Simulated BESS battery controllers served over Modbus TCP, so the edge
//! can be developed and tested without hardware.
//!
//! Each unit is an LFP pack following a charge / rest / discharge / rest
//! schedule ([`battery`]), encoded into the "bess-controller v1" register map
//! ([`register_map`]) and answered over Modbus TCP ([`server`]). A [`site`]
//! ties units, listeners and the simulation clock together.
//!
//! Everything is deterministic for a seed: the state of unit `u` after `k`
//! steps of 100 ms depends only on the seed, `u` and `k`.
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
pub mod register_map;
pub mod server;
pub mod site;

pub use battery::{step, PackSpec, PackState, SimulatedPack, STEP};
pub use register_map::{RegisterSnapshot, MAP_NAME};
pub use site::{start_site, ConfigProblem, RunningSite, SimError, SiteListener, SiteSimConfig};
