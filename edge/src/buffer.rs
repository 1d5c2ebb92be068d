//! The SQLite store-and-forward buffer: sealed batches wait here, encoded
//! exactly as they will be sent, until the uplink confirms delivery.
//!
//! The sequence counter lives in the same file and moves in the same
//! transaction as the batch it numbers, so a number is never handed out
//! twice, even across a power cut. `synchronous = FULL` makes each seal
//! durable before the batch can be sent (a WAL mode with `NORMAL` could roll
//! back a batch that was already delivered and then reuse its number).
//!
//! The buffer also enforces the disk cap. When sealed batches outgrow it,
//! room is made oldest first, measurements before events: first whole
//! batches without status/alarm groups, then the measurement frames of mixed
//! batches, and only then event frames. Every dropped sample is reported in a
//! gap record that travels in the next sealed batch, so the cloud knows
//! exactly what is missing. Batches the uplink has in flight are never
//! touched. A corrupt buffer file is moved aside, what can be read from it is
//! salvaged with its sequence numbers, and the rest is reported as a gap.

use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bess_protocol::{Batch, BatchSeq, Catalog, CatalogHash, Codec, Gap, GapReason, PointKind};

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("could not encode batch: {0}")]
    Encode(#[from] bess_protocol::EncodeError),
    #[error("buffer task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("buffered batch {seq} cannot be decoded: {source}")]
    Decode {
        seq: u64,
        source: bess_protocol::DecodeError,
    },
    #[error("moving the corrupt buffer aside: {0}")]
    MoveAside(std::io::Error),
}

/// What a batch holds, for the drop order under the disk cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchContent {
    /// Only measurement frames: dropped first.
    Measurements = 0,
    /// Measurement and event (status/alarm) frames.
    Mixed = 1,
    /// Only event frames: dropped last.
    Events = 2,
    /// No frames left; kept only because it carries the catalog. Never dropped.
    Carrier = 3,
}

/// What making room under the disk cap did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub batches_removed: u64,
    pub batches_trimmed: u64,
    /// All samples removed from the buffer (each one reported in a gap record).
    pub samples: u64,
    /// Of those, the ones removed by thinning the backlog.
    pub downsampled: u64,
}

/// How a buffer was opened.
#[derive(Debug)]
pub enum Opened {
    Clean,
    /// The file was corrupt: moved to `moved_to`; `salvaged` batches were
    /// copied into the fresh buffer with their sequence numbers.
    RecoveredFromCorruption {
        moved_to: PathBuf,
        salvaged: u64,
        reason: String,
    },
}

/// What the buffer knows about a batch besides its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct SealSummary {
    pub frames: u32,
    pub samples: u32,
    pub first_ts_ms: Option<i64>,
    pub last_ts_ms: Option<i64>,
    pub sealed_at_ms: i64,
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

pub struct SqliteBuffer {
    conn: Connection,
    /// Batches handed to the uplink and not yet settled: never dropped.
    in_flight: HashSet<u64>,
    /// Thin the backlog's fast measurement groups to min/max/last per
    /// bucket of this many milliseconds before dropping anything.
    downsample_bucket_ms: Option<i64>,
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

impl SqliteBuffer {
    /// Open or create the buffer. A new buffer starts its sequence at
    /// `now_ms * 1000`, so it never reuses a number an earlier buffer sent.
    pub fn open(path: &Path, now_ms: i64) -> Result<Self, BufferError> {
        Self::open_or_recover(path, now_ms).map(|(buffer, _)| buffer)
    }

    /// Like [`SqliteBuffer::open`], but a corrupt file is moved aside (with a
    /// loud error from the caller), salvaged as far as it reads, and replaced
    /// by a fresh buffer carrying a gap record for what was lost.
    pub fn open_or_recover(path: &Path, now_ms: i64) -> Result<(Self, Opened), BufferError> {
        match Self::open_checked(path, now_ms) {
            Ok(buffer) => Ok((buffer, Opened::Clean)),
            Err(BufferError::Sqlite(e)) if is_corruption(&e) => {
                Self::recover(path, now_ms, e.to_string())
            }
            Err(BufferError::Sqlite(rusqlite::Error::SqliteFailure(_, Some(m))))
                if m.starts_with("corrupt:") =>
            {
                Self::recover(path, now_ms, m)
            }
            Err(e) => Err(e),
        }
    }

