//! Reporting problems in a TOML config file the way a technician reads
//! them: every problem with its 1-based line and column, the dotted path
//! of its field (`devices[0].groups[1].points[2].bit`, `rule[2].for`;
//! array indexes 0-based) and a message, shown as
//! `file:line:column: field: message`, one line per problem, the format
//! editors and `grep -n` users already know.
//!
//! A file's checks collect into `Problems` against the TOML parser's byte
//! spans, which `LineIndex` turns into lines and columns; a parse or serde
//! error becomes a problem with `problem_of_toml_error`; `render_problems`
//! writes them out under the file's path. What the fields mean, and the
//! error type a loader returns, belong to each config.
//!
//! A problem always has a line: when the parser gives no span it is line 1,
//! when a check concerns the whole file it is the file's start.

mod lines;
mod problem;
mod toml_error;

pub use lines::LineIndex;
pub use problem::{render_problems, ConfigProblem, Problems};
pub use toml_error::problem_of_toml_error;
