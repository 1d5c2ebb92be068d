//! The queue of sealed batches and the sequence counter that numbers them.
//!
//! Sealed batches wait here, encoded exactly as they will be sent, until the
//! uplink confirms delivery; only then are they removed.
//!
//! The sequence counter lives in the same file and moves in the same
//! transaction as the batch it numbers, so a number is never handed out
//! twice, even across a power cut. `synchronous = FULL` makes each seal
//! durable before the batch can be sent (a WAL mode with `NORMAL` could roll
//! back a batch that was already delivered and then reuse its number).
//! A seal that fails (the batch does not encode) rolls back whole: no batch
//! is stored and no number is used.
//!
//! Invariants:
//! - Sequence numbers strictly increase and never repeat, across restarts
//!   and even when the buffer was emptied: a new file starts at
//!   `now_ms * 1000`, an existing one continues from its counter.
//! - A batch is handed to an uplink at most once until it is settled
//!   (delivered, failed or never sent); batches in flight are remembered in
//!   memory only, so after a restart every batch left is sendable again.
//! - An acknowledged batch is deleted and never handed out again.

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use bess_protocol::{Batch, BatchSeq, Catalog, Frame, Gap, SiteId};

use super::content::{content_of, event_groups};
use super::disk_cap::Dropped;
use super::gaps::take_pending;
use super::{BatchContent, BufferError, SqliteBuffer};

/// What the buffer knows about a batch besides its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct SealSummary {
    pub frames: u32,
    pub samples: u32,
    pub first_ts_ms: Option<i64>,
    pub last_ts_ms: Option<i64>,
    pub sealed_at_ms: i64,
}

impl SealSummary {
    /// The summary of `frames` sealed at `sealed_at_ms`.
    pub fn of(frames: &[Frame], sealed_at_ms: i64) -> Self {
        Self {
            frames: frames.len() as u32,
            samples: frames.iter().map(|f| f.values.len() as u32).sum(),
            first_ts_ms: frames.iter().map(|f| f.ts_ms).min(),
            last_ts_ms: frames.iter().map(|f| f.ts_ms).max(),
            sealed_at_ms,
        }
    }
}

/// Frames to seal into the next numbered batch.
#[derive(Debug, Clone)]
pub struct SealRequest {
    pub site: SiteId,
    /// The catalog the frames were read against: its hash goes into the
    /// batch, its event groups decide the batch's content class.
    pub catalog: Arc<Catalog>,
    /// Carry the catalog itself in this batch.
    pub with_catalog: bool,
    /// No frames seals a carrier for the pending gap records.
    pub frames: Vec<Frame>,
    pub sealed_at_ms: i64,
    /// Enforce the disk cap (bytes of sealed batches) right after sealing.
    pub cap_bytes: Option<u64>,
}

/// What a seal stored.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The batch as stored: its sequence number and the gap records it carries.
    pub batch: Batch,
    pub summary: SealSummary,
    pub content: BatchContent,
    /// Size of the encoded batch.
    pub bytes: usize,
    /// What enforcing the disk cap after the seal dropped.
    pub dropped: Dropped,
}

impl Sealed {
    pub fn seq(&self) -> BatchSeq {
        self.batch.seq
    }
}

#[derive(Debug, Clone)]
pub struct StoredBatch {
    pub seq: BatchSeq,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct BufferStats {
    pub batches: u64,
    pub pending_gaps: u64,
    pub bytes: u64,
    pub oldest_sealed_at_ms: Option<i64>,
    pub oldest_seq: Option<u64>,
    pub next_seq: u64,
}

/// Start the counter of a new file at `now_ms * 1000`, so it never reuses a
/// number an earlier buffer sent; an existing counter is left alone.
pub(super) fn seed_sequence(conn: &Connection, now_ms: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('next_seq', ?1)",
        params![first_seq(now_ms)],
    )?;
    Ok(())
}

/// The first number of a buffer started at `now_ms`.
pub(super) fn first_seq(now_ms: i64) -> i64 {
    now_ms.max(1).saturating_mul(1000)
}

