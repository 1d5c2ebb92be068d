//! [`PolledFrame`]: one frame as the edge read it, matched to its catalog
//! layout. The live lane, the writer, rules and derived points all pass
//! frames in this shape; the live module derives its client view from it.

use std::sync::Arc;

use bess_protocol::Reading;

use crate::catalog::{Layout, Layouts};

/// One frame as the edge read it, matched to its catalog layout (from the
/// live lane, or from a committed batch where a test or tool asks the
/// writer for them).
#[derive(Debug, Clone)]
pub struct PolledFrame {
    pub site: Arc<str>,
    /// The layouts of the catalog version the batch named.
    pub layouts: Layouts,
    /// Which of them is this frame's (the frame's group index).
    pub group: usize,
    /// When the edge polled the frame (Unix epoch milliseconds).
    pub ts_ms: i64,
    /// When the collector took the Kafka message carrying this frame off the
    /// consumer (Unix epoch milliseconds, the collector's clock).
    pub received_ms: i64,
    /// One reading per point of the layout, in layout order.
    pub readings: Vec<Reading>,
}

impl PolledFrame {
    /// The frame's layout: device, group and points.
    pub fn layout(&self) -> &Layout {
        &self.layouts[self.group]
    }

    /// Each point with its engineering value (`None`: missing) and reading.
    pub fn values(
        &self,
    ) -> impl Iterator<Item = (&crate::catalog::PointMeta, Option<f64>, &Reading)> {
        self.layout()
            .points
            .iter()
            .zip(&self.readings)
            .map(|(point, reading)| {
                (
                    point,
                    reading.raw().map(|raw| point.engineering(raw)),
                    reading,
                )
            })
    }
}
