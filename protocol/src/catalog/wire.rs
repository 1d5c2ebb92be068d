//! The catalog's bytes (SPEC sections 4, 4.1 and 7).
//!
//! The layout (devices, groups, points) is section 4's `Catalog`. Flag
//! names follow it in a section of their own, written only when some point
//! has one: a catalog without flag names keeps the bytes, and so the hash,
//! it had before flag names existed. Layout and section together are the
//! catalog's canonical bytes; the hash covers them, and a batch body
//! carries them (the section announced by envelope flag bit 2).
//!
//! Invariant: a flag-names section that this module accepts fits its
//! catalog exactly (one entry per group and per point) and names at least
//! one flag, so reading and writing it again gives the same bytes.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{Catalog, DeviceInfo, FlagName, GroupInfo, PointInfo, PointKind};

/// Section 4's `Catalog`: everything but the flag names.
#[derive(Serialize, Deserialize)]
pub(crate) struct Layout<'a> {
    devices: Cow<'a, [DeviceInfo]>,
    groups: Vec<GroupLayout<'a>>,
}

#[derive(Serialize, Deserialize)]
struct GroupLayout<'a> {
    device: u16,
    name: Cow<'a, str>,
    interval_ms: u32,
    points: Vec<PointLayout<'a>>,
}

#[derive(Serialize, Deserialize)]
struct PointLayout<'a> {
    name: Cow<'a, str>,
    unit: Cow<'a, str>,
    kind: PointKind,
    scale: f64,
    offset: f64,
}

