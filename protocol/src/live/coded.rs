//! A change frame's bits (live format 2, `SPEC.md` "Live messages"): the
//! timestamp jitter and one prefix code per slot of the group, so a value
//! that did not move costs one bit and a small move a few.
//!
//! ```text
//! bits   := jitter:gamma new_widths:1 [w1-1:4 w2-1:6 w3-1:6] code*
//! code   := 0                  unchanged
//!         | 1 0 z:w1           changed by unzigzag(z)
//!         | 1 1 0 z:w2
//!         | 1 1 1 z:w3
//! ```
//!
//! Bits are written least significant first into bytes; trailing zero bytes
//! are left out (a reader takes missing bits as 0, "unchanged"). `gamma` is
//! the Elias gamma code of `zigzag(jitter) + 1`: as many 0 bits as the value
//! has bits after its highest, a 1, then those low bits. The widths apply
//! from this frame on for the group until a frame brings new ones; the first
//! change after a whole frame that moves any value brings them. The encoder
//! picks the widths that make the frame shortest.

use super::GroupBase;
use crate::{Frame, Reading};

/// The three value widths of the prefix codes, each 1..=64 bits, w1 ≤ 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Widths([u8; 3]);

/// A change frame, ready for the wire.
pub(super) struct CodedChange {
    pub bits: Vec<u8>,
    /// Slots whose reading changed other than integer to integer.
    pub others: Vec<(u16, Reading)>,
    /// The widths the group uses from this frame on.
    pub widths: Option<Widths>,
}

/// Code `frame` as the change from `base` (same slot count).
pub(super) fn encode(base: &GroupBase, frame: &Frame) -> CodedChange {
    let mut zigzags = Vec::with_capacity(frame.values.len());
    let mut others = Vec::new();
    // How many changed values need exactly b bits.
    let mut by_bits = [0usize; 65];
    for (slot, (before, now)) in base.values.iter().zip(&frame.values).enumerate() {
        let z = match (before, now) {
            (before, now) if before == now => 0,
            (Reading::Int(before), Reading::Int(now)) => zigzag(now.wrapping_sub(*before)),
            (_, now) => {
                others.push((slot as u16, *now));
                0
            }
        };
        by_bits[bit_len(z)] += 1;
        zigzags.push(z);
    }
    let (widths, announce) = choose_widths(&by_bits, base.widths);

    let mut out = BitWriter::default();
    let jitter = base.interval_to(frame.ts_ms).wrapping_sub(base.interval_ms);
    out.gamma(u128::from(zigzag(jitter)) + 1);
    out.bits(u64::from(announce), 1);
    let widths = widths.or(base.widths);
    if announce {
        let [w1, w2, w3] = widths.expect("announced widths").0;
        out.bits(u64::from(w1 - 1), 4);
        out.bits(u64::from(w2 - 1), 6);
        out.bits(u64::from(w3 - 1), 6);
    }
    for z in zigzags {
        if z == 0 {
            out.bits(0, 1);
            continue;
        }
        let [w1, w2, w3] = widths.expect("widths for a changed value").0;
        let b = bit_len(z) as u8;
        if b <= w1 {
            out.bits(0b01, 2);
            out.bits(z, w1);
        } else if b <= w2 {
            out.bits(0b011, 3);
            out.bits(z, w2);
        } else {
            out.bits(0b111, 3);
            out.bits(z, w3);
        }
    }
    CodedChange {
        bits: out.finish(),
        others,
        widths,
    }
}

