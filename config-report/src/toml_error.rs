//! A TOML parse or serde error as a problem: its span located, and its
//! field named when the message or the text before it carries one.

use crate::{ConfigProblem, LineIndex};

/// The field of an error that names none: the file as a whole.
const WHOLE_FILE: &str = "config";

/// The problem a TOML parse or schema error stands for, located in `text`.
pub fn problem_of_toml_error(
    error: &toml::de::Error,
    text: &str,
    lines: &LineIndex,
) -> ConfigProblem {
    let (line, column) = error.span().map_or((1, 1), |s| lines.locate(s.start));
    let field = field_of_toml_error(error)
        .or_else(|| key_before(text, line, column))
        .unwrap_or_else(|| WHOLE_FILE.to_owned());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn problem_of(text: &str) -> ConfigProblem {
        let error = text.parse::<toml::Table>().unwrap_err();
        problem_of_toml_error(&error, text, &LineIndex::new(text))
    }

    #[test]
    fn a_syntax_error_names_the_key_before_the_missing_value() {
        let problem = problem_of("a = 1\nport = \n");
        assert_eq!((problem.line, problem.column), (2, 8), "{problem:?}");
        assert_eq!(problem.field, "port");
    }

    #[test]
    fn a_duplicate_key_names_that_key() {
        let problem = problem_of("[t]\nname = \"a\"\nname = \"b\"\n");
        assert_eq!(problem.line, 3, "{problem:?}");
        assert_eq!(problem.field, "name");
        assert!(problem.message.contains("duplicate key"), "{problem:?}");
    }

    #[test]
    fn an_error_without_a_key_concerns_the_whole_file() {
        let problem = problem_of("[t\n");
        assert_eq!(problem.line, 1, "{problem:?}");
        assert_eq!(problem.field, WHOLE_FILE);
    }

    #[test]
    fn keys_before_a_value_are_found_in_inline_tables_and_quotes() {
        assert_eq!(
            key_before("x = { address = \"7\" }", 1, 17).as_deref(),
            Some("address")
        );
        assert_eq!(key_before("\"port\" = 1", 1, 10).as_deref(), Some("port"));
        assert_eq!(key_before("[table]", 1, 2), None);
    }
}
