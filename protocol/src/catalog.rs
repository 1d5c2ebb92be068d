//! The point catalog: which devices a site has, how their points are grouped
//! into frames, and each point's name, unit, kind and scaling.
//!
//! The edge sends the catalog inside a batch whenever it starts or the
//! catalog changes; every batch names the catalog it was written against by
//! its [`CatalogHash`]. Nobody configures points twice.

use serde::{Deserialize, Serialize};

use crate::CatalogHash;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    pub devices: Vec<DeviceInfo>,
    /// Poll groups; a frame's `group` is an index into this list and its
    /// values follow the order of the group's `points`.
    pub groups: Vec<GroupInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: String,
    /// Free text: vendor and model, or the register map's name.
    pub model: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// Index into the catalog's `devices`.
    pub device: u16,
    pub name: String,
    /// Configured poll interval, for completeness reports.
    pub interval_ms: u32,
    pub points: Vec<PointInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointInfo {
    pub name: String,
    pub unit: String,
    pub kind: PointKind,
    /// Engineering value = raw * scale + offset.
    pub scale: f64,
    pub offset: f64,
}

impl PointInfo {
    pub fn new(name: &str, unit: &str, kind: PointKind, scale: f64, offset: f64) -> Self {
        Self {
            name: name.into(),
            unit: unit.into(),
            kind,
            scale,
            offset,
        }
    }

    /// The engineering value of a raw reading (see [`engineering_value`]).
    pub fn engineering(&self, raw: f64) -> f64 {
        engineering_value(raw, self.scale, self.offset)
    }
}

/// What a point measures, which decides how it is aggregated and shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PointKind {
    /// A measurement that moves up and down (voltage, power, SoC).
    Analog,
    /// A monotonic total (energy, cycle count).
    Counter,
    /// A status or alarm word whose bits have meanings.
    Bitfield,
    /// A single on/off value.
    Flag,
}

impl PointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PointKind::Analog => "analog",
            PointKind::Counter => "counter",
            PointKind::Bitfield => "bitfield",
            PointKind::Flag => "flag",
        }
    }
}

/// `raw * scale + offset`, computed so that decimal scales give the
/// decimal you expect: a scale of 0.01 divides by 100 (8460 → 84.6, not
/// 84.60000000000001).
pub fn engineering_value(raw: f64, scale: f64, offset: f64) -> f64 {
    let inverse = 1.0 / scale;
    let scaled = if scale.abs() < 1.0 && (inverse - inverse.round()).abs() < 1e-9 {
        raw / inverse.round()
    } else {
        raw * scale
    };
    scaled + offset
}

impl Catalog {
    /// FNV-1a 64 over the catalog's postcard encoding: the same catalog
    /// always has the same hash, on every platform.
    pub fn hash(&self) -> CatalogHash {
        let bytes = postcard::to_stdvec(self).expect("a catalog always serializes");
        CatalogHash(fnv1a64(&bytes))
    }

    /// Number of value slots over all groups.
    pub fn point_count(&self) -> usize {
        self.groups.iter().map(|g| g.points.len()).sum()
    }
}

/// FNV-1a, 64-bit: offset basis 0xcbf29ce484222325, prime 0x100000001b3.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_published_test_values() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn decimal_scales_give_the_expected_decimal() {
        assert_eq!(engineering_value(8460.0, 0.01, 0.0), 84.6);
        assert_eq!(engineering_value(-125.0, 0.1, 0.0), -12.5);
        assert_eq!(engineering_value(3.0, 2.0, 1.0), 7.0);
        assert_eq!(engineering_value(7.0, 1.0, -40.0), -33.0);
    }

    #[test]
    fn catalog_hash_changes_when_a_point_changes() {
        let mut catalog = Catalog {
            devices: vec![DeviceInfo {
                name: "d".into(),
                model: "m".into(),
            }],
            groups: vec![GroupInfo {
                device: 0,
                name: "g".into(),
                interval_ms: 1000,
                points: vec![PointInfo::new("p", "V", PointKind::Analog, 0.1, 0.0)],
            }],
        };
        let before = catalog.hash();
        assert_eq!(before, catalog.clone().hash());
        catalog.groups[0].points[0].unit = "kV".into();
        assert_ne!(before, catalog.hash());
    }
}