    fn open_checked(path: &Path, now_ms: i64) -> Result<Self, BufferError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(BufferError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(format!("corrupt: {check}")),
            )));
        }
        conn.execute_batch(include_str!("sql/001_buffer.sql"))?;
        conn.execute_batch(include_str!("sql/002_gaps.sql"))?;
        let has_content = conn
            .prepare("SELECT 1 FROM pragma_table_info('batches') WHERE name = 'content'")?
            .exists([])?;
        if !has_content {
            conn.execute_batch(
                "ALTER TABLE batches ADD COLUMN content INTEGER NOT NULL DEFAULT 1",
            )?;
        }
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('next_seq', ?1)",
            params![now_ms.max(1).saturating_mul(1000)],
        )?;
        let has_downsampled = conn
            .prepare("SELECT 1 FROM pragma_table_info('batches') WHERE name = 'downsampled'")?
            .exists([])?;
        if !has_downsampled {
            conn.execute_batch(
                "ALTER TABLE batches ADD COLUMN downsampled INTEGER NOT NULL DEFAULT 0",
            )?;
        }
        Ok(Self {
            conn,
            in_flight: HashSet::new(),
            downsample_bucket_ms: None,
        })
    }

    fn recover(path: &Path, now_ms: i64, reason: String) -> Result<(Self, Opened), BufferError> {
        let moved_to = PathBuf::from(format!("{}.corrupt-{now_ms}", path.display()));
        std::fs::rename(path, &moved_to).map_err(BufferError::MoveAside)?;
        for suffix in ["-wal", "-shm"] {
            let side = PathBuf::from(format!("{}{suffix}", path.display()));
            if side.exists() {
                let _ = std::fs::rename(&side, format!("{}{suffix}", moved_to.display()));
            }
        }
        let mut fresh = Self::open_checked(path, now_ms)?;
        let salvage = salvage(&moved_to);
        let next_seq = salvage.next_seq.max(now_ms.max(1).saturating_mul(1000));
        let tx = fresh.conn.transaction()?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'next_seq'",
            params![next_seq],
        )?;
        for row in &salvage.batches {
            tx.execute(
                "INSERT OR IGNORE INTO batches (seq, sealed_at_ms, frames, samples, first_ts_ms, last_ts_ms, payload, content)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)",
                params![row.0, row.1, row.2, row.3, row.4, row.5, row.6],
            )?;
        }
        let lost_samples = salvage
            .total_samples
            .map_or(0, |total| total.saturating_sub(salvage.salvaged_samples));
        tx.execute(
            "INSERT INTO pending_gaps (device, first_ts_ms, last_ts_ms, samples, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                Gap::WHOLE_SITE,
                salvage.first_ts_ms.unwrap_or(0),
                salvage.last_ts_ms.unwrap_or(now_ms),
                lost_samples as i64,
                gap_reason_code(GapReason::BufferCorrupt)
            ],
        )?;
        tx.commit()?;
        let salvaged = salvage.batches.len() as u64;
        Ok((
            fresh,
            Opened::RecoveredFromCorruption {
                moved_to,
                salvaged,
                reason,
            },
        ))
    }

    /// Downsample the backlog (min/max/last per `bucket`) before dropping
    /// anything under the disk cap; `None` turns it off.
    pub fn set_downsampling(&mut self, bucket: Option<std::time::Duration>) {
        self.downsample_bucket_ms = bucket.map(|b| (b.as_millis() as i64).max(1));
    }

    /// Remember a catalog so dropped batches can be reported per device.
    pub fn remember_catalog(&mut self, catalog: &Catalog) -> Result<(), BufferError> {
        let body = postcard::to_stdvec(catalog).expect("a catalog always serializes");
        self.conn.execute(
            "INSERT OR IGNORE INTO catalogs (hash, body) VALUES (?1, ?2)",
            params![catalog.hash().0 as i64, body],
        )?;
        Ok(())
    }

    /// Assign the next sequence number, take the pending gap records, encode
    /// the batch with both and store it, all in one transaction.
    pub fn seal(
        &mut self,
        summary: SealSummary,
        encode: impl FnOnce(BatchSeq, Vec<Gap>) -> Result<Vec<u8>, bess_protocol::EncodeError>,
    ) -> Result<BatchSeq, BufferError> {
        self.seal_with_content(summary, BatchContent::Mixed, encode)
    }

    pub fn seal_with_content(
        &mut self,
        summary: SealSummary,
        content: BatchContent,
        encode: impl FnOnce(BatchSeq, Vec<Gap>) -> Result<Vec<u8>, bess_protocol::EncodeError>,
    ) -> Result<BatchSeq, BufferError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let next: i64 = tx.query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
            r.get(0)
        })?;
        let seq = BatchSeq(next as u64);
        let gaps = {
            let mut stmt = tx.prepare_cached(
                "SELECT device, first_ts_ms, last_ts_ms, samples, reason FROM pending_gaps ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Gap {
                    device: r.get::<_, i64>(0)? as u16,
                    first_ts_ms: r.get(1)?,
                    last_ts_ms: r.get(2)?,
                    samples: r.get::<_, i64>(3)? as u64,
                    reason: gap_reason(r.get(4)?),
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
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
        tx.execute("DELETE FROM pending_gaps", [])?;
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

    /// Make room until the sealed batches fit in `cap_bytes`, in the order
    /// the module doc gives, recording a gap for every dropped sample.
    pub fn make_room(&mut self, cap_bytes: u64) -> Result<Dropped, BufferError> {
        let mut dropped = Dropped::default();
        let mut total = self.payload_bytes()?;
        if let Some(bucket_ms) = self.downsample_bucket_ms {
            while total > cap_bytes {
                let Some(saved) = self.downsample_oldest(bucket_ms, &mut dropped)? else {
                    break;
                };
                total = total.saturating_sub(saved);
            }
        }
        // Candidates oldest first, by content class; in-flight batches are skipped.
        for class in [
            BatchContent::Measurements,
            BatchContent::Mixed,
            BatchContent::Events,
        ] {
            while total > cap_bytes {
                let Some((seq, payload)) = self.oldest_droppable(class)? else {
                    break;
                };
                let before = payload.len() as u64;
                let after = self.drop_from_batch(seq, &payload, class, &mut dropped)?;
                total = total - before + after;
            }
        }
        Ok(dropped)
    }

    /// Thin the oldest run of not-yet-thinned batches (same catalog, about
    /// two buckets of data) to min/max/last per bucket for fast measurement
    /// groups. Returns the bytes saved, or `None` when nothing is left to thin.
    fn downsample_oldest(
        &mut self,
        bucket_ms: i64,
        dropped: &mut Dropped,
    ) -> Result<Option<u64>, BufferError> {
        let mut run: Vec<(u64, Batch, usize)> = Vec::new();
        {
            let mut stmt = self.conn.prepare_cached(
                "SELECT seq, payload FROM batches WHERE downsampled = 0 AND content IN (?1, ?2) ORDER BY seq LIMIT 4096",
            )?;
            let mut rows = stmt.query(params![
                BatchContent::Measurements as i64,
                BatchContent::Mixed as i64
            ])?;
            while let Some(row) = rows.next()? {
                let seq = row.get::<_, i64>(0)? as u64;
                if self.in_flight.contains(&seq) {
                    if run.is_empty() {
                        continue;
                    }
                    break;
                }
                let payload: Vec<u8> = row.get(1)?;
                let batch = Batch::decode(&payload)
                    .map_err(|source| BufferError::Decode { seq, source })?;
                if run
                    .first()
                    .is_some_and(|(_, first, _)| first.catalog_hash != batch.catalog_hash)
                {
                    break;
                }
                run.push((seq, batch, payload.len()));
                let span = {
                    let ts = run
                        .iter()
                        .flat_map(|(_, b, _)| b.frames.iter().map(|f| f.ts_ms));
                    let (lo, hi) =
                        ts.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
                    hi.saturating_sub(lo)
                };
                if span >= bucket_ms * 2 {
                    break;
                }
            }
        }
        if run.is_empty() {
            return Ok(None);
        }
        let catalog = self.catalog(run[0].1.catalog_hash)?;
        let events = catalog.as_ref().map(event_groups).unwrap_or_default();
        let fast = |group: u16| {
            catalog
                .as_ref()
                .and_then(|c| c.groups.get(usize::from(group)))
                .is_some_and(|g| i64::from(g.interval_ms) < bucket_ms)
        };
        // Choose what to keep over the whole run, but leave every kept frame
        // in the batch (and under the sequence number) it was sealed in, so a
        // batch that was already delivered can never reappear with other content.
        let mut by_group: BTreeMap<u16, Vec<(usize, usize)>> = BTreeMap::new();
        for (b, (_, batch, _)) in run.iter().enumerate() {
            for (f, frame) in batch.frames.iter().enumerate() {
                if !events.contains(&frame.group.0) && fast(frame.group.0) {
                    by_group.entry(frame.group.0).or_default().push((b, f));
                }
            }
        }
        let mut thinned: HashSet<(usize, usize)> = HashSet::new();
        for members in by_group.values() {
            let frames: Vec<&bess_protocol::Frame> =
                members.iter().map(|&(b, f)| &run[b].1.frames[f]).collect();
            let kept = frames_to_keep(&frames, bucket_ms);
            thinned.extend(
                members
                    .iter()
                    .enumerate()
                    .filter(|(n, _)| !kept.contains(n))
                    .map(|(_, &bf)| bf),
            );
        }
        let mut per_device: BTreeMap<u16, Gap> = BTreeMap::new();
        let mut saved = 0u64;
        let tx = self.conn.transaction()?;
        for (b, (seq, mut batch, old_len)) in run.into_iter().enumerate() {
            let before = batch.frames.len();
            let mut index = 0;
            batch.frames.retain(|frame| {
                let keep = !thinned.contains(&(b, index));
                index += 1;
                if !keep {
                    count_into_gap(
                        &mut per_device,
                        catalog.as_ref(),
                        frame,
                        GapReason::Downsampled,
                    );
                }
                keep
            });
            if batch.frames.len() == before {
                tx.execute(
                    "UPDATE batches SET downsampled = 1 WHERE seq = ?1",
                    params![seq as i64],
                )?;
            } else if batch.frames.is_empty() && batch.gaps.is_empty() && batch.catalog.is_none() {
                tx.execute("DELETE FROM batches WHERE seq = ?1", params![seq as i64])?;
                dropped.batches_removed += 1;
                saved += old_len as u64;
            } else {
                let bytes = batch.encode(Codec::Zstd)?;
                let samples: usize = batch.frames.iter().map(|f| f.values.len()).sum();
                tx.execute(
                    "UPDATE batches SET payload = ?2, frames = ?3, samples = ?4, content = ?5, downsampled = 1 WHERE seq = ?1",
                    params![seq as i64, bytes, batch.frames.len() as i64, samples as i64, content_of(&batch.frames, &events) as i64],
                )?;
                dropped.batches_trimmed += 1;
                saved += (old_len as u64).saturating_sub(bytes.len() as u64);
            }
        }
        for gap in per_device.values() {
            queue_gap(&tx, gap)?;
            dropped.samples += gap.samples;
            dropped.downsampled += gap.samples;
        }
        tx.commit()?;
        Ok(Some(saved))
    }

    fn oldest_droppable(&self, class: BatchContent) -> Result<Option<(u64, Vec<u8>)>, BufferError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, payload FROM batches WHERE content = ?1 ORDER BY seq")?;
        let mut rows = stmt.query(params![class as i64])?;
        while let Some(row) = rows.next()? {
            let seq = row.get::<_, i64>(0)? as u64;
            if !self.in_flight.contains(&seq) {
                return Ok(Some((seq, row.get(1)?)));
            }
        }
        Ok(None)
    }

    /// Drop a whole batch (measurements, events) or its measurement frames
    /// (mixed). Returns the batch's new payload size (0 when removed).
    fn drop_from_batch(
        &mut self,
        seq: u64,
        payload: &[u8],
        class: BatchContent,
        dropped: &mut Dropped,
    ) -> Result<u64, BufferError> {
        let mut batch =
            Batch::decode(payload).map_err(|source| BufferError::Decode { seq, source })?;
        let catalog = self.catalog(batch.catalog_hash)?;
        let event_groups = catalog.as_ref().map(event_groups).unwrap_or_default();
        let (keep, lose): (Vec<_>, Vec<_>) = match class {
            BatchContent::Mixed => batch
                .frames
                .drain(..)
                .partition(|f| event_groups.contains(&f.group.0)),
            _ => (Vec::new(), std::mem::take(&mut batch.frames)),
        };
        // One gap per device over the dropped frames.
        let mut per_device: BTreeMap<u16, Gap> = BTreeMap::new();
        for frame in &lose {
            count_into_gap(&mut per_device, catalog.as_ref(), frame, GapReason::DiskCap);
        }
        let tx = self.conn.transaction()?;
        for gap in per_device.values() {
            queue_gap(&tx, gap)?;
            dropped.samples += gap.samples;
        }
        // Gap records this batch carried travel on in the next sealed batch.
        if keep.is_empty() {
            for gap in batch.gaps.drain(..) {
                queue_gap(&tx, &gap)?;
            }
        }
        // A catalog must still reach the cloud: keep the batch (and its
        // number) while it carries one; it then holds no frames and is never
        // chosen again.
        let must_keep = !keep.is_empty() || batch.catalog.is_some();
        let new_size = if must_keep {
            let content = if keep.is_empty() {
                BatchContent::Carrier
            } else {
                BatchContent::Events
            };
            batch.frames = keep;
            let bytes = batch.encode(Codec::Zstd)?;
            let samples: usize = batch.frames.iter().map(|f| f.values.len()).sum();
            tx.execute(
                "UPDATE batches SET payload = ?2, frames = ?3, samples = ?4, content = ?5 WHERE seq = ?1",
                params![seq as i64, bytes, batch.frames.len() as i64, samples as i64, content as i64],
            )?;
            dropped.batches_trimmed += 1;
            bytes.len() as u64
        } else {
            tx.execute("DELETE FROM batches WHERE seq = ?1", params![seq as i64])?;
            dropped.batches_removed += 1;
            0
        };
        tx.commit()?;
        Ok(new_size)
    }

    fn catalog(&self, hash: CatalogHash) -> Result<Option<Catalog>, BufferError> {
        let body: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT body FROM catalogs WHERE hash = ?1",
                params![hash.0 as i64],
                |r| r.get(0),
            )
            .optional()?;
        Ok(body.and_then(|b| postcard::from_bytes(&b).ok()))
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

/// Shared, async-friendly handle: every call runs on the blocking pool.
#[derive(Clone)]
pub struct BufferHandle {
    inner: Arc<Mutex<SqliteBuffer>>,
}

impl BufferHandle {
    pub fn new(buffer: SqliteBuffer) -> Self {
        Self {
            inner: Arc::new(Mutex::new(buffer)),
        }
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SqliteBuffer) -> Result<T, BufferError> + Send + 'static,
    ) -> Result<T, BufferError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await?
    }

    pub async fn seal(
        &self,
        summary: SealSummary,
        encode: impl FnOnce(BatchSeq, Vec<Gap>) -> Result<Vec<u8>, bess_protocol::EncodeError>
            + Send
            + 'static,
    ) -> Result<BatchSeq, BufferError> {
        self.with(move |b| b.seal(summary, encode)).await
    }

    /// Seal, then enforce the disk cap (if any) in the same blocking call.
    pub async fn seal_capped(
        &self,
        summary: SealSummary,
        content: BatchContent,
        cap_bytes: Option<u64>,
        encode: impl FnOnce(BatchSeq, Vec<Gap>) -> Result<Vec<u8>, bess_protocol::EncodeError>
            + Send
            + 'static,
    ) -> Result<(BatchSeq, Dropped), BufferError> {
        self.with(move |b| {
            let seq = b.seal_with_content(summary, content, encode)?;
            let dropped = match cap_bytes {
                Some(cap) => b.make_room(cap)?,
                None => Dropped::default(),
            };
            Ok((seq, dropped))
        })
        .await
    }

    pub async fn remember_catalog(&self, catalog: Catalog) -> Result<(), BufferError> {
        self.with(move |b| b.remember_catalog(&catalog)).await
    }

    pub async fn take_for_sending(
        &self,
        live_since_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StoredBatch>, BufferError> {
        self.with(move |b| b.take_for_sending(live_since_ms, limit))
            .await
    }

    /// Called by an uplink when it stops, so a later one resends everything unacknowledged.
    pub async fn settle_all(&self) -> Result<(), BufferError> {
        self.with(|b| {
            b.settle_all();
            Ok(())
        })
        .await
    }

    pub async fn settle(&self, seqs: Vec<BatchSeq>) -> Result<(), BufferError> {
        self.with(move |b| {
            b.settle(&seqs);
            Ok(())
        })
        .await
    }

    pub async fn oldest(
        &self,
        after: Option<BatchSeq>,
        limit: usize,
    ) -> Result<Vec<StoredBatch>, BufferError> {
        self.with(move |b| b.oldest(after, limit)).await
    }

    pub async fn remove(&self, seqs: Vec<BatchSeq>) -> Result<(), BufferError> {
        self.with(move |b| b.remove(&seqs)).await
    }

    pub async fn stats(&self) -> Result<BufferStats, BufferError> {
        self.with(|b| b.stats()).await
    }
}

