//! Alert rules on the committed stream: the validated model (`model`), the
//! rules file (`config`), the evaluation in event time (`engine`), its
//! persisted state and episodes (`store`), the timer of offline rules
//! (`offline`), the runtime that ties them to the writer (`runtime`) and
//! the rules managed over the API, merged with the file's (`managed`).
pub mod config;
pub mod engine;
pub mod managed;
pub mod model;
pub mod offline;
pub mod runtime;
pub mod store;

pub use runtime::{CommittedBatch, Evaluated, Rules};
