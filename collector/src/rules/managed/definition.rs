//! `RuleDefinition`: an API rule as its JSON object of fields, named as in
//! a `[[rule]]` table of the rules file, and its check.
//!
//! The check has no rules of its own: the object becomes a TOML `[[rule]]`
//! table, written after the file's receivers, and the rules file's parser
//! reads the document. So an API rule is refused for exactly what would
//! refuse it in the file, with the same messages; problems name the field
//! alone (`above`, `receivers[1]`), without the `rule[0].` of a document
//! the client never wrote, or its line numbers.

use std::path::Path;

use serde_json::{Map, Value};

use super::super::config::{self, RulesFileError};
use super::super::model::{Receiver, ReceiverKind, Rule};

/// One problem of a definition: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

/// "`above`: expected a number, found a string; `for`: ...".
pub fn describe(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("`{}`: {}", p.field, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The fields of one rule, as the client sent them (and as stored).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleDefinition(Map<String, Value>);

impl RuleDefinition {
    /// A JSON object of fields; anything else is one problem.
    pub fn from_json(value: Value) -> Result<Self, FieldProblem> {
        match value {
            Value::Object(fields) => Ok(Self(fields)),
            other => Err(FieldProblem {
                field: "body".into(),
                message: format!(
                    "expected a JSON object of the rule's fields, as in a [[rule]] table of the rules file, found {}",
                    json_type(&other)
                ),
            }),
        }
    }

    pub fn fields(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_json(self) -> Value {
        Value::Object(self.0)
    }

    /// `name` as written, if it is a string.
    pub fn name(&self) -> Option<&str> {
        self.0.get("name").and_then(Value::as_str)
    }

    /// Give it `name` when it has none (the name of the path).
    pub fn name_if_absent(&mut self, name: &str) {
        self.0
            .entry("name")
            .or_insert_with(|| Value::String(name.to_owned()));
    }

    /// `site` as written (`*` when absent), if it is a string.
    pub fn site(&self) -> Option<&str> {
        match self.0.get("site") {
            None => Some("*"),
            Some(value) => value.as_str(),
        }
    }

    /// The rule it defines, checked by the rules file's parser against the
    /// file's receivers; or every problem at once.
    pub fn check(&self, receivers: &[Receiver]) -> Result<Rule, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let mut table = toml::Table::new();
        for (key, value) in &self.0 {
            if let Some(value) = toml_of(value, key, &mut problems) {
                table.insert(key.clone(), value);
            }
        }
        let mut document = receivers_document(receivers);
        document.insert(
            "rule".into(),
            toml::Value::Array(vec![toml::Value::Table(table)]),
        );
        let text = toml::to_string(&document).map_err(|e| {
            vec![FieldProblem {
                field: "body".into(),
                message: format!("cannot be written as a [[rule]] table: {e}"),
            }]
        })?;
        match config::parse_with_env(&text, Path::new("api"), &|_| None) {
            Ok(set) if problems.is_empty() => Ok(set
                .rules
                .into_iter()
                .next()
                .expect("one [[rule]] table, one rule")),
            Ok(_) => Err(problems),
            Err(RulesFileError::Invalid {
                problems: found, ..
            }) => {
                for problem in found {
                    let field = problem
                        .field
                        .strip_prefix("rule[0].")
                        .unwrap_or(&problem.field)
                        .to_owned();
                    // A field given as null is reported once, as null.
                    if !problems.iter().any(|p| p.field == field) {
                        problems.push(FieldProblem {
                            field,
                            message: problem.message,
                        });
                    }
                }
                Err(problems)
            }
            Err(RulesFileError::Read { .. }) => unreachable!("nothing is read from disk"),
        }
    }
}

/// The file's receivers as `[[receiver]]` tables: what a rule's
/// `receivers` are checked against. Secrets stay out (only names matter).
fn receivers_document(receivers: &[Receiver]) -> toml::Table {
    let tables = receivers
        .iter()
        .map(|r| {
            let (kind, url) = match &r.kind {
                ReceiverKind::Webhook { url, .. } => ("webhook", url),
                ReceiverKind::Alertmanager { url } => ("alertmanager", url),
            };
            let mut table = toml::Table::new();
            table.insert("name".into(), toml::Value::String(r.name.clone()));
            table.insert("kind".into(), toml::Value::String(kind.into()));
            table.insert("url".into(), toml::Value::String(url.clone()));
            toml::Value::Table(table)
        })
        .collect();
    let mut document = toml::Table::new();
    document.insert("receiver".into(), toml::Value::Array(tables));
    document
}

/// A JSON value as the TOML value it stands for; `null`, which TOML does
/// not have, is a problem at `field`.
fn toml_of(value: &Value, field: &str, problems: &mut Vec<FieldProblem>) -> Option<toml::Value> {
    Some(match value {
        Value::Null => {
            problems.push(FieldProblem {
                field: field.to_owned(),
                message: "null is not a value here: leave the field out for its default".into(),
            });
            return None;
        }
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        Value::Array(items) => toml::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| toml_of(item, &format!("{field}[{i}]"), problems))
                .collect::<Option<_>>()?,
        ),
        Value::Object(fields) => toml::Value::Table(
            fields
                .iter()
                .map(|(k, v)| Some((k.clone(), toml_of(v, &format!("{field}.{k}"), problems)?)))
                .collect::<Option<_>>()?,
        ),
    })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::rules::model::{Bound, Condition, Severity};

    fn receivers() -> Vec<Receiver> {
        vec![Receiver {
            name: "ops".into(),
            kind: ReceiverKind::Webhook {
                url: "https://ops.example.com/hook?token=x".into(),
                secret: Some("s3cret".into()),
            },
        }]
    }

    fn definition(value: Value) -> RuleDefinition {
        RuleDefinition::from_json(value).unwrap()
    }

    fn problems(value: Value) -> Vec<FieldProblem> {
        definition(value).check(&receivers()).unwrap_err()
    }

    #[test]
    fn a_definition_becomes_the_rule_the_file_would_give() {
        let rule = definition(json!({
            "name": "soc-high",
            "kind": "threshold",
            "severity": "critical",
            "site": "site-a",
            "point": "soc",
            "above": 95,
            "hysteresis": 1.5,
            "for": "30s",
            "receivers": ["ops"],
        }))
        .check(&receivers())
        .unwrap();
        assert_eq!(rule.name, "soc-high");
        assert_eq!(rule.severity, Severity::Critical);
        assert_eq!(rule.target.site.0, "site-a");
        assert_eq!(rule.target.device.0, "*");
        assert_eq!(
            rule.condition,
            Condition::Threshold {
                bound: Bound::Above(95.0),
                hysteresis: 1.5,
                hold: Duration::from_secs(30),
            }
        );
        assert_eq!(rule.receivers, ["ops"]);
    }

    #[test]
    fn problems_name_the_field_without_the_document_around_it() {
        let found = problems(json!({
            "name": "soc-high",
            "kind": "threshold",
            "above": "ninety",
            "for": "soon",
            "receivers": ["ops", "pager"],
        }));
        let fields: Vec<&str> = found.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["above", "for", "receivers[1]"], "{found:?}");
        assert!(found[0].message.contains("expected a number"), "{found:?}");
        assert!(found[2].message.contains("(known: ops)"), "{found:?}");
    }

    #[test]
    fn missing_unknown_and_foreign_fields_are_refused_as_in_the_file() {
        let found =
            problems(json!({ "kind": "stale", "after": "1m", "above": 3, "colour": "red" }));
        let fields: Vec<&str> = found.iter().map(|p| p.field.as_str()).collect();
        for field in ["name", "above", "colour"] {
            assert!(fields.contains(&field), "{field}: {found:?}");
        }
        let above = found.iter().find(|p| p.field == "above").unwrap();
        assert!(above.message.contains("does not apply"), "{above:?}");
    }

    #[test]
    fn null_is_refused_once_at_its_field() {
        let found = problems(json!({ "name": null, "kind": "stale", "after": "1m" }));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "name");
        assert!(found[0].message.contains("null"), "{found:?}");
        let found =
            problems(json!({ "name": "x", "kind": "stale", "after": "1m", "receivers": [null] }));
        assert_eq!(found[0].field, "receivers[0]", "{found:?}");
    }

    #[test]
    fn only_an_object_is_a_definition() {
        let problem = RuleDefinition::from_json(json!(["name"])).unwrap_err();
        assert_eq!(problem.field, "body");
        assert!(problem.message.contains("found an array"), "{problem:?}");
    }

    #[test]
    fn the_site_is_read_as_written() {
        assert_eq!(definition(json!({})).site(), Some("*"));
        assert_eq!(
            definition(json!({ "site": "site-a" })).site(),
            Some("site-a")
        );
        assert_eq!(definition(json!({ "site": 3 })).site(), None);
    }
}