impl SqliteBuffer {
    /// Seal `request.frames` into the next numbered batch: assign the
    /// sequence number, take the pending gap records, encode and store the
    /// batch, all in one transaction; then enforce the disk cap if asked.
    pub fn seal_batch(&mut self, request: SealRequest) -> Result<Sealed, BufferError> {
        let SealRequest {
            site,
            catalog,
            with_catalog,
            frames,
            sealed_at_ms,
            cap_bytes,
        } = request;
        let catalog_hash = catalog.hash();
        let content = if frames.is_empty() {
            BatchContent::Carrier
        } else {
            let events = self
                .event_groups
                .entry(catalog_hash)
                .or_insert_with(|| event_groups(&catalog));
            content_of(&frames, events)
        };
        let summary = SealSummary::of(&frames, sealed_at_ms);
        let mut batch = Batch {
            site,
            seq: BatchSeq(0),
            catalog_hash,
            catalog: with_catalog.then(|| Catalog::clone(&catalog)),
            frames,
            gaps: Vec::new(),
        };
        let mut bytes = 0;
        let signer = self.signer.clone();
        self.seal_with_content(summary, content, |seq, gaps| {
            batch.seq = seq;
            batch.gaps = gaps;
            let payload = super::encode_for_uplink(&batch, signer.as_deref())?;
            bytes = payload.len();
            Ok(payload)
        })?;
        let dropped = match cap_bytes {
            Some(cap) => self.make_room(cap)?,
            None => Dropped::default(),
        };
        Ok(Sealed {
            batch,
            summary,
            content,
            bytes,
            dropped,
        })
    }

    /// Seal a payload the caller encodes from the assigned sequence number
    /// and the pending gap records, all in one transaction. For payloads the
    /// buffer does not build itself (tests, tools); the agent seals with
    /// [`SqliteBuffer::seal_batch`].
    pub fn seal(
        &mut self,
        summary: SealSummary,
        encode: impl FnOnce(BatchSeq, Vec<Gap>) -> Result<Vec<u8>, bess_protocol::EncodeError>,
    ) -> Result<BatchSeq, BufferError> {
        self.seal_with_content(summary, BatchContent::Mixed, encode)
    }

