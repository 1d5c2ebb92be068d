//! The validated rule set: what the rules file (`config.rs`) becomes and
//! what the engine (`engine.rs`) evaluates. Nothing here parses or does
//! I/O; every value is already checked (names unique, durations positive,
//! bands ordered, receivers known).

use std::time::Duration;

pub use crate::pattern::Pattern;

/// Everything a rules file declares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub receivers: Vec<Receiver>,
    /// Derived points, declared beside the rules (`[[derived]]`).
    pub derived: Vec<crate::derived::Definition>,
}

impl RuleSet {
    pub fn receiver(&self, name: &str) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.name == name)
    }
}

/// How urgent an episode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// Which points (or devices, or sites) a rule covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub site: Pattern,
    pub device: Pattern,
    /// Ignored by `offline` rules.
    pub point: Pattern,
}

/// One rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique in the set; names episodes and state.
    pub name: String,
    pub severity: Severity,
    pub summary: String,
    pub target: Target,
    pub condition: Condition,
    /// Receivers to notify, by name; empty: every receiver of the set.
    pub receivers: Vec<String>,
    /// Notify an episode that was already over when it was detected (a
    /// backlog after an outage). Off by default: such episodes are in the
    /// history, not paged.
    pub notify_past: bool,
}

/// A threshold's bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// Holds while value > limit.
    Above(f64),
    /// Holds while value < limit.
    Below(f64),
    /// Holds while value < low or value > high.
    Outside { low: f64, high: f64 },
}

/// What a rule watches for.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// A point's value beyond a bound. It stops holding only once the value
    /// is back by `hysteresis` (e.g. above 45 with hysteresis 2 clears at
    /// ≤ 43), and fires once it has held for `hold` (zero: at once).
    Threshold {
        bound: Bound,
        hysteresis: f64,
        hold: Duration,
    },
    /// A point's value changed by more than `max_change` (absolute, either
    /// direction) within `window`.
    RateOfChange { max_change: f64, window: Duration },
    /// A point's quality not good for longer than `after`.
    Stale { after: Duration },
    /// No committed readings from a site (device `*`) or a device for
    /// longer than `after`, by arrival time: fires although nothing arrives.
    Offline { after: Duration },
    /// max − min of the matched points of one device, at one frame
    /// timestamp, above `max_spread` (clears `hysteresis` below it), held
    /// for `hold`.
    Deviation {
        max_spread: f64,
        hysteresis: f64,
        hold: Duration,
    },
    /// A named flag of a bitfield point set (the device's own alarm and
    /// status bits, by the names its catalog gives them), for `hold`.
    Flag { flag: Pattern, hold: Duration },
}

impl Condition {
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::Threshold { .. } => "threshold",
            Condition::RateOfChange { .. } => "rate_of_change",
            Condition::Stale { .. } => "stale",
            Condition::Offline { .. } => "offline",
            Condition::Deviation { .. } => "deviation",
            Condition::Flag { .. } => "flag",
        }
    }
}

/// Where notifications go.
#[derive(Debug, Clone, PartialEq)]
pub struct Receiver {
    /// Unique in the set; rules name it.
    pub name: String,
    pub kind: ReceiverKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverKind {
    /// POST of a JSON body, signed with HMAC-SHA256 over the body
    /// (`X-Bess-Signature: sha256=<hex>`) when a secret is set.
    Webhook { url: String, secret: Option<String> },
    /// Prometheus Alertmanager, v2 API (`POST {url}/api/v2/alerts`).
    Alertmanager { url: String },
}
