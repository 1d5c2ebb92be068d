//! The validated rule set: what the rules file (`config.rs`) becomes and
//! what the engine (`engine.rs`) evaluates. Nothing here parses or does
//! I/O; every value is already checked (names unique, durations positive,
//! bands ordered, receivers known).

use std::time::Duration;

/// Everything a rules file declares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub receivers: Vec<Receiver>,
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

/// A glob over names: `*` any run of characters, `?` one character.
/// `"*"` matches everything.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern(pub String);

impl Pattern {
    pub fn any() -> Self {
        Pattern("*".into())
    }

    pub fn matches(&self, name: &str) -> bool {
        glob_matches(self.0.as_bytes(), name.as_bytes())
    }
}

/// Iterative glob match with one backtrack point (linear in practice).
fn glob_matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
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
}

impl Condition {
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::Threshold { .. } => "threshold",
            Condition::RateOfChange { .. } => "rate_of_change",
            Condition::Stale { .. } => "stale",
            Condition::Offline { .. } => "offline",
            Condition::Deviation { .. } => "deviation",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_runs_and_single_characters() {
        let p = |s: &str| Pattern(s.into());
        assert!(p("*").matches(""));
        assert!(p("*").matches("anything"));
        assert!(p("rack-*").matches("rack-1"));
        assert!(!p("rack-*").matches("bms"));
        assert!(p("cell_?_temp").matches("cell_3_temp"));
        assert!(!p("cell_?_temp").matches("cell_10_temp"));
        assert!(p("*_temp*").matches("cell_temp_max"));
        assert!(p("a*b*c").matches("aXbYbZc"));
        assert!(!p("a*b*c").matches("aXbYbZ"));
        assert!(p("site-001").matches("site-001"));
        assert!(!p("site-001").matches("site-0011"));
    }
}
