//! Scripted faults: what each kind does ([`FaultKind`]), when and where it
//! applies ([`FaultSpec`]), the timeline that switches faults on and off
//! ([`FaultTimeline`]), and the record of what fired ([`FaultEvent`]).
//!
//! The site clock evaluates the timeline once per tick. Every start and end
//! is logged at WARN with target `bess_sim::fault` (fields `site`, `fault`,
//! `kind`, `units`, `sim_s`, `wall_ms`) and appended to the site's fault log
//! (see `RunningSite::fault_log`), so a test can assert exactly what
//! happened. Transport faults are published to the servers as
//! [`ActiveFaults`]; value faults (stuck, out of range, runaway) are applied
//! by the clock itself.

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use tokio_modbus::SlaveId;

/// How a malformed answer is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MalformedFrame {
    /// Only the first half of a valid answer is sent.
    Truncated,
    /// Random bytes of the answer's length.
    Garbage,
    /// A valid answer whose MBAP length field (TCP) is wrong, or whose CRC
    /// (RTU) is wrong.
    BadLength,
    /// A valid frame answering with another function code.
    WrongFunction,
}

/// What a fault does while it is active.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    /// Every request is answered with this Modbus exception code.
    Exception { code: u8 },
    /// Requests are read and never answered.
    Timeout,
    /// Answers are sent after `delay`.
    Slow { delay: Duration },
    /// The connection is closed when a request arrives.
    Disconnect,
    /// The answer is a broken frame.
    Malformed { frame: MalformedFrame },
    /// The answer carries another transaction id (TCP; RTU: another unit id).
    WrongTransactionId,
    /// Registers freeze at their last values.
    Stuck,
    /// Measurements read far outside their physical range.
    OutOfRange,
    /// Thermal runaway: heat pours into the pack, one module climbs fast and
    /// the over-temperature (and later runaway) alarms and fault bit set.
    Runaway,
    /// The whole site stops accepting connections and answering requests.
    SiteSilent,
}

impl FaultKind {
    /// The name used in the config's `kind` field and in logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Exception { .. } => "exception",
            Self::Timeout => "timeout",
            Self::Slow { .. } => "slow",
            Self::Disconnect => "disconnect",
            Self::Malformed { .. } => "malformed",
            Self::WrongTransactionId => "wrong-transaction-id",
            Self::Stuck => "stuck",
            Self::OutOfRange => "out-of-range",
            Self::Runaway => "runaway",
            Self::SiteSilent => "site-silent",
        }
    }

    /// Faults the device itself would notice and flag as a comm fault.
    fn is_comm_fault(&self) -> bool {
        !matches!(self, Self::Runaway | Self::OutOfRange)
    }
}

/// Which units a fault hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultTarget {
    /// Every unit of the site.
    Site,
    Units(Vec<SlaveId>),
}

/// Which clock a fault's start and duration are measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultClock {
    /// Simulated time since start (compressed by the time scale).
    Simulated,
    /// Real time since start.
    Wall,
}

/// One named fault on the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    pub name: String,
    pub kind: FaultKind,
    pub target: FaultTarget,
    pub clock: FaultClock,
    /// Offset from the site's start.
    pub at: Duration,
    /// How long it lasts; `None` = until the site stops.
    pub duration: Option<Duration>,
}

impl FaultSpec {
    /// A fault active from the start until the site stops, on every unit.
    pub fn from_start(name: &str, kind: FaultKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            target: FaultTarget::Site,
            clock: FaultClock::Wall,
            at: Duration::ZERO,
            duration: None,
        }
    }

    fn active_at(&self, sim: Duration, wall: Duration) -> bool {
        let now = match self.clock {
            FaultClock::Simulated => sim,
            FaultClock::Wall => wall,
        };
        now >= self.at && self.duration.is_none_or(|d| now < self.at + d)
    }

    fn units(&self, all: &[SlaveId]) -> Vec<SlaveId> {
        match &self.target {
            FaultTarget::Site => all.to_vec(),
            FaultTarget::Units(units) => units.clone(),
        }
    }
}

