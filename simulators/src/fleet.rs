//! Fleet mode: many simulated sites in one process. Site `i` (0-based) is
//! named `site-NNN` (`i + 1`, three digits), gets its own seed derived from
//! the fleet seed, and listens on `base_port + i` (shared listener, unit ids
//! `1..=units`) or, with one port per unit, on `base_port + i × units + k − 1`.
//! Port 0 gives every listener a free port.

use std::net::{IpAddr, SocketAddr};

use tokio_util::sync::CancellationToken;

use crate::{
    battery::mix,
    site::{start_site, ConfigProblem, RunningSite, SimError, SiteSimConfig},
};

/// How many sites to run and where.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub sites: u16,
    /// Settings every site shares (units, profile, schedule, faults,
    /// time scale, tick); `listen`, `name` and `seed` are set per site.
    pub site: SiteSimConfig,
    pub host: IpAddr,
    /// First port; 0 = free ports.
    pub base_port: u16,
}

/// The name of site `index` (0-based).
pub fn site_name(index: u16) -> String {
    format!("site-{:03}", u32::from(index) + 1)
}

impl FleetConfig {
    /// The config of site `index` (0-based).
    pub fn site_config(&self, index: u16) -> SiteSimConfig {
        let ports_per_site = if self.site.port_per_unit {
            u32::from(self.site.units)
        } else {
            1
        };
        let port = if self.base_port == 0 {
            0
        } else {
            u32::from(self.base_port) + u32::from(index) * ports_per_site
        };
        SiteSimConfig {
            listen: SocketAddr::new(self.host, u16::try_from(port).unwrap_or(0)),
            name: site_name(index),
            seed: mix(self.site.seed ^ mix(u64::from(index) << 32)),
            ..self.site.clone()
        }
    }

    fn validate(&self) -> Result<(), SimError> {
        let mut problems = Vec::new();
        if self.sites == 0 {
            problems.push(ConfigProblem {
                field: "sites",
                reason: "must be at least 1".into(),
            });
        }
        let ports_per_site = if self.site.port_per_unit {
            u32::from(self.site.units)
        } else {
            1
        };
        let last = u32::from(self.base_port) + u32::from(self.sites) * ports_per_site;
        if self.base_port != 0 && last > u32::from(u16::MAX) + 1 {
            problems.push(ConfigProblem {
                field: "base_port",
                reason: format!(
                    "{} sites need ports {}..{last}, past 65535",
                    self.sites, self.base_port
                ),
            });
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SimError::InvalidConfig(problems))
        }
    }
}

/// A running fleet: its sites in order.
#[derive(Debug)]
pub struct RunningFleet {
    pub sites: Vec<(String, RunningSite)>,
}

impl RunningFleet {
    /// Stops every site and waits for them.
    pub async fn shutdown(self) {
        for (_, site) in self.sites {
            site.shutdown().await;
        }
    }
}

/// Starts every site of the fleet; all stop when `cancel` fires.
pub async fn start_fleet(
    config: FleetConfig,
    cancel: CancellationToken,
) -> Result<RunningFleet, SimError> {
    config.validate()?;
    let mut sites = Vec::with_capacity(usize::from(config.sites));
    for index in 0..config.sites {
        let site = config.site_config(index);
        let name = site.name.clone();
        sites.push((name, start_site(site, cancel.clone()).await?));
    }
    Ok(RunningFleet { sites })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_modbus::{
        client::{tcp::connect_slave, Reader as _},
        Slave,
    };

    fn fleet(base_port: u16, port_per_unit: bool) -> FleetConfig {
        FleetConfig {
            sites: 3,
            site: SiteSimConfig {
                units: 2,
                port_per_unit,
                ..SiteSimConfig::default()
            },
            host: [127, 0, 0, 1].into(),
            base_port,
        }
    }

    #[test]
    fn sites_get_consecutive_ports_names_and_distinct_seeds() {
        let shared = fleet(6000, false);
        let ports: Vec<_> = (0..3)
            .map(|i| shared.site_config(i).listen.port())
            .collect();
        assert_eq!(ports, [6000, 6001, 6002]);
        let per_unit = fleet(6000, true);
        assert_eq!(per_unit.site_config(2).listen.port(), 6004);
        assert_eq!(shared.site_config(1).name, "site-002");
        assert_ne!(shared.site_config(0).seed, shared.site_config(1).seed);
        assert_eq!(
            shared.site_config(1).seed,
            fleet(7000, true).site_config(1).seed
        );
    }

    #[tokio::test]
    async fn every_site_of_a_fleet_answers_on_its_own_port() -> anyhow::Result<()> {
        let running = start_fleet(fleet(0, false), CancellationToken::new()).await?;
        assert_eq!(running.sites.len(), 3);
        let mut socs = Vec::new();
        for (_, site) in &running.sites {
            let mut client = connect_slave(site.addrs[0], Slave(2)).await?;
            socs.push(client.read_holding_registers(0, 1).await??[0]);
        }
        assert!(
            socs.windows(2).any(|w| w[0] != w[1]),
            "sites differ: {socs:?}"
        );
        running.shutdown().await;
        Ok(())
    }
}
