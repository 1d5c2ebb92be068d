//! The alert-rules file (`--rules FILE`): reading it and the checks that
//! turn it into a `RuleSet`.
//!
//! ```toml
//! [[rule]]
//! name = "cell-overtemp"          # required, unique, [A-Za-z0-9_.-]+, at most 100 chars
//! summary = "Hottest cell above 45 °C"   # optional, default ""
//! severity = "critical"           # info | warning (default) | critical
//! site = "*"                      # glob (* and ?), default "*"
//! device = "bms*"                 # default "*"
//! point = "cell_temp_max"         # default "*"; not allowed for kind = "offline"
//! kind = "threshold"              # threshold | rate_of_change | stale | offline | deviation
//! above = 45.0                    # threshold: exactly one of above / below / (outside_low + outside_high, low < high)
//! hysteresis = 2.0                # threshold and deviation: >= 0, default 0
//! for = "30s"                     # threshold and deviation: hold duration, default "0s"
//! receivers = ["ops"]             # optional; each must name a [[receiver]]; default: all receivers
//! notify_past = false             # optional, default false
//!
//! [[rule]]
//! name = "soc-jump"
//! kind = "rate_of_change"
//! point = "soc"
//! max_change = 10.0               # > 0, absolute change within the window
//! window = "1m"                   # > 0
//!
//! [[rule]]
//! name = "comm-loss"
//! kind = "stale"
//! after = "30s"                   # > 0
//!
//! [[rule]]
//! name = "site-silent"
//! kind = "offline"
//! after = "2m"                    # >= 30s (stored batches arrive every 15 s by default)
//!
//! [[rule]]
//! name = "cell-spread"
//! kind = "deviation"
//! device = "rack-*"
//! point = "cell_voltage_*"
//! max_spread = 0.05               # > 0
//! hysteresis = 0.01
//! for = "10s"
//!
//! [[receiver]]
//! name = "ops"                    # required, unique
//! kind = "webhook"                # webhook | alertmanager
//! url = "http://127.0.0.1:9000/hook"   # required, http or https
//! secret_env = "BESS_WEBHOOK_SECRET"   # webhook only, optional: HMAC secret from this environment variable (error if the variable is unset or empty)
//!
//! [[receiver]]
//! name = "am"
//! kind = "alertmanager"
//! url = "http://127.0.0.1:9093"
//! ```
//!
//! `deploy/local/rules.example.toml` is the same file with a word on each
//! kind. Durations are humantime strings ("30s", "1h 30m"); numbers may be
//! integers or floats and must be finite. Unknown fields are errors, and so are fields
//! of another kind of rule (`above` on a `stale` rule). The hysteresis of a
//! band is less than half its width, and a deviation's less than its
//! `max_spread`, or the episode could never end. A file with no rules and
//! no receivers is an empty `RuleSet`.
//!
//! Only the file's outline (`[[rule]]` and `[[receiver]]` tables) goes
//! through serde; the fields of each table are read here from their
//! spanned keys and values, so that every problem of every table is
//! reported at once, each at its own value's line and column with its
//! field path (`rule[2].for`, indexes 0-based), as
//! `FILE:LINE:COLUMN: FIELD: message`. A `secret_env` is resolved when the
//! file is read: the `RuleSet` holds the secret, not the variable's name.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bess_config_report::{
    problem_of_toml_error, render_problems, ConfigProblem, LineIndex, Problems,
};
use serde::Deserialize;

mod derived;
mod table;
use table::{Fields, Table};
use toml::Spanned;

use super::model::{Bound, Condition, Receiver, ReceiverKind, Rule, RuleSet, Severity, Target};

/// Why a rules file could not be loaded. `Display` names the file, the
/// line, the column and the field of every problem, one line each.
#[derive(Debug, thiserror::Error)]
pub enum RulesFileError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<ConfigProblem>,
    },
}

