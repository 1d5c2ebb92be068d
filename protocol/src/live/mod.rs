//! The live lane's messages: the newest frames of a site, sent the moment
//! they are read, each frame either whole or as the change since the
//! previous frame of its group on the same chain.
//!
//! A live message is not a batch: it has no sequence number, is never
//! buffered on the edge's disk and may be lost. What it promises instead is
//! that a reader which decodes a frame gets exactly the readings the edge
//! read (so the value shown live is the value stored later), and that a
//! reader which missed a message notices and waits for whole frames rather
//! than applying a change to the wrong base.
//!
//! A *chain* is the run of messages one [`LiveEncoder`] sends between
//! restarts: it has a random id and counts its messages (mod 256). A
//! message names the chain and its place in it; a reader accepts a change
//! only if the message directly follows the last one it took from that
//! chain and holds the frame the change is based on. The encoder starts a
//! new chain when told a message was lost ([`LiveEncoder::restart`]), and
//! sends each group whole at least every `keyframe_every`, so a reader that
//! joins late catches up within that time.
//!
//! Layout (`SPEC.md`, "Live messages"): one flags byte (version, catalog
//! hash present), the chain id, the counter, the catalog hash (8 bytes,
//! big-endian) when flagged, then the frames (`wire.rs`): a change carries
//! a bit per slot that changed and only those slots' differences.

use std::collections::HashMap;

mod coded;
mod wire;

use wire::WireFrame;

use crate::{CatalogHash, Frame, GroupIndex, Reading};

/// The version this crate writes, in the flags byte's high nibble. Readers
/// also take version 1 (changes as a mask and byte-aligned deltas).
pub const LIVE_FORMAT_VERSION: u8 = 2;
const OLDEST_READ_VERSION: u8 = 1;
const FLAG_HAS_CATALOG_HASH: u8 = 0b0000_0001;
const KNOWN_FLAGS: u8 = FLAG_HAS_CATALOG_HASH;
/// How often an edge sends each group whole unless configured otherwise: a
/// reader that starts this far back into the live topic decodes every
/// group at once.
pub const DEFAULT_KEYFRAME_EVERY_MS: i64 = 30_000;
/// Largest live message accepted (a guard, far above any site's one poll).
pub const MAX_LIVE_BYTES: usize = 4 * 1024 * 1024;

/// Why bytes are not a live message a reader can use.
#[derive(Debug, thiserror::Error)]
pub enum LiveDecodeError {
    #[error("live message of {0} bytes is shorter than its header")]
    Truncated(usize),
    #[error("live message of {0} bytes exceeds the {MAX_LIVE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error(
        "unsupported live format version {0} (this build reads versions {OLDEST_READ_VERSION} to {LIVE_FORMAT_VERSION})"
    )]
    UnsupportedVersion(u8),
    #[error("unknown live flags {0:#06b}")]
    UnknownFlags(u8),
    #[error("live body is not valid: {0}")]
    Body(#[from] wire::WireError),
}

/// What a reader keeps of one group: its last frame on this chain.
#[derive(Debug, Clone)]
struct GroupBase {
    ts_ms: i64,
    /// The previous frame's interval (0 until two frames were seen).
    interval_ms: i64,
    values: Vec<Reading>,
    /// The code widths its changes use (format 2), once announced.
    widths: Option<coded::Widths>,
}

impl GroupBase {
    fn interval_to(&self, ts_ms: i64) -> i64 {
        ts_ms.wrapping_sub(self.ts_ms)
    }
}

/// The edge's side: turns the frames of one site into live messages.
#[derive(Debug)]
pub struct LiveEncoder {
    catalog_hash: CatalogHash,
    keyframe_every_ms: i64,
    chain: u8,
    counter: u8,
    bases: HashMap<u16, (GroupBase, i64)>,
    next_chain: u64,
}