/// Add a frame that will not reach the cloud to its device's gap record.
fn count_into_gap(
    per_device: &mut BTreeMap<u16, Gap>,
    catalog: Option<&Catalog>,
    frame: &bess_protocol::Frame,
    reason: GapReason,
) {
    let device = catalog
        .and_then(|c| c.groups.get(usize::from(frame.group.0)))
        .map_or(Gap::WHOLE_SITE, |g| g.device);
    let gap = per_device.entry(device).or_insert(Gap {
        device,
        first_ts_ms: frame.ts_ms,
        last_ts_ms: frame.ts_ms,
        samples: 0,
        reason,
    });
    gap.first_ts_ms = gap.first_ts_ms.min(frame.ts_ms);
    gap.last_ts_ms = gap.last_ts_ms.max(frame.ts_ms);
    gap.samples += frame.values.len() as u64;
}

/// Queue a gap record for the next sealed batch, merged into a pending one
/// of the same device and reason (ranges widen, counts add up), so a long
/// outage leaves one pending record per device, not one per dropped batch.
fn queue_gap(tx: &rusqlite::Transaction<'_>, gap: &Gap) -> rusqlite::Result<()> {
    let merged = tx.execute(
        "UPDATE pending_gaps SET first_ts_ms = min(first_ts_ms, ?3), last_ts_ms = max(last_ts_ms, ?4), samples = samples + ?5
         WHERE device = ?1 AND reason = ?2",
        params![gap.device, gap_reason_code(gap.reason), gap.first_ts_ms, gap.last_ts_ms, gap.samples as i64],
    )?;
    if merged == 0 {
        tx.execute(
            "INSERT INTO pending_gaps (device, first_ts_ms, last_ts_ms, samples, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![gap.device, gap.first_ts_ms, gap.last_ts_ms, gap.samples as i64, gap_reason_code(gap.reason)],
        )?;
    }
    Ok(())
}

