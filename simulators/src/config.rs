//! The simulator's TOML config file: site settings, a dispatch schedule and
//! a fault timeline. Unknown fields are refused, and every mistake is
//! reported with file, line, column and field, all at once.
//!
//! ```toml
//! [site]
//! units = 3
//! time_scale = 60.0
//! profile = "sunspec"          # or "bess-controller" (default)
//! sunspec_base = 40000         # 0, 40000 or 50000
//!
//! [schedule]
//! repeat = true
//! soc_min_pct = 5.0
//! soc_max_pct = 95.0
//! [[schedule.step]]
//! mode = "charge"              # charge | discharge | rest
//! power_kw = 250.0             # or c_rate = 0.5
//! duration = "2h"
//!
//! [[fault]]
//! name = "unit2-busy"
//! kind = "exception"           # see FaultKind
//! code = 6
//! units = [2]                  # omit for every unit of the site
//! at = "10m"                   # simulated time; or at_wall = "30s"
//! duration = "5m"              # omit: until the simulator stops
//! ```

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::{
    fault::{FaultClock, FaultKind, FaultSpec, FaultTarget, MalformedFrame},
    profile::Profile,
    schedule::{Schedule, ScheduleStep, Setpoint, StepMode},
    sunspec,
};

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

fn list(path: &Path, issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|i| {
            format!(
                "{}:{}:{}: {}: {}",
                path.display(),
                i.line,
                i.column,
                i.field,
                i.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why a config file could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", list(.path, .issues))]
    Invalid {
        path: PathBuf,
        issues: Vec<ConfigIssue>,
    },
}

/// `[site]`: every field optional; command-line flags override them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSection {
    pub name: Option<String>,
    pub listen: Option<SocketAddr>,
    pub units: Option<u8>,
    pub port_per_unit: Option<bool>,
    pub seed: Option<u64>,
    pub time_scale: Option<f64>,
    pub profile: Option<Spanned<String>>,
    pub sunspec_base: Option<Spanned<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleSection {
    #[serde(default = "yes")]
    repeat: bool,
    #[serde(default = "default_soc_min")]
    soc_min_pct: f64,
    #[serde(default = "default_soc_max")]
    soc_max_pct: f64,
    #[serde(default)]
    step: Vec<Spanned<StepEntry>>,
}

const fn yes() -> bool {
    true
}
const fn default_soc_min() -> f64 {
    5.0
}
const fn default_soc_max() -> f64 {
    95.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepEntry {
    mode: StepMode,
    power_kw: Option<f64>,
    c_rate: Option<f64>,
    #[serde(with = "humantime_serde")]
    duration: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultEntry {
    name: String,
    kind: Spanned<String>,
    units: Option<Vec<u8>>,
    #[serde(default, with = "humantime_serde")]
    at: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    at_wall: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    duration: Option<Duration>,
    code: Option<u8>,
    #[serde(default, with = "humantime_serde")]
    delay: Option<Duration>,
    frame: Option<MalformedFrame>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    site: SiteSection,
    schedule: Option<Spanned<ScheduleSection>>,
    #[serde(default)]
    fault: Vec<Spanned<FaultEntry>>,
}

/// What a config file says, ready to merge with command-line flags.
#[derive(Debug, Default)]
pub struct SimFile {
    pub site: SiteSection,
    pub profile: Option<Profile>,
    pub schedule: Option<Schedule>,
    pub faults: Vec<FaultSpec>,
}

/// Line and column (1-based) of byte `offset` in `text`.
fn locate(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |n| before.len() - n - 1)
        + 1;
    (line, column)
}

struct Issues<'a> {
    text: &'a str,
    found: Vec<ConfigIssue>,
}

impl Issues<'_> {
    fn add(
        &mut self,
        span: std::ops::Range<usize>,
        field: impl fmt::Display,
        message: impl fmt::Display,
    ) {
        let (line, column) = locate(self.text, span.start);
        self.found.push(ConfigIssue {
            line,
            column,
            field: field.to_string(),
            message: message.to_string(),
        });
    }
}

impl SimFile {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|issues| ConfigError::Invalid {
            path: path.to_owned(),
            issues,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, Vec<ConfigIssue>> {
        let shape: FileShape = toml::from_str(text).map_err(|err| {
            let (line, column) = locate(text, err.span().map_or(0, |s| s.start));
            let message = err.message().to_owned();
            let field = message
                .split('`')
                .nth(1)
                .filter(|_| message.starts_with("unknown field"))
                .unwrap_or("toml")
                .to_owned();
            vec![ConfigIssue {
                line,
                column,
                field,
                message,
            }]
        })?;
        let mut issues = Issues {
            text,
            found: Vec::new(),
        };

        let profile =
            shape
                .site
                .profile
                .as_ref()
                .and_then(|p| match p.get_ref().parse::<Profile>() {
                    Ok(Profile::SunSpec { .. }) => {
                        let base = shape
                            .site
                            .sunspec_base
                            .as_ref()
                            .map_or(sunspec::DEFAULT_BASE, |b| *b.get_ref());
                        Some(Profile::SunSpec { base })
                    }
                    Ok(other) => Some(other),
                    Err(err) => {
                        issues.add(p.span(), "site.profile", err);
                        None
                    }
                });
        if let Some(base) = &shape.site.sunspec_base {
            if !sunspec::BASE_ADDRESSES.contains(base.get_ref()) {
                issues.add(
                    base.span(),
                    "site.sunspec_base",
                    format!("must be one of {:?}", sunspec::BASE_ADDRESSES),
                );
            }
        }

        let schedule = shape.schedule.map(|section| {
            let span = section.span();
            let section = section.into_inner();
            if section.step.is_empty() {
                issues.add(
                    span.clone(),
                    "schedule.step",
                    "a schedule needs at least one [[schedule.step]]",
                );
            }
            if !(0.0..100.0).contains(&section.soc_min_pct)
                || !(section.soc_min_pct..=100.0).contains(&section.soc_max_pct)
            {
                issues.add(
                    span,
                    "schedule.soc_min_pct",
                    "needs 0 <= soc_min_pct < soc_max_pct <= 100",
                );
            }
            let steps = section
                .step
                .into_iter()
                .enumerate()
                .map(|(i, entry)| {
                    let span = entry.span();
                    let e = entry.into_inner();
                    let field = |name: &str| format!("schedule.step[{i}].{name}");
                    let setpoint = match (e.mode, e.power_kw, e.c_rate) {
                        (StepMode::Rest, None, None) => Setpoint::Kw(0.0),
                        (StepMode::Rest, _, _) => {
                            issues.add(
                                span.clone(),
                                field("power_kw"),
                                "a rest step takes no power_kw or c_rate",
                            );
                            Setpoint::Kw(0.0)
                        }
                        (_, Some(kw), None) if kw.is_finite() && kw >= 0.0 => Setpoint::Kw(kw),
                        (_, None, Some(c)) if c.is_finite() && (0.0..=5.0).contains(&c) => {
                            Setpoint::CRate(c)
                        }
                        (_, None, None) | (_, Some(_), Some(_)) => {
                            issues.add(
                                span.clone(),
                                field("power_kw"),
                                "give exactly one of power_kw or c_rate",
                            );
                            Setpoint::Kw(0.0)
                        }
                        (_, Some(_), None) => {
                            issues.add(
                                span.clone(),
                                field("power_kw"),
                                "must be a non-negative number (the mode gives the direction)",
                            );
                            Setpoint::Kw(0.0)
                        }
                        (_, None, Some(_)) => {
                            issues.add(span.clone(), field("c_rate"), "must be 0..=5");
                            Setpoint::Kw(0.0)
                        }
                    };
                    if e.duration.is_zero() {
                        issues.add(span, field("duration"), "must be longer than 0");
                    }
                    ScheduleStep {
                        mode: e.mode,
                        setpoint,
                        duration: e.duration,
                    }
                })
                .collect();
            Schedule {
                steps,
                repeat: section.repeat,
                soc_min: section.soc_min_pct / 100.0,
                soc_max: section.soc_max_pct / 100.0,
            }
        });

        let faults = shape
            .fault
            .into_iter()
            .enumerate()
            .filter_map(|(i, entry)| fault_spec(i, entry, &mut issues))
            .collect();

        if issues.found.is_empty() {
            Ok(Self {
                site: shape.site,
                profile,
                schedule,
                faults,
            })
        } else {
            Err(issues.found)
        }
    }
}

fn fault_spec(i: usize, entry: Spanned<FaultEntry>, issues: &mut Issues<'_>) -> Option<FaultSpec> {
    let span = entry.span();
    let e = entry.into_inner();
    let field = |name: &str| format!("fault[{i}].{name}");
    let before = issues.found.len();
    let kind_name = e.kind.get_ref().as_str();
    let kind = match kind_name {
        "exception" => Some(FaultKind::Exception {
            code: e.code.unwrap_or(4),
        }),
        "timeout" => Some(FaultKind::Timeout),
        "slow" => Some(FaultKind::Slow {
            delay: e.delay.unwrap_or(Duration::from_secs(2)),
        }),
        "disconnect" => Some(FaultKind::Disconnect),
        "malformed" => Some(FaultKind::Malformed {
            frame: e.frame.unwrap_or(MalformedFrame::Truncated),
        }),
        "wrong-transaction-id" => Some(FaultKind::WrongTransactionId),
        "stuck" => Some(FaultKind::Stuck),
        "out-of-range" => Some(FaultKind::OutOfRange),
        "runaway" => Some(FaultKind::Runaway),
        "site-silent" => Some(FaultKind::SiteSilent),
        other => {
            issues.add(
                e.kind.span(),
                field("kind"),
                format!(
                    "unknown fault kind `{other}`, expected one of exception, timeout, slow, disconnect, malformed, \
                     wrong-transaction-id, stuck, out-of-range, runaway, site-silent"
                ),
            );
            None
        }
    };
    if kind.is_some() {
        for (present, name) in [
            (e.code.is_some() && kind_name != "exception", "code"),
            (e.delay.is_some() && kind_name != "slow", "delay"),
            (e.frame.is_some() && kind_name != "malformed", "frame"),
            (e.units.is_some() && kind_name == "site-silent", "units"),
        ] {
            if present {
                issues.add(
                    span.clone(),
                    field(name),
                    format!("`{name}` does not apply to kind `{kind_name}`"),
                );
            }
        }
    }
    if let Some(code) = e.code {
        if code == 0 || code > 0x7F {
            issues.add(
                span.clone(),
                field("code"),
                "must be a Modbus exception code 1..=127 (e.g. 4 server failure, 6 busy)",
            );
        }
    }
    if e.name.trim().is_empty() {
        issues.add(span.clone(), field("name"), "must not be empty");
    }
    if matches!(&e.units, Some(u) if u.is_empty()) {
        issues.add(
            span.clone(),
            field("units"),
            "an empty list hits nothing; omit it to hit the whole site",
        );
    }
    let (clock, at) = match (e.at, e.at_wall) {
        (Some(at), None) => (FaultClock::Simulated, at),
        (None, Some(at)) => (FaultClock::Wall, at),
        (None, None) => (FaultClock::Simulated, Duration::ZERO),
        (Some(_), Some(_)) => {
            issues.add(
                span.clone(),
                field("at"),
                "give `at` (simulated time) or `at_wall` (real time), not both",
            );
            (FaultClock::Simulated, Duration::ZERO)
        }
    };
    if issues.found.len() > before {
        return None;
    }
    Some(FaultSpec {
        name: e.name,
        kind: kind?,
        target: e.units.map_or(FaultTarget::Site, FaultTarget::Units),
        clock,
        at,
        duration: e.duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[site]
units = 2
time_scale = 60.0
profile = "sunspec"
sunspec_base = 50000

[schedule]
[[schedule.step]]
mode = "charge"
c_rate = 0.5
duration = "2h"
[[schedule.step]]
mode = "rest"
duration = "30m"

[[fault]]
name = "busy"
kind = "exception"
code = 6
units = [2]
at = "10m"
duration = "5m"

[[fault]]
name = "quiet"
kind = "site-silent"
at_wall = "30s"
"#;

    #[test]
    fn full_config_reads_site_schedule_and_faults() {
        let file = SimFile::parse(GOOD).unwrap();
        assert_eq!(file.site.units, Some(2));
        assert_eq!(file.profile, Some(Profile::SunSpec { base: 50_000 }));
        let schedule = file.schedule.unwrap();
        assert_eq!(schedule.steps.len(), 2);
        assert_eq!(schedule.steps[0].setpoint, Setpoint::CRate(0.5));
        assert_eq!(schedule.period(), Duration::from_secs(9_000));
        assert_eq!(file.faults[0].kind, FaultKind::Exception { code: 6 });
        assert_eq!(file.faults[0].target, FaultTarget::Units(vec![2]));
        assert_eq!(file.faults[0].duration, Some(Duration::from_secs(300)));
        assert_eq!(file.faults[1].clock, FaultClock::Wall);
        assert_eq!(file.faults[1].target, FaultTarget::Site);
    }

    #[test]
    fn unknown_field_is_reported_with_its_line_and_name() {
        let issues = SimFile::parse("[site]\nunits = 2\ncolour = \"red\"\n").unwrap_err();
        assert_eq!(issues.len(), 1);
        assert_eq!((issues[0].line, issues[0].field.as_str()), (3, "colour"));
        assert!(
            issues[0].message.contains("unknown field"),
            "{}",
            issues[0].message
        );
    }

    #[test]
    fn every_bad_fault_and_step_is_reported_with_its_line() {
        let text = r#"
[schedule]
[[schedule.step]]
mode = "charge"
duration = "1h"

[[fault]]
name = "a"
kind = "meltdown"

[[fault]]
name = "b"
kind = "timeout"
delay = "1s"
"#;
        let issues = SimFile::parse(text).unwrap_err();
        let found: Vec<_> = issues.iter().map(|i| (i.line, i.field.as_str())).collect();
        assert_eq!(
            found,
            [
                (3, "schedule.step[0].power_kw"),
                (9, "fault[0].kind"),
                (11, "fault[1].delay")
            ]
        );
        let shown = ConfigError::Invalid {
            path: "sim.toml".into(),
            issues,
        }
        .to_string();
        assert!(
            shown.starts_with("sim.toml:3:1: schedule.step[0].power_kw: "),
            "{shown}"
        );
    }

    #[test]
    fn bad_duration_is_a_parse_error_naming_the_line() {
        let issues =
            SimFile::parse("[[fault]]\nname = \"x\"\nkind = \"timeout\"\nduration = \"soon\"\n")
                .unwrap_err();
        assert_eq!(issues[0].line, 4);
    }
}
