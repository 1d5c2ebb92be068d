//! A model check of the buffer: random sequences of what the agent does to
//! it (seal, take for sending, acknowledge, fail, make room under a disk
//! cap, and power cuts) run against the real SQLite buffer and a small
//! in-memory model of what it promises. After every step:
//!
//! - sequence numbers strictly increase and never repeat, across power cuts;
//! - nothing acknowledged is ever listed or handed out again;
//! - nothing in flight is dropped or changed by the disk cap;
//! - every sample sealed is still buffered, acknowledged, or counted as
//!   dropped, and the samples dropped equal the samples in gap records
//!   (pending, buffered or acknowledged);
//! - a take hands out exactly what is sendable (oldest first without a live
//!   lane), so every unacknowledged batch is eventually sendable.
//!
//! Cases default to 64 of at most 40 steps; `PROPTEST_CASES` overrides.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;

use bess_protocol::{Batch, BatchSeq, Catalog, SiteId};

use super::fixtures::{catalog, frames};
use super::{SealRequest, SqliteBuffer};

/// More batches than any case seals.
const ALL: usize = 10_000;

#[derive(Debug, Clone)]
enum Op {
    /// Seal frames of these groups (0 measures, 1 is an alarm group; none
    /// seals a carrier), with the catalog or not, enforcing a disk cap of
    /// `cap_eighths`/8 of the bytes buffered or none.
    Seal {
        groups: Vec<u16>,
        with_catalog: bool,
        cap_eighths: Option<u8>,
    },
    /// Take up to `limit` batches for sending, the live lane first or not.
    Take { limit: usize, live: bool },
    /// The broker acknowledged the `pick`-th batch in flight.
    Acknowledge { pick: usize },
    /// Delivering the `pick`-th batch in flight failed.
    Fail { pick: usize },
    /// The uplink stopped.
    FailAll,
    /// Make room under a cap of `eighths`/8 of the bytes buffered.
    MakeRoom { eighths: u8 },
    /// Power cut: the files as they are on disk are opened again, with the
    /// wall clock at `now_ms` (possibly behind the counter).
    PowerCut { now_ms: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            proptest::collection::vec(0u16..2, 0..4),
            proptest::bool::weighted(0.2),
            proptest::option::weighted(0.2, 0u8..8),
        )
            .prop_map(|(groups, with_catalog, cap_eighths)| Op::Seal {
                groups,
                with_catalog,
                cap_eighths,
            }),
        3 => (1usize..4, any::<bool>()).prop_map(|(limit, live)| Op::Take { limit, live }),
        2 => any::<usize>().prop_map(|pick| Op::Acknowledge { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Fail { pick }),
        1 => Just(Op::FailAll),
        2 => (0u8..8).prop_map(|eighths| Op::MakeRoom { eighths }),
        1 => (0i64..3).prop_map(|now_ms| Op::PowerCut { now_ms }),
    ]
}

/// What the buffer promises, kept in memory.
#[derive(Default)]
struct Model {
    /// The highest sequence number a seal returned.
    last_seq: Option<u64>,
    /// Sealed, not acknowledged, and not (yet known to be) dropped by the cap.
    unacked: BTreeSet<u64>,
    /// Handed to the uplink and not settled, with the payload handed out.
    in_flight: BTreeMap<u64, Vec<u8>>,
    acknowledged: BTreeSet<u64>,
    samples_sealed: u64,
    samples_acknowledged: u64,
    /// Samples reported by the gap records of acknowledged batches.
    gap_samples_acknowledged: u64,
    /// Sum of `Dropped::samples` over every seal and make-room.
    samples_dropped: u64,
    /// Wall clock of the simulated agent: one second per seal.
    clock_ms: i64,
}

struct Harness {
    dir: tempfile::TempDir,
    path: PathBuf,
    buffer: SqliteBuffer,
    downsample: bool,
    catalog: Arc<Catalog>,
    model: Model,
    cuts: u32,
}

impl Harness {
    fn new(downsample: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buffer-0.sqlite");
        let mut buffer = SqliteBuffer::open(&path, 1).unwrap();
        let catalog = Arc::new(catalog());
        buffer.remember_catalog(&catalog).unwrap();
        let mut harness = Self {
            dir,
            path,
            buffer,
            downsample,
            catalog,
            model: Model {
                clock_ms: 1_000_000,
                ..Model::default()
            },
            cuts: 0,
        };
        harness.configure();
        harness
    }