/// The widths to code with, and whether they must be announced; `None`
/// when nothing moved and no widths are known yet (none are needed).
fn choose_widths(by_bits: &[usize; 65], known: Option<Widths>) -> (Option<Widths>, bool) {
    let Some(max) = (1..=64).rev().find(|b| by_bits[*b] > 0) else {
        return (known, false);
    };
    // below[b]: changed values that fit in b bits.
    let mut below = [0usize; 65];
    for b in 1..=64 {
        below[b] = below[b - 1] + by_bits[b];
    }
    let total = below[64];
    let cost = |[w1, w2, w3]: [u8; 3]| -> usize {
        let (w1, w2, w3) = (w1 as usize, w2 as usize, w3 as usize);
        below[w1] * (2 + w1) + (below[w2] - below[w1]) * (3 + w2) + (total - below[w2]) * (3 + w3)
    };
    let mut best = ([1, 1, max as u8], usize::MAX);
    for w1 in 1..=max.min(16) {
        for w2 in w1..=max {
            let widths = [w1 as u8, w2 as u8, max as u8];
            let bits = cost(widths);
            if bits < best.1 {
                best = (widths, bits);
            }
        }
    }
    match known {
        Some(Widths(old)) if old[2] as usize >= max && cost(old) <= best.1 + 16 => {
            (Some(Widths(old)), false)
        }
        _ => (Some(Widths(best.0)), true),
    }
}

/// Why coded bits do not fit their base.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Misfit;