    /// [`SqliteBuffer::seal`] with the content class the disk cap drops by.
    pub fn seal_with_content(
        &mut self,
        summary: SealSummary,
        content: BatchContent,
        encode: impl FnOnce(BatchSeq, Vec<Gap>) -> Result<Vec<u8>, bess_protocol::EncodeError>,
    ) -> Result<BatchSeq, BufferError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let next: i64 = tx.query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
            r.get(0)
        })?;
        let seq = BatchSeq(next as u64);
        let gaps = take_pending(&tx)?;
        let payload = encode(seq, gaps)?;
        tx.execute(
            "INSERT INTO batches (seq, sealed_at_ms, frames, samples, first_ts_ms, last_ts_ms, payload, content)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                next,
                summary.sealed_at_ms,
                summary.frames,
                summary.samples,
                summary.first_ts_ms,
                summary.last_ts_ms,
                payload,
                content as i64
            ],
        )?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'next_seq'",
            params![next + 1],
        )?;
        tx.commit()?;
        Ok(seq)
    }

    /// Bytes of sealed batches waiting in the buffer.
    pub fn payload_bytes(&self) -> Result<u64, BufferError> {
        let bytes: i64 = self.conn.query_row(
            "SELECT coalesce(sum(length(payload)), 0) FROM batches",
            [],
            |r| r.get(0),
        )?;
        Ok(bytes as u64)
    }

    /// Up to `limit` batches not yet in flight, marked in flight in the
    /// same step so the disk cap never drops what the uplink is sending.
    ///
    /// With a `live_since_ms`, batches sealed since then (the live lane) come
    /// first, then the backlog oldest first; otherwise strictly oldest first.
    pub fn take_for_sending(
        &mut self,
        live_since_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StoredBatch>, BufferError> {
        let mut taken = Vec::with_capacity(limit);
        if let Some(since) = live_since_ms {
            self.take_where("sealed_at_ms >= ?1", since, limit, &mut taken)?;
        }
        let remaining = limit - taken.len();
        if remaining > 0 {
            self.take_where("?1 = ?1", 0, remaining, &mut taken)?;
        }
        Ok(taken)
    }

    fn take_where(
        &mut self,
        condition: &str,
        arg: i64,
        limit: usize,
        taken: &mut Vec<StoredBatch>,
    ) -> Result<(), BufferError> {
        let sql = format!("SELECT seq, payload FROM batches WHERE {condition} ORDER BY seq");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![arg])?;
        let start = taken.len();
        while taken.len() - start < limit {
            let Some(row) = rows.next()? else { break };
            let seq = row.get::<_, i64>(0)? as u64;
            if self.in_flight.insert(seq) {
                taken.push(StoredBatch {
                    seq: BatchSeq(seq),
                    payload: row.get(1)?,
                });
            }
        }
        Ok(())
    }

    /// The uplink stopped: nothing is in flight any more.
    pub fn settle_all(&mut self) {
        self.in_flight.clear();
    }

    /// The uplink is done with these (delivered, failed or never sent).
    pub fn settle(&mut self, seqs: &[BatchSeq]) {
        for seq in seqs {
            self.in_flight.remove(&seq.0);
        }
    }

    /// Up to `limit` oldest batches with a sequence above `after`.
    pub fn oldest(
        &self,
        after: Option<BatchSeq>,
        limit: usize,
    ) -> Result<Vec<StoredBatch>, BufferError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, payload FROM batches WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let after = after.map_or(-1, |s| s.0 as i64);
        let rows = stmt.query_map(params![after, limit as i64], |row| {
            Ok(StoredBatch {
                seq: BatchSeq(row.get::<_, i64>(0)? as u64),
                payload: row.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forget batches the broker acknowledged.
    pub fn remove(&mut self, seqs: &[BatchSeq]) -> Result<(), BufferError> {
        self.settle(seqs);
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM batches WHERE seq = ?1")?;
            for seq in seqs {
                stmt.execute(params![seq.0 as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn stats(&self) -> Result<BufferStats, BufferError> {
        let (batches, bytes, oldest_sealed_at_ms, oldest_seq) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(length(payload)), 0), min(sealed_at_ms), min(seq) FROM batches",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get(2)?, r.get::<_, Option<i64>>(3)?)),
        )?;
        let next_seq: i64 = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0);
        let pending_gaps: i64 =
            self.conn
                .query_row("SELECT count(*) FROM pending_gaps", [], |r| r.get(0))?;
        Ok(BufferStats {
            batches: batches as u64,
            pending_gaps: pending_gaps as u64,
            bytes: bytes as u64,
            oldest_sealed_at_ms,
            oldest_seq: oldest_seq.map(|s| s as u64),
            next_seq: next_seq as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::fixtures::{catalog, decode_all, frames, seal_frames};

    fn seal_one(buffer: &mut SqliteBuffer, tag: u8) -> BatchSeq {
        buffer
            .seal(SealSummary::default(), |seq, _| Ok(vec![tag, seq.0 as u8]))
            .unwrap()
    }

    #[test]
    fn sequence_numbers_are_contiguous_and_stored_with_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 5).unwrap();
        let a = seal_one(&mut buffer, 1);
        let b = seal_one(&mut buffer, 2);
        assert_eq!(a, BatchSeq(5000));
        assert_eq!(b, BatchSeq(5001));
        let stored = buffer.oldest(None, 10).unwrap();
        assert_eq!(stored.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(stored[1].payload, vec![2, 5001u64 as u8]);
    }

    #[test]
    fn sequence_survives_reopen_even_when_the_buffer_was_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sqlite");
        let mut buffer = SqliteBuffer::open(&path, 1).unwrap();
        let a = seal_one(&mut buffer, 1);
        buffer.remove(&[a]).unwrap();
        drop(buffer);
        let mut buffer = SqliteBuffer::open(&path, 2).unwrap();
        assert_eq!(seal_one(&mut buffer, 1), BatchSeq(a.0 + 1));
    }

    #[test]
    fn unacknowledged_batches_are_resent_with_the_same_sequence_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sqlite");
        let mut buffer = SqliteBuffer::open(&path, 1).unwrap();
        let a = seal_one(&mut buffer, 7);
        drop(buffer);
        let buffer = SqliteBuffer::open(&path, 99).unwrap();
        let stored = buffer.oldest(None, 10).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].seq, a);
        assert_eq!(stored[0].payload[0], 7);
    }

    #[test]
    fn a_failed_encode_leaves_no_batch_and_no_used_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 1).unwrap();
        let failed = buffer.seal(SealSummary::default(), |_, _| {
            Err(bess_protocol::EncodeError::TooLarge(1))
        });
        assert!(failed.is_err());
        assert_eq!(seal_one(&mut buffer, 1), BatchSeq(1000));
        assert_eq!(buffer.stats().unwrap().batches, 1);
    }

    #[test]
    fn oldest_pages_after_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 1).unwrap();
        let seqs: Vec<_> = (0..5).map(|i| seal_one(&mut buffer, i)).collect();
        let page = buffer.oldest(Some(seqs[1]), 2).unwrap();
        assert_eq!(
            page.iter().map(|s| s.seq).collect::<Vec<_>>(),
            vec![seqs[2], seqs[3]]
        );
        buffer.remove(&seqs[..3]).unwrap();
        let stats = buffer.stats().unwrap();
        assert_eq!(stats.batches, 2);
        assert_eq!(stats.oldest_seq, Some(seqs[3].0));
    }

    #[test]
    fn the_live_lane_goes_before_the_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 1).unwrap();
        for sealed_at_ms in [100, 200, 300, 5_000, 6_000] {
            buffer
                .seal(
                    SealSummary {
                        sealed_at_ms,
                        ..SealSummary::default()
                    },
                    |seq, _| Ok(vec![seq.0 as u8]),
                )
                .unwrap();
        }
        let seqs =
            |batches: Vec<StoredBatch>| batches.iter().map(|b| b.seq.0 - 1000).collect::<Vec<_>>();
        assert_eq!(
            seqs(buffer.take_for_sending(Some(5_000), 3).unwrap()),
            vec![3, 4, 0]
        );
        assert_eq!(
            seqs(buffer.take_for_sending(Some(5_000), 3).unwrap()),
            vec![1, 2]
        );
        buffer.settle(&[
            BatchSeq(1000),
            BatchSeq(1001),
            BatchSeq(1002),
            BatchSeq(1003),
            BatchSeq(1004),
        ]);
        assert_eq!(
            seqs(buffer.take_for_sending(None, 10).unwrap()),
            vec![0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn a_sealed_batch_is_encoded_by_the_buffer_with_its_number_and_the_pending_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 3).unwrap();
        let catalog = catalog();
        buffer.remember_catalog(&catalog).unwrap();
        seal_frames(&mut buffer, &catalog, frames(&[0], 10));
        assert_eq!(buffer.make_room(0).unwrap().samples, 2);

        let sealed = buffer
            .seal_batch(SealRequest {
                site: SiteId::new("s").unwrap(),
                catalog: Arc::new(catalog.clone()),
                with_catalog: true,
                frames: frames(&[0, 1], 20),
                sealed_at_ms: 77,
                cap_bytes: None,
            })
            .unwrap();
        assert_eq!(sealed.seq(), BatchSeq(3001));
        assert_eq!(sealed.content, BatchContent::Mixed);
        assert_eq!(sealed.summary.frames, 2);
        assert_eq!(sealed.summary.samples, 3);
        assert_eq!(sealed.summary.first_ts_ms, Some(20));
        assert_eq!(sealed.summary.last_ts_ms, Some(21));
        assert_eq!(sealed.batch.gaps.iter().map(|g| g.samples).sum::<u64>(), 2);
        assert_eq!(buffer.stats().unwrap().pending_gaps, 0);
        let stored = decode_all(&buffer);
        assert_eq!(stored, vec![sealed.batch.clone()], "stored as returned");
        assert_eq!(
            buffer.oldest(None, 1).unwrap()[0].payload.len(),
            sealed.bytes
        );
        assert!(stored[0].catalog.is_some());
    }

    #[test]
    fn a_seal_with_no_frames_stores_a_carrier_the_disk_cap_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 1).unwrap();
        let sealed = buffer
            .seal_batch(SealRequest {
                site: SiteId::new("s").unwrap(),
                catalog: Arc::new(catalog()),
                with_catalog: false,
                frames: Vec::new(),
                sealed_at_ms: 1,
                cap_bytes: Some(0),
            })
            .unwrap();
        assert_eq!(sealed.content, BatchContent::Carrier);
        assert_eq!(sealed.dropped, Dropped::default());
        assert_eq!(buffer.stats().unwrap().batches, 1);
    }
}