impl LiveEncoder {
    /// An encoder for frames of this catalog; `chain_seed` picks the first
    /// chain id (use something that differs between starts, e.g. the time).
    pub fn new(catalog_hash: CatalogHash, keyframe_every_ms: i64, chain_seed: u64) -> Self {
        let mut encoder = Self {
            catalog_hash,
            keyframe_every_ms: keyframe_every_ms.max(1),
            chain: 0,
            counter: 0,
            bases: HashMap::new(),
            next_chain: chain_seed,
        };
        encoder.restart();
        encoder
    }

    /// A message may have been lost: start a new chain, so every group goes
    /// whole next.
    pub fn restart(&mut self) {
        self.next_chain = mix(self.next_chain.wrapping_add(1));
        let chain = (self.next_chain & 0xff) as u8;
        // A new chain id always differs from the one before.
        self.chain = if chain == self.chain {
            chain.wrapping_add(1)
        } else {
            chain
        };
        self.counter = 0;
        self.bases.clear();
    }

    /// The message carrying `frames` (in the order they were read). Each
    /// frame goes whole if its group has no base on this chain or its last
    /// whole frame is `keyframe_every` old, else as a change.
    pub fn encode(&mut self, frames: &[Frame]) -> Vec<u8> {
        let mut wire = Vec::with_capacity(frames.len());
        let mut any_whole = false;
        for frame in frames {
            let group = frame.group.0;
            let change = match self.bases.get(&group) {
                Some((base, whole_at))
                    if frame.ts_ms.wrapping_sub(*whole_at) < self.keyframe_every_ms
                        && base.values.len() == frame.values.len() =>
                {
                    Some((
                        coded::encode(base, frame),
                        base.interval_to(frame.ts_ms),
                        *whole_at,
                    ))
                }
                _ => None,
            };
            // A whole frame starts its group's intervals afresh, so a
            // reader that has no base yet counts them the same way.
            let (interval, whole_at, widths) = match change {
                Some((change, interval, whole_at)) => {
                    wire.push(WireFrame::Coded {
                        group,
                        bits: change.bits,
                        others: change.others,
                    });
                    (interval, whole_at, change.widths)
                }
                None => {
                    any_whole = true;
                    wire.push(WireFrame::Whole {
                        group,
                        ts_ms: frame.ts_ms,
                        values: frame.values.clone(),
                    });
                    (0, frame.ts_ms, None)
                }
            };
            self.bases.insert(
                group,
                (
                    GroupBase {
                        ts_ms: frame.ts_ms,
                        interval_ms: interval,
                        values: frame.values.clone(),
                        widths,
                    },
                    whole_at,
                ),
            );
        }
        let mut out = Vec::with_capacity(16 + frames.len() * 16);
        let flags = (LIVE_FORMAT_VERSION << 4) | if any_whole { FLAG_HAS_CATALOG_HASH } else { 0 };
        out.push(flags);
        out.push(self.chain);
        out.push(self.counter);
        if any_whole {
            out.extend_from_slice(&self.catalog_hash.0.to_be_bytes());
        }
        wire::encode(&wire, &mut out);
        self.counter = self.counter.wrapping_add(1);
        out
    }
}

/// What a reader got out of one live message.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveUpdate {
    /// The catalog the frames were read against.
    pub catalog_hash: CatalogHash,
    /// The frames that could be decoded, in message order.
    pub frames: Vec<Frame>,
    /// Changes that could not be applied (the message did not follow the
    /// last one taken, or its group had no base): the reader shows them
    /// once the group's next whole frame arrives.
    pub skipped: usize,
}

/// The collector's side: one per site, reads that site's live messages in
/// the order they were sent.
#[derive(Debug, Default)]
pub struct LiveDecoder {
    /// (chain, counter) of the last message taken, and the catalog its
    /// chain named.
    position: Option<(u8, u8, CatalogHash)>,
    bases: HashMap<u16, GroupBase>,
}

