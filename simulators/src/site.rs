//! A simulated site: its configuration (`SiteSimConfig`), the listeners it
//! binds, and the clock task that steps every unit's pack, runs the fault
//! timeline and publishes fresh register snapshots. [`start_site`] sets it
//! all up; [`RunningSite`] is the handle to inspect and stop it.

use std::{
    collections::BTreeSet,
    fmt, io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use thiserror::Error;
use tokio::{net::TcpListener, sync::watch, time::MissedTickBehavior};
use tokio_modbus::SlaveId;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    battery::{measure_with, Dispatch, SimulatedPack, StepInputs, STEP},
    fault::{ActiveFaults, FaultLog, FaultSpec, FaultTarget, FaultTimeline, ValueFaults},
    profile::Profile,
    register_map::RegisterSnapshot,
    schedule::Schedule,
    server::{serve, ControllerService, UnitSnapshots},
};

/// Highest unit id a Modbus device may use.
pub const MAX_UNITS: u8 = 247;
/// Fastest supported clock: simulated seconds per real second.
pub const MAX_TIME_SCALE: f64 = 10_000.0;

/// What to simulate and where to serve it.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteSimConfig {
    /// Address of the shared listener, or of unit 1's with `port_per_unit`.
    /// Port 0 picks free ports.
    pub listen: SocketAddr,
    /// Units are numbered `1..=units`.
    pub units: u8,
    /// Serve unit k on its own port (`listen` port + k − 1) as unit id k.
    pub port_per_unit: bool,
    pub seed: u64,
    /// Simulated seconds per real second.
    pub time_scale: f64,
    /// Name used in logs and fault events.
    pub name: String,
    /// Register map the units serve.
    pub profile: Profile,
    /// Dispatch profile; `None` = the built-in SoC cycle.
    pub schedule: Option<Schedule>,
    /// Scripted faults.
    pub faults: Vec<FaultSpec>,
    /// Real time between clock ticks (one snapshot per unit per tick).
    pub tick: Duration,
}

impl Default for SiteSimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5020)),
            units: 3,
            port_per_unit: false,
            seed: 42,
            time_scale: 1.0,
            name: "site".to_owned(),
            profile: Profile::BessController,
            schedule: None,
            faults: Vec::new(),
            tick: STEP,
        }
    }
}

/// One thing wrong with a [`SiteSimConfig`], naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub field: &'static str,
    pub reason: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Why a site could not start.
#[derive(Debug, Error)]
pub enum SimError {
    #[error("invalid site configuration: {}", join(.0))]
    InvalidConfig(Vec<ConfigProblem>),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

fn join(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl SiteSimConfig {
    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), SimError> {
        let mut problems = Vec::new();
        let mut problem = |field, reason: String| problems.push(ConfigProblem { field, reason });
        if !(1..=MAX_UNITS).contains(&self.units) {
            problem(
                "units",
                format!("must be 1..={MAX_UNITS}, got {}", self.units),
            );
        }
        if !(self.time_scale.is_finite()
            && self.time_scale > 0.0
            && self.time_scale <= MAX_TIME_SCALE)
        {
            problem(
                "time_scale",
                format!(
                    "must be > 0 and <= {MAX_TIME_SCALE}, got {}",
                    self.time_scale
                ),
            );
        }
        if self.tick.is_zero() || self.tick > Duration::from_secs(60) {
            problem(
                "tick",
                format!("must be > 0 and <= 60 s, got {:?}", self.tick),
            );
        }
        if let Some(schedule) = &self.schedule {
            if schedule.steps.is_empty() || schedule.period().is_zero() {
                problem(
                    "schedule",
                    "needs at least one step with a duration".to_owned(),
                );
            }
            if !(0.0..=1.0).contains(&schedule.soc_min)
                || !(0.0..=1.0).contains(&schedule.soc_max)
                || schedule.soc_min >= schedule.soc_max
            {
                problem("schedule", "needs 0 <= soc_min < soc_max <= 1".to_owned());
            }
        }
        let mut names = BTreeSet::new();
        for fault in &self.faults {
            if !names.insert(fault.name.as_str()) {
                problem(
                    "faults",
                    format!("fault name `{}` is used twice", fault.name),
                );
            }
            if let FaultTarget::Units(units) = &fault.target {
                if let Some(bad) = units.iter().find(|u| !(1..=self.units).contains(u)) {
                    problem(
                        "faults",
                        format!(
                            "fault `{}` targets unit {bad}, but units are 1..={}",
                            fault.name, self.units
                        ),
                    );
                }
            }
        }
        let port = u32::from(self.listen.port());
        if self.port_per_unit && port != 0 && port + u32::from(self.units) - 1 > u32::from(u16::MAX)
        {
            problem(
                "listen",
                format!("ports {port}.. for {} units run past 65535", self.units),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SimError::InvalidConfig(problems))
        }
    }

    /// The listeners to bind: address and the unit ids each answers for.
    fn listener_plan(&self) -> Vec<(SocketAddr, Vec<SlaveId>)> {
        if !self.port_per_unit {
            return vec![(self.listen, (1..=self.units).collect())];
        }
        (1..=self.units)
            .map(|unit| {
                let mut addr = self.listen;
                if addr.port() != 0 {
                    addr.set_port(addr.port() + u16::from(unit) - 1);
                }
                (addr, vec![unit])
            })
            .collect()
    }
}

/// A bound listener and the units it answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteListener {
    pub addr: SocketAddr,
    pub units: Vec<SlaveId>,
}