/// Reads and checks the rules file at `path`.
pub fn load(path: &Path) -> Result<RuleSet, RulesFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| RulesFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Checks the text of a rules file; `path` names it in problems. Webhook
/// secrets come from the process environment.
pub fn parse(text: &str, path: &Path) -> Result<RuleSet, RulesFileError> {
    parse_with_env(text, path, &|name| std::env::var(name).ok())
}

/// `parse`, with `env` looking up the variables `secret_env` names.
pub fn parse_with_env(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RuleSet, RulesFileError> {
    rule_set_of(text, env).map_err(|problems| RulesFileError::Invalid {
        path: path.to_owned(),
        problems,
    })
}

/// The shortest `after` of an offline rule: stored batches arrive every
/// 15 s by default, so a shorter wait would fire between two of them.
const MIN_OFFLINE_AFTER: Duration = Duration::from_secs(30);

const MAX_RULE_NAME_LEN: usize = 100;

/// The fields every rule takes, whatever its kind.
const RULE_FIELDS: &[&str] = &[
    "name",
    "summary",
    "severity",
    "site",
    "device",
    "point",
    "kind",
    "receivers",
    "notify_past",
];

/// Each rule kind and the fields it takes besides `RULE_FIELDS`.
const RULE_KINDS: &[(&str, &[&str])] = &[
    (
        "threshold",
        &[
            "above",
            "below",
            "outside_low",
            "outside_high",
            "hysteresis",
            "for",
        ],
    ),
    ("rate_of_change", &["max_change", "window"]),
    ("stale", &["after"]),
    ("offline", &["after"]),
    ("deviation", &["max_spread", "hysteresis", "for"]),
    ("flag", &["flag", "for"]),
];

/// The fields every receiver takes, and each receiver kind's own.
const RECEIVER_FIELDS: &[&str] = &["name", "kind", "url"];
const RECEIVER_KINDS: &[(&str, &[&str])] = &[("webhook", &["secret_env"]), ("alertmanager", &[])];

/// The file's outline. A table's fields are kept as written, each key and
/// value with its span, and read by `Table`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<Spanned<Fields>>,
    #[serde(default)]
    receiver: Vec<Spanned<Fields>>,
    #[serde(default)]
    derived: Vec<Spanned<Fields>>,
}