impl LiveDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decode the next message of this site.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<LiveUpdate, LiveDecodeError> {
        if bytes.len() < 3 {
            return Err(LiveDecodeError::Truncated(bytes.len()));
        }
        if bytes.len() > MAX_LIVE_BYTES {
            return Err(LiveDecodeError::TooLarge(bytes.len()));
        }
        let version = bytes[0] >> 4;
        if !(OLDEST_READ_VERSION..=LIVE_FORMAT_VERSION).contains(&version) {
            return Err(LiveDecodeError::UnsupportedVersion(version));
        }
        let flags = bytes[0] & 0x0f;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(LiveDecodeError::UnknownFlags(flags));
        }
        let (chain, counter) = (bytes[1], bytes[2]);
        let (hash, body) = if flags & FLAG_HAS_CATALOG_HASH != 0 {
            let hash: [u8; 8] = bytes
                .get(3..11)
                .ok_or(LiveDecodeError::Truncated(bytes.len()))?
                .try_into()
                .expect("eight bytes");
            (Some(CatalogHash(u64::from_be_bytes(hash))), &bytes[11..])
        } else {
            (None, &bytes[3..])
        };
        let wire = wire::decode(body, version)?;

        let follows = matches!(self.position,
            Some((c, n, _)) if c == chain && n.wrapping_add(1) == counter);
        let chain_hash = match (hash, self.position) {
            (Some(hash), _) => hash,
            (None, Some((_, _, hash))) if follows => hash,
            // A change with no chain to apply it to: nothing to decode.
            (None, _) => {
                self.bases.clear();
                self.position = None;
                return Ok(LiveUpdate {
                    catalog_hash: CatalogHash(0),
                    frames: Vec::new(),
                    skipped: wire.len(),
                });
            }
        };
        if !follows || self.position.is_some_and(|(_, _, h)| h != chain_hash) {
            // A new chain, or a lost message: no base can be trusted.
            self.bases.clear();
        }
        self.position = Some((chain, counter, chain_hash));

        let mut frames = Vec::with_capacity(wire.len());
        let mut skipped = 0;
        for frame in wire {
            match frame {
                WireFrame::Whole {
                    group,
                    ts_ms,
                    values,
                } => {
                    self.bases.insert(
                        group,
                        GroupBase {
                            ts_ms,
                            interval_ms: 0,
                            values: values.clone(),
                            widths: None,
                        },
                    );
                    frames.push(Frame {
                        group: GroupIndex(group),
                        ts_ms,
                        values,
                    });
                }
                WireFrame::Coded {
                    group,
                    bits,
                    others,
                } => {
                    let Some(base) = self.bases.get_mut(&group) else {
                        skipped += 1;
                        continue;
                    };
                    match coded::apply(base, &bits, &others) {
                        Ok((ts_ms, interval_ms, values, widths)) => {
                            *base = GroupBase {
                                ts_ms,
                                interval_ms,
                                values: values.clone(),
                                widths,
                            };
                            frames.push(Frame {
                                group: GroupIndex(group),
                                ts_ms,
                                values,
                            });
                        }
                        Err(coded::Misfit) => {
                            // A change that does not fit its base: drop the base.
                            self.bases.remove(&group);
                            skipped += 1;
                        }
                    }
                }
                WireFrame::Masked {
                    group,
                    ts_jitter_ms,
                    mask,
                    deltas,
                    others,
                } => {
                    let Some(base) = self.bases.get_mut(&group) else {
                        skipped += 1;
                        continue;
                    };
                    match apply_masked(base, ts_jitter_ms, &mask, &deltas, &others) {
                        Some(frame_values) => {
                            frames.push(Frame {
                                group: GroupIndex(group),
                                ts_ms: base.ts_ms,
                                values: frame_values,
                            });
                        }
                        None => {
                            self.bases.remove(&group);
                            skipped += 1;
                        }
                    }
                }
            }
        }
        Ok(LiveUpdate {
            catalog_hash: chain_hash,
            frames,
            skipped,
        })
    }
}

