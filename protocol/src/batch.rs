//! Batches and frames as the program sees them, and their postcard body
//! with delta-coded timestamps and integer values.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use crate::catalog::{write_catalog, FlagNames, Layout};
use crate::{BatchSeq, Catalog, CatalogHash, GroupIndex, MissingReason, Reading, SiteId};

/// One poll of one register group: one timestamp, many values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub group: GroupIndex,
    /// Milliseconds since the Unix epoch, UTC, taken when the response arrived.
    pub ts_ms: i64,
    /// One reading per point of the group, in catalog order.
    pub values: Vec<Reading>,
}

/// Readings the edge had to drop, reported so the cloud knows exactly what
/// is missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// Index into the catalog's `devices`; [`Gap::WHOLE_SITE`] (65535) means
    /// the whole site (e.g. a corrupt buffer whose contents could not be
    /// attributed).
    pub device: u16,
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
    /// Number of samples (value slots) dropped.
    pub samples: u64,
    pub reason: GapReason,
}

impl Gap {
    /// The `device` of a gap that concerns the whole site rather than one
    /// device of the catalog.
    pub const WHOLE_SITE: u16 = u16::MAX;

    /// Whether this gap concerns the whole site rather than one device.
    pub fn is_whole_site(&self) -> bool {
        self.device == Self::WHOLE_SITE
    }
}

/// Why readings were dropped. On the wire a reason is its postcard variant
/// index, which is also its [`GapReason::code`]: the number stores outside
/// the wire (the edge's buffer, say) keep for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GapReason {
    /// The buffer's disk cap was reached during an outage.
    DiskCap,
    /// The buffer file was corrupt and was moved aside.
    BufferCorrupt,
    /// High-rate measurements in an outage backlog were thinned to the
    /// frames holding each minute's minimum, maximum and last values, to make
    /// room before anything had to be dropped outright.
    Downsampled,
}

impl GapReason {
    /// Every reason, in code order.
    pub const ALL: [GapReason; 3] = [
        GapReason::DiskCap,
        GapReason::BufferCorrupt,
        GapReason::Downsampled,
    ];

    /// The reason's number: its variant index on the wire (SPEC: `GapReason`).
    pub const fn code(self) -> u8 {
        match self {
            GapReason::DiskCap => 0,
            GapReason::BufferCorrupt => 1,
            GapReason::Downsampled => 2,
        }
    }

    /// The reason of a code, `None` for a code no reason has.
    pub const fn from_code(code: u8) -> Option<GapReason> {
        match code {
            0 => Some(GapReason::DiskCap),
            1 => Some(GapReason::BufferCorrupt),
            2 => Some(GapReason::Downsampled),
            _ => None,
        }
    }

    /// The reason's name in APIs, metrics and the database (`disk_cap`,
    /// `buffer_corrupt`, `downsampled`).
    pub const fn as_str(self) -> &'static str {
        match self {
            GapReason::DiskCap => "disk_cap",
            GapReason::BufferCorrupt => "buffer_corrupt",
            GapReason::Downsampled => "downsampled",
        }
    }
}

/// A run of frames from one site, sealed with a sequence number.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub site: SiteId,
    pub seq: BatchSeq,
    /// The catalog the frames were written against.
    pub catalog_hash: CatalogHash,
    /// The catalog itself, in the first batch after a start or a change.
    pub catalog: Option<Catalog>,
    pub frames: Vec<Frame>,
    pub gaps: Vec<Gap>,
}

impl Batch {
    /// Number of value slots in all frames.
    pub fn sample_count(&self) -> usize {
        self.frames.iter().map(|f| f.values.len()).sum()
    }
}

/// The postcard body of a batch, as documented in `SPEC.md`: its fields in
/// order, with the catalog's flag-names section (section 4.1) between the
/// catalog and the frames when envelope flag bit 2 says so.
pub(crate) struct WireBody {
    base_ts_ms: i64,
    catalog: Option<Catalog>,
    frames: Vec<WireFrame>,
    gaps: Vec<Gap>,
}

/// A decoded body whose catalog (if any) has no flag names yet: they are
/// attached once the envelope's flags have been checked against the body.
pub(crate) struct BodyParts {
    pub(crate) catalog: Option<Catalog>,
    pub(crate) flag_names: Option<FlagNames<'static>>,
    pub(crate) frames: Vec<Frame>,
    pub(crate) gaps: Vec<Gap>,
}

#[derive(Serialize, Deserialize)]
struct WireFrame {
    group: u16,
    /// Difference to the previous frame's timestamp (the first frame: to `base_ts_ms`).
    ts_delta_ms: i64,
    values: Vec<WireValue>,
}

#[derive(Serialize, Deserialize)]
enum WireValue {
    /// Difference to the previous integer in the same group and slot of
    /// this batch (to 0 for the first).
    IntDelta(i64),
    Float(f64),
    Missing(MissingReason),
}

