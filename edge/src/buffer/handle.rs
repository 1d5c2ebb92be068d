//! `BufferHandle`: the buffer as the async tasks (sealer, uplinks, status
//! server) share it.
//!
//! Invariants: every call runs on the blocking pool, so SQLite work and
//! zstd encoding never stall an async worker; calls are serialised by one
//! mutex, so a seal and the disk cap it enforces, or a take for sending and
//! the in-flight marks it sets, are each one step no other call can split.
//! A task that panicked while holding the buffer does not wedge it: the next
//! call takes the lock over (each SQLite change is its own transaction).

use std::sync::{Arc, Mutex};

use bess_protocol::{BatchSeq, Catalog, Gap};

use super::{
    BufferError, BufferStats, SealRequest, SealSummary, Sealed, SqliteBuffer, StoredBatch,
};

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

    /// Seal frames into the next numbered batch and enforce the disk cap
    /// (see [`SqliteBuffer::seal_batch`]); returns what was stored.
    pub async fn seal_batch(&self, request: SealRequest) -> Result<Sealed, BufferError> {
        self.with(move |b| b.seal_batch(request)).await
    }

    /// Seal a payload the caller encodes (see [`SqliteBuffer::seal`]).
    pub async fn seal(
        &self,
        summary: SealSummary,
        encode: impl FnOnce(BatchSeq, Vec<Gap>) -> Result<Vec<u8>, bess_protocol::EncodeError>
            + Send
            + 'static,
    ) -> Result<BatchSeq, BufferError> {
        self.with(move |b| b.seal(summary, encode)).await
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
