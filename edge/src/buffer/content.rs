//! Content classes: what a batch holds, which decides the order in which
//! the disk cap drops it.
//!
//! Invariants: a poll group is an event group when it holds a status or
//! alarm point (bitfield or flag), and a batch's class follows from its
//! frames alone. Measurements go first, events last; a carrier (a batch with
//! no frames that the buffer keeps for its catalog, or that was sealed only
//! to carry gap records) never.

use std::collections::HashSet;

use bess_protocol::{Catalog, Frame, PointKind};

/// What a batch holds, for the drop order under the disk cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchContent {
    /// Only measurement frames: dropped first.
    Measurements = 0,
    /// Measurement and event (status/alarm) frames.
    Mixed = 1,
    /// Only event frames: dropped last.
    Events = 2,
    /// No frames left; kept only because it carries the catalog. Never dropped.
    Carrier = 3,
}

/// Poll groups holding a status or alarm point (bitfield or flag): their
/// frames are events, kept longest under the disk cap.
pub fn event_groups(catalog: &Catalog) -> HashSet<u16> {
    catalog
        .groups
        .iter()
        .enumerate()
        .filter(|(_, g)| {
            g.points
                .iter()
                .any(|p| matches!(p.kind, PointKind::Bitfield | PointKind::Flag))
        })
        .map(|(i, _)| i as u16)
        .collect()
}

/// The content class of a set of frames.
pub fn content_of(frames: &[Frame], event_groups: &HashSet<u16>) -> BatchContent {
    let events = frames
        .iter()
        .filter(|f| event_groups.contains(&f.group.0))
        .count();
    match events {
        0 => BatchContent::Measurements,
        n if n == frames.len() => BatchContent::Events,
        _ => BatchContent::Mixed,
    }
}
