//! The bytes of a live message's frames (`SPEC.md`, "Live messages"): LEB128
//! varints, zigzag for signed numbers, no padding.
//!
//! ```text
//! frames   := count:varint frame*
//! frame    := head:varint (group << 2 | has_others << 1 | whole) body
//! whole    := ts_ms:zigzag count:varint mask_len:varint mask:u8*mask_len
//!             (value:zigzag | reading)*   (a reading where the mask bit is set)
//! change   := bits_len:varint bits:u8*bits_len                 (version 2)
//!             [others_count:varint (slot:varint reading)*]   if has_others
//! change₁  := ts_jitter_ms:zigzag mask_len:varint mask:u8*mask_len  (version 1)
//!             delta:zigzag* (one per set bit, slot order)
//!             [others_count:varint (slot:varint reading)*]   if has_others
//! reading  := 0 value:zigzag | 1 value:f64-le | 2 status:varint
//! ```
//!
//! Masks are bit `i % 8` of byte `i / 8` for slot `i`, trailing zero bytes
//! left out. A whole frame's mask marks the slots that do not hold an
//! integer (those are full readings; the rest bare zigzag integers). A
//! version 2 change's bits (`coded.rs`) code every integer slot's move; a
//! version 1 change's mask marks the slots that hold an integer in both
//! frames and changed. Slots whose reading changed otherwise (a float, a
//! value that went missing or came back) are listed in `others`.

use crate::{MissingReason, Reading};

/// One frame on the wire: whole, or the change since the previous frame of
/// its group on this chain.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum WireFrame {
    Whole {
        group: u16,
        ts_ms: i64,
        values: Vec<Reading>,
    },
    /// Version 2: the change's bits, read against the base (`coded.rs`).
    Coded {
        group: u16,
        bits: Vec<u8>,
        others: Vec<(u16, Reading)>,
    },
    /// Version 1: a mask of the integer slots that moved, and their moves.
    Masked {
        group: u16,
        /// This frame's interval minus the previous frame's interval.
        ts_jitter_ms: i64,
        mask: Vec<u8>,
        deltas: Vec<i64>,
        others: Vec<(u16, Reading)>,
    },
}

/// Why a live body does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the body ends inside a {0}")]
    Truncated(&'static str),
    #[error("a varint is longer than 10 bytes")]
    VarintTooLong,
    #[error("unknown reading tag {0}")]
    UnknownReading(u8),
    #[error("unknown status code {0}")]
    UnknownStatus(u64),
    #[error("group {0} does not fit 16 bits")]
    Group(u64),
    #[error("{0} bytes after the last frame")]
    Trailing(usize),
}

pub(super) fn encode(frames: &[WireFrame], out: &mut Vec<u8>) {
    put_varint(out, frames.len() as u64);
    for frame in frames {
        match frame {
            WireFrame::Whole {
                group,
                ts_ms,
                values,
            } => {
                put_varint(out, u64::from(*group) << 2 | 1);
                put_zigzag(out, *ts_ms);
                put_varint(out, values.len() as u64);
                let mut not_int = vec![0u8; values.len().div_ceil(8)];
                for (slot, value) in values.iter().enumerate() {
                    if !matches!(value, Reading::Int(_)) {
                        not_int[slot / 8] |= 1 << (slot % 8);
                    }
                }
                put_mask(out, &not_int);
                for value in values {
                    match value {
                        Reading::Int(v) => put_zigzag(out, *v),
                        other => put_reading(out, other),
                    }
                }
            }
            WireFrame::Coded {
                group,
                bits,
                others,
            } => {
                put_varint(out, u64::from(*group) << 2 | has_others(others));
                put_varint(out, bits.len() as u64);
                out.extend_from_slice(bits);
                put_others(out, others);
            }
            WireFrame::Masked {
                group,
                ts_jitter_ms,
                mask,
                deltas,
                others,
            } => {
                put_varint(out, u64::from(*group) << 2 | has_others(others));
                put_zigzag(out, *ts_jitter_ms);
                put_mask(out, mask);
                for delta in deltas {
                    put_zigzag(out, *delta);
                }
                put_others(out, others);
            }
        }
    }
}