/// Apply a version 1 change to its base (updating the base); `None` if it
/// does not fit.
fn apply_masked(
    base: &mut GroupBase,
    ts_jitter_ms: i64,
    mask: &[u8],
    deltas: &[i64],
    others: &[(u16, Reading)],
) -> Option<Vec<Reading>> {
    if mask.len() > base.values.len().div_ceil(8) {
        return None;
    }
    let mut values = base.values.clone();
    let mut others = others.iter().peekable();
    let mut deltas = deltas.iter();
    for (slot, value) in values.iter_mut().enumerate() {
        let flagged = mask
            .get(slot / 8)
            .is_some_and(|b| b & (1 << (slot % 8)) != 0);
        if let Some((_, reading)) = others.next_if(|(s, _)| usize::from(*s) == slot) {
            if flagged {
                return None;
            }
            *value = *reading;
        } else if flagged {
            let Reading::Int(before) = value else {
                return None;
            };
            *before = before.wrapping_add(*deltas.next()?);
        }
    }
    let mask_beyond = mask
        .iter()
        .enumerate()
        .any(|(i, b)| (0..8).any(|bit| b & (1 << bit) != 0 && i * 8 + bit >= base.values.len()));
    if mask_beyond || others.next().is_some() || deltas.next().is_some() {
        return None;
    }
    let interval = base.interval_ms.wrapping_add(ts_jitter_ms);
    base.ts_ms = base.ts_ms.wrapping_add(interval);
    base.interval_ms = interval;
    base.values.clone_from(&values);
    Some(values)
}

