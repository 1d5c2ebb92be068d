//! Locating problems in the config text: byte offsets from the TOML
//! parser's spans become 1-based lines and columns (`LineIndex`), checks
//! collect their problems against the span of the table they concern
//! (`Problems`), and a parse error is given the name of its field when the
//! message or the text before it carries one.
//!
//! A problem always has a line: when the parser gives no span it is line 1,
//! when a check concerns the whole file (no devices, no uplink) it is the
//! file's start.

use super::ConfigProblem;

/// The problem a TOML parse or schema error stands for, located in `text`.
pub(super) fn problem_of_toml_error(
    error: &toml::de::Error,
    text: &str,
    lines: &LineIndex,
) -> ConfigProblem {
    let (line, column) = error.span().map_or((1, 1), |s| lines.locate(s.start));
    let field = field_of_toml_error(error)
        .or_else(|| key_before(text, line, column))
        .unwrap_or_else(|| "config".to_owned());
    ConfigProblem {
        line,
        column,
        field,
        message: error.message().trim().to_owned(),
    }
}

/// Best effort at naming the field of a serde error: "unknown field `x`",
/// "missing field `x`" and "invalid type ... for key `x`" all carry it.
fn field_of_toml_error(error: &toml::de::Error) -> Option<String> {
    let message = error.message();
    for marker in ["field `", "key `"] {
        if let Some(start) = message.find(marker) {
            let rest = &message[start + marker.len()..];
            if let Some(end) = rest.find('`') {
                return Some(rest[..end].to_owned());
            }
        }
    }
    None
}

/// The key just before an error's column (`key = value`, also inside an
/// inline table), for errors that point at a value.
fn key_before(text: &str, line: usize, column: usize) -> Option<String> {
    let line_text = text.lines().nth(line.checked_sub(1)?)?;
    let before = line_text
        .get(..column.saturating_sub(1))
        .unwrap_or(line_text);
    let before = before.trim_end().strip_suffix('=')?.trim_end();
    let key: String = before
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"'))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let key = key.trim_matches('"');
    (!key.is_empty()).then(|| key.to_owned())
}

/// Maps byte offsets to 1-based line and column numbers.
pub(super) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(super) fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { starts }
    }

    pub(super) fn locate(&self, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|&s| s <= offset);
        (line, offset - self.starts[line - 1] + 1)
    }
}

/// The problems found so far, each located by the span it concerns.
pub(super) struct Problems<'a> {
    pub(super) lines: &'a LineIndex,
    pub(super) found: Vec<ConfigProblem>,
}

impl Problems<'_> {
    pub(super) fn add(
        &mut self,
        span: std::ops::Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = self.lines.locate(span.start);
        self.found.push(ConfigProblem {
            line,
            column,
            field: field.into(),
            message: message.into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::config::fixtures::EXAMPLE;
    use crate::config::ValidConfig;

    #[test]
    fn unknown_key_names_line_and_field() {
        let text = EXAMPLE.replacen(
            "site_id = \"site-001\"",
            "site_id = \"site-001\"\nsite_name = \"x\"",
            1,
        );
        let problems = ValidConfig::parse(&text).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "site_name");
        let expected_line = text
            .lines()
            .position(|l| l.starts_with("site_name"))
            .unwrap()
            + 1;
        assert_eq!(problems[0].line, expected_line, "{problems:?}");
    }
    #[test]
    fn wrong_type_names_line_and_field() {
        let text = EXAMPLE.replacen("port = 5020", "port = \"5020\"", 1);
        let problems = ValidConfig::parse(&text).unwrap_err();
        let expected_line = text
            .lines()
            .position(|l| l.contains("port = \"5020\""))
            .unwrap()
            + 1;
        assert_eq!(problems[0].line, expected_line, "{problems:?}");
        assert_eq!(problems[0].field, "port", "{problems:?}");
        assert!(problems[0].message.contains("u16"), "{problems:?}");
    }
    #[test]
    fn wrong_type_inside_an_inline_table_names_that_key() {
        let text = EXAMPLE.replacen("address = 7,", "address = \"7\",", 1);
        let problems = ValidConfig::parse(&text).unwrap_err();
        assert_eq!(problems[0].field, "address", "{problems:?}");
    }
    #[test]
    fn missing_field_is_named() {
        let text = EXAMPLE.replacen("site_id = \"site-001\"", "", 1);
        let problems = ValidConfig::parse(&text).unwrap_err();
        assert_eq!(problems[0].field, "site_id", "{problems:?}");
    }
}