fn has_others(others: &[(u16, Reading)]) -> u64 {
    u64::from(!others.is_empty()) << 1
}

fn put_others(out: &mut Vec<u8>, others: &[(u16, Reading)]) {
    if !others.is_empty() {
        put_varint(out, others.len() as u64);
        for (slot, reading) in others {
            put_varint(out, u64::from(*slot));
            put_reading(out, reading);
        }
    }
}

/// The frames of a body written in live format `version` (1 or 2).
pub(super) fn decode(bytes: &[u8], version: u8) -> Result<Vec<WireFrame>, WireError> {
    let mut input = Input(bytes);
    let count = input.varint("frame count")?;
    // Each frame takes at least two bytes: a guard against absurd counts.
    let mut frames = Vec::with_capacity((count as usize).min(bytes.len() / 2));
    for _ in 0..count {
        let head = input.varint("frame head")?;
        let group = u16::try_from(head >> 2).map_err(|_| WireError::Group(head >> 2))?;
        let has_others = head & 2 == 2;
        if head & 1 == 1 {
            let ts_ms = input.zigzag("timestamp")?;
            let n = input.varint("value count")? as usize;
            let used = input.varint("mask length")? as usize;
            let not_int = input.take(used, "mask")?;
            let mut values = Vec::with_capacity(n.min(input.0.len()));
            for slot in 0..n {
                let int = not_int
                    .get(slot / 8)
                    .is_none_or(|b| b & (1 << (slot % 8)) == 0);
                values.push(if int {
                    Reading::Int(input.zigzag("integer")?)
                } else {
                    input.reading()?
                });
            }
            frames.push(WireFrame::Whole {
                group,
                ts_ms,
                values,
            });
        } else if version >= 2 {
            let used = input.varint("change length")? as usize;
            let bits = input.take(used, "change")?.to_vec();
            let others = input.others(has_others)?;
            frames.push(WireFrame::Coded {
                group,
                bits,
                others,
            });
        } else {
            let ts_jitter_ms = input.zigzag("timestamp")?;
            let used = input.varint("mask length")? as usize;
            let mask = input.take(used, "mask")?.to_vec();
            let set = mask.iter().map(|b| b.count_ones() as usize).sum::<usize>();
            let mut deltas = Vec::with_capacity(set.min(input.0.len()));
            for _ in 0..set {
                deltas.push(input.zigzag("delta")?);
            }
            let others = input.others(has_others)?;
            frames.push(WireFrame::Masked {
                group,
                ts_jitter_ms,
                mask,
                deltas,
                others,
            });
        }
    }
    if !input.0.is_empty() {
        return Err(WireError::Trailing(input.0.len()));
    }
    Ok(frames)
}

