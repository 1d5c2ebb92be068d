//! Why a config file could not be loaded, as the technician reads it.
//!
//! A `ConfigProblem` (from `bess_config_report`) is one problem with its
//! 1-based line and column and the dotted path of its field
//! (`devices[0].groups[1].points[2].bit`); `ConfigError`'s `Display` gives
//! one `file:line:column: field: message` line per problem, the format
//! editors and `grep -n` users already know.

use std::path::PathBuf;

use bess_config_report::render_problems;
pub use bess_config_report::ConfigProblem;

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