/// Poll groups holding a status or alarm point (bitfield or flag): their
/// frames are events, kept longest under the disk cap.
pub fn event_groups(catalog: &Catalog) -> HashSet<u16> {
    catalog
        .groups
        .iter()
        .enumerate()
        .filter(|(_, g)| {
            g.points
                .iter()
                .any(|p| matches!(p.kind, PointKind::Bitfield | PointKind::Flag))
        })
        .map(|(i, _)| i as u16)
        .collect()
}

/// The content class of a set of frames.
pub fn content_of(frames: &[bess_protocol::Frame], event_groups: &HashSet<u16>) -> BatchContent {
    let events = frames
        .iter()
        .filter(|f| event_groups.contains(&f.group.0))
        .count();
    match events {
        0 => BatchContent::Measurements,
        n if n == frames.len() => BatchContent::Events,
        _ => BatchContent::Mixed,
    }
}

/// The number a gap reason is kept as in `pending_gaps` (the wire code).
fn gap_reason_code(reason: GapReason) -> i64 {
    i64::from(reason.code())
}

/// The gap reason kept as `code`; a code no reason has (a newer agent's
/// buffer opened by an older one) reads as a disk-cap drop.
fn gap_reason(code: i64) -> GapReason {
    u8::try_from(code)
        .ok()
        .and_then(GapReason::from_code)
        .unwrap_or(GapReason::DiskCap)
}

