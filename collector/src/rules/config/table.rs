//! `Table`: one `[[...]]` table of the rules file being read, field by
//! field, with every problem located at its value.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::time::Duration;

use bess_config_report::Problems;
use toml::{Spanned, Value};

use crate::pattern::Pattern;

/// A table's keys and values as written, each with its span.
pub(super) type Fields = BTreeMap<Spanned<String>, Spanned<Value>>;

/// One `[[rule]]` or `[[receiver]]` table being read: its fields as
/// written, its span, and its path (`rule[2]`). Each reader adds a problem
/// at the value (or, for a missing field, at the table) and returns `None`
/// when the field is absent or wrong.
pub(super) struct Table<'t> {
    fields: &'t Fields,
    span: Range<usize>,
    path: String,
}

impl<'t> Table<'t> {
    pub(super) fn new(array: &str, index: usize, table: &'t Spanned<Fields>) -> Self {
        Self {
            fields: table.get_ref(),
            span: table.span(),
            path: format!("{array}[{index}]"),
        }
    }

    pub(super) fn value(&self, key: &str) -> Option<&'t Spanned<Value>> {
        self.fields.get(key)
    }

    /// A problem at `key`'s value, or at the table when it is absent.
    pub(super) fn problem(
        &self,
        key: &str,
        message: impl Into<String>,
        problems: &mut Problems<'_>,
    ) {
        self.problem_at(key, key.to_owned(), message, problems);
    }

    /// A problem at `key`'s value named `field` (`receivers[1]`).
    pub(super) fn problem_at(
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
    pub(super) fn required<T>(
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

    pub(super) fn typed<T>(
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

    pub(super) fn string(&self, key: &str, problems: &mut Problems<'_>) -> Option<&'t str> {
        self.typed(key, "a string", problems, Value::as_str)
    }

    pub(super) fn boolean(&self, key: &str, problems: &mut Problems<'_>) -> Option<bool> {
        self.typed(key, "true or false", problems, Value::as_bool)
    }

    /// An integer or a finite float.
    pub(super) fn number(&self, key: &str, problems: &mut Problems<'_>) -> Option<f64> {
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

    pub(super) fn positive(&self, key: &str, problems: &mut Problems<'_>) -> Option<f64> {
        let number = self.number(key, problems)?;
        if number <= 0.0 {
            self.problem(key, "must be greater than zero", problems);
            return None;
        }
        Some(number)
    }

    /// `hysteresis`: zero or more, zero when absent.
    pub(super) fn hysteresis(&self, problems: &mut Problems<'_>) -> Option<f64> {
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

    pub(super) fn duration(&self, key: &str, problems: &mut Problems<'_>) -> Option<Duration> {
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

    pub(super) fn positive_duration(
        &self,
        key: &str,
        problems: &mut Problems<'_>,
    ) -> Option<Duration> {
        let duration = self.duration(key, problems)?;
        if duration.is_zero() {
            self.problem(key, "must be greater than zero", problems);
            return None;
        }
        Some(duration)
    }

    /// A glob, `*` when absent.
    pub(super) fn pattern(&self, key: &str, problems: &mut Problems<'_>) -> Option<Pattern> {
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
    pub(super) fn strings(&self, key: &str, problems: &mut Problems<'_>) -> Option<Vec<&'t str>> {
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
    pub(super) fn unique_name(
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
    pub(super) fn kind(
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
    pub(super) fn refuse_unknown_fields(
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
pub(super) fn mismatch(expected: &str, found: &Value) -> String {
    let found = found.type_str();
    let article = if found.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("expected {expected}, found {article} {found}")
}
