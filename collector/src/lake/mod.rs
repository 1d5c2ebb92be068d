//! The history lake: every stored sample, exported to Parquet files in
//! S3-compatible object storage for ad-hoc SQL (Athena, Trino, Spark,
//! DuckDB) without touching the operational database.
//!
//! This module owns the export loop and the guarantee it gives: each stored
//! sample is in the lake exactly once, whatever restarts, crashes and
//! concurrent exporters do. The unit is a (site, UTC hour), one object each
//! ([`objects`] for keys and uploads, [`schema`] for the file, [`pending`]
//! for the bookkeeping). Exporting one site-hour:
//!
//! 1. claim it (transaction-level advisory lock; another exporter skips it),
//! 2. read the mark's generation, then every stored sample of the hour,
//! 3. encode them as one Parquet file, in a deterministic order,
//! 4. PUT it under the site-hour's fixed key (replacing any earlier one),
//! 5. in the same transaction, record the object and delete the mark only
//!    if its generation is unchanged, then COMMIT (which frees the claim).
//!
//! A crash anywhere before 5 leaves the mark, and the retry writes the same
//! key with the same bytes. A batch committed after 2 bumps the generation,
//! so the mark stays and the hour is rewritten whole, late rows included.
//! See `docs/architecture.md` ("History lake") for the argument in full.

pub mod objects;
pub mod pending;
pub mod schema;

use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use objects::{Lake, LakeLocation};
pub use pending::SliceKey;

/// How the exporter picks its work.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// A site-hour is exported once it ended this long ago and nothing was
    /// written to it for this long: batches still on their way for it
    /// arrive first, and a late backlog rewrites it once, not once per batch.
    pub grace: Duration,
    /// Export hours that have not ended yet too (rewritten as they fill).
    /// For tests and demonstrations.
    pub open_hours: bool,
    /// Sleep between passes when nothing is eligible.
    pub interval: Duration,
    /// Site-hours exported at the same time.
    pub jobs: usize,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(300),
            open_hours: false,
            interval: Duration::from_secs(10),
            jobs: 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("encoding Parquet: {0}")]
    Encode(#[from] parquet::errors::ParquetError),
    #[error("encoding task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What exporting one site-hour did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SliceOutcome {
    /// The object was written. `cleared`: the mark was removed; `false` when
    /// a batch for the hour arrived meanwhile and it stays pending.
    Written {
        object: String,
        rows: u64,
        bytes: u64,
        cleared: bool,
    },
    /// Another exporter holds the claim.
    Busy,
    /// Not pending any more (another exporter finished it).
    NotPending,
    /// No stored samples and nothing in the lake: the mark is cleared, no
    /// object written.
    Empty,
    /// The database holds fewer rows for the hour than the lake's object
    /// (retention dropped them): the object is kept, the mark cleared.
    Refused { stored: u64, exported: u64 },
}

/// Totals of a pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportTotals {
    pub objects: u64,
    pub rows: u64,
    pub bytes: u64,
    pub refused: u64,
    pub busy: u64,
}

impl ExportTotals {
    fn add(&mut self, outcome: &SliceOutcome) {
        match outcome {
            SliceOutcome::Written { rows, bytes, .. } => {
                self.objects += 1;
                self.rows += rows;
                self.bytes += bytes;
            }
            SliceOutcome::Refused { .. } => self.refused += 1,
            SliceOutcome::Busy => self.busy += 1,
            SliceOutcome::NotPending | SliceOutcome::Empty => {}
        }
    }
}

/// An object ready to upload: what steps 2 and 3 produce.
struct Prepared {
    generation: i64,
    object: String,
    rows: u64,
    body: Bytes,
}

/// What a claimed site-hour turned out to need.
enum Plan {
    Upload(Prepared),
    Skip(SliceOutcome, Option<i64>),
}

pub struct Exporter {
    pool: deadpool_postgres::Pool,
    lake: Lake,
    settings: ExportSettings,
}