/// SplitMix64's finalizer: chain ids from a seed.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MissingReason;
    use proptest::prelude::*;

    fn frame(group: u16, ts_ms: i64, values: &[Reading]) -> Frame {
        Frame {
            group: GroupIndex(group),
            ts_ms,
            values: values.to_vec(),
        }
    }

    fn ints(values: &[i64]) -> Vec<Reading> {
        values.iter().map(|v| Reading::Int(*v)).collect()
    }

    #[test]
    fn whole_frames_then_changes_decode_to_the_frames_read() {
        let mut encoder = LiveEncoder::new(CatalogHash(42), 10_000, 1);
        let mut decoder = LiveDecoder::new();
        let sent = [
            vec![
                frame(0, 1_000, &ints(&[5000, 17, -3])),
                frame(1, 1_004, &[Reading::Float(1.5)]),
            ],
            vec![
                frame(0, 2_001, &ints(&[5003, 17, -4])),
                frame(1, 2_003, &[Reading::Float(1.5)]),
            ],
            vec![
                frame(
                    0,
                    2_999,
                    &[
                        Reading::Int(5001),
                        Reading::Missing(MissingReason::Timeout),
                        Reading::Int(-4),
                    ],
                ),
                frame(1, 3_004, &[Reading::Float(2.25)]),
            ],
            vec![frame(0, 4_000, &ints(&[5001, 18, -4]))],
        ];
        for frames in &sent {
            let update = decoder.decode(&encoder.encode(frames)).unwrap();
            assert_eq!(&update.frames, frames);
            assert_eq!(update.skipped, 0);
            assert_eq!(update.catalog_hash, CatalogHash(42));
        }
    }

    #[test]
    fn a_change_costs_a_bit_a_still_value_and_a_few_a_small_move() {
        let mut encoder = LiveEncoder::new(CatalogHash(42), 10_000, 1);
        let values = |s: i64| {
            ints(
                &(0..20)
                    .map(|i| 5000 + i * 100 + (s * 7 + i) % 9 - 4)
                    .collect::<Vec<_>>(),
            )
        };
        let first = encoder.encode(&[frame(0, 1_000, &values(0))]);
        assert!(first.len() > 11 + 20 * 2, "{}", first.len());
        // 20 moves of +7 or -2: header 3, frame count, head and length 3,
        // then bits: the first interval (21), widths (17), 4 or 7 a value.
        let change = encoder.encode(&[frame(0, 2_002, &values(1))]);
        assert!(
            change.len() <= 3 + 3 + 17,
            "a change of 20 values took {} bytes",
            change.len()
        );
        // One value moved far: the others cost a bit each, the jitter a few.
        let mut steady = values(1);
        steady[3] = Reading::Int(1);
        let one_changed = encoder.encode(&[frame(0, 3_001, &steady)]);
        assert!(one_changed.len() <= 3 + 3 + 6, "{}", one_changed.len());
        // Nothing moved, on time: the jitter's one bit.
        let still = encoder.encode(&[frame(0, 4_000, &steady)]);
        assert_eq!(still.len(), 3 + 3 + 1, "{still:?}");
        let mut decoder = LiveDecoder::new();
        for (message, ts_ms, values) in [
            (&first, 1_000, values(0)),
            (&change, 2_002, values(1)),
            (&one_changed, 3_001, steady.clone()),
            (&still, 4_000, steady.clone()),
        ] {
            assert_eq!(
                decoder.decode(message).unwrap().frames,
                vec![frame(0, ts_ms, &values)]
            );
        }
    }

    #[test]
    fn version_1_messages_still_decode() {
        // flags (version 1, catalog hash), chain 9, counter 0, hash 42,
        // one whole frame of group 0 at ts 1000: [5000, 17].
        let whole = [
            &[0x11, 9, 0][..],
            &42u64.to_be_bytes(),
            &[1, 0x01, 0xd0, 0x0f, 2, 0, 0x90, 0x4e, 0x22],
        ]
        .concat();
        // Counter 1, a change: head 0, jitter +2 (interval 1002), mask slot 0,
        // delta -3; so [4997, 17] at 2002.
        let change = [0x10, 9, 1, 1, 0x00, 0xd4, 0x0f, 1, 0x01, 0x05];
        let mut decoder = LiveDecoder::new();
        assert_eq!(
            decoder.decode(&whole).unwrap().frames,
            vec![frame(0, 1_000, &ints(&[5000, 17]))]
        );
        assert_eq!(
            decoder.decode(&change).unwrap().frames,
            vec![frame(0, 2_002, &ints(&[4997, 17]))]
        );
    }

    #[test]
    fn a_lost_message_makes_the_reader_wait_for_whole_frames() {
        let mut encoder = LiveEncoder::new(CatalogHash(7), 10_000, 3);
        let mut decoder = LiveDecoder::new();
        decoder
            .decode(&encoder.encode(&[frame(0, 1_000, &ints(&[1]))]))
            .unwrap();
        let _lost = encoder.encode(&[frame(0, 2_000, &ints(&[2]))]);
        let after_loss = decoder
            .decode(&encoder.encode(&[frame(0, 3_000, &ints(&[3]))]))
            .unwrap();
        assert_eq!(after_loss.frames, vec![]);
        assert_eq!(after_loss.skipped, 1);
        // The edge learns of the loss and starts a new chain: whole frames again.
        encoder.restart();
        let resumed = decoder
            .decode(&encoder.encode(&[frame(0, 4_000, &ints(&[4]))]))
            .unwrap();
        assert_eq!(resumed.frames, vec![frame(0, 4_000, &ints(&[4]))]);
    }

    #[test]
    fn a_reader_that_joins_late_shows_a_group_from_its_next_whole_frame() {
        let mut encoder = LiveEncoder::new(CatalogHash(7), 3_000, 3);
        for s in 0..2 {
            encoder.encode(&[frame(0, s * 1000, &ints(&[s]))]);
        }
        let mut late = LiveDecoder::new();
        let mut shown = Vec::new();
        for s in 2..8 {
            shown.extend(
                late.decode(&encoder.encode(&[frame(0, s * 1000, &ints(&[s]))]))
                    .unwrap()
                    .frames,
            );
        }
        assert_eq!(
            shown.first().map(|f| f.ts_ms),
            Some(3_000),
            "keyframe every 3 s"
        );
        assert_eq!(shown.len(), 5);
    }

    #[test]
    fn a_restarted_edge_starts_a_chain_the_reader_does_not_confuse_with_the_old_one() {
        let mut first = LiveEncoder::new(CatalogHash(1), 10_000, 5);
        let mut decoder = LiveDecoder::new();
        decoder
            .decode(&first.encode(&[frame(0, 1_000, &ints(&[10, 20]))]))
            .unwrap();
        let mut second = LiveEncoder::new(CatalogHash(2), 10_000, 6);
        let whole = decoder
            .decode(&second.encode(&[frame(0, 2_000, &ints(&[11]))]))
            .unwrap();
        assert_eq!(whole.catalog_hash, CatalogHash(2));
        assert_eq!(whole.frames, vec![frame(0, 2_000, &ints(&[11]))]);
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        let mut decoder = LiveDecoder::new();
        assert!(matches!(
            decoder.decode(&[0x10]),
            Err(LiveDecodeError::Truncated(1))
        ));
        assert!(matches!(
            decoder.decode(&[0x30, 0, 0]),
            Err(LiveDecodeError::UnsupportedVersion(3))
        ));
        assert!(matches!(
            decoder.decode(&[0x2f, 0, 0]),
            Err(LiveDecodeError::UnknownFlags(_))
        ));
        assert!(matches!(
            decoder.decode(&[0x21, 0, 0, 1]),
            Err(LiveDecodeError::Truncated(4))
        ));
        assert!(matches!(
            decoder.decode(&[0x20, 0, 0, 0xff, 0xff]),
            Err(LiveDecodeError::Body(_))
        ));
    }

    fn reading() -> impl Strategy<Value = Reading> {
        prop_oneof![
            6 => (-3i64..3).prop_map(Reading::Int),
            2 => any::<i64>().prop_map(Reading::Int),
            1 => (-1e6f64..1e6).prop_map(Reading::Float),
            1 => Just(Reading::Missing(MissingReason::Timeout)),
            1 => any::<u8>().prop_map(|c| Reading::Missing(MissingReason::Exception(c))),
        ]
    }

    proptest! {
        /// Whatever is read, lost or restarted, a frame the reader decodes is
        /// exactly a frame the edge read; and while no message was lost
        /// unnoticed since the chain began, every frame is decoded.
        #[test]
        fn decoded_frames_are_always_frames_that_were_read(
            steps in prop::collection::vec(
                (prop::collection::vec((0u16..3, 1i64..3000, prop::collection::vec(reading(), 3)), 1..4),
                 0u8..10),
                1..40),
        ) {
            let mut encoder = LiveEncoder::new(CatalogHash(9), 5_000, 11);
            let mut decoder = LiveDecoder::new();
            let mut ts = [0i64; 3];
            let mut chain_intact = true;
            for (frames, fate) in steps {
                let frames: Vec<Frame> = frames.into_iter().map(|(group, step, values)| {
                    ts[group as usize] += step;
                    frame(group, ts[group as usize], &values)
                }).collect();
                let bytes = encoder.encode(&frames);
                match fate {
                    // Lost, and the edge learns of it.
                    0 => { encoder.restart(); chain_intact = true; }
                    // Lost without a word.
                    1 => chain_intact = false,
                    _ => {
                        let update = decoder.decode(&bytes).unwrap();
                        for f in &update.frames { prop_assert!(frames.contains(f), "{f:?} not in {frames:?}"); }
                        prop_assert_eq!(update.frames.len() + update.skipped, frames.len());
                        if chain_intact {
                            prop_assert_eq!(update.skipped, 0);
                        }
                    }
                }
            }
        }
    }
}