/// The values and timestamp `bits` give on top of `base` (the base itself is
/// not touched): `(ts_ms, interval_ms, values, widths)`.
pub(super) fn apply(
    base: &GroupBase,
    bits: &[u8],
    others: &[(u16, Reading)],
) -> Result<(i64, i64, Vec<Reading>, Option<Widths>), Misfit> {
    let mut input = BitReader::new(bits);
    let jitter = unzigzag((input.gamma()? - 1) as u64);
    let widths = if input.bits(1)? == 1 {
        let w1 = input.bits(4)? as u8 + 1;
        let w2 = input.bits(6)? as u8 + 1;
        let w3 = input.bits(6)? as u8 + 1;
        Some(Widths([w1, w2, w3]))
    } else {
        base.widths
    };
    let mut values = base.values.clone();
    for value in &mut values {
        if input.bits(1)? == 0 {
            continue;
        }
        let [w1, w2, w3] = widths.ok_or(Misfit)?.0;
        let width = if input.bits(1)? == 0 {
            w1
        } else if input.bits(1)? == 0 {
            w2
        } else {
            w3
        };
        let delta = unzigzag(input.bits(width)?);
        let Reading::Int(before) = value else {
            return Err(Misfit);
        };
        *before = before.wrapping_add(delta);
    }
    if !input.rest_is_zero() {
        return Err(Misfit);
    }
    let mut last_slot = None;
    for (slot, reading) in others {
        // Listed once each, in slot order, within the group.
        if last_slot.is_some_and(|last| last >= *slot) {
            return Err(Misfit);
        }
        last_slot = Some(*slot);
        *values.get_mut(usize::from(*slot)).ok_or(Misfit)? = *reading;
    }
    let interval = base.interval_ms.wrapping_add(jitter);
    Ok((base.ts_ms.wrapping_add(interval), interval, values, widths))
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

fn bit_len(value: u64) -> usize {
    (64 - value.leading_zeros()) as usize
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    used: u32,
}

impl BitWriter {
    /// The low `n` bits of `value`, least significant first.
    fn bits(&mut self, value: u64, n: u8) {
        for i in 0..n {
            if self.used % 8 == 0 {
                self.bytes.push(0);
            }
            if (value >> i) & 1 == 1 {
                *self.bytes.last_mut().expect("a byte") |= 1 << (self.used % 8);
            }
            self.used += 1;
        }
    }

    fn gamma(&mut self, value: u128) {
        let extra = 127 - value.leading_zeros();
        for _ in 0..extra {
            self.bits(0, 1);
        }
        self.bits(1, 1);
        let low = value & ((1u128 << extra) - 1);
        self.bits(low as u64, extra.min(64) as u8);
        if extra > 64 {
            self.bits((low >> 64) as u64, (extra - 64) as u8);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        while self.bytes.last() == Some(&0) {
            self.bytes.pop();
        }
        self.bytes
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// The next bit; past the end, 0.
    fn bit(&mut self) -> u64 {
        let bit = self
            .bytes
            .get(self.at / 8)
            .map_or(0, |b| (b >> (self.at % 8)) & 1);
        self.at += 1;
        u64::from(bit)
    }

    fn bits(&mut self, n: u8) -> Result<u64, Misfit> {
        if n > 64 {
            return Err(Misfit);
        }
        Ok((0..n).fold(0, |value, i| value | self.bit() << i))
    }

    fn gamma(&mut self) -> Result<u128, Misfit> {
        let mut extra = 0u32;
        while self.bit() == 0 {
            extra += 1;
            if extra > 64 {
                return Err(Misfit);
            }
        }
        let low = u128::from(self.bits(extra.min(64) as u8)?);
        Ok((1u128 << extra) | low)
    }

    /// Every bit left is 0 (the padding of the last byte, or nothing).
    fn rest_is_zero(&self) -> bool {
        (self.at..self.bytes.len() * 8).all(|i| (self.bytes[i / 8] >> (i % 8)) & 1 == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn gamma_codes_round_trip_at_the_edges() {
        for value in [1u128, 2, 3, 4, 255, 1 << 63, u128::from(u64::MAX) + 1] {
            let mut out = BitWriter::default();
            out.gamma(value);
            out.bits(1, 1);
            let bytes = out.finish();
            let mut input = BitReader::new(&bytes);
            assert_eq!(input.gamma(), Ok(value));
            assert_eq!(input.bits(1), Ok(1));
        }
    }

    #[test]
    fn the_widths_fit_the_values_that_moved() {
        let mut by_bits = [0usize; 65];
        by_bits[2] = 10;
        by_bits[10] = 2;
        let (widths, announce) = choose_widths(&by_bits, None);
        assert!(announce);
        let [w1, _, w3] = widths.unwrap().0;
        assert_eq!((w1, w3), (2, 10));
        // Known widths that still fit are kept, unannounced.
        let (kept, announce) = choose_widths(&by_bits, Some(Widths([3, 10, 12])));
        assert_eq!((kept, announce), (Some(Widths([3, 10, 12])), false));
        // Nothing moved: nothing to announce.
        assert_eq!(choose_widths(&[0; 65], None), (None, false));
    }

    fn base(values: Vec<Reading>, widths: Option<Widths>) -> GroupBase {
        GroupBase {
            ts_ms: 10_000,
            interval_ms: 1_000,
            values,
            widths,
        }
    }

    proptest! {
        #[test]
        fn a_coded_change_gives_back_the_frame(
            pairs in prop::collection::vec((any::<i64>(), prop_oneof![Just(0i64), -3i64..3, any::<i64>()]), 0..40),
            jitter in prop_oneof![-5i64..5, any::<i64>()],
            known in prop::option::of((1u8..=16, 1u8..=64).prop_map(|(a, b)| Widths([a, a.max(b), 64]))),
        ) {
            let before: Vec<Reading> = pairs.iter().map(|(v, _)| Reading::Int(*v)).collect();
            let after: Vec<Reading> = pairs.iter().map(|(v, d)| Reading::Int(v.wrapping_add(*d))).collect();
            let base = base(before, known);
            let frame = Frame {
                group: crate::GroupIndex(0),
                ts_ms: base.ts_ms.wrapping_add(base.interval_ms).wrapping_add(jitter),
                values: after.clone(),
            };
            let change = encode(&base, &frame);
            let (ts_ms, _, values, widths) = apply(&base, &change.bits, &change.others).unwrap();
            prop_assert_eq!(ts_ms, frame.ts_ms);
            prop_assert_eq!(values, after);
            prop_assert_eq!(widths, change.widths);
        }

        #[test]
        fn any_bits_apply_or_misfit_without_panicking(
            bits in prop::collection::vec(any::<u8>(), 0..24),
            n in 0usize..20,
        ) {
            let base = base(vec![Reading::Int(1); n], Some(Widths([2, 8, 64])));
            let _ = apply(&base, &bits, &[]);
        }
    }
}
