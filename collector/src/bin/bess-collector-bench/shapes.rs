//! The fleets `bess-collector-bench` loads: many small sites (3
//! controllers × 20 points) or cell-level sites (10 racks × 500 cell
//! points), their catalogs and their frames, generated without I/O.

use bess_protocol::{
    Catalog, DeviceInfo, Frame, GroupIndex, GroupInfo, PointInfo, PointKind, Reading,
};

const DEVICES: usize = 3;
const FAST_POINTS: usize = 8;
const SLOW_POINTS: usize = 12;
const SLOW_EVERY_S: i64 = 60;

pub fn small_catalog() -> Catalog {
    let mut devices = Vec::new();
    let mut groups = Vec::new();
    for d in 0..DEVICES {
        devices.push(DeviceInfo {
            name: format!("bms-{}", d + 1),
            model: "bess-controller v1".into(),
        });
        let point = |i: usize, prefix: &str| {
            PointInfo::new(&format!("{prefix}{i}"), "V", PointKind::Analog, 0.01, 0.0)
        };
        let mut fast: Vec<PointInfo> = (0..FAST_POINTS).map(|i| point(i, "fast_")).collect();
        fast[0] = PointInfo::new("soc", "%", PointKind::Analog, 0.01, 0.0);
        groups.push(GroupInfo {
            device: d as u16,
            name: "fast".into(),
            interval_ms: 1000,
            points: fast,
        });
        groups.push(GroupInfo {
            device: d as u16,
            name: "slow".into(),
            interval_ms: (SLOW_EVERY_S * 1000) as u32,
            points: (0..SLOW_POINTS).map(|i| point(i, "slow_")).collect(),
        });
    }
    Catalog { devices, groups }
}

/// A small site's frames for `[start_s, end_s)`: slowly moving register values.
pub fn small_frames(site: usize, t0_ms: i64, start_s: i64, end_s: i64) -> Vec<Frame> {
    let mut out = Vec::new();
    for s in start_s..end_s {
        for d in 0..DEVICES {
            let ts_ms = t0_ms + s * 1000 + (d as i64) * 7 + (site as i64 % 50);
            let wobble = |i: usize| ((s * 31 + i as i64 * 17 + site as i64 * 13) % 41) - 20;
            let base = |i: usize| 5000 + (i as i64) * 100 + (s / 30) % 200;
            out.push(Frame {
                group: GroupIndex((2 * d) as u16),
                ts_ms,
                values: (0..FAST_POINTS)
                    .map(|i| Reading::Int(base(i) + wobble(i)))
                    .collect(),
            });
            if s % SLOW_EVERY_S == 0 {
                out.push(Frame {
                    group: GroupIndex((2 * d + 1) as u16),
                    ts_ms: ts_ms + 3,
                    values: (0..SLOW_POINTS)
                        .map(|i| Reading::Int(base(i) + wobble(i) / 4))
                        .collect(),
                });
            }
        }
    }
    out
}

/// Racks per cell-level site, and the cells' poll groups per rack (each one
/// full 125-register Modbus read: cell voltages, then cell temperatures).
const RACKS: usize = 10;
const CELL_GROUPS: [(&str, &str, f64); 4] = [
    ("cell_v_a", "V", 0.001),
    ("cell_v_b", "V", 0.001),
    ("cell_t_a", "°C", 0.1),
    ("cell_t_b", "°C", 0.1),
];
const CELLS_PER_GROUP: usize = 125;

/// Which fleet the bench loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// 3 controllers × 20 points (8 at 1 Hz, 12 at 1/min) per site.
    Small,
    /// 10 racks × 500 cell points at 1 Hz per site (5,000 points).
    Cells,
}

impl Shape {
    pub fn catalog(self) -> Catalog {
        match self {
            Shape::Small => small_catalog(),
            Shape::Cells => cells_catalog(),
        }
    }

    pub fn frames(self, site: usize, t0_ms: i64, start_s: i64, end_s: i64) -> Vec<Frame> {
        match self {
            Shape::Small => small_frames(site, t0_ms, start_s, end_s),
            Shape::Cells => cells_frames(site, t0_ms, start_s, end_s),
        }
    }
}

fn cells_catalog() -> Catalog {
    let mut devices = Vec::new();
    let mut groups = Vec::new();
    for rack in 0..RACKS {
        devices.push(DeviceInfo {
            name: format!("rack-{:02}", rack + 1),
            model: "bess-rack v1".into(),
        });
        for (name, unit, scale) in CELL_GROUPS {
            groups.push(GroupInfo {
                device: rack as u16,
                name: name.into(),
                interval_ms: 1000,
                points: (0..CELLS_PER_GROUP)
                    .map(|c| {
                        PointInfo::new(
                            &format!("{name}_{c:03}"),
                            unit,
                            PointKind::Analog,
                            scale,
                            0.0,
                        )
                    })
                    .collect(),
            });
        }
    }
    Catalog { devices, groups }
}

/// A cell-level site's frames: cell voltages (mV) drifting with the state of
/// charge and a millivolt of noise, temperatures (0.1 °C) drifting slowly.
fn cells_frames(site: usize, t0_ms: i64, start_s: i64, end_s: i64) -> Vec<Frame> {
    let mut out = Vec::new();
    for s in start_s..end_s {
        for rack in 0..RACKS {
            for (g, _) in CELL_GROUPS.iter().enumerate() {
                let voltage = g < 2;
                let ts_ms = t0_ms + s * 1000 + (rack * 4 + g) as i64 * 5 + (site as i64 % 50);
                let values = (0..CELLS_PER_GROUP)
                    .map(|c| {
                        let seed = (site * 7919 + rack * 131 + g * 17 + c) as i64;
                        let noise = (seed * 31 + s * 17).rem_euclid(3) - 1;
                        Reading::Int(if voltage {
                            3300 + (s / 20) % 100 + seed % 7 + noise
                        } else {
                            250 + (s / 60) % 30 + seed % 11 + noise * ((s + seed) % 5 == 0) as i64
                        })
                    })
                    .collect();
                out.push(Frame {
                    group: GroupIndex((rack * CELL_GROUPS.len() + g) as u16),
                    ts_ms,
                    values,
                });
            }
        }
    }
    out
}
