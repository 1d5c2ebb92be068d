//! A polled frame in two shapes: [`PolledFrame`], as the live lane
//! decoded it (the catalog layout, the frame's timestamp and raw
//! readings, when its message arrived), and [`LiveFrame`], the view a
//! WebSocket client receives (RFC 3339 time, engineering values, units and
//! quality names). The view is derived from the polled frame and never
//! the other way round; its names are the catalog's shared `Arc<str>`.

use serde::Serialize;
use std::sync::Arc;

pub use crate::polled::PolledFrame;
use crate::time::{rfc3339, timestamp};

/// One value of a [`LiveFrame`].
#[derive(Debug, Clone, Serialize)]
pub struct LiveValue {
    pub point: Arc<str>,
    pub value: Option<f64>,
    pub unit: Arc<str>,
    pub quality: &'static str,
}

/// One frame as pushed to live clients.
#[derive(Debug, Clone, Serialize)]
pub struct LiveFrame {
    pub site: Arc<str>,
    pub device: Arc<str>,
    pub group: Arc<str>,
    pub ts: String,
    pub ts_ms: i64,
    /// When the collector took the live message carrying this frame off
    /// the live topic (Unix epoch milliseconds, the collector's clock); the
    /// time from here to a client's receipt covers decoding and the fan-out.
    pub received_ms: i64,
    pub values: Vec<LiveValue>,
}

impl From<&PolledFrame> for LiveFrame {
    fn from(frame: &PolledFrame) -> Self {
        let layout = frame.layout();
        Self {
            site: frame.site.clone(),
            device: layout.device.clone(),
            group: layout.group.clone(),
            ts: rfc3339(timestamp(frame.ts_ms)),
            ts_ms: frame.ts_ms,
            received_ms: frame.received_ms,
            values: frame
                .values()
                .map(|(point, value, reading)| LiveValue {
                    point: point.name.clone(),
                    value,
                    unit: point.unit.clone(),
                    quality: reading.quality().as_str(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::catalog::{CatalogLayouts, Layout, PointMeta};
    use bess_protocol::MissingReason;
    use bess_protocol::Reading;

    /// A frame of `site`, device `bms-1`, group `fast`, with the given points
    /// (name, unit, reading); raw values scale by 0.5.
    pub(crate) fn committed(
        site: &str,
        ts_ms: i64,
        points: &[(&str, &str, Reading)],
    ) -> PolledFrame {
        let layout = Layout {
            layout_id: 1,
            device_id: 1,
            device: "bms-1".into(),
            interval_ms: 1000,
            group: "fast".into(),
            points: points
                .iter()
                .enumerate()
                .map(|(i, (name, unit, _))| PointMeta {
                    point_id: i as i32 + 1,
                    name: (*name).into(),
                    unit: (*unit).into(),
                    scale: 0.5,
                    offset: 0.0,
                    flags: Default::default(),
                })
                .collect(),
        };
        PolledFrame {
            site: site.into(),
            layouts: Arc::new(CatalogLayouts {
                groups: vec![layout],
                device_ids: vec![1],
            }),
            group: 0,
            ts_ms,
            received_ms: ts_ms + 5,
            readings: points.iter().map(|(_, _, r)| *r).collect(),
        }
    }

    #[test]
    fn the_live_view_carries_engineering_values_units_and_quality_names() {
        let frame = committed(
            "s",
            1_767_225_600_000,
            &[
                ("soc", "%", Reading::Int(101)),
                ("power", "kW", Reading::Missing(MissingReason::Timeout)),
            ],
        );
        let view = LiveFrame::from(&frame);
        assert_eq!(view.ts, "2026-01-01T00:00:00Z");
        assert_eq!((&*view.device, &*view.group), ("bms-1", "fast"));
        assert_eq!(view.received_ms, 1_767_225_600_005);
        assert_eq!(&*view.values[0].point, "soc");
        assert_eq!(view.values[0].value, Some(50.5));
        assert_eq!(&*view.values[0].unit, "%");
        assert_eq!(view.values[0].quality, "good");
        assert_eq!(view.values[1].value, None);
        assert_eq!(
            view.values[1].quality,
            MissingReason::Timeout.quality().as_str()
        );
        assert!(
            Arc::ptr_eq(&view.values[0].point, &frame.layout().points[0].name),
            "names are shared with the catalog, not copied"
        );
    }
}
