//! What is wrong with a config file, as the technician reads it.
//!
//! `ConfigProblem` is one problem with its 1-based line and column and the
//! dotted path of its field (`devices[0].groups[1].points[2].bit`);
//! `ConfigError` is why a file could not be loaded, and its `Display` gives
//! one `file:line:column: field: message` line per problem, the format
//! editors and `grep -n` users already know.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a config file, located by line and column.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

/// Why a config could not be loaded. `Display` names the file, the line and
/// the field of every problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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

fn render_problems(path: &Path, problems: &[ConfigProblem]) -> String {
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

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.line, self.column, self.field, self.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_names_the_file() {
        let err = ConfigError::Invalid {
            path: "/etc/bess/edge.toml".into(),
            problems: vec![ConfigProblem {
                line: 3,
                column: 1,
                field: "site_id".into(),
                message: "bad".into(),
            }],
        };
        assert_eq!(err.to_string(), "/etc/bess/edge.toml:3:1: site_id: bad");
    }
}