/// Whether a fault began or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultEdge {
    Started,
    Ended,
}

impl fmt::Display for FaultEdge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Started => "started",
            Self::Ended => "ended",
        })
    }
}

/// A fault starting or ending, as recorded in the fault log.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultEvent {
    pub fault: String,
    pub kind: &'static str,
    pub units: Vec<SlaveId>,
    pub edge: FaultEdge,
    /// Simulated time since start.
    pub sim: Duration,
    /// Real time since start.
    pub wall: Duration,
}

/// Every fault start and end so far, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultLog(pub Vec<FaultEvent>);

impl FaultLog {
    /// Whether `fault` has started (and perhaps ended since).
    pub fn started(&self, fault: &str) -> bool {
        self.0
            .iter()
            .any(|e| e.fault == fault && e.edge == FaultEdge::Started)
    }

    pub fn ended(&self, fault: &str) -> bool {
        self.0
            .iter()
            .any(|e| e.fault == fault && e.edge == FaultEdge::Ended)
    }
}

/// Transport faults in force on one unit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UnitFaults {
    pub exception: Option<u8>,
    pub timeout: bool,
    pub slow: Option<Duration>,
    pub disconnect: bool,
    pub malformed: Option<MalformedFrame>,
    pub wrong_transaction_id: bool,
}

/// Transport faults in force, as the servers see them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActiveFaults {
    pub site_silent: bool,
    pub units: BTreeMap<SlaveId, UnitFaults>,
}

impl ActiveFaults {
    pub fn unit(&self, unit: SlaveId) -> UnitFaults {
        self.units.get(&unit).copied().unwrap_or_default()
    }
}

/// Value faults in force on one unit, applied by the clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValueFaults {
    pub stuck: bool,
    pub out_of_range: bool,
    pub runaway: bool,
    pub comm_fault: bool,
}

/// What changed at one evaluation of the timeline.
#[derive(Debug, Default)]
pub struct TimelineUpdate {
    pub events: Vec<FaultEvent>,
    /// New transport faults, if they changed.
    pub transport: Option<Arc<ActiveFaults>>,
}

/// Switches a site's faults on and off as time passes.
#[derive(Debug)]
pub struct FaultTimeline {
    site: String,
    faults: Vec<FaultSpec>,
    active: Vec<bool>,
    all_units: Vec<SlaveId>,
}

impl FaultTimeline {
    pub fn new(site: &str, faults: Vec<FaultSpec>, all_units: Vec<SlaveId>) -> Self {
        Self {
            site: site.to_owned(),
            active: vec![false; faults.len()],
            faults,
            all_units,
        }
    }

    /// Value faults in force on `unit` now.
    pub fn value_faults(&self, unit: SlaveId) -> ValueFaults {
        let mut v = ValueFaults::default();
        for (spec, _) in self
            .live()
            .filter(|(s, _)| s.units(&self.all_units).contains(&unit))
        {
            match spec.kind {
                FaultKind::Stuck => v.stuck = true,
                FaultKind::OutOfRange => v.out_of_range = true,
                FaultKind::Runaway => v.runaway = true,
                _ => {}
            }
            v.comm_fault |= spec.kind.is_comm_fault();
        }
        v
    }

    fn live(&self) -> impl Iterator<Item = (&FaultSpec, bool)> {
        self.faults
            .iter()
            .zip(self.active.iter().copied())
            .filter(|(_, a)| *a)
    }

    fn transport(&self) -> ActiveFaults {
        let mut out = ActiveFaults::default();
        for (spec, _) in self.live() {
            if spec.kind == FaultKind::SiteSilent {
                out.site_silent = true;
                continue;
            }
            for unit in spec.units(&self.all_units) {
                let u = out.units.entry(unit).or_default();
                match spec.kind {
                    FaultKind::Exception { code } => u.exception = Some(code),
                    FaultKind::Timeout => u.timeout = true,
                    FaultKind::Slow { delay } => u.slow = Some(delay),
                    FaultKind::Disconnect => u.disconnect = true,
                    FaultKind::Malformed { frame } => u.malformed = Some(frame),
                    FaultKind::WrongTransactionId => u.wrong_transaction_id = true,
                    _ => {}
                }
            }
        }
        out
    }

