//! The point catalog: which devices a site has, how their points are grouped
//! into frames, and each point's name, unit, kind and scaling.
//!
//! The edge sends the catalog inside a batch whenever it starts or the
//! catalog changes; every batch names the catalog it was written against by
//! its [`CatalogHash`]. Nobody configures points twice.
//!
//! The serde derives are the catalog's JSON form (the collector stores it
//! so); `flags` may be absent there and reads as empty. They are not the
//! wire form: a catalog's bytes come from [`Catalog::to_bytes`] (SPEC
//! sections 4, 4.1 and 7), where flag names travel in a section of their
//! own that only a catalog with flag names has.

use serde::{Deserialize, Serialize};

use crate::CatalogHash;

mod wire;

pub(crate) use wire::{write_catalog, FlagNames, Layout};
pub use wire::{CatalogBytesError, FlagNamesError};

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
    /// Names of the bits of a bitfield or flag point, bits ascending, each
    /// bit and each name at most once; empty for other points and for bits
    /// nobody named.
    #[serde(default)]
    pub flags: Vec<FlagName>,
}

/// One named bit of a point's raw value: flag `name` is set in a reading
/// `Int(v)` when bit `bit` of `v` is 1.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlagName {
    /// 0 is the least significant bit; at most 63.
    pub bit: u8,
    pub name: String,
}

impl FlagName {
    pub fn new(bit: u8, name: &str) -> Self {
        Self {
            bit,
            name: name.into(),
        }
    }
}

impl PointInfo {
    /// A point without flag names (add them with [`PointInfo::with_flags`]).
    pub fn new(name: &str, unit: &str, kind: PointKind, scale: f64, offset: f64) -> Self {
        Self {
            name: name.into(),
            unit: unit.into(),
            kind,
            scale,
            offset,
            flags: Vec::new(),
        }
    }

    /// The point with these flag names (bits ascending).
    pub fn with_flags(mut self, flags: impl IntoIterator<Item = FlagName>) -> Self {
        self.flags = flags.into_iter().collect();
        self
    }

    /// The bit of the flag called `name`, if the point has one.
    pub fn flag_bit(&self, name: &str) -> Option<u8> {
        self.flags.iter().find(|f| f.name == name).map(|f| f.bit)
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
    /// FNV-1a 64 over the catalog's canonical bytes ([`Catalog::to_bytes`]):
    /// the same catalog always has the same hash, on every platform, and a
    /// catalog without flag names the hash it had before flag names existed.
    pub fn hash(&self) -> CatalogHash {
        CatalogHash(fnv1a64(&self.to_bytes()))
    }

    /// The canonical bytes (SPEC section 7): the layout of section 4, then,
    /// only if some point has flag names, the flag-names section (4.1).
    /// What the hash covers and what a batch body carries after its
    /// `Option` tag; also a store's way to keep a catalog.
    pub fn to_bytes(&self) -> Vec<u8> {
        write_catalog(self, Vec::new()).0
    }

    /// Read [`Catalog::to_bytes`] back: bytes after the layout are its
    /// flag-names section, which must then end the input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Catalog, CatalogBytesError> {
        wire::read_catalog(bytes)
    }

    /// Whether some point has flag names (so its bytes carry section 4.1
    /// and a batch with it sets envelope flag bit 2).
    pub fn has_flag_names(&self) -> bool {
        self.groups
            .iter()
            .flat_map(|g| &g.points)
            .any(|p| !p.flags.is_empty())
    }

    /// Every point's flag names follow the rules of SPEC section 4.1 (bits
    /// ascending, 0 to 63, names distinct within the point); a writer
    /// refuses a catalog that breaks them, as a reader would.
    pub fn check_flag_names(&self) -> Result<(), FlagNamesError> {
        for (g, group) in self.groups.iter().enumerate() {
            for (p, point) in group.points.iter().enumerate() {
                wire::check_point_flags(g, p, &point.flags)?;
            }
        }
        Ok(())
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

    fn status_catalog() -> Catalog {
        Catalog {
            devices: vec![DeviceInfo {
                name: "pcs-1".into(),
                model: "m".into(),
            }],
            groups: vec![GroupInfo {
                device: 0,
                name: "state".into(),
                interval_ms: 5000,
                points: vec![
                    PointInfo::new("power", "W", PointKind::Analog, 1.0, 0.0),
                    PointInfo::new("status", "", PointKind::Bitfield, 1.0, 0.0)
                        .with_flags([FlagName::new(0, "running"), FlagName::new(4, "fault")]),
                ],
            }],
        }
    }

    #[test]
    fn flag_names_change_the_hash_and_their_absence_keeps_it() {
        let named = status_catalog();
        let mut unnamed = named.clone();
        unnamed.groups[0].points[1].flags.clear();
        assert_ne!(named.hash(), unnamed.hash());
        let mut renamed = named.clone();
        renamed.groups[0].points[1].flags[1].name = "alarm".into();
        assert_ne!(named.hash(), renamed.hash());
        // Without names, the bytes are the layout alone, as before.
        assert_eq!(
            unnamed.to_bytes(),
            postcard::to_stdvec(&Layout::of(&unnamed)).unwrap()
        );
        assert!(named.to_bytes().starts_with(&unnamed.to_bytes()));
    }

    #[test]
    fn canonical_bytes_read_back_with_and_without_flag_names() {
        let named = status_catalog();
        assert_eq!(Catalog::from_bytes(&named.to_bytes()).unwrap(), named);
        let mut unnamed = named.clone();
        unnamed.groups[0].points[1].flags.clear();
        assert_eq!(Catalog::from_bytes(&unnamed.to_bytes()).unwrap(), unnamed);
        let mut longer = named.to_bytes();
        longer.push(0);
        assert!(matches!(
            Catalog::from_bytes(&longer),
            Err(CatalogBytesError::TrailingBytes(1))
        ));
    }

    #[test]
    fn flag_names_are_checked_point_by_point() {
        let mut catalog = status_catalog();
        assert_eq!(catalog.check_flag_names(), Ok(()));
        catalog.groups[0].points[1].flags = vec![FlagName::new(4, "a"), FlagName::new(0, "b")];
        assert_eq!(
            catalog.check_flag_names(),
            Err(FlagNamesError::BitOrder {
                group: 0,
                point: 1,
                bit: 0
            })
        );
        catalog.groups[0].points[1].flags = vec![FlagName::new(64, "a")];
        assert!(matches!(
            catalog.check_flag_names(),
            Err(FlagNamesError::BitRange { bit: 64, .. })
        ));
        catalog.groups[0].points[1].flags = vec![FlagName::new(1, "a"), FlagName::new(2, "a")];
        assert!(matches!(
            catalog.check_flag_names(),
            Err(FlagNamesError::DuplicateName { .. })
        ));
    }

    #[test]
    fn json_without_flags_reads_as_points_without_flag_names() {
        let json = r#"{"name":"soc","unit":"%","kind":"Analog","scale":0.01,"offset":0.0}"#;
        let point: PointInfo = serde_json::from_str(json).unwrap();
        assert_eq!(
            point,
            PointInfo::new("soc", "%", PointKind::Analog, 0.01, 0.0)
        );
        let named = status_catalog();
        let back: Catalog = serde_json::from_str(&serde_json::to_string(&named).unwrap()).unwrap();
        assert_eq!(back, named);
        assert_eq!(named.groups[0].points[1].flag_bit("fault"), Some(4));
    }
}
