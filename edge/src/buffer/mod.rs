//! The SQLite store-and-forward buffer: sealed batches wait here, encoded
//! exactly as they will be sent, until the uplink confirms delivery.
//!
//! One concern per file:
//! - `queue`: sealing, the sequence counter and the queue the uplinks
//!   take from; why a number is never reused, even across a power cut.
//! - `disk_cap`: making room when the batches outgrow the disk cap
//!   (downsampling, then dropping by content class), with gap records.
//! - `gaps`: gap records waiting for the next sealed batch.
//! - `content`: the content classes the disk cap drops by.
//! - `recovery`: `quick_check` on open and the salvage of a corrupt file.
//! - `schema`: the versioned migrations of the file's tables.
//! - `handle`: [`BufferHandle`], the buffer shared by the async tasks.
//!
//! A [`SqliteBuffer`] owns its connection; batches in flight (handed to an
//! uplink and not yet settled) are known in memory only and never dropped.

mod content;
mod disk_cap;
mod gaps;
mod handle;
mod queue;
mod recovery;
mod schema;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod model_tests;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rusqlite::Connection;

use std::sync::Arc;

use bess_protocol::{Batch, CatalogHash, Codec, Effort, EncodeError, SiteSigner};

pub use content::{content_of, event_groups, BatchContent};

/// A batch as the buffer keeps and the uplink sends it: zstd at
/// [`Effort::Compact`], since each batch crosses the site's link once;
/// signed with the site's key when it has one (a batch the disk cap
/// rewrites is signed again, under the same sequence number).
fn encode_for_uplink(batch: &Batch, signer: Option<&SiteSigner>) -> Result<Vec<u8>, EncodeError> {
    match signer {
        Some(signer) => batch.encode_signed(Codec::Zstd, Effort::Compact, signer),
        None => batch.encode_with(Codec::Zstd, Effort::Compact),
    }
}
pub use disk_cap::Dropped;
pub use handle::BufferHandle;
pub use queue::{BufferStats, SealRequest, SealSummary, Sealed, StoredBatch};
pub use recovery::Opened;

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
    #[error("buffer schema migration {version} failed: {source}")]
    Migration {
        version: u32,
        source: rusqlite::Error,
    },
    #[error(
        "the buffer file has schema version {found}, newer than this agent's {supported}; \
         run the newer agent to drain it, or move the file aside"
    )]
    NewerSchema { found: u32, supported: u32 },
}

pub struct SqliteBuffer {
    conn: Connection,
    /// Batches handed to the uplink and not yet settled: never dropped.
    in_flight: HashSet<u64>,
    /// Thin the backlog's fast measurement groups to min/max/last per
    /// bucket of this many milliseconds before dropping anything.
    downsample_bucket_ms: Option<i64>,
    /// Event groups per catalog, for the content class of each seal.
    event_groups: HashMap<CatalogHash, HashSet<u16>>,
    /// Signs every batch sealed or rewritten from now on.
    signer: Option<Arc<SiteSigner>>,
}

impl SqliteBuffer {
    /// Open the file as it is (no recovery): durability settings (see
    /// `queue`), integrity check, schema migrations, sequence counter.
    fn open_checked(path: &Path, now_ms: i64) -> Result<Self, BufferError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        recovery::quick_check(&conn)?;
        schema::migrate(&mut conn)?;
        queue::seed_sequence(&conn, now_ms)?;
        Ok(Self {
            conn,
            in_flight: HashSet::new(),
            downsample_bucket_ms: None,
            event_groups: HashMap::new(),
            signer: None,
        })
    }

    /// Sign the batches sealed (or rewritten by the disk cap) from now on
    /// with `signer`; `None` seals unsigned batches.
    pub fn set_signer(&mut self, signer: Option<SiteSigner>) {
        self.signer = signer.map(Arc::new);
    }
}