/// A bit mask without its trailing zero bytes, after its length.
fn put_mask(out: &mut Vec<u8>, mask: &[u8]) {
    let used = mask.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    put_varint(out, used as u64);
    out.extend_from_slice(&mask[..used]);
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_zigzag(out: &mut Vec<u8>, value: i64) {
    put_varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_reading(out: &mut Vec<u8>, reading: &Reading) {
    match reading {
        Reading::Int(v) => {
            out.push(0);
            put_zigzag(out, *v);
        }
        Reading::Float(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Reading::Missing(reason) => {
            out.push(2);
            put_varint(out, u64::from(reason.code()));
        }
    }
}

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.take(1, what)?[0];
            if shift == 63 && byte > 1 {
                return Err(WireError::VarintTooLong);
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::VarintTooLong)
    }

    fn zigzag(&mut self, what: &'static str) -> Result<i64, WireError> {
        let raw = self.varint(what)?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    fn others(&mut self, present: bool) -> Result<Vec<(u16, Reading)>, WireError> {
        let mut others = Vec::new();
        if present {
            let n = self.varint("change count")?;
            for _ in 0..n {
                let slot = self.varint("slot")?;
                let slot = u16::try_from(slot).map_err(|_| WireError::Group(slot))?;
                others.push((slot, self.reading()?));
            }
        }
        Ok(others)
    }

    fn reading(&mut self) -> Result<Reading, WireError> {
        match self.take(1, "reading")?[0] {
            0 => Ok(Reading::Int(self.zigzag("integer")?)),
            1 => {
                let bytes = self.take(8, "float")?;
                Ok(Reading::Float(f64::from_le_bytes(
                    bytes.try_into().expect("eight bytes"),
                )))
            }
            2 => {
                let code = self.varint("status")?;
                u16::try_from(code)
                    .ok()
                    .and_then(MissingReason::from_code)
                    .map(Reading::Missing)
                    .ok_or(WireError::UnknownStatus(code))
            }
            tag => Err(WireError::UnknownReading(tag)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varints_and_zigzag_take_the_fewest_bytes() {
        let mut out = Vec::new();
        put_zigzag(&mut out, -1);
        put_zigzag(&mut out, 63);
        put_zigzag(&mut out, 64);
        assert_eq!(out, [1, 126, 128, 1]);
        let mut input = Input(&out);
        assert_eq!(input.zigzag("x").unwrap(), -1);
        assert_eq!(input.zigzag("x").unwrap(), 63);
        assert_eq!(input.zigzag("x").unwrap(), 64);
    }

    fn reading() -> impl Strategy<Value = Reading> {
        prop_oneof![
            any::<i64>().prop_map(Reading::Int),
            any::<f64>()
                .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
                .prop_map(Reading::Float),
            any::<u8>().prop_map(|c| Reading::Missing(MissingReason::Exception(c))),
            Just(Reading::Missing(MissingReason::Disconnected)),
        ]
    }

    /// Frames of `version`: whole frames and that version's changes.
    fn frame(version: u8) -> impl Strategy<Value = WireFrame> {
        let whole = (
            any::<u16>(),
            any::<i64>(),
            prop::collection::vec(reading(), 0..20),
        )
            .prop_map(|(group, ts_ms, values)| WireFrame::Whole {
                group,
                ts_ms,
                values,
            });
        let coded = (
            any::<u16>(),
            prop::collection::vec(any::<u8>(), 0..6),
            prop::collection::vec((any::<u16>(), reading()), 0..4),
        )
            .prop_map(|(group, bits, others)| WireFrame::Coded {
                group,
                bits,
                others,
            });
        let masked = masked_frame();
        if version >= 2 {
            prop_oneof![whole, coded].boxed()
        } else {
            prop_oneof![whole, masked].boxed()
        }
    }

    fn masked_frame() -> impl Strategy<Value = WireFrame> {
        (
            any::<u16>(),
            any::<i64>(),
            prop::collection::vec(any::<u8>(), 0..4),
            prop::collection::vec((any::<u16>(), reading()), 0..4),
            any::<i64>(),
        )
            .prop_map(|(group, ts_jitter_ms, mut mask, others, delta)| {
                while mask.last() == Some(&0) {
                    mask.pop();
                }
                let set = mask.iter().map(|b| b.count_ones() as usize).sum();
                WireFrame::Masked {
                    group,
                    ts_jitter_ms,
                    mask,
                    deltas: vec![delta; set],
                    others,
                }
            })
    }

    proptest! {
        #[test]
        fn frames_round_trip(frames in prop::collection::vec(frame(2), 0..6)) {
            let mut out = Vec::new();
            encode(&frames, &mut out);
            prop_assert_eq!(decode(&out, 2).unwrap(), frames);
        }

        #[test]
        fn version_1_frames_still_decode(frames in prop::collection::vec(frame(1), 0..6)) {
            let mut out = Vec::new();
            encode(&frames, &mut out);
            prop_assert_eq!(decode(&out, 1).unwrap(), frames);
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes, 1);
            let _ = decode(&bytes, 2);
        }
    }
}