impl<'a> Layout<'a> {
    pub(crate) fn of(catalog: &'a Catalog) -> Self {
        Layout {
            devices: Cow::Borrowed(&catalog.devices),
            groups: catalog
                .groups
                .iter()
                .map(|g| GroupLayout {
                    device: g.device,
                    name: Cow::Borrowed(&g.name),
                    interval_ms: g.interval_ms,
                    points: g
                        .points
                        .iter()
                        .map(|p| PointLayout {
                            name: Cow::Borrowed(&p.name),
                            unit: Cow::Borrowed(&p.unit),
                            kind: p.kind,
                            scale: p.scale,
                            offset: p.offset,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// The catalog this layout describes, with no flag names yet.
    pub(crate) fn into_catalog(self) -> Catalog {
        Catalog {
            devices: self.devices.into_owned(),
            groups: self
                .groups
                .into_iter()
                .map(|g| GroupInfo {
                    device: g.device,
                    name: g.name.into_owned(),
                    interval_ms: g.interval_ms,
                    points: g
                        .points
                        .into_iter()
                        .map(|p| PointInfo {
                            name: p.name.into_owned(),
                            unit: p.unit.into_owned(),
                            kind: p.kind,
                            scale: p.scale,
                            offset: p.offset,
                            flags: Vec::new(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Section 4.1: for each group of the catalog, for each of its points, the
/// point's flag names (mostly none).
#[derive(Serialize, Deserialize)]
pub(crate) struct FlagNames<'a>(Vec<Vec<Cow<'a, [FlagName]>>>);

/// Why flag names do not fit their catalog or break the rules of SPEC
/// section 4.1. Groups and points are 0-based indexes into the catalog.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlagNamesError {
    #[error("flag names for {names} groups, the catalog has {catalog}")]
    GroupCount { catalog: usize, names: usize },
    #[error("flag names for {names} points of group {group}, it has {catalog}")]
    PointCount {
        group: usize,
        catalog: usize,
        names: usize,
    },
    #[error("group {group} point {point}: bit {bit} does not come after the previous flag's bit")]
    BitOrder { group: usize, point: usize, bit: u8 },
    #[error("group {group} point {point}: bit {bit} is beyond a 64-bit value")]
    BitRange { group: usize, point: usize, bit: u8 },
    #[error("group {group} point {point}: flag name {name:?} is given twice")]
    DuplicateName {
        group: usize,
        point: usize,
        name: String,
    },
    #[error("the flag-names section names no flag")]
    NoNames,
}

/// Why bytes are not a catalog's canonical bytes ([`Catalog::from_bytes`]).
#[derive(Debug, thiserror::Error)]
pub enum CatalogBytesError {
    #[error("not a catalog encoding: {0}")]
    Encoding(postcard::Error),
    #[error(transparent)]
    FlagNames(#[from] FlagNamesError),
    #[error("{0} bytes after the catalog")]
    TrailingBytes(usize),
}

impl<'a> FlagNames<'a> {
    /// The section of a catalog, `None` when no point has flag names (the
    /// catalog then has no section at all).
    pub(crate) fn of(catalog: &'a Catalog) -> Option<Self> {
        catalog.has_flag_names().then(|| {
            FlagNames(
                catalog
                    .groups
                    .iter()
                    .map(|g| {
                        g.points
                            .iter()
                            .map(|p| Cow::Borrowed(&p.flags[..]))
                            .collect()
                    })
                    .collect(),
            )
        })
    }

    /// Give each point of `catalog` its flag names, after checking that the
    /// section fits the catalog and follows the rules.
    pub(crate) fn attach(self, catalog: &mut Catalog) -> Result<(), FlagNamesError> {
        if self.0.len() != catalog.groups.len() {
            return Err(FlagNamesError::GroupCount {
                catalog: catalog.groups.len(),
                names: self.0.len(),
            });
        }
        for (g, (group, names)) in catalog.groups.iter().zip(&self.0).enumerate() {
            if names.len() != group.points.len() {
                return Err(FlagNamesError::PointCount {
                    group: g,
                    catalog: group.points.len(),
                    names: names.len(),
                });
            }
            for (p, flags) in names.iter().enumerate() {
                check_point_flags(g, p, flags)?;
            }
        }
        if self.0.iter().flatten().all(|flags| flags.is_empty()) {
            return Err(FlagNamesError::NoNames);
        }
        for (group, names) in catalog.groups.iter_mut().zip(self.0) {
            for (point, flags) in group.points.iter_mut().zip(names) {
                point.flags = flags.into_owned();
            }
        }
        Ok(())
    }
}

/// The rules for one point's flag names: bits strictly ascending (so each
/// at most once), 0 to 63, names distinct.
pub(crate) fn check_point_flags(
    group: usize,
    point: usize,
    flags: &[FlagName],
) -> Result<(), FlagNamesError> {
    for (i, flag) in flags.iter().enumerate() {
        if flag.bit > 63 {
            return Err(FlagNamesError::BitRange {
                group,
                point,
                bit: flag.bit,
            });
        }
        if i > 0 && flag.bit <= flags[i - 1].bit {
            return Err(FlagNamesError::BitOrder {
                group,
                point,
                bit: flag.bit,
            });
        }
        if flags[..i].iter().any(|f| f.name == flag.name) {
            return Err(FlagNamesError::DuplicateName {
                group,
                point,
                name: flag.name.clone(),
            });
        }
    }
    Ok(())
}

/// Append the catalog's canonical bytes to `out`; the flag says whether
/// they include a flag-names section.
pub(crate) fn write_catalog(catalog: &Catalog, out: Vec<u8>) -> (Vec<u8>, bool) {
    let out = postcard::to_extend(&Layout::of(catalog), out).expect("a catalog always serializes");
    match FlagNames::of(catalog) {
        Some(names) => (
            postcard::to_extend(&names, out).expect("flag names always serialize"),
            true,
        ),
        None => (out, false),
    }
}

/// [`Catalog::from_bytes`]: the layout, then the flag-names section if any
/// bytes are left, then nothing.
pub(crate) fn read_catalog(bytes: &[u8]) -> Result<Catalog, CatalogBytesError> {
    let (layout, rest) =
        postcard::take_from_bytes::<Layout>(bytes).map_err(CatalogBytesError::Encoding)?;
    let mut catalog = layout.into_catalog();
    if rest.is_empty() {
        return Ok(catalog);
    }
    let (names, rest) =
        postcard::take_from_bytes::<FlagNames>(rest).map_err(CatalogBytesError::Encoding)?;
    if !rest.is_empty() {
        return Err(CatalogBytesError::TrailingBytes(rest.len()));
    }
    names.attach(&mut catalog)?;
    Ok(catalog)
}