    /// Re-evaluates every fault at simulated time `sim` and real time
    /// `wall`; logs and returns what started or ended.
    pub fn update(&mut self, sim: Duration, wall: Duration) -> TimelineUpdate {
        let mut update = TimelineUpdate::default();
        for (spec, active) in self.faults.iter().zip(self.active.iter_mut()) {
            let now = spec.active_at(sim, wall);
            if now == *active {
                continue;
            }
            *active = now;
            let edge = if now {
                FaultEdge::Started
            } else {
                FaultEdge::Ended
            };
            let units = spec.units(&self.all_units);
            tracing::warn!(
                target: "bess_sim::fault",
                site = %self.site,
                fault = %spec.name,
                kind = spec.kind.name(),
                units = ?units,
                sim_s = sim.as_secs_f64(),
                wall_ms = wall.as_millis() as u64,
                "fault {} {edge}",
                spec.name,
            );
            update.events.push(FaultEvent {
                fault: spec.name.clone(),
                kind: spec.kind.name(),
                units,
                edge,
                sim,
                wall,
            });
        }
        if !update.events.is_empty() {
            update.transport = Some(Arc::new(self.transport()));
        }
        update
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        name: &str,
        kind: FaultKind,
        at: u64,
        duration: Option<u64>,
        target: FaultTarget,
    ) -> FaultSpec {
        FaultSpec {
            name: name.into(),
            kind,
            target,
            clock: FaultClock::Simulated,
            at: Duration::from_secs(at),
            duration: duration.map(Duration::from_secs),
        }
    }

    #[test]
    fn faults_start_and_end_on_their_clock_and_are_reported_once() {
        let mut timeline = FaultTimeline::new(
            "s",
            vec![
                spec(
                    "ex",
                    FaultKind::Exception { code: 4 },
                    10,
                    Some(5),
                    FaultTarget::Units(vec![2]),
                ),
                spec("silent", FaultKind::SiteSilent, 12, None, FaultTarget::Site),
            ],
            vec![1, 2],
        );
        let at = |s| (Duration::from_secs(s), Duration::ZERO);
        assert!(timeline.update(at(9).0, at(9).1).events.is_empty());
        let started = timeline.update(at(10).0, at(10).1);
        assert_eq!(started.events.len(), 1);
        assert_eq!(started.events[0].edge, FaultEdge::Started);
        let transport = started.transport.unwrap();
        assert_eq!(transport.unit(2).exception, Some(4));
        assert_eq!(transport.unit(1).exception, None);
        assert!(timeline.update(at(11).0, at(11).1).events.is_empty());
        let both = timeline.update(at(15).0, at(15).1);
        let names: Vec<_> = both
            .events
            .iter()
            .map(|e| (e.fault.as_str(), e.edge))
            .collect();
        assert_eq!(
            names,
            [("ex", FaultEdge::Ended), ("silent", FaultEdge::Started)]
        );
        assert!(both.transport.unwrap().site_silent);
        assert_eq!(both.events[1].units, [1, 2]);
    }

    #[test]
    fn value_faults_apply_only_to_their_units_and_flag_comm_faults() {
        let mut timeline = FaultTimeline::new(
            "s",
            vec![
                spec(
                    "stuck",
                    FaultKind::Stuck,
                    0,
                    None,
                    FaultTarget::Units(vec![1]),
                ),
                spec(
                    "hot",
                    FaultKind::Runaway,
                    0,
                    None,
                    FaultTarget::Units(vec![2]),
                ),
            ],
            vec![1, 2],
        );
        timeline.update(Duration::ZERO, Duration::ZERO);
        let one = timeline.value_faults(1);
        assert!(one.stuck && one.comm_fault && !one.runaway);
        let two = timeline.value_faults(2);
        assert!(two.runaway && !two.comm_fault && !two.stuck);
    }
}
