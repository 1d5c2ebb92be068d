//! Test fixtures shared by the buffer's tests: a two-device catalog (one
//! measurement group, one alarm group), frames for it, and sealing them as
//! the sealer does.

use std::sync::Arc;

use bess_protocol::{
    Batch, BatchSeq, Catalog, DeviceInfo, Frame, GroupIndex, GroupInfo, PointInfo, PointKind,
    Reading, SiteId,
};

use super::{SealRequest, SqliteBuffer};

/// Two devices; group 0 (device 0) measures, group 1 (device 1) holds an alarm word.
pub(crate) fn catalog() -> Catalog {
    let analog = |n: &str| PointInfo::new(n, "V", PointKind::Analog, 1.0, 0.0);
    Catalog {
        devices: vec![
            DeviceInfo {
                name: "meter".into(),
                model: String::new(),
            },
            DeviceInfo {
                name: "bms".into(),
                model: String::new(),
            },
        ],
        groups: vec![
            GroupInfo {
                device: 0,
                name: "fast".into(),
                interval_ms: 1000,
                points: vec![analog("a"), analog("b")],
            },
            GroupInfo {
                device: 1,
                name: "alarms".into(),
                interval_ms: 1000,
                points: vec![PointInfo::new("alarms", "", PointKind::Bitfield, 1.0, 0.0)],
            },
        ],
    }
}

pub(crate) fn frames(groups: &[u16], ts: i64) -> Vec<Frame> {
    groups
        .iter()
        .enumerate()
        .map(|(i, &g)| Frame {
            group: GroupIndex(g),
            ts_ms: ts + i as i64,
            values: if g == 0 {
                vec![Reading::Int(ts), Reading::Int(-ts)]
            } else {
                vec![Reading::Int(1)]
            },
        })
        .collect()
}

/// Seal frames as the sealer does; returns the sequence.
pub(crate) fn seal_frames(
    buffer: &mut SqliteBuffer,
    catalog: &Catalog,
    frames: Vec<Frame>,
) -> BatchSeq {
    buffer
        .seal_batch(SealRequest {
            site: SiteId::new("s").unwrap(),
            catalog: Arc::new(catalog.clone()),
            with_catalog: false,
            frames,
            sealed_at_ms: 0,
            cap_bytes: None,
        })
        .unwrap()
        .seq()
}

pub(crate) fn decode_all(buffer: &SqliteBuffer) -> Vec<Batch> {
    buffer
        .oldest(None, 10_000)
        .unwrap()
        .iter()
        .map(|b| Batch::decode(&b.payload).unwrap())
        .collect()
}
