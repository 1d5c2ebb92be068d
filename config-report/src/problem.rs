//! One problem (`ConfigProblem`), the problems a file's checks find
//! (`Problems`), and how they are shown under the file's path.

use std::fmt;
use std::ops::Range;
use std::path::Path;

use crate::LineIndex;

/// One problem in a config file, located by line and column.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field, `devices[0].groups[1].name`.
    pub field: String,
    pub message: String,
}

/// `line:column:field: message`.
impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.line, self.column, self.field, self.message
        )
    }
}

/// One `file:line:column: field: message` line per problem, in their order.
pub fn render_problems(path: &Path, problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| {
            format!(
                "{}:{}:{}: {}: {}",
                path.display(),
                p.line,
                p.column,
                p.field,
                p.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The problems found so far, each located by the span it concerns.
pub struct Problems<'a> {
    lines: &'a LineIndex,
    found: Vec<ConfigProblem>,
}

impl<'a> Problems<'a> {
    pub fn new(lines: &'a LineIndex) -> Self {
        Self {
            lines,
            found: Vec::new(),
        }
    }

    /// Adds a problem at the start of `span` (a byte range of the text).
    pub fn add(
        &mut self,
        span: Range<usize>,
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

    pub fn len(&self) -> usize {
        self.found.len()
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The problems in the order they were added.
    pub fn into_vec(self) -> Vec<ConfigProblem> {
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_located_at_the_start_of_their_span() {
        let text = "[a]\nport = 0\n";
        let lines = LineIndex::new(text);
        let mut problems = Problems::new(&lines);
        problems.add(11..12, "a.port", "must be at least 1");
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems.into_vec(),
            [ConfigProblem {
                line: 2,
                column: 8,
                field: "a.port".into(),
                message: "must be at least 1".into(),
            }]
        );
    }

    #[test]
    fn each_problem_is_one_line_under_the_path() {
        let problem = |line, field: &str| ConfigProblem {
            line,
            column: 1,
            field: field.into(),
            message: "bad".into(),
        };
        let text = render_problems(
            Path::new("/etc/bess/edge.toml"),
            &[problem(3, "site_id"), problem(9, "devices[0].name")],
        );
        assert_eq!(
            text,
            "/etc/bess/edge.toml:3:1: site_id: bad\n/etc/bess/edge.toml:9:1: devices[0].name: bad"
        );
    }
}
