//! The SQLite store-and-forward buffer: sealed batches wait here, encoded
//! exactly as they will be sent, until the uplink confirms delivery.
//!
//! The sequence counter lives in the same file and moves in the same
//! transaction as the batch it numbers, so a number is never handed out
//! twice, even across a power cut. `synchronous = FULL` makes each seal
//! durable before the batch can be sent (a WAL mode with `NORMAL` could roll
//! back a batch that was already delivered and then reuse its number).

use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bess_protocol::BatchSeq;

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("could not encode batch: {0}")]
    Encode(#[from] bess_protocol::EncodeError),
    #[error("buffer task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
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
    pub bytes: u64,
    pub oldest_sealed_at_ms: Option<i64>,
    pub oldest_seq: Option<u64>,
    pub next_seq: u64,
}

pub struct SqliteBuffer {
    conn: Connection,
}

impl SqliteBuffer {
    /// Open or create the buffer. A new buffer starts its sequence at
    /// `now_ms * 1000`, so it never reuses a number an earlier buffer sent.
    pub fn open(path: &Path, now_ms: i64) -> Result<Self, BufferError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(include_str!("sql/001_buffer.sql"))?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('next_seq', ?1)",
            params![now_ms.max(1).saturating_mul(1000)],
        )?;
        Ok(Self { conn })
    }

    /// Assign the next sequence number, encode the batch with it and store
    /// it, all in one transaction.
    pub fn seal(
        &mut self,
        summary: SealSummary,
        encode: impl FnOnce(BatchSeq) -> Result<Vec<u8>, bess_protocol::EncodeError>,
    ) -> Result<BatchSeq, BufferError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let next: i64 = tx.query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| r.get(0))?;
        let seq = BatchSeq(next as u64);
        let payload = encode(seq)?;
        tx.execute(
            "INSERT INTO batches (seq, sealed_at_ms, frames, samples, first_ts_ms, last_ts_ms, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                next,
                summary.sealed_at_ms,
                summary.frames,
                summary.samples,
                summary.first_ts_ms,
                summary.last_ts_ms,
                payload
            ],
        )?;
        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'next_seq'", params![next + 1])?;
        tx.commit()?;
        Ok(seq)
    }

    /// Up to `limit` oldest batches with a sequence above `after`.
    pub fn oldest(&self, after: Option<BatchSeq>, limit: usize) -> Result<Vec<StoredBatch>, BufferError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, payload FROM batches WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let after = after.map_or(-1, |s| s.0 as i64);
        let rows = stmt.query_map(params![after, limit as i64], |row| {
            Ok(StoredBatch { seq: BatchSeq(row.get::<_, i64>(0)? as u64), payload: row.get(1)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forget batches the broker acknowledged.
    pub fn remove(&mut self, seqs: &[BatchSeq]) -> Result<(), BufferError> {
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
            .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        Ok(BufferStats {
            batches: batches as u64,
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
        Self { inner: Arc::new(Mutex::new(buffer)) }
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SqliteBuffer) -> Result<T, BufferError> + Send + 'static,
    ) -> Result<T, BufferError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await?
    }

    pub async fn seal(
        &self,
        summary: SealSummary,
        encode: impl FnOnce(BatchSeq) -> Result<Vec<u8>, bess_protocol::EncodeError> + Send + 'static,
    ) -> Result<BatchSeq, BufferError> {
        self.with(move |b| b.seal(summary, encode)).await
    }

    pub async fn oldest(&self, after: Option<BatchSeq>, limit: usize) -> Result<Vec<StoredBatch>, BufferError> {
        self.with(move |b| b.oldest(after, limit)).await
    }

    pub async fn remove(&self, seqs: Vec<BatchSeq>) -> Result<(), BufferError> {
        self.with(move |b| b.remove(&seqs)).await
    }

    pub async fn stats(&self) -> Result<BufferStats, BufferError> {
        self.with(|b| b.stats()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal_one(buffer: &mut SqliteBuffer, tag: u8) -> BatchSeq {
        buffer.seal(SealSummary::default(), |seq| Ok(vec![tag, seq.0 as u8])).unwrap()
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
        let failed = buffer.seal(SealSummary::default(), |_| Err(bess_protocol::EncodeError::TooLarge(1)));
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
        assert_eq!(page.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![seqs[2], seqs[3]]);
        buffer.remove(&seqs[..3]).unwrap();
        let stats = buffer.stats().unwrap();
        assert_eq!(stats.batches, 2);
        assert_eq!(stats.oldest_seq, Some(seqs[3].0));
    }
}