    /// What the agent sets on every open.
    fn configure(&mut self) {
        self.buffer.set_downsampling(
            self.downsample
                .then_some(std::time::Duration::from_secs(60)),
        );
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Seal {
                groups,
                with_catalog,
                cap_eighths,
            } => self.seal(groups, *with_catalog, *cap_eighths),
            Op::Take { limit, live } => self.take(*limit, *live),
            Op::Acknowledge { pick } => {
                let Some(seq) = self.pick_in_flight(*pick) else {
                    return;
                };
                let payload = self.model.in_flight.remove(&seq).unwrap();
                let batch = Batch::decode(&payload).unwrap();
                self.model.samples_acknowledged += batch.sample_count() as u64;
                self.model.gap_samples_acknowledged +=
                    batch.gaps.iter().map(|g| g.samples).sum::<u64>();
                self.buffer.remove(&[BatchSeq(seq)]).unwrap();
                self.model.unacked.remove(&seq);
                self.model.acknowledged.insert(seq);
            }
            Op::Fail { pick } => {
                let Some(seq) = self.pick_in_flight(*pick) else {
                    return;
                };
                self.buffer.settle(&[BatchSeq(seq)]);
                self.model.in_flight.remove(&seq);
            }
            Op::FailAll => {
                self.buffer.settle_all();
                self.model.in_flight.clear();
            }
            Op::MakeRoom { eighths } => {
                let cap = self.buffer.payload_bytes().unwrap() * u64::from(*eighths) / 8;
                let dropped = self.buffer.make_room(cap).unwrap();
                self.model.samples_dropped += dropped.samples;
                self.after_cap(cap);
            }
            Op::PowerCut { now_ms } => self.power_cut(*now_ms),
        }
    }

    fn seal(&mut self, groups: &[u16], with_catalog: bool, cap_eighths: Option<u8>) {
        self.model.clock_ms += 1000;
        let frames = if groups.is_empty() {
            Vec::new()
        } else {
            frames(groups, self.model.clock_ms)
        };
        let samples: u64 = frames.iter().map(|f| f.values.len() as u64).sum();
        let cap_bytes =
            cap_eighths.map(|e| self.buffer.payload_bytes().unwrap() * u64::from(e) / 8);
        let sealed = self
            .buffer
            .seal_batch(SealRequest {
                site: SiteId::new("site").unwrap(),
                catalog: self.catalog.clone(),
                with_catalog,
                frames,
                sealed_at_ms: self.model.clock_ms,
                cap_bytes,
            })
            .unwrap();
        let seq = sealed.seq().0;
        assert!(
            self.model.last_seq.is_none_or(|last| seq > last),
            "sequence {seq} after {:?}",
            self.model.last_seq
        );
        assert_eq!(sealed.summary.samples as u64, samples);
        self.model.last_seq = Some(seq);
        self.model.unacked.insert(seq);
        self.model.samples_sealed += samples;
        self.model.samples_dropped += sealed.dropped.samples;
        if let Some(cap) = cap_bytes {
            self.after_cap(cap);
        }
    }

    fn take(&mut self, limit: usize, live: bool) {
        let sendable: Vec<u64> = self
            .model
            .unacked
            .iter()
            .filter(|seq| !self.model.in_flight.contains_key(seq))
            .copied()
            .collect();
        let live_since = live.then_some(self.model.clock_ms - 3000);
        let taken = self.buffer.take_for_sending(live_since, limit).unwrap();
        let seqs: Vec<u64> = taken.iter().map(|b| b.seq.0).collect();
        assert_eq!(
            seqs.len(),
            limit.min(sendable.len()),
            "took {seqs:?} of {sendable:?}"
        );
        if !live {
            assert_eq!(seqs, sendable[..seqs.len()], "oldest first");
        }
        for batch in taken {
            assert!(
                sendable.contains(&batch.seq.0),
                "{} handed out but not sendable",
                batch.seq
            );
            self.model.in_flight.insert(batch.seq.0, batch.payload);
        }
    }

    fn pick_in_flight(&self, pick: usize) -> Option<u64> {
        let n = self.model.in_flight.len();
        (n > 0).then(|| *self.model.in_flight.keys().nth(pick % n).unwrap())
    }

    /// After the disk cap ran: forget what it dropped; it met the cap unless
    /// only batches in flight or without frames are left.
    fn after_cap(&mut self, cap: u64) {
        let rows = self.rows();
        let present: BTreeSet<u64> = rows.keys().copied().collect();
        assert!(
            present.is_subset(&self.model.unacked),
            "the cap brought back {:?}",
            present.difference(&self.model.unacked).collect::<Vec<_>>()
        );
        self.model.unacked = present;
        if self.buffer.payload_bytes().unwrap() > cap {
            for (seq, (_, batch)) in &rows {
                assert!(
                    self.model.in_flight.contains_key(seq) || batch.frames.is_empty(),
                    "over the cap of {cap} bytes, yet batch {seq} still has frames"
                );
            }
        }
    }

    /// Power cut: copy the file and its write-ahead log as they are on disk
    /// (every seal was synced), abandon the old connection, open the copy.
    fn power_cut(&mut self, now_ms: i64) {
        self.cuts += 1;
        let copy = self.dir.path().join(format!("buffer-{}.sqlite", self.cuts));
        copy_as_on_disk(&self.path, &copy);
        let abandoned =
            std::mem::replace(&mut self.buffer, SqliteBuffer::open(&copy, now_ms).unwrap());
        drop(abandoned);
        self.path = copy;
        self.configure();
        self.model.in_flight.clear();
        let next = self.buffer.stats().unwrap().next_seq;
        assert!(
            self.model.last_seq.is_none_or(|last| next > last),
            "counter at {next} after a power cut, {:?} already used",
            self.model.last_seq
        );
    }

    /// Every buffered batch, by sequence: its payload and decoded form.
    fn rows(&self) -> BTreeMap<u64, (Vec<u8>, Batch)> {
        self.buffer
            .oldest(None, ALL)
            .unwrap()
            .into_iter()
            .map(|b| {
                let batch = Batch::decode(&b.payload).unwrap();
                assert_eq!(batch.seq, b.seq, "the payload carries its own number");
                (b.seq.0, (b.payload, batch))
            })
            .collect()
    }

    fn check(&self) {
        let rows = self.rows();
        let present: BTreeSet<u64> = rows.keys().copied().collect();
        assert_eq!(present, self.model.unacked, "buffered batches");
        assert!(
            present.is_disjoint(&self.model.acknowledged),
            "acknowledged batches came back"
        );
        for (seq, payload) in &self.model.in_flight {
            assert_eq!(
                rows.get(seq).map(|(p, _)| p),
                Some(payload),
                "batch {seq} in flight was dropped or changed"
            );
        }
        let buffered: u64 = rows.values().map(|(_, b)| b.sample_count() as u64).sum();
        assert_eq!(
            buffered + self.model.samples_acknowledged + self.model.samples_dropped,
            self.model.samples_sealed,
            "every sample sealed is buffered, acknowledged or dropped"
        );
        let pending: i64 = self
            .buffer
            .conn
            .query_row(
                "SELECT coalesce(sum(samples), 0) FROM pending_gaps",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let carried: u64 = rows
            .values()
            .flat_map(|(_, b)| &b.gaps)
            .map(|g| g.samples)
            .sum();
        assert_eq!(
            pending as u64 + carried + self.model.gap_samples_acknowledged,
            self.model.samples_dropped,
            "samples dropped equal samples in gap records"
        );
    }

    /// The end of a case: after the uplink stops and after a power cut,
    /// every unacknowledged batch is handed out again.
    fn drain(&mut self) {
        for cut in [false, true] {
            if cut {
                self.power_cut(0);
            } else {
                self.buffer.settle_all();
                self.model.in_flight.clear();
            }
            let taken: BTreeSet<u64> = self
                .buffer
                .take_for_sending(None, ALL)
                .unwrap()
                .iter()
                .map(|b| b.seq.0)
                .collect();
            assert_eq!(
                taken, self.model.unacked,
                "every unacknowledged batch is sendable"
            );
        }
    }
}

fn copy_as_on_disk(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
    let wal = |p: &Path| PathBuf::from(format!("{}-wal", p.display()));
    if wal(from).exists() {
        std::fs::copy(wal(from), wal(to)).unwrap();
    }
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_buffer_keeps_its_promises_under_any_sequence_of_operations(
        ops in proptest::collection::vec(op(), 1..=40),
        downsample in any::<bool>(),
    ) {
        let mut harness = Harness::new(downsample);
        for op in &ops {
            harness.apply(op);
            harness.check();
        }
        harness.drain();
        harness.check();
    }
}
