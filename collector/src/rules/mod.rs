//! Alert rules on the committed stream: the validated model (`model`), the
//! rules file (`config`), the evaluation in event time (`engine`), its
//! persisted state and episodes (`store`), the timer of offline rules
//! (`offline`) and the runtime that ties them to the writer (`runtime`).
pub mod config;
pub mod engine;
pub mod model;
pub mod offline;
pub mod runtime;
pub mod store;

pub use runtime::{CommittedBatch, Evaluated, Rules};
