//! Derived points: expressions over one site's points (`expr`), declared
//! beside the alert rules (`Definition`), expanded against a site's
//! catalog into a plan with its own catalog of derived devices (`plan`),
//! and evaluated on the committed frames in event time (`engine`). Their
//! frames are stored like any device's, in the same transaction as the
//! readings they come from.

pub mod engine;
pub mod expr;
pub mod plan;

use std::time::Duration;

use crate::pattern::Pattern;

/// The device derived points go to unless a definition names another.
pub const DEFAULT_DEVICE: &str = "derived";

/// The model every derived device is registered with: what tells the
/// collector's own points from an edge's.
pub const DERIVED_MODEL: &str = "derived";

/// One `[[derived]]` definition, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// The output point's name; with `for_each`, `{device}` in it (or in
    /// `device`) becomes each matched device's name.
    pub point: String,
    /// The output device (default [`DEFAULT_DEVICE`]).
    pub device: String,
    pub unit: String,
    pub site: Pattern,
    /// Expand once per device matching this pattern; bare point names in
    /// the expression are that device's points.
    pub for_each: Option<Pattern>,
    /// As written, for listings.
    pub source: String,
    pub expression: expr::Expr,
    /// Inputs from different poll groups are aligned to buckets this long
    /// (the output's timestamp is the bucket's start).
    pub every: Duration,
}
