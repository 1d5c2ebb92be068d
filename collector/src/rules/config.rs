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

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bess_config_report::{
    problem_of_toml_error, render_problems, ConfigProblem, LineIndex, Problems,
};
use serde::Deserialize;
use toml::{Spanned, Value};

use super::model::{
    Bound, Condition, Pattern, Receiver, ReceiverKind, Rule, RuleSet, Severity, Target,
};

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
}

/// A table's keys and values as written, each with its span.
type Fields = BTreeMap<Spanned<String>, Spanned<Value>>;

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

    if !problems.is_empty() {
        let mut found = problems.into_vec();
        found.sort_by_key(|p| (p.line, p.column));
        return Err(found);
    }
    Ok(RuleSet {
        rules: rules.into_iter().flatten().collect(),
        receivers: receivers.into_iter().flatten().collect(),
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
    if kind == Some("offline") && table.value("point").is_some() {
        table.problem(
            "point",
            "an offline rule watches sites and devices, not points: remove `point`",
            problems,
        );
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

/// One `[[rule]]` or `[[receiver]]` table being read: its fields as
/// written, its span, and its path (`rule[2]`). Each reader adds a problem
/// at the value (or, for a missing field, at the table) and returns `None`
/// when the field is absent or wrong.
struct Table<'t> {
    fields: &'t Fields,
    span: Range<usize>,
    path: String,
}

impl<'t> Table<'t> {
    fn new(array: &str, index: usize, table: &'t Spanned<Fields>) -> Self {
        Self {
            fields: table.get_ref(),
            span: table.span(),
            path: format!("{array}[{index}]"),
        }
    }

    fn value(&self, key: &str) -> Option<&'t Spanned<Value>> {
        self.fields.get(key)
    }

    /// A problem at `key`'s value, or at the table when it is absent.
    fn problem(&self, key: &str, message: impl Into<String>, problems: &mut Problems<'_>) {
        self.problem_at(key, key.to_owned(), message, problems);
    }

    /// A problem at `key`'s value named `field` (`receivers[1]`).
    fn problem_at(
        &self,
        key: &str,
        field: String,
        message: impl Into<String>,
        problems: &mut Problems<'_>,
    ) {
        let span = self.value(key).map_or(self.span.clone(), |v| v.span());
        problems.add(span, format!("{}.{field}", self.path), message);
    }

    /// `read(key)` of a field that must be given.
    fn required<T>(
        &self,
        key: &str,
        problems: &mut Problems<'_>,
        read: impl FnOnce(&Self, &str, &mut Problems<'_>) -> Option<T>,
    ) -> Option<T> {
        if self.value(key).is_none() {
            self.problem(key, "missing field", problems);
            return None;
        }
        read(self, key, problems)
    }

    fn typed<T>(
        &self,
        key: &str,
        expected: &str,
        problems: &mut Problems<'_>,
        of: impl FnOnce(&'t Value) -> Option<T>,
    ) -> Option<T> {
        let value = self.value(key)?;
        let typed = of(value.get_ref());
        if typed.is_none() {
            self.problem(key, mismatch(expected, value.get_ref()), problems);
        }
        typed
    }

    fn string(&self, key: &str, problems: &mut Problems<'_>) -> Option<&'t str> {
        self.typed(key, "a string", problems, Value::as_str)
    }

    fn boolean(&self, key: &str, problems: &mut Problems<'_>) -> Option<bool> {
        self.typed(key, "true or false", problems, Value::as_bool)
    }

    /// An integer or a finite float.
    fn number(&self, key: &str, problems: &mut Problems<'_>) -> Option<f64> {
        let number = self.typed(key, "a number", problems, |v| match v {
            Value::Integer(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        })?;
        if !number.is_finite() {
            self.problem(key, "must be a finite number", problems);
            return None;
        }
        Some(number)
    }

    fn positive(&self, key: &str, problems: &mut Problems<'_>) -> Option<f64> {
        let number = self.number(key, problems)?;
        if number <= 0.0 {
            self.problem(key, "must be greater than zero", problems);
            return None;
        }
        Some(number)
    }

    /// `hysteresis`: zero or more, zero when absent.
    fn hysteresis(&self, problems: &mut Problems<'_>) -> Option<f64> {
        if self.value("hysteresis").is_none() {
            return Some(0.0);
        }
        let hysteresis = self.number("hysteresis", problems)?;
        if hysteresis < 0.0 {
            self.problem("hysteresis", "must be zero or more", problems);
            return None;
        }
        Some(hysteresis)
    }

    fn duration(&self, key: &str, problems: &mut Problems<'_>) -> Option<Duration> {
        let text = self.string(key, problems)?;
        match humantime::parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(e) => {
                self.problem(
                    key,
                    format!("not a duration such as \"30s\" or \"2m\": {e}"),
                    problems,
                );
                None
            }
        }
    }

    fn positive_duration(&self, key: &str, problems: &mut Problems<'_>) -> Option<Duration> {
        let duration = self.duration(key, problems)?;
        if duration.is_zero() {
            self.problem(key, "must be greater than zero", problems);
            return None;
        }
        Some(duration)
    }

    /// A glob, `*` when absent.
    fn pattern(&self, key: &str, problems: &mut Problems<'_>) -> Option<Pattern> {
        if self.value(key).is_none() {
            return Some(Pattern::any());
        }
        let glob = self.string(key, problems)?;
        if glob.is_empty() {
            self.problem(
                key,
                "must not be empty (\"*\" matches every name)",
                problems,
            );
            return None;
        }
        Some(Pattern(glob.to_owned()))
    }

    /// An array of strings, each element's problem named by its index.
    fn strings(&self, key: &str, problems: &mut Problems<'_>) -> Option<Vec<&'t str>> {
        let array = self.typed(key, "an array of strings", problems, Value::as_array)?;
        let mut strings = Vec::new();
        for (i, element) in array.iter().enumerate() {
            match element.as_str() {
                Some(s) => strings.push(s),
                None => self.problem_at(
                    key,
                    format!("{key}[{i}]"),
                    mismatch("a string", element),
                    problems,
                ),
            }
        }
        (strings.len() == array.len()).then_some(strings)
    }

    /// `name`, required, and not one of `seen` (then added to them).
    fn unique_name(
        &self,
        what: &str,
        seen: &mut HashSet<&'t str>,
        problems: &mut Problems<'_>,
    ) -> Option<&'t str> {
        let name = self.required("name", problems, Table::string)?;
        if !seen.insert(name) {
            self.problem("name", format!("duplicate {what} name {name:?}"), problems);
            return None;
        }
        Some(name)
    }

    /// `kind`, required, one of `kinds`.
    fn kind(
        &self,
        kinds: &[(&'static str, &[&str])],
        problems: &mut Problems<'_>,
    ) -> Option<&'static str> {
        let given = self.required("kind", problems, Table::string)?;
        let kind = kinds.iter().map(|(k, _)| *k).find(|k| *k == given);
        if kind.is_none() {
            let names: Vec<_> = kinds.iter().map(|(k, _)| *k).collect();
            self.problem(
                "kind",
                format!("must be one of: {}", names.join(", ")),
                problems,
            );
        }
        kind
    }

    /// A problem at every field that is neither one of `common` nor one of
    /// `kind`'s own: a field of another kind does not apply, anything else
    /// is unknown. With no valid kind, any kind's field is let be.
    fn refuse_unknown_fields(
        &self,
        common: &[&str],
        kinds: &[(&str, &[&str])],
        kind: Option<&str>,
        problems: &mut Problems<'_>,
    ) {
        let own = kinds
            .iter()
            .find(|(k, _)| Some(*k) == kind)
            .map_or(&[][..], |(_, fields)| *fields);
        let of_any_kind = |key: &str| kinds.iter().any(|(_, fields)| fields.contains(&key));
        for key in self.fields.keys() {
            let key = key.get_ref().as_str();
            if common.contains(&key) || own.contains(&key) {
                continue;
            }
            match kind {
                Some(kind) if of_any_kind(key) => {
                    let takes = if own.is_empty() {
                        "no other fields".to_owned()
                    } else {
                        format!("its own fields are {}", own.join(", "))
                    };
                    self.problem(
                        key,
                        format!("does not apply to kind = \"{kind}\" ({takes})"),
                        problems,
                    );
                }
                None if of_any_kind(key) => {}
                _ => {
                    let mut expected = common.to_vec();
                    expected.extend(own);
                    self.problem(
                        key,
                        format!("unknown field, expected one of: {}", expected.join(", ")),
                        problems,
                    );
                }
            }
        }
    }
}

/// "expected a number, found a string".
fn mismatch(expected: &str, found: &Value) -> String {
    let found = found.type_str();
    let article = if found.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("expected {expected}, found {article} {found}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Receivers for the rules of a test to name.
    const RECEIVERS: &str = "\
[[receiver]]
name = \"ops\"
kind = \"webhook\"
url = \"http://127.0.0.1:9000/hook\"
";

    fn env(name: &str) -> Option<String> {
        (name == "BESS_WEBHOOK_SECRET").then(|| "s3cret".to_owned())
    }

    fn parsed(text: &str) -> Result<RuleSet, RulesFileError> {
        parse_with_env(text, Path::new("rules.toml"), &env)
    }

    fn problems_of(text: &str) -> Vec<ConfigProblem> {
        match parsed(text) {
            Err(RulesFileError::Invalid { problems, .. }) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    /// The one problem of `text`, checked for its line, field and a part of
    /// its message.
    fn assert_one_problem(text: &str, line: usize, field: &str, fragment: &str) -> ConfigProblem {
        let problems = problems_of(text);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        let problem = problems.into_iter().next().unwrap();
        assert_eq!(
            (problem.line, problem.field.as_str()),
            (line, field),
            "{problem:?}"
        );
        assert!(problem.message.contains(fragment), "{problem:?}");
        problem
    }

    fn rule(text: &str) -> Rule {
        let set =
            parsed(&format!("[[rule]]\n{text}\n{RECEIVERS}")).unwrap_or_else(|e| panic!("{e}"));
        set.rules.into_iter().next().unwrap()
    }

    #[test]
    fn the_example_file_parses_to_the_expected_model() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/rules.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let set = parse_with_env(&text, &path, &env).unwrap_or_else(|e| panic!("{e}"));
        let target = |device: &str, point: &str| Target {
            site: Pattern::any(),
            device: Pattern(device.into()),
            point: Pattern(point.into()),
        };
        let plain = |name: &str, target, condition| Rule {
            name: name.into(),
            severity: Severity::Warning,
            summary: String::new(),
            target,
            condition,
            receivers: Vec::new(),
            notify_past: false,
        };
        let expected = RuleSet {
            rules: vec![
                Rule {
                    name: "cell-overtemp".into(),
                    severity: Severity::Critical,
                    summary: "Hottest cell above 45 °C".into(),
                    target: target("bms*", "cell_temp_max"),
                    condition: Condition::Threshold {
                        bound: Bound::Above(45.0),
                        hysteresis: 2.0,
                        hold: Duration::from_secs(30),
                    },
                    receivers: vec!["ops".into()],
                    notify_past: false,
                },
                plain(
                    "soc-jump",
                    target("*", "soc"),
                    Condition::RateOfChange {
                        max_change: 10.0,
                        window: Duration::from_secs(60),
                    },
                ),
                plain(
                    "comm-loss",
                    target("*", "*"),
                    Condition::Stale {
                        after: Duration::from_secs(30),
                    },
                ),
                plain(
                    "site-silent",
                    target("*", "*"),
                    Condition::Offline {
                        after: Duration::from_secs(120),
                    },
                ),
                plain(
                    "cell-spread",
                    target("rack-*", "cell_voltage_*"),
                    Condition::Deviation {
                        max_spread: 0.05,
                        hysteresis: 0.01,
                        hold: Duration::from_secs(10),
                    },
                ),
            ],
            receivers: vec![
                Receiver {
                    name: "ops".into(),
                    kind: ReceiverKind::Webhook {
                        url: "http://127.0.0.1:9000/hook".into(),
                        secret: Some("s3cret".into()),
                    },
                },
                Receiver {
                    name: "am".into(),
                    kind: ReceiverKind::Alertmanager {
                        url: "http://127.0.0.1:9093".into(),
                    },
                },
            ],
        };
        assert_eq!(set, expected);
    }

    #[test]
    fn each_bound_of_a_threshold_maps_to_its_condition() {
        let below = rule("name = \"low-soc\"\nkind = \"threshold\"\nbelow = 5");
        assert_eq!(
            below.condition,
            Condition::Threshold {
                bound: Bound::Below(5.0),
                hysteresis: 0.0,
                hold: Duration::ZERO,
            }
        );
        assert_eq!(below.severity, Severity::Warning);
        assert_eq!(below.target.site, Pattern::any());
        assert!(below.receivers.is_empty());
        let band = rule(
            "name = \"v\"\nkind = \"threshold\"\noutside_low = 700\noutside_high = 900.5\nhysteresis = 5\nfor = \"1m 30s\"\nseverity = \"info\"\nnotify_past = true",
        );
        assert_eq!(
            band.condition,
            Condition::Threshold {
                bound: Bound::Outside {
                    low: 700.0,
                    high: 900.5
                },
                hysteresis: 5.0,
                hold: Duration::from_secs(90),
            }
        );
        assert_eq!(band.severity, Severity::Info);
        assert!(band.notify_past);
    }

    #[test]
    fn each_kind_maps_to_its_condition() {
        let cases = [
            (
                "rate_of_change",
                "max_change = 3\nwindow = \"10s\"",
                Condition::RateOfChange {
                    max_change: 3.0,
                    window: Duration::from_secs(10),
                },
            ),
            (
                "stale",
                "after = \"1m\"",
                Condition::Stale {
                    after: Duration::from_secs(60),
                },
            ),
            (
                "offline",
                "after = \"30s\"\ndevice = \"pcs-1\"",
                Condition::Offline {
                    after: Duration::from_secs(30),
                },
            ),
            (
                "deviation",
                "max_spread = 0.1",
                Condition::Deviation {
                    max_spread: 0.1,
                    hysteresis: 0.0,
                    hold: Duration::ZERO,
                },
            ),
        ];
        for (kind, fields, condition) in cases {
            let rule = rule(&format!("name = \"r\"\nkind = \"{kind}\"\n{fields}"));
            assert_eq!(rule.condition, condition, "{kind}");
            assert_eq!(rule.condition.kind(), kind);
        }
    }

    #[test]
    fn a_file_without_rules_or_receivers_is_an_empty_rule_set() {
        assert_eq!(parsed("").unwrap(), RuleSet::default());
        assert_eq!(parsed("# nothing yet\n").unwrap(), RuleSet::default());
    }

    #[test]
    fn an_unknown_field_is_named_at_its_line_and_column() {
        let p = assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"stale\"\nafter = \"1m\"\nsevrity = \"info\"\n",
            5,
            "rule[0].sevrity",
            "unknown field, expected one of: name, summary, severity",
        );
        assert_eq!(p.column, 11);
    }

    #[test]
    fn a_field_of_another_kind_does_not_apply() {
        assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"stale\"\nafter = \"1m\"\nabove = 3\n",
            5,
            "rule[0].above",
            "does not apply to kind = \"stale\" (its own fields are after)",
        );
        assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"threshold\"\nabove = 3\nafter = \"1m\"\n",
            5,
            "rule[0].after",
            "does not apply to kind = \"threshold\"",
        );
    }

    #[test]
    fn a_rule_without_a_name_is_reported_at_its_table() {
        let p = assert_one_problem(
            "\n[[rule]]\nkind = \"stale\"\nafter = \"1m\"\n",
            2,
            "rule[0].name",
            "missing field",
        );
        assert_eq!(p.column, 1);
    }

    #[test]
    fn a_duplicate_rule_name_points_at_the_second_rule() {
        let stale = "kind = \"stale\"\nafter = \"1m\"\n";
        assert_one_problem(
            &format!("[[rule]]\nname = \"r\"\n{stale}\n[[rule]]\nname = \"r\"\n{stale}"),
            7,
            "rule[1].name",
            "duplicate rule name \"r\"",
        );
    }

    #[test]
    fn a_rule_name_keeps_to_its_characters_and_length() {
        let stale = "kind = \"stale\"\nafter = \"1m\"\n";
        assert_one_problem(
            &format!("[[rule]]\nname = \"cell temp\"\n{stale}"),
            2,
            "rule[0].name",
            "A-Z a-z 0-9 _ . -",
        );
        let long = "x".repeat(MAX_RULE_NAME_LEN + 1);
        assert_one_problem(
            &format!("[[rule]]\nname = \"{long}\"\n{stale}"),
            2,
            "rule[0].name",
            "must be 1 to 100",
        );
    }

    #[test]
    fn a_bad_duration_names_its_field_and_value() {
        let text = "[[rule]]\nname = \"a\"\nkind = \"stale\"\nafter = \"1m\"\n\n[[rule]]\nname = \"b\"\nkind = \"threshold\"\nabove = 1\nfor = \"30 parsecs\"\n";
        let p = assert_one_problem(text, 10, "rule[1].for", "not a duration");
        assert_eq!(p.column, 7);
        assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"stale\"\nafter = \"0s\"\n",
            4,
            "rule[0].after",
            "must be greater than zero",
        );
        assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"stale\"\nafter = 30\n",
            4,
            "rule[0].after",
            "expected a string, found an integer",
        );
    }

    #[test]
    fn a_band_needs_low_below_high() {
        assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"threshold\"\noutside_low = 5\noutside_high = 5\n",
            4,
            "rule[0].outside_low",
            "must be less than `outside_high` (5 >= 5)",
        );
        assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"threshold\"\noutside_high = 5\n",
            1,
            "rule[0].outside_low",
            "missing field",
        );
        assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"threshold\"\noutside_low = 0\noutside_high = 10\nhysteresis = 5\n",
            6,
            "rule[0].hysteresis",
            "less than half the band",
        );
    }

    #[test]
    fn a_threshold_needs_exactly_one_bound() {
        assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"threshold\"\n",
            1,
            "rule[0].above",
            "needs `above`, `below`, or `outside_low` and `outside_high`",
        );
        assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"threshold\"\nabove = 5\nbelow = 1\n",
            5,
            "rule[0].below",
            "exactly one of",
        );
    }

    #[test]
    fn a_negative_hysteresis_is_refused() {
        let p = assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"threshold\"\nabove = 45\nhysteresis = -2\n",
            5,
            "rule[0].hysteresis",
            "must be zero or more",
        );
        assert_eq!(p.column, 14);
        assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"deviation\"\nmax_spread = 0.05\nhysteresis = 0.05\n",
            5,
            "rule[0].hysteresis",
            "less than `max_spread`",
        );
    }

    #[test]
    fn numbers_must_be_finite_and_limits_positive() {
        assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"threshold\"\nabove = nan\n",
            4,
            "rule[0].above",
            "must be a finite number",
        );
        assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"rate_of_change\"\nmax_change = 0\nwindow = \"1m\"\n",
            4,
            "rule[0].max_change",
            "must be greater than zero",
        );
        assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"deviation\"\nmax_spread = \"0.1\"\n",
            4,
            "rule[0].max_spread",
            "expected a number, found a string",
        );
    }

    #[test]
    fn an_unknown_receiver_is_named_with_its_index() {
        assert_one_problem(
            &format!("[[rule]]\nname = \"r\"\nkind = \"stale\"\nafter = \"1m\"\nreceivers = [\"ops\", \"pager\"]\n\n{RECEIVERS}"),
            5,
            "rule[0].receivers[1]",
            "no [[receiver]] named \"pager\" (known: ops)",
        );
    }

    #[test]
    fn an_offline_rule_takes_no_point() {
        assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"offline\"\npoint = \"soc\"\nafter = \"1m\"\n",
            4,
            "rule[0].point",
            "not points",
        );
    }

    #[test]
    fn an_offline_rule_waits_at_least_30_seconds() {
        assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"offline\"\nafter = \"29s\"\n",
            4,
            "rule[0].after",
            "must be at least 30s",
        );
    }

    #[test]
    fn an_unknown_severity_or_kind_is_refused() {
        assert_one_problem(
            "[[rule]]\nname = \"r\"\nseverity = \"page\"\nkind = \"stale\"\nafter = \"1m\"\n",
            3,
            "rule[0].severity",
            "must be info, warning or critical",
        );
        assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"spike\"\nafter = \"1m\"\n",
            3,
            "rule[0].kind",
            "must be one of: threshold, rate_of_change, stale, offline, deviation",
        );
    }

    #[test]
    fn an_unset_or_empty_secret_variable_is_refused() {
        let text = |variable: &str| {
            format!("[[receiver]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"https://h/x\"\nsecret_env = \"{variable}\"\n")
        };
        assert_one_problem(
            &text("BESS_UNSET"),
            5,
            "receiver[0].secret_env",
            "the environment variable BESS_UNSET is unset or empty",
        );
        let empty = parse_with_env(&text("E"), Path::new("r.toml"), &|_| Some(String::new()));
        assert!(
            matches!(empty, Err(RulesFileError::Invalid { .. })),
            "{empty:?}"
        );
    }

    #[test]
    fn a_receiver_needs_an_http_url_and_its_kind_own_fields() {
        assert_one_problem(
            "[[receiver]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"ftp://h\"\n",
            4,
            "receiver[0].url",
            "must be an http or https URL",
        );
        assert_one_problem(
            "[[receiver]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"http://h:9093\"\nsecret_env = \"S\"\n",
            5,
            "receiver[0].secret_env",
            "does not apply to kind = \"alertmanager\" (no other fields)",
        );
        assert_one_problem(
            &format!("{RECEIVERS}{RECEIVERS}"),
            6,
            "receiver[1].name",
            "duplicate receiver name \"ops\"",
        );
    }

    #[test]
    fn a_toml_syntax_error_names_its_line_and_key() {
        let p = assert_one_problem(
            "[[rule]]\nname = \"r\"\nkind = \"stale\"\nafter =\n",
            4,
            "after",
            "invalid string",
        );
        assert_eq!(p.column, 8);
    }

    #[test]
    fn an_unknown_table_is_named() {
        assert_one_problem(
            "[[rules]]\nname = \"r\"\n",
            1,
            "rules",
            "unknown field `rules`, expected `rule` or `receiver`",
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_in_file_order() {
        let text = "\
[[rule]]
name = \"a\"
kind = \"stale\"
after = \"soon\"
above = 1

[[rule]]
name = \"a\"
kind = \"threshold\"
below = 1
receivers = [\"nobody\"]

[[receiver]]
name = \"ops\"
kind = \"email\"
url = \"http://h\"
";
        let problems = problems_of(text);
        let found: Vec<_> = problems
            .iter()
            .map(|p| (p.line, p.field.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (4, "rule[0].after"),
                (5, "rule[0].above"),
                (8, "rule[1].name"),
                (11, "rule[1].receivers[0]"),
                (15, "receiver[0].kind"),
            ],
            "{problems:#?}"
        );
    }

    #[test]
    fn display_gives_one_path_line_column_field_line_per_problem() {
        let text = "[[rule]]\nname = \"r\"\nkind = \"threshold\"\nabove = 1\nhysteresis = -1\nfor = \"x\"\n";
        let error = parsed(text).unwrap_err();
        let shown = error.to_string();
        let lines: Vec<_> = shown.lines().collect();
        assert_eq!(lines.len(), 2, "{shown}");
        assert_eq!(
            lines[0],
            "rules.toml:5:14: rule[0].hysteresis: must be zero or more"
        );
        assert!(
            lines[1].starts_with("rules.toml:6:7: rule[0].for: not a duration"),
            "{shown}"
        );
    }

    #[test]
    fn a_missing_file_is_a_read_error_naming_it() {
        let error = load(Path::new("/nonexistent/rules.toml")).unwrap_err();
        assert!(matches!(error, RulesFileError::Read { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with("/nonexistent/rules.toml: cannot read:"),
            "{error}"
        );
    }
}