fn rule_set_of(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RuleSet, Vec<ConfigProblem>> {
    let lines = LineIndex::new(text);
    let file: RulesFile =
        toml::from_str(text).map_err(|e| vec![problem_of_toml_error(&e, text, &lines)])?;
    let mut problems = Problems::new(&lines);

    let mut receiver_names = HashSet::new();
    let receivers: Vec<_> = file
        .receiver
        .iter()
        .enumerate()
        .map(|(i, table)| {
            let table = Table::new("receiver", i, table);
            read_receiver(&table, &mut receiver_names, env, &mut problems)
        })
        .collect();
    let mut rule_names = HashSet::new();
    let rules: Vec<_> = file
        .rule
        .iter()
        .enumerate()
        .map(|(i, table)| {
            let table = Table::new("rule", i, table);
            read_rule(&table, &mut rule_names, &receiver_names, &mut problems)
        })
        .collect();

    let mut outputs = HashSet::new();
    let derived: Vec<_> = file
        .derived
        .iter()
        .enumerate()
        .map(|(i, table)| {
            let table = Table::new("derived", i, table);
            derived::read_derived(&table, &mut outputs, &mut problems)
        })
        .collect();

    if !problems.is_empty() {
        let mut found = problems.into_vec();
        found.sort_by_key(|p| (p.line, p.column));
        return Err(found);
    }
    Ok(RuleSet {
        rules: rules.into_iter().flatten().collect(),
        receivers: receivers.into_iter().flatten().collect(),
        derived: derived.into_iter().flatten().collect(),
    })
}

/// One rule, or `None` after adding its problems. `names` are the rule
/// names seen so far; `receivers` every receiver name the file declares.
fn read_rule<'t>(
    table: &Table<'t>,
    names: &mut HashSet<&'t str>,
    receivers: &HashSet<&str>,
    problems: &mut Problems<'_>,
) -> Option<Rule> {
    let name = table.unique_name("rule", names, problems);
    if let Some(name) = name {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if name.is_empty() || name.len() > MAX_RULE_NAME_LEN || !name.chars().all(allowed) {
            table.problem(
                "name",
                format!("must be 1 to {MAX_RULE_NAME_LEN} of the characters A-Z a-z 0-9 _ . -"),
                problems,
            );
        }
    }
    let summary = table.string("summary", problems).unwrap_or_default();
    let severity = match table.string("severity", problems) {
        None => Some(Severity::Warning),
        Some(text) => {
            let severity = Severity::parse(text);
            if severity.is_none() {
                table.problem("severity", "must be info, warning or critical", problems);
            }
            severity
        }
    };
    let site = table.pattern("site", problems);
    let device = table.pattern("device", problems);
    let point = table.pattern("point", problems);
    let kind = table.kind(RULE_KINDS, problems);
    table.refuse_unknown_fields(RULE_FIELDS, RULE_KINDS, kind, problems);
    let condition = kind.and_then(|kind| read_condition(table, kind, problems));
    if kind == Some("offline") {
        for key in ["point", "device"] {
            if table.value(key).is_some() {
                table.problem(
                    key,
                    format!("an offline rule watches whole sites (their batches' arrival): remove `{key}`"),
                    problems,
                );
            }
        }
    }
    let rule_receivers = table.strings("receivers", problems).unwrap_or_default();
    for (i, receiver) in rule_receivers.iter().enumerate() {
        if !receivers.contains(receiver) {
            let mut known: Vec<_> = receivers.iter().copied().collect();
            known.sort_unstable();
            table.problem_at(
                "receivers",
                format!("receivers[{i}]"),
                format!(
                    "no [[receiver]] named {receiver:?} (known: {})",
                    known.join(", ")
                ),
                problems,
            );
        }
    }
    let notify_past = table.boolean("notify_past", problems).unwrap_or(false);
    Some(Rule {
        name: name?.to_owned(),
        severity: severity?,
        summary: summary.to_owned(),
        target: Target {
            site: site?,
            device: device?,
            point: point?,
        },
        condition: condition?,
        receivers: rule_receivers.into_iter().map(str::to_owned).collect(),
        notify_past,
    })
}

/// The condition of a rule of `kind` (one of `RULE_KINDS`), or `None`
/// after adding its problems.
fn read_condition(table: &Table<'_>, kind: &str, problems: &mut Problems<'_>) -> Option<Condition> {
    match kind {
        "threshold" => {
            let bound = read_bound(table, problems);
            let hysteresis = table.hysteresis(problems);
            if let (Some(Bound::Outside { low, high }), Some(hysteresis)) = (bound, hysteresis) {
                if hysteresis >= (high - low) / 2.0 {
                    table.problem(
                        "hysteresis",
                        "must be less than half the band `outside_low`..`outside_high`, or the value is never back inside",
                        problems,
                    );
                }
            }
            let hold = table.duration("for", problems).unwrap_or(Duration::ZERO);
            Some(Condition::Threshold {
                bound: bound?,
                hysteresis: hysteresis?,
                hold,
            })
        }
        "rate_of_change" => {
            let max_change = table.required("max_change", problems, Table::positive);
            let window = table.required("window", problems, Table::positive_duration);
            Some(Condition::RateOfChange {
                max_change: max_change?,
                window: window?,
            })
        }
        "stale" => {
            let after = table.required("after", problems, Table::positive_duration);
            Some(Condition::Stale { after: after? })
        }
        "offline" => {
            let after = table.required("after", problems, Table::duration)?;
            if after < MIN_OFFLINE_AFTER {
                table.problem(
                    "after",
                    format!(
                        "must be at least {}: stored batches arrive every 15 s by default, a shorter wait fires between two of them",
                        humantime::format_duration(MIN_OFFLINE_AFTER)
                    ),
                    problems,
                );
                return None;
            }
            Some(Condition::Offline { after })
        }
        "deviation" => {
            let max_spread = table.required("max_spread", problems, Table::positive);
            let hysteresis = table.hysteresis(problems);
            if let (Some(max_spread), Some(hysteresis)) = (max_spread, hysteresis) {
                if hysteresis >= max_spread {
                    table.problem(
                        "hysteresis",
                        "must be less than `max_spread`, or the spread is never back below it",
                        problems,
                    );
                }
            }
            let hold = table.duration("for", problems).unwrap_or(Duration::ZERO);
            Some(Condition::Deviation {
                max_spread: max_spread?,
                hysteresis: hysteresis?,
                hold,
            })
        }
        "flag" => {
            let flag = table.required("flag", problems, Table::pattern);
            let hold = table.duration("for", problems).unwrap_or(Duration::ZERO);
            Some(Condition::Flag { flag: flag?, hold })
        }
        _ => unreachable!("rule kinds come from RULE_KINDS"),
    }
}