/// Indices of the frames to keep when thinning one measurement group to, per
/// bucket, the frames holding each point's minimum and maximum and the last
/// frame. Frames with a missing value are kept (the hole stays visible).
fn frames_to_keep(frames: &[&bess_protocol::Frame], bucket_ms: i64) -> HashSet<usize> {
    let mut keep = HashSet::new();
    let mut buckets: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, frame) in frames.iter().enumerate() {
        buckets
            .entry(frame.ts_ms.div_euclid(bucket_ms))
            .or_default()
            .push(i);
    }
    for members in buckets.values() {
        keep.insert(
            *members
                .iter()
                .max_by_key(|&&i| frames[i].ts_ms)
                .expect("non-empty bucket"),
        );
        let slots = frames[members[0]].values.len();
        for slot in 0..slots {
            let values = members
                .iter()
                .filter_map(|&i| frames[i].values.get(slot)?.raw().map(|v| (i, v)));
            let mut min: Option<(usize, f64)> = None;
            let mut max: Option<(usize, f64)> = None;
            for (i, v) in values {
                if min.is_none_or(|(_, m)| v < m) {
                    min = Some((i, v));
                }
                if max.is_none_or(|(_, m)| v > m) {
                    max = Some((i, v));
                }
            }
            keep.extend(min.map(|(i, _)| i));
            keep.extend(max.map(|(i, _)| i));
        }
        for &i in members {
            if frames[i].values.iter().any(|r| r.raw().is_none()) {
                keep.insert(i);
            }
        }
    }
    keep
}