/// Handle to a started site. Dropping it stops the site.
#[derive(Debug)]
pub struct RunningSite {
    /// Bound addresses: one, or one per unit in unit order.
    pub addrs: Vec<SocketAddr>,
    pub listeners: Vec<SiteListener>,
    snapshots: UnitSnapshots,
    fault_log: watch::Receiver<FaultLog>,
    transport_faults: watch::Receiver<Arc<ActiveFaults>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl RunningSite {
    /// Where unit `unit` is served.
    pub fn unit_addr(&self, unit: SlaveId) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.units.contains(&unit))
            .map(|l| l.addr)
    }

    /// The words unit `unit` serves right now.
    pub fn snapshot(&self, unit: SlaveId) -> Option<RegisterSnapshot> {
        self.snapshots.get(&unit).map(|rx| rx.borrow().clone())
    }

    /// A receiver that sees every new snapshot of `unit`, to wait on updates.
    pub fn subscribe(&self, unit: SlaveId) -> Option<watch::Receiver<RegisterSnapshot>> {
        self.snapshots.get(&unit).cloned()
    }

    /// The transport faults in force, as the servers see them.
    pub fn transport_faults(&self) -> watch::Receiver<Arc<ActiveFaults>> {
        self.transport_faults.clone()
    }

    /// The service answering for every unit of the site, for other
    /// transports (RTU).
    pub fn service(&self) -> ControllerService {
        ControllerService::new(self.snapshots.clone())
    }

    /// Cancelled when the site stops.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Every fault start and end so far.
    pub fn fault_log(&self) -> FaultLog {
        self.fault_log.borrow().clone()
    }

    /// A receiver of the fault log, to wait for a fault to start or end:
    /// `rx.wait_for(|log| log.started("name")).await`.
    pub fn watch_faults(&self) -> watch::Receiver<FaultLog> {
        self.fault_log.clone()
    }

    /// Stops the clock and all listeners and waits until they are gone.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Waits until the site stops because the cancellation token fired.
    pub async fn stopped(&self) {
        self.cancel.cancelled().await;
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for RunningSite {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Binds the listeners, starts the clock and serves until `cancel` fires.
pub async fn start_site(
    config: SiteSimConfig,
    cancel: CancellationToken,
) -> Result<RunningSite, SimError> {
    config.validate()?;
    let cancel = cancel.child_token();

    let dispatch = config
        .schedule
        .clone()
        .map_or(Dispatch::SocCycle, Dispatch::Schedule);
    let all_units: Vec<SlaveId> = (1..=config.units).collect();
    let mut timeline = FaultTimeline::new(&config.name, config.faults.clone(), all_units.clone());
    let first = timeline.update(Duration::ZERO, Duration::ZERO);
    let (faults_tx, faults_rx) = watch::channel(first.transport.unwrap_or_default());
    let (log_tx, log_rx) = watch::channel(FaultLog(first.events));

    let mut units = Vec::new();
    let mut snapshots = UnitSnapshots::new();
    for unit in all_units {
        let mut pack = SimulatedPack::new(config.seed, unit);
        pack.dispatch = dispatch.clone();
        let snapshot = encode(&config.profile, unit, &pack, timeline.value_faults(unit));
        let (tx, rx) = watch::channel(snapshot);
        units.push(ClockUnit { unit, pack, tx });
        snapshots.insert(unit, rx);
    }

    let mut bound = Vec::new();
    for (addr, units) in config.listener_plan() {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SimError::Bind { addr, source })?;
        bound.push((listener, SiteListener { addr, units }));
    }

    let tasks = TaskTracker::new();
    let mut listeners = Vec::new();
    for (listener, site_listener) in bound {
        let units = site_listener
            .units
            .iter()
            .map(|u| (*u, snapshots[u].clone()))
            .collect();
        let (cancel, faults) = (cancel.clone(), faults_rx.clone());
        let addr = site_listener.addr;
        tracing::info!(site = %config.name, %addr, units = ?site_listener.units, "serving {}", config.profile);
        tasks.spawn(async move {
            if let Err(err) = serve(listener, ControllerService::new(units), faults, cancel).await {
                tracing::error!(%addr, error = %err, "listener stopped");
            }
        });
        listeners.push(site_listener);
    }
    let clock = SiteClock {
        units,
        profile: config.profile,
        timeline,
        faults: faults_tx,
        log: log_tx,
        time_scale: config.time_scale,
        tick: config.tick,
    };
    tasks.spawn(clock.run(cancel.clone()));

    Ok(RunningSite {
        addrs: listeners.iter().map(|l| l.addr).collect(),
        listeners,
        snapshots,
        fault_log: log_rx,
        transport_faults: faults_rx,
        tasks,
        cancel,
    })
}

/// Puts a unit's measurements through its value faults and its profile.
fn encode(
    profile: &Profile,
    unit: SlaveId,
    pack: &SimulatedPack,
    faults: ValueFaults,
) -> RegisterSnapshot {
    let mut m = measure_with(&pack.spec, &pack.state, faults.comm_fault);
    if faults.out_of_range {
        m.soc_pct = 250.0;
        m.dc_voltage_v = 6_000.0;
        m.cell_voltage_max_v = 6.5;
        m.cell_temp_max_c = 300.0;
        m.cell_temps_c.iter_mut().for_each(|t| *t = 300.0);
        m.cell_voltages_v.iter_mut().for_each(|v| *v = 6.5);
    }
    profile.encode(unit, &pack.spec, &m)
}

/// One unit as the clock sees it.
struct ClockUnit {
    unit: SlaveId,
    pack: SimulatedPack,
    tx: watch::Sender<RegisterSnapshot>,
}

/// Steps the packs, runs the fault timeline and publishes snapshots.
struct SiteClock {
    units: Vec<ClockUnit>,
    profile: Profile,
    timeline: FaultTimeline,
    faults: watch::Sender<Arc<ActiveFaults>>,
    log: watch::Sender<FaultLog>,
    time_scale: f64,
    tick: Duration,
}

impl SiteClock {
    /// Every `tick` of real time, takes `time_scale × tick / 100 ms` fixed
    /// steps (carrying fractions to the next tick), re-evaluates the fault
    /// timeline and publishes the new snapshots (except stuck units').
    async fn run(mut self, cancel: CancellationToken) {
        let started = Instant::now();
        let mut interval = tokio::time::interval(self.tick);
        interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let steps_per_tick = self.time_scale * self.tick.as_secs_f64() / STEP.as_secs_f64();
        let mut due = 0.0;
        let mut sim_steps: u64 = 0;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = interval.tick() => {}
            }
            due += steps_per_tick;
            let steps = due.floor();
            due -= steps;
            let steps = steps as u64;
            for u in &mut self.units {
                let faults = self.timeline.value_faults(u.unit);
                u.pack.advance_with(
                    steps,
                    StepInputs {
                        runaway: faults.runaway,
                    },
                );
            }
            sim_steps += steps;
            let update = self
                .timeline
                .update(STEP * sim_steps as u32, started.elapsed());
            if !update.events.is_empty() {
                self.log.send_modify(|log| log.0.extend(update.events));
            }
            if let Some(transport) = update.transport {
                self.faults.send_replace(transport);
            }
            if steps == 0 {
                continue;
            }
            for u in &self.units {
                let faults = self.timeline.value_faults(u.unit);
                if !faults.stuck {
                    u.tx.send_replace(encode(&self.profile, u.unit, &u.pack, faults));
                }
            }
        }
        tracing::debug!("site clock stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::register_map::{addr, words_i32};
    use tokio_modbus::{
        client::{tcp::connect_slave, Reader},
        ExceptionCode, Slave,
    };

    fn local_config(units: u8, port_per_unit: bool) -> SiteSimConfig {
        SiteSimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            units,
            port_per_unit,
            seed: 9,
            time_scale: 10.0,
            ..SiteSimConfig::default()
        }
    }

    #[test]
    fn validation_names_every_bad_field() {
        let config = SiteSimConfig {
            units: 0,
            time_scale: f64::NAN,
            ..SiteSimConfig::default()
        };
        let Err(SimError::InvalidConfig(problems)) = config.validate() else {
            panic!("config should be refused");
        };
        let fields: Vec<_> = problems.iter().map(|p| p.field).collect();
        assert_eq!(fields, ["units", "time_scale"]);
    }

    #[test]
    fn fixed_port_per_unit_counts_up_from_the_listen_port() {
        let config = SiteSimConfig {
            port_per_unit: true,
            ..SiteSimConfig::default()
        };
        let ports: Vec<_> = config
            .listener_plan()
            .iter()
            .map(|(a, _)| a.port())
            .collect();
        assert_eq!(ports, [5020, 5021, 5022]);
    }

    #[tokio::test]
    async fn shared_listener_serves_each_unit_over_tcp() -> anyhow::Result<()> {
        let site = start_site(local_config(2, false), CancellationToken::new()).await?;
        assert_eq!(site.addrs.len(), 1);
        for unit in [1, 2] {
            let mut client = connect_slave(site.addrs[0], Slave(unit)).await?;
            let words = client.read_holding_registers(0, 18).await??;
            assert_eq!(words.len(), 18);
            let soc = f64::from(words[usize::from(addr::SOC)]) * 0.01;
            let voltage = f64::from(words[usize::from(addr::DC_VOLTAGE)]) * 0.1;
            assert!((15.0..=95.0).contains(&soc), "soc {soc}");
            assert!((550.0..=800.0).contains(&voltage), "voltage {voltage}");
            let power = words_i32(words[4], words[5]).unsigned_abs();
            assert!(power <= 600_000, "power {power}");
            assert_eq!(client.read_input_registers(100, 4).await??[3], 0x0102);

            let refused = client.read_holding_registers(0, 104).await?;
            assert_eq!(refused, Err(ExceptionCode::IllegalDataAddress));
        }
        let mut stranger = connect_slave(site.addrs[0], Slave(3)).await?;
        let refused = stranger.read_holding_registers(0, 1).await?;
        assert_eq!(refused, Err(ExceptionCode::GatewayTargetDevice));
        site.shutdown().await;
        Ok(())
    }

    #[tokio::test]
    async fn port_per_unit_serves_each_unit_on_its_own_port() -> anyhow::Result<()> {
        let site = start_site(local_config(2, true), CancellationToken::new()).await?;
        assert_eq!(site.addrs.len(), 2);
        assert_ne!(site.addrs[0], site.addrs[1]);
        let mut unit2 = connect_slave(site.unit_addr(2).unwrap(), Slave(2)).await?;
        assert_eq!(unit2.read_holding_registers(0, 18).await??.len(), 18);
        let mut wrong_id = connect_slave(site.addrs[1], Slave(1)).await?;
        assert!(wrong_id.read_holding_registers(0, 1).await?.is_err());
        site.shutdown().await;
        Ok(())
    }

    #[tokio::test]
    async fn snapshots_advance_with_the_clock() -> anyhow::Result<()> {
        let cancel = CancellationToken::new();
        let site = start_site(local_config(1, false), cancel.clone()).await?;
        let mut updates = site.subscribe(1).unwrap();
        let first = updates.borrow_and_update().word(addr::HEARTBEAT);
        updates.changed().await?;
        updates.changed().await?;
        assert_ne!(updates.borrow().word(addr::HEARTBEAT), first);
        cancel.cancel();
        site.stopped().await;
        Ok(())
    }
}