/// A threshold's one bound: `above`, `below`, or `outside_low` with
/// `outside_high`.
fn read_bound(table: &Table<'_>, problems: &mut Problems<'_>) -> Option<Bound> {
    // Each bound by the first of its keys the table has.
    let bounds: [&[&str]; 3] = [&["above"], &["below"], &["outside_low", "outside_high"]];
    let given: Vec<&str> = bounds
        .iter()
        .filter_map(|keys| keys.iter().copied().find(|key| table.value(key).is_some()))
        .collect();
    match given[..] {
        [] => {
            table.problem(
                "above",
                "a threshold rule needs `above`, `below`, or `outside_low` and `outside_high`",
                problems,
            );
            return None;
        }
        [_] => {}
        [_, second, ..] => {
            table.problem(
                second,
                "give exactly one of `above`, `below`, or `outside_low` with `outside_high`",
                problems,
            );
            return None;
        }
    }
    match given[0] {
        "above" => table.number("above", problems).map(Bound::Above),
        "below" => table.number("below", problems).map(Bound::Below),
        _ => {
            let low = table.required("outside_low", problems, Table::number);
            let high = table.required("outside_high", problems, Table::number);
            let (low, high) = (low?, high?);
            if low >= high {
                table.problem(
                    "outside_low",
                    format!("must be less than `outside_high` ({low} >= {high})"),
                    problems,
                );
                return None;
            }
            Some(Bound::Outside { low, high })
        }
    }
}

/// One receiver, or `None` after adding its problems. `names` are the
/// receiver names seen so far.
fn read_receiver<'t>(
    table: &Table<'t>,
    names: &mut HashSet<&'t str>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems<'_>,
) -> Option<Receiver> {
    let name = table.unique_name("receiver", names, problems);
    if name == Some("") {
        table.problem("name", "must not be empty", problems);
    }
    let url = table.required("url", problems, Table::string);
    if let Some(url) = url {
        match reqwest::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {}
            Ok(_) => table.problem("url", "must be an http or https URL", problems),
            Err(e) => table.problem("url", format!("not a URL: {e}"), problems),
        }
    }
    let kind = table.kind(RECEIVER_KINDS, problems);
    table.refuse_unknown_fields(RECEIVER_FIELDS, RECEIVER_KINDS, kind, problems);
    let kind = match kind? {
        "webhook" => {
            let secret = match table.string("secret_env", problems) {
                None => None,
                Some(variable) => {
                    let secret = env(variable).filter(|s| !s.is_empty());
                    if secret.is_none() {
                        table.problem(
                            "secret_env",
                            format!("the environment variable {variable} is unset or empty"),
                            problems,
                        );
                        return None;
                    }
                    secret
                }
            };
            ReceiverKind::Webhook {
                url: url?.to_owned(),
                secret,
            }
        }
        "alertmanager" => ReceiverKind::Alertmanager {
            url: url?.to_owned(),
        },
        _ => unreachable!("receiver kinds come from RECEIVER_KINDS"),
    };
    Some(Receiver {
        name: name?.to_owned(),
        kind,
    })
}

#[cfg(test)]
mod tests;
