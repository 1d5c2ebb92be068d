//! The buffer file's schema: numbered migrations, versioned by SQLite's
//! `PRAGMA user_version`.
//!
//! Invariants:
//! - `user_version` is the number of the last migration applied. Each
//!   migration runs in its own transaction together with the bump of
//!   `user_version`, so a power cut leaves the file at one version or the
//!   next, never in between.
//! - Migrations are never edited once released; a change is a new file.
//! - A file from before versioning (`user_version` 0 with tables in it) is
//!   read for what it has: the tables and the columns the agent used to add
//!   with an ad-hoc `ALTER TABLE` map to the migration they correspond to,
//!   and only the migrations after that one run. Its batches and its
//!   sequence counter are kept as they are.
//! - A file with a version newer than this agent knows is refused rather
//!   than written to with a schema it does not understand.

use rusqlite::Connection;

use super::BufferError;

/// One migration: the `user_version` it brings the file to.
struct Migration {
    version: u32,
    sql: &'static str,
}

/// In order. Never edit a released migration; add one.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("sql/001_batches.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("sql/002_gaps.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("sql/003_content.sql"),
    },
    Migration {
        version: 4,
        sql: include_str!("sql/004_downsampled.sql"),
    },
];

/// The schema version this agent writes.
pub(super) const CURRENT_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Bring the file to [`CURRENT_VERSION`]; returns the version it was found at
/// (for a file from before versioning, the version its tables correspond to).
pub(super) fn migrate(conn: &mut Connection) -> Result<u32, BufferError> {
    let stamped = user_version(conn)?;
    if stamped > CURRENT_VERSION {
        return Err(BufferError::NewerSchema {
            found: stamped,
            supported: CURRENT_VERSION,
        });
    }
    let found = if stamped == 0 {
        unversioned_version(conn)?
    } else {
        stamped
    };
    if found != stamped {
        // Record what the unversioned file already holds before running
        // anything, so the migrations below start from a stamped file.
        let tx = conn.transaction()?;
        tx.pragma_update(None, "user_version", found)?;
        tx.commit()?;
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration.sql)
            .map_err(|source| BufferError::Migration {
                version: migration.version,
                source,
            })?;
        tx.pragma_update(None, "user_version", migration.version)?;
        tx.commit()?;
    }
    Ok(found)
}