impl WireBody {
    pub(crate) fn from_batch(batch: &Batch) -> Self {
        let base_ts_ms = batch.frames.first().map_or(0, |f| f.ts_ms);
        let mut previous_ts = base_ts_ms;
        let mut previous_ints: HashMap<(u16, usize), i64> = HashMap::new();
        let frames = batch
            .frames
            .iter()
            .map(|frame| {
                let ts_delta_ms = frame.ts_ms.wrapping_sub(previous_ts);
                previous_ts = frame.ts_ms;
                let values = frame
                    .values
                    .iter()
                    .enumerate()
                    .map(|(slot, reading)| match *reading {
                        Reading::Int(v) => {
                            let previous =
                                previous_ints.insert((frame.group.0, slot), v).unwrap_or(0);
                            WireValue::IntDelta(v.wrapping_sub(previous))
                        }
                        Reading::Float(v) => WireValue::Float(v),
                        Reading::Missing(reason) => WireValue::Missing(reason),
                    })
                    .collect();
                WireFrame {
                    group: frame.group.0,
                    ts_delta_ms,
                    values,
                }
            })
            .collect();
        WireBody {
            base_ts_ms,
            catalog: batch.catalog.clone(),
            frames,
            gaps: batch.gaps.clone(),
        }
    }

    /// The plain body bytes, and whether they hold a flag-names section
    /// (then the envelope sets flag bit 2).
    pub(crate) fn to_bytes(&self) -> Result<(Vec<u8>, bool), postcard::Error> {
        let mut out = postcard::to_stdvec(&self.base_ts_ms)?;
        let flag_names = match &self.catalog {
            None => {
                out.push(0);
                false
            }
            Some(catalog) => {
                out.push(1);
                let (bytes, flag_names) = write_catalog(catalog, out);
                out = bytes;
                flag_names
            }
        };
        let out = postcard::to_extend(&self.frames, out)?;
        let out = postcard::to_extend(&self.gaps, out)?;
        Ok((out, flag_names))
    }

    /// Read a plain body, with a flag-names section after the catalog if
    /// `flag_names` (envelope flag bit 2), and undo the delta coding.
    /// Bytes after the gaps are ignored (SPEC section 12).
    pub(crate) fn decode(bytes: &[u8], flag_names: bool) -> Result<BodyParts, postcard::Error> {
        let (base_ts_ms, rest) = postcard::take_from_bytes::<i64>(bytes)?;
        let (layout, rest) = postcard::take_from_bytes::<Option<Layout>>(rest)?;
        let (names, rest) = if flag_names {
            let (names, rest) = postcard::take_from_bytes::<FlagNames<'static>>(rest)?;
            (Some(names), rest)
        } else {
            (None, rest)
        };
        let (frames, rest) = postcard::take_from_bytes::<Vec<WireFrame>>(rest)?;
        let (gaps, _) = postcard::take_from_bytes::<Vec<Gap>>(rest)?;
        let body = WireBody {
            base_ts_ms,
            catalog: layout.map(Layout::into_catalog),
            frames,
            gaps,
        };
        let (catalog, frames, gaps) = body.into_parts();
        Ok(BodyParts {
            catalog,
            flag_names: names,
            frames,
            gaps,
        })
    }

    /// Undo the delta coding. Returns (catalog, frames, gaps).
    fn into_parts(self) -> (Option<Catalog>, Vec<Frame>, Vec<Gap>) {
        let mut previous_ts = self.base_ts_ms;
        let mut previous_ints: HashMap<(u16, usize), i64> = HashMap::new();
        let frames = self
            .frames
            .into_iter()
            .map(|wire| {
                let ts_ms = previous_ts.wrapping_add(wire.ts_delta_ms);
                previous_ts = ts_ms;
                let values = wire
                    .values
                    .into_iter()
                    .enumerate()
                    .map(|(slot, value)| match value {
                        WireValue::IntDelta(delta) => {
                            let entry = previous_ints.entry((wire.group, slot)).or_insert(0);
                            *entry = entry.wrapping_add(delta);
                            Reading::Int(*entry)
                        }
                        WireValue::Float(v) => Reading::Float(v),
                        WireValue::Missing(reason) => Reading::Missing(reason),
                    })
                    .collect();
                Frame {
                    group: GroupIndex(wire.group),
                    ts_ms,
                    values,
                }
            })
            .collect();
        (self.catalog, frames, self.gaps)
    }
}

#[cfg(test)]
mod gap_reason_tests {
    use super::GapReason;

    #[test]
    fn each_reason_code_is_its_variant_index_on_the_wire() {
        for reason in GapReason::ALL {
            let wire = postcard::to_stdvec(&reason).unwrap();
            assert_eq!(wire, vec![reason.code()], "{reason:?}");
            assert_eq!(GapReason::from_code(reason.code()), Some(reason));
        }
        assert_eq!(GapReason::from_code(3), None);
    }
}
