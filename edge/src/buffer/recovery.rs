//! Opening the buffer file: `PRAGMA quick_check`, and the salvage of a
//! corrupt file.
//!
//! Invariants:
//! - A file that fails `quick_check` (or that SQLite reports as corrupt or
//!   not a database) is never written to: it is moved aside with its `-wal`
//!   and `-shm` files, for a post-mortem, and a fresh buffer replaces it.
//! - Every batch that still reads and decodes is copied into the fresh
//!   buffer under its own sequence number, and the fresh counter continues
//!   above every number the old file used or handed out (and above
//!   `now_ms * 1000`), so no number is reused.
//! - What could not be salvaged is reported in one whole-site gap record
//!   (reason `buffer_corrupt`) that travels in the next sealed batch.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use bess_protocol::{Batch, Gap, GapReason};

use super::gaps::gap_reason_code;
use super::queue::first_seq;
use super::{BufferError, SqliteBuffer};

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

/// Fail with a corruption error unless `PRAGMA quick_check` passes.
pub(super) fn quick_check(conn: &Connection) -> Result<(), BufferError> {
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(BufferError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(format!("corrupt: {check}")),
        )));
    }
    Ok(())
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
        let next_seq = salvage.next_seq.max(first_seq(now_ms));
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
    use crate::buffer::fixtures::{catalog, decode_all, frames, seal_frames};
    use bess_protocol::BatchSeq;

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
}