pub(super) fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// The migration an unversioned file's tables correspond to: 0 for an empty
/// file; otherwise what the agent's earlier open path had created in it
/// (`001` and `002` ran on every open, then two columns were added when
/// missing, `content` before `downsampled`).
fn unversioned_version(conn: &Connection) -> rusqlite::Result<u32> {
    let table = |name: &str| -> rusqlite::Result<bool> {
        conn.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1")?
            .exists([name])
    };
    let column = |name: &str| -> rusqlite::Result<bool> {
        conn.prepare("SELECT 1 FROM pragma_table_info('batches') WHERE name = ?1")?
            .exists([name])
    };
    Ok(if !table("batches")? {
        0
    } else if !(table("pending_gaps")? && table("catalogs")?) {
        1
    } else if !column("content")? {
        2
    } else if !column("downsampled")? {
        3
    } else {
        4
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{SealSummary, SqliteBuffer};
    use bess_protocol::BatchSeq;

    /// The tables exactly as the agent created them before the schema was
    /// versioned (`001_buffer.sql`, `002_gaps.sql`).
    const UNVERSIONED_TABLES: &str = "
        CREATE TABLE IF NOT EXISTS meta (
            key   TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE IF NOT EXISTS batches (
            seq          INTEGER PRIMARY KEY,
            sealed_at_ms INTEGER NOT NULL,
            frames       INTEGER NOT NULL,
            samples      INTEGER NOT NULL,
            first_ts_ms  INTEGER,
            last_ts_ms   INTEGER,
            payload      BLOB NOT NULL
        ) STRICT;
        CREATE TABLE IF NOT EXISTS pending_gaps (
            id          INTEGER PRIMARY KEY,
            device      INTEGER NOT NULL,
            first_ts_ms INTEGER NOT NULL,
            last_ts_ms  INTEGER NOT NULL,
            samples     INTEGER NOT NULL,
            reason      INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE IF NOT EXISTS catalogs (
            hash INTEGER PRIMARY KEY,
            body BLOB NOT NULL
        ) STRICT;
    ";

    /// The columns the agent then added when they were missing.
    const UNVERSIONED_ALTERS: &str = "
        ALTER TABLE batches ADD COLUMN content INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE batches ADD COLUMN downsampled INTEGER NOT NULL DEFAULT 0;
    ";

    /// An unversioned buffer file with two batches (one thinned already when
    /// the columns exist), one pending gap record and its sequence counter.
    fn unversioned_file(path: &std::path::Path, with_alters: bool) {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(UNVERSIONED_TABLES).unwrap();
        if with_alters {
            conn.execute_batch(UNVERSIONED_ALTERS).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO meta (key, value) VALUES ('next_seq', 4002);
             INSERT INTO batches (seq, sealed_at_ms, frames, samples, first_ts_ms, last_ts_ms, payload)
                 VALUES (4000, 10, 1, 2, 5, 6, x'0102'), (4001, 11, 1, 2, 7, 8, x'0304');
             INSERT INTO pending_gaps (device, first_ts_ms, last_ts_ms, samples, reason)
                 VALUES (0, 1, 2, 3, 0);",
        )
        .unwrap();
        if with_alters {
            conn.execute_batch("UPDATE batches SET content = 0, downsampled = 1 WHERE seq = 4001")
                .unwrap();
        }
        assert_eq!(user_version(&conn).unwrap(), 0);
    }

    fn opens_an_unversioned_file_keeping_its_batches(with_alters: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sqlite");
        unversioned_file(&path, with_alters);

        let mut buffer = SqliteBuffer::open(&path, 99).unwrap();
        assert_eq!(user_version(&buffer.conn).unwrap(), CURRENT_VERSION);
        let stored = buffer.oldest(None, 10).unwrap();
        assert_eq!(
            stored.iter().map(|b| b.seq).collect::<Vec<_>>(),
            vec![BatchSeq(4000), BatchSeq(4001)]
        );
        assert_eq!(stored[1].payload, vec![3, 4]);
        let stats = buffer.stats().unwrap();
        assert_eq!(stats.next_seq, 4002, "the sequence counter is kept");
        assert_eq!(stats.pending_gaps, 1);
        let columns: (i64, i64) = buffer
            .conn
            .query_row(
                "SELECT content, downsampled FROM batches WHERE seq = 4001",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let expected = if with_alters { (0, 1) } else { (1, 0) };
        assert_eq!(columns, expected);

        let next = buffer
            .seal(SealSummary::default(), |_, _| Ok(vec![9]))
            .unwrap();
        assert_eq!(next, BatchSeq(4002));
        drop(buffer);
        let buffer = SqliteBuffer::open(&path, 99).unwrap();
        assert_eq!(
            buffer.stats().unwrap().batches,
            3,
            "reopening changes nothing"
        );
        assert_eq!(user_version(&buffer.conn).unwrap(), CURRENT_VERSION);
    }

    #[test]
    fn an_unversioned_file_with_the_added_columns_opens_and_keeps_its_batches() {
        opens_an_unversioned_file_keeping_its_batches(true);
    }

    #[test]
    fn an_unversioned_file_without_the_added_columns_opens_and_keeps_its_batches() {
        opens_an_unversioned_file_keeping_its_batches(false);
    }

    #[test]
    fn an_unversioned_file_from_before_the_gap_tables_gets_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            &UNVERSIONED_TABLES[..UNVERSIONED_TABLES
                .find("CREATE TABLE IF NOT EXISTS pending_gaps")
                .unwrap()],
        )
        .unwrap();
        conn.execute_batch(
            "INSERT INTO meta (key, value) VALUES ('next_seq', 12);
             INSERT INTO batches (seq, sealed_at_ms, frames, samples, payload) VALUES (11, 1, 0, 0, x'00');",
        )
        .unwrap();
        drop(conn);
        let mut conn = Connection::open(&path).unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), 1);
        assert_eq!(user_version(&conn).unwrap(), CURRENT_VERSION);
        let count: i64 = conn
            .query_row("SELECT count(*) FROM batches", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 1);
    }

    #[test]
    fn a_new_file_is_created_at_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("b.sqlite")).unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), 0);
        assert_eq!(user_version(&conn).unwrap(), CURRENT_VERSION);
        assert_eq!(unversioned_version(&conn).unwrap(), CURRENT_VERSION);
        assert_eq!(migrate(&mut conn).unwrap(), CURRENT_VERSION, "idempotent");
    }

    #[test]
    fn a_file_from_a_newer_agent_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("b.sqlite")).unwrap();
        conn.pragma_update(None, "user_version", CURRENT_VERSION + 1)
            .unwrap();
        let refused = migrate(&mut conn);
        assert!(
            matches!(refused, Err(BufferError::NewerSchema { found, .. }) if found == CURRENT_VERSION + 1),
            "{refused:?}"
        );
        assert_eq!(unversioned_version(&conn).unwrap(), 0, "nothing created");
    }
}