impl Exporter {
    pub fn new(pool: deadpool_postgres::Pool, lake: Lake, settings: ExportSettings) -> Self {
        Self {
            pool,
            lake,
            settings,
        }
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// Export until cancelled: a pass, then a sleep when it found nothing.
    /// A failing pass (database or store unreachable) is logged and retried
    /// after the interval; nothing is lost meanwhile, the marks stay.
    pub async fn run(&self, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            let idle = match self.pass(&cancel).await {
                Ok(totals) => {
                    if totals.objects > 0 {
                        tracing::info!(
                            objects = totals.objects,
                            samples = totals.rows,
                            bytes = totals.bytes,
                            "lake objects written"
                        );
                    }
                    totals.objects == 0 && totals.refused == 0
                }
                Err(e) => {
                    tracing::warn!("lake export pass failed, retrying: {e}");
                    true
                }
            };
            if idle {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(self.settings.interval) => {}
                }
            }
        }
    }

    /// Export every eligible site-hour, until none is left (or `cancel`).
    pub async fn export_pending(
        &self,
        cancel: &CancellationToken,
    ) -> Result<ExportTotals, ExportError> {
        let mut totals = ExportTotals::default();
        loop {
            let pass = self.pass(cancel).await?;
            let done = pass.objects == 0 && pass.refused == 0;
            totals.objects += pass.objects;
            totals.rows += pass.rows;
            totals.bytes += pass.bytes;
            totals.refused += pass.refused;
            totals.busy += pass.busy;
            if done || cancel.is_cancelled() {
                return Ok(totals);
            }
        }
    }

    /// One batch of eligible site-hours, `jobs` at a time.
    async fn pass(&self, cancel: &CancellationToken) -> Result<ExportTotals, ExportError> {
        let keys = {
            let client = self.pool.get().await?;
            pending::eligible(
                &**client,
                self.settings.grace,
                self.settings.open_hours,
                256,
            )
            .await?
        };
        let mut totals = ExportTotals::default();
        let mut results = futures::stream::iter(keys)
            .take_while(|_| std::future::ready(!cancel.is_cancelled()))
            .map(|key| self.export_slice(key))
            .buffer_unordered(self.settings.jobs.max(1));
        let mut first_error = None;
        while let Some(result) = results.next().await {
            match result {
                Ok(outcome) => totals.add(&outcome),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if totals.objects == 0 => Err(e),
            Some(e) => {
                tracing::warn!("lake export: some site-hours failed and stay pending: {e}");
                Ok(totals)
            }
            None => Ok(totals),
        }
    }

    /// Export one site-hour (steps 1 to 5 of the module documentation).
    pub async fn export_slice(&self, key: SliceKey) -> Result<SliceOutcome, ExportError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let plan = self.claim_and_prepare(&tx, key).await?;
        let outcome = match plan {
            Plan::Skip(outcome, generation) => {
                if let Some(generation) = generation {
                    pending::settle(&tx, key, generation, None).await?;
                }
                outcome
            }
            Plan::Upload(prepared) => {
                self.lake
                    .put(&prepared.object, prepared.body.clone())
                    .await?;
                let record = pending::ExportRecord {
                    object: prepared.object.clone(),
                    rows: prepared.rows as i64,
                    bytes: prepared.body.len() as i64,
                };
                let cleared = pending::settle(&tx, key, prepared.generation, Some(&record)).await?;
                SliceOutcome::Written {
                    object: prepared.object,
                    rows: prepared.rows,
                    bytes: prepared.body.len() as u64,
                    cleared,
                }
            }
        };
        tx.commit().await?;
        if let SliceOutcome::Refused { stored, exported } = &outcome {
            tracing::warn!(
                site_id = key.site_id,
                hour = %crate::time::rfc3339(crate::time::timestamp(key.hour_ms)),
                stored,
                exported,
                "the database holds fewer samples for this hour than the lake (retention?): the lake's object is kept"
            );
        }
        Ok(outcome)
    }

    /// Steps 1 to 4, then stop as a crash would, before the database learns
    /// of the upload: the claim is released and the mark stays. Returns the
    /// key and bytes written. What a kill between upload and settle leaves
    /// behind, for tests.
    pub async fn upload_without_settling(
        &self,
        key: SliceKey,
    ) -> Result<Option<(String, Bytes)>, ExportError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Plan::Upload(prepared) = self.claim_and_prepare(&tx, key).await? else {
            return Ok(None);
        };
        self.lake
            .put(&prepared.object, prepared.body.clone())
            .await?;
        drop(tx); // rolled back: nothing recorded
        Ok(Some((prepared.object, prepared.body)))
    }

    async fn claim_and_prepare(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        key: SliceKey,
    ) -> Result<Plan, ExportError> {
        if !pending::try_claim(tx, key).await? {
            return Ok(Plan::Skip(SliceOutcome::Busy, None));
        }
        let Some(generation) = pending::generation(tx, key).await? else {
            return Ok(Plan::Skip(SliceOutcome::NotPending, None));
        };
        let rows = pending::read_rows(tx, key).await?;
        let exported = pending::exported_rows(tx, key).await?;
        let stored = rows.len() as u64;
        match exported {
            Some(exported) if stored < exported as u64 => {
                return Ok(Plan::Skip(
                    SliceOutcome::Refused {
                        stored,
                        exported: exported as u64,
                    },
                    Some(generation),
                ))
            }
            None if stored == 0 => return Ok(Plan::Skip(SliceOutcome::Empty, Some(generation))),
            _ => {}
        }
        let site = pending::site_name(tx, key.site_id).await?;
        let object = self.lake.location.samples_key(&site, key.hour_ms);
        let body = tokio::task::spawn_blocking(move || schema::encode(&rows)).await??;
        Ok(Plan::Upload(Prepared {
            generation,
            object,
            rows: stored,
            body: Bytes::from(body),
        }))
    }
}