/// What could be read back from a corrupt buffer file.
#[derive(Default)]
struct Salvage {
    #[allow(clippy::type_complexity)]
    batches: Vec<(i64, i64, i64, i64, Option<i64>, Option<i64>, Vec<u8>)>,
    next_seq: i64,
    total_samples: Option<u64>,
    salvaged_samples: u64,
    first_ts_ms: Option<i64>,
    last_ts_ms: Option<i64>,
}

fn salvage(path: &Path) -> Salvage {
    let mut found = Salvage::default();
    let Ok(conn) = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return found;
    };
    if let Ok((total, first, last)) = conn.query_row(
        "SELECT sum(samples), min(first_ts_ms), max(last_ts_ms) FROM batches",
        [],
        |r| {
            Ok((
                r.get::<_, Option<i64>>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        },
    ) {
        found.total_samples = total.map(|t| t as u64);
        found.first_ts_ms = first;
        found.last_ts_ms = last;
    }
    if let Ok(next) = conn.query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
        r.get::<_, i64>(0)
    }) {
        found.next_seq = next;
    }
    let rows = conn.prepare("SELECT seq, sealed_at_ms, frames, samples, first_ts_ms, last_ts_ms, payload FROM batches ORDER BY seq");
    if let Ok(mut stmt) = rows {
        if let Ok(mut rows) = stmt.query([]) {
            while let Ok(Some(row)) = rows.next() {
                let read = (|| -> rusqlite::Result<_> {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get::<_, Vec<u8>>(6)?,
                    ))
                })();
                // Keep only batches that still decode.
                if let Ok(batch) = read {
                    if Batch::decode(&batch.6).is_ok() {
                        found.salvaged_samples += batch.3 as u64;
                        found.next_seq = found.next_seq.max(batch.0 + 1);
                        found.batches.push(batch);
                    }
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

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

    use bess_protocol::{DeviceInfo, Frame, GroupIndex, GroupInfo, PointInfo, Reading, SiteId};

    /// Two devices; group 0 (device 0) measures, group 1 (device 1) holds an alarm word.
    fn catalog() -> Catalog {
        let analog = |n: &str| PointInfo::new(n, "V", PointKind::Analog, 1.0, 0.0);
        Catalog {
            devices: vec![
                DeviceInfo {
                    name: "meter".into(),
                    model: String::new(),
                },
                DeviceInfo {
                    name: "bms".into(),
                    model: String::new(),
                },
            ],
            groups: vec![
                GroupInfo {
                    device: 0,
                    name: "fast".into(),
                    interval_ms: 1000,
                    points: vec![analog("a"), analog("b")],
                },
                GroupInfo {
                    device: 1,
                    name: "alarms".into(),
                    interval_ms: 1000,
                    points: vec![PointInfo::new("alarms", "", PointKind::Bitfield, 1.0, 0.0)],
                },
            ],
        }
    }

    fn frames(groups: &[u16], ts: i64) -> Vec<Frame> {
        groups
            .iter()
            .enumerate()
            .map(|(i, &g)| Frame {
                group: GroupIndex(g),
                ts_ms: ts + i as i64,
                values: if g == 0 {
                    vec![Reading::Int(ts), Reading::Int(-ts)]
                } else {
                    vec![Reading::Int(1)]
                },
            })
            .collect()
    }

    /// Seal frames as the sealer does; returns the sequence.
    fn seal_frames(buffer: &mut SqliteBuffer, catalog: &Catalog, frames: Vec<Frame>) -> BatchSeq {
        let content = content_of(&frames, &event_groups(catalog));
        let hash = catalog.hash();
        buffer
            .seal_with_content(SealSummary::default(), content, move |seq, gaps| {
                Batch {
                    site: SiteId::new("s").unwrap(),
                    seq,
                    catalog_hash: hash,
                    catalog: None,
                    frames,
                    gaps,
                }
                .encode(Codec::Zstd)
            })
            .unwrap()
    }

    fn decode_all(buffer: &SqliteBuffer) -> Vec<Batch> {
        buffer
            .oldest(None, 10_000)
            .unwrap()
            .iter()
            .map(|b| Batch::decode(&b.payload).unwrap())
            .collect()
    }

    #[test]
    fn the_disk_cap_drops_measurements_oldest_first_and_reports_every_sample() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 1).unwrap();
        let catalog = catalog();
        buffer.remember_catalog(&catalog).unwrap();
        let mut total_samples = 0u64;
        for i in 0..40 {
            let groups: &[u16] = if i % 2 == 0 { &[0, 0] } else { &[0, 1] };
            let f = frames(groups, 1_000_000 + i * 10);
            total_samples += f.iter().map(|f| f.values.len() as u64).sum::<u64>();
            seal_frames(&mut buffer, &catalog, f);
        }
        let cap = buffer.payload_bytes().unwrap() / 2;
        let dropped = buffer.make_room(cap).unwrap();
        assert!(buffer.payload_bytes().unwrap() <= cap);
        assert!(dropped.samples > 0);

        // What is left plus what the gap records report is everything sealed.
        let pending: Vec<Gap> = {
            let mut stmt = buffer
                .conn
                .prepare("SELECT device, samples FROM pending_gaps")
                .unwrap();
            stmt.query_map([], |r| {
                Ok(Gap {
                    device: r.get::<_, i64>(0)? as u16,
                    first_ts_ms: 0,
                    last_ts_ms: 0,
                    samples: r.get::<_, i64>(1)? as u64,
                    reason: GapReason::DiskCap,
                })
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        let reported: u64 = pending.iter().map(|g| g.samples).sum();
        assert_eq!(reported, dropped.samples);
        let left: u64 = decode_all(&buffer)
            .iter()
            .map(|b| b.sample_count() as u64)
            .sum();
        assert_eq!(left + reported, total_samples);
        // Alarm frames (device 1) were not touched: measurements went first.
        assert!(pending.iter().all(|g| g.device == 0), "{pending:?}");
        let alarm_frames: usize = decode_all(&buffer)
            .iter()
            .flat_map(|b| &b.frames)
            .filter(|f| f.group.0 == 1)
            .count();
        assert_eq!(alarm_frames, 20);
    }

    #[test]
    fn gap_records_travel_in_the_next_sealed_batch_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 1).unwrap();
        let catalog = catalog();
        buffer.remember_catalog(&catalog).unwrap();
        for i in 0..4 {
            seal_frames(&mut buffer, &catalog, frames(&[0], 1_000 + i));
        }
        let dropped = buffer.make_room(1).unwrap();
        assert_eq!(dropped.batches_removed, 4);
        let next = seal_frames(&mut buffer, &catalog, frames(&[1], 2_000));
        let after = seal_frames(&mut buffer, &catalog, frames(&[1], 3_000));
        let batches = decode_all(&buffer);
        let carrier = batches.iter().find(|b| b.seq == next).unwrap();
        assert_eq!(carrier.gaps.iter().map(|g| g.samples).sum::<u64>(), 8);
        assert!(batches
            .iter()
            .find(|b| b.seq == after)
            .unwrap()
            .gaps
            .is_empty());
        assert_eq!(buffer.stats().unwrap().pending_gaps, 0);
    }

    #[test]
    fn batches_in_flight_are_never_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 1).unwrap();
        let catalog = catalog();
        buffer.remember_catalog(&catalog).unwrap();
        let first = seal_frames(&mut buffer, &catalog, frames(&[0], 1));
        seal_frames(&mut buffer, &catalog, frames(&[0], 2));
        let taken = buffer.take_for_sending(None, 1).unwrap();
        assert!(
            buffer
                .take_for_sending(None, 1)
                .unwrap()
                .iter()
                .all(|b| b.seq != first),
            "never handed out twice"
        );
        buffer.settle(&[BatchSeq(first.0 + 1)]);
        assert_eq!(taken[0].seq, first);
        buffer.make_room(0).unwrap();
        assert_eq!(
            buffer
                .oldest(None, 10)
                .unwrap()
                .iter()
                .map(|b| b.seq)
                .collect::<Vec<_>>(),
            vec![first]
        );
        buffer.settle(&[first]);
        buffer.make_room(0).unwrap();
        assert!(buffer.oldest(None, 10).unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_buffer_is_moved_aside_and_replaced_with_a_gap_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sqlite");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let (mut buffer, opened) = SqliteBuffer::open_or_recover(&path, 7).unwrap();
        let Opened::RecoveredFromCorruption {
            moved_to, salvaged, ..
        } = opened
        else {
            panic!("not detected")
        };
        assert!(moved_to.exists());
        assert_eq!(salvaged, 0);
        assert_eq!(buffer.stats().unwrap().pending_gaps, 1);
        let catalog = catalog();
        let seq = seal_frames(&mut buffer, &catalog, frames(&[0], 1));
        assert_eq!(seq, BatchSeq(7000));
        let batch = &decode_all(&buffer)[0];
        assert_eq!(batch.gaps.len(), 1);
        assert_eq!(batch.gaps[0].reason, GapReason::BufferCorrupt);
        assert_eq!(batch.gaps[0].device, Gap::WHOLE_SITE);
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
    fn downsampling_keeps_min_max_and_last_per_bucket_and_reports_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 1).unwrap();
        buffer.set_downsampling(Some(std::time::Duration::from_secs(60)));
        let catalog = catalog();
        buffer.remember_catalog(&catalog).unwrap();
        // Two minutes of a 1 s measurement group, one batch per second.
        let mut sealed = 0u64;
        for t in 0..120i64 {
            let value = if t == 17 {
                9_000
            } else if t == 42 {
                -9_000
            } else {
                t % 7
            };
            let frame = Frame {
                group: GroupIndex(0),
                ts_ms: 60_000 * 1000 + t * 1000,
                values: vec![Reading::Int(value), Reading::Int(t)],
            };
            sealed += 2;
            seal_frames(&mut buffer, &catalog, vec![frame]);
        }
        let before = buffer.payload_bytes().unwrap();
        let dropped = buffer.make_room(before / 2).unwrap();
        assert!(dropped.downsampled > 0);
        assert_eq!(
            dropped.samples, dropped.downsampled,
            "thinning alone made room: nothing dropped outright"
        );
        let left: Vec<Frame> = decode_all(&buffer)
            .into_iter()
            .flat_map(|b| b.frames)
            .collect();
        let kept_samples: u64 = left.iter().map(|f| f.values.len() as u64).sum();
        assert_eq!(
            kept_samples + dropped.samples,
            sealed,
            "every sample kept or reported"
        );
        // The extremes survive, and each minute's last frame.
        let has = |v: i64| left.iter().any(|f| f.values[0] == Reading::Int(v));
        assert!(has(9_000) && has(-9_000), "min and max kept");
        let ts: HashSet<i64> = left.iter().map(|f| f.ts_ms).collect();
        assert!(
            ts.contains(&(60_000 * 1000 + 59 * 1000)),
            "first minute's last frame kept"
        );
        assert!(
            ts.contains(&(60_000 * 1000 + 119 * 1000)),
            "second minute's last frame kept"
        );
        assert!(
            left.len() <= 2 * 5,
            "at most min, max per point and the last frame per minute: {}",
            left.len()
        );
        let gaps: i64 = buffer
            .conn
            .query_row(
                "SELECT count(*) FROM pending_gaps WHERE reason = 2",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(gaps > 0);
    }

    #[test]
    fn a_full_buffer_never_spins_on_batches_it_must_keep_and_passes_their_gaps_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 1).unwrap();
        let catalog = catalog();
        buffer.remember_catalog(&catalog).unwrap();
        // A batch with the catalog, then batches that each carry gap records.
        let hash = catalog.hash();
        let with_catalog = catalog.clone();
        buffer
            .seal_with_content(
                SealSummary::default(),
                BatchContent::Events,
                move |seq, gaps| {
                    Batch {
                        site: SiteId::new("s").unwrap(),
                        seq,
                        catalog_hash: hash,
                        catalog: Some(with_catalog),
                        frames: frames(&[1], 1),
                        gaps,
                    }
                    .encode(Codec::Zstd)
                },
            )
            .unwrap();
        for round in 0..5 {
            seal_frames(&mut buffer, &catalog, frames(&[0, 1], 100 + round * 10));
            buffer.make_room(0).unwrap(); // must return, every round
        }
        let left = decode_all(&buffer);
        assert_eq!(left.len(), 1, "only the catalog carrier is left: {left:?}");
        assert!(left[0].catalog.is_some() && left[0].frames.is_empty() && left[0].gaps.is_empty());
        // Every dropped sample is still reported, in one merged record per device.
        let pending: Vec<(i64, i64)> = buffer
            .conn
            .prepare("SELECT device, samples FROM pending_gaps ORDER BY device")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(pending, vec![(0, 5 * 2), (1, 1 + 5)]);
    }
}
