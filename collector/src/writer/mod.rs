//! `SampleWriter`: turns a chunk of Kafka messages into one database
//! transaction, in three steps that the ingest pipeline runs on different
//! tasks so that decoding and writing overlap (steps 1 and 2 in
//! `prepare.rs`, step 3 here):
//!
//! 1. [`decode_chunk`] (CPU, blocking pool): envelope + zstd + postcard.
//! 2. [`SampleWriter::prepare`]: resolve each batch's catalog (cached; the
//!    database only for a catalog not seen before), check frames and gaps
//!    against it, then encode the frames as binary COPY rows (blocking pool).
//! 3. [`SampleWriter::commit`]: one transaction with one `batch_ledger` row
//!    per batch (`ON CONFLICT DO NOTHING RETURNING`: a batch already in the
//!    ledger is a redelivery and is skipped), the new batches' COPY rows, gap
//!    records, sites' last-seen, messages set aside in `rejected_messages`,
//!    the rollups to redo — (plain PostgreSQL) the minutes whose rollups are
//!    now stale, (TimescaleDB) the hours older than the refresh policies
//!    reach (`late_rollups`) — and the site-hours the history lake must
//!    export again (`lake_pending`).
//!
//! The caller stores Kafka offsets only after `commit` returns `Ok`, i.e.
//! after COMMIT (and after the dead-letter deliveries, see `ingest.rs`).
//! `commit` hands the new frames back as [`PolledFrame`]s (layout,
//! timestamp, raw readings, arrival time) for the live hub; what clients
//! see of them is the live module's business, never the writer's.

use bytes::Bytes;
use futures::{pin_mut, SinkExt};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use time::OffsetDateTime;

use crate::catalog::CatalogRegistry;
use crate::copy::{FrameCopyEncoder, COPY_FRAMES, COPY_HEADER, COPY_TRAILER};
use crate::dead_letter::Rejection;
use crate::last_seen::LastSeenThrottle;
use crate::late_rollups;
use crate::message::IngestMessage;
use crate::polled::PolledFrame;
use crate::rules::{CommittedBatch, Rules};

mod prepare;
use crate::site_keys::{SignaturePolicy, SiteKeys};
use crate::storage::{self, FramePartitions, StorageBackend};
use crate::time::timestamp;
use prepare::encode;
pub use prepare::{decode_chunk, DecodedChunk, PreparedBatch, PreparedChunk};

#[derive(Debug, Default)]
pub struct WriteOutcome {
    pub batches_written: u64,
    pub batches_duplicate: u64,
    pub messages_rejected: u64,
    pub frames_written: u64,
    pub samples_written: u64,
    pub gaps_written: u64,
    /// Frames of derived points computed from the new frames and stored.
    pub derived_written: u64,
    /// The new frames, committed, for the live hub (empty unless asked for).
    pub live: Vec<PolledFrame>,
    /// Messages set aside, to be dead-lettered.
    pub rejected: Vec<Rejection>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("database: {}", database_detail(.0))]
    Database(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("encoding task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A database error with the server's message ("db error" alone says
/// nothing), its detail and the constraint or column it names.
pub fn database_detail(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            if let Some(constraint) = db.constraint() {
                text.push_str(&format!(" [constraint {constraint}]"));
            }
            text
        }
        None => error.to_string(),
    }
}

pub struct SampleWriter {
    pub pool: deadpool_postgres::Pool,
    pub catalogs: Arc<CatalogRegistry>,
    pub backend: StorageBackend,
    pub partitions: Arc<FramePartitions>,
    last_seen: LastSeenThrottle,
    /// Alert rules evaluated in each transaction on its new batches.
    rules: Option<Arc<Rules>>,
    /// The sites' keys and what is demanded of a batch's signature.
    pub site_keys: Arc<SiteKeys>,
}

impl SampleWriter {
    pub fn new(pool: deadpool_postgres::Pool, backend: StorageBackend) -> Self {
        Self {
            pool,
            catalogs: Arc::new(CatalogRegistry::default()),
            backend,
            partitions: Arc::new(FramePartitions::default()),
            last_seen: LastSeenThrottle::default(),
            rules: None,
            site_keys: SiteKeys::new(SignaturePolicy::MIGRATING),
        }
    }

    /// Check batches' signatures against these keys, with their policy.
    pub fn with_site_keys(mut self, keys: Arc<SiteKeys>) -> Self {
        self.site_keys = keys;
        self
    }

    /// Evaluate these rules on every new batch, in its transaction.
    pub fn with_rules(mut self, rules: Arc<Rules>) -> Self {
        self.rules = Some(rules);
        self
    }

    /// Whether [`prepare`](Self::prepare) must build the batches' frames
    /// (some rule reads them).
    pub fn wants_frames(&self) -> bool {
        self.rules.as_ref().is_some_and(|r| !r.is_empty())
    }

    /// All three steps in one call (for tests and tools).
    pub async fn write(&self, messages: &[IngestMessage]) -> Result<WriteOutcome, WriteError> {
        let decoded = decode_chunk(messages.to_vec(), &self.site_keys);
        let prepared = self.prepare(decoded, true).await.map_err(|(e, _)| e)?;
        self.commit(&prepared).await
    }

    /// Resolve catalogs and encode. With `live`, [`commit`](Self::commit)
    /// hands the new frames back (tests and tools; the ingest pipeline's live
    /// view comes from the live lane). On a database error the decoded
    /// chunk is handed back so the caller can retry without decoding again.
    pub async fn prepare(
        &self,
        decoded: DecodedChunk,
        live: bool,
    ) -> Result<PreparedChunk, (WriteError, DecodedChunk)> {
        let resolved = match self.resolve(&decoded).await {
            Ok(resolved) => resolved,
            Err(e) => return Err((e, decoded)),
        };
        // Rules and derived points read the frames too.
        let frames = live || self.wants_frames();
        match tokio::task::spawn_blocking(move || encode(decoded, resolved, frames)).await {
            Ok(mut prepared) => {
                prepared.hand_back_frames = live;
                Ok(prepared)
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Write a prepared chunk in one transaction.
    pub async fn commit(&self, chunk: &PreparedChunk) -> Result<WriteOutcome, WriteError> {
        let mut client = self.pool.get().await?;
        if self.backend == StorageBackend::PostgreSql {
            let days: BTreeSet<i64> = chunk
                .batches
                .iter()
                .flat_map(|b| b.days.iter().copied())
                .collect();
            self.partitions.ensure(&**client, &days).await?;
        }
        let tx = client.transaction().await?;

        // Ledger rows first: the ones that come back are new; the rest were written before.
        let mut seen = HashSet::new();
        let candidates: Vec<&PreparedBatch> = chunk
            .batches
            .iter()
            .filter(|b| seen.insert((b.site_id, b.seq)))
            .collect();
        let site_ids: Vec<i32> = candidates.iter().map(|b| b.site_id).collect();
        let seqs: Vec<i64> = candidates.iter().map(|b| b.seq).collect();
        let partitions: Vec<i32> = candidates
            .iter()
            .map(|b| chunk.messages[b.message].partition)
            .collect();
        let offsets: Vec<i64> = candidates
            .iter()
            .map(|b| chunk.messages[b.message].offset)
            .collect();
        let frames: Vec<i32> = candidates.iter().map(|b| b.frames as i32).collect();
        let samples: Vec<i32> = candidates.iter().map(|b| b.samples as i32).collect();
        let new_rows = tx
            .query(
                "INSERT INTO batch_ledger (site_id, seq, kafka_partition, kafka_offset, frames, samples)
                 SELECT * FROM unnest($1::int[], $2::int8[], $3::int[], $4::int8[], $5::int[], $6::int[])
                 ON CONFLICT DO NOTHING
                 RETURNING site_id, seq",
                &[&site_ids, &seqs, &partitions, &offsets, &frames, &samples],
            )
            .await?;
        let new: HashSet<(i32, i64)> = new_rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let written: Vec<&PreparedBatch> = candidates
            .into_iter()
            .filter(|b| new.contains(&(b.site_id, b.seq)))
            .collect();
        let mut outcome = WriteOutcome {
            batches_duplicate: (chunk.batches.len() - written.len()) as u64,
            batches_written: written.len() as u64,
            messages_rejected: chunk.rejected.len() as u64,
            rejected: chunk.rejected.clone(),
            ..WriteOutcome::default()
        };

        // Derived points of the new frames, stored with them.
        let derived: Vec<Vec<PolledFrame>> = match &self.rules {
            Some(rules) if !written.is_empty() => rules.derive(
                &written
                    .iter()
                    .map(|b| (b.site_id, b.catalog_hash, &b.live[..]))
                    .collect::<Vec<_>>(),
            ),
            _ => Vec::new(),
        };
        let derived_rows = encode_derived(&derived);
        outcome.derived_written = derived.iter().map(|d| d.len() as u64).sum();

        if written.iter().any(|b| b.frames > 0) || !derived_rows.is_empty() {
            let sink = tx.copy_in::<_, Bytes>(COPY_FRAMES).await?;
            pin_mut!(sink);
            sink.feed(Bytes::from_static(COPY_HEADER)).await?;
            for batch in written.iter().filter(|b| !b.rows.is_empty()) {
                sink.feed(batch.rows.clone()).await?;
            }
            if !derived_rows.is_empty() {
                sink.feed(Bytes::from(derived_rows)).await?;
            }
            sink.feed(Bytes::from_static(COPY_TRAILER)).await?;
            sink.finish().await?;
        }

        let mut gap_columns = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        let mut last_seen: HashMap<i32, i64> = HashMap::new();
        let mut minutes = BTreeSet::new();
        let mut site_hours = BTreeSet::new();
        for frame in derived.iter().flatten() {
            minutes.insert(storage::minute_of(frame.ts_ms));
        }
        for batch in &written {
            outcome.frames_written += batch.frames;
            outcome.samples_written += batch.samples;
            if chunk.hand_back_frames {
                outcome.live.extend(batch.live.iter().cloned());
            }
            minutes.extend(batch.minutes.iter().copied());
            site_hours.extend(batch.hours.iter().map(|h| (batch.site_id, *h)));
            if let Some(ts) = batch.newest_ts_ms {
                let seen = last_seen.entry(batch.site_id).or_insert(ts);
                *seen = (*seen).max(ts);
            }
            for gap in &batch.gaps {
                gap_columns.0.push(batch.site_id);
                gap_columns.1.push(batch.seq);
                gap_columns.2.push(gap.device_id);
                gap_columns.3.push(timestamp(gap.first_ts_ms));
                gap_columns.4.push(timestamp(gap.last_ts_ms));
                gap_columns.5.push(gap.samples);
                gap_columns.6.push(gap.reason);
            }
        }
        if !gap_columns.0.is_empty() {
            outcome.gaps_written = gap_columns.0.len() as u64;
            let (a, b, c, d, e, f, g) = &gap_columns;
            tx.execute(
                "INSERT INTO gaps (site_id, seq, device_id, first_ts, last_ts, samples, reason)
                 SELECT * FROM unnest($1::int[], $2::int8[], $3::int[], $4::timestamptz[], $5::timestamptz[], $6::int8[], $7::text[])",
                &[a, b, c, d, e, f, g],
            )
            .await?;
        }
        let last_seen = self.last_seen.due(last_seen);
        if !last_seen.is_empty() {
            let (ids, ts): (Vec<i32>, Vec<OffsetDateTime>) = last_seen
                .iter()
                .map(|(id, ms)| (*id, timestamp(*ms)))
                .unzip();
            tx.execute(
                "UPDATE sites s SET last_seen = greatest(coalesce(s.last_seen, v.ts), v.ts)
                 FROM unnest($1::int[], $2::timestamptz[]) AS v(site_id, ts) WHERE s.site_id = v.site_id",
                &[&ids, &ts],
            )
            .await?;
        }
        if !chunk.rejected.is_empty() {
            let rows: Vec<&IngestMessage> = chunk
                .rejected
                .iter()
                .map(|r| &chunk.messages[r.message])
                .collect();
            let topics: Vec<&str> = rows.iter().map(|m| m.topic.as_str()).collect();
            let partitions: Vec<i32> = rows.iter().map(|m| m.partition).collect();
            let offsets: Vec<i64> = rows.iter().map(|m| m.offset).collect();
            let keys: Vec<Option<&[u8]>> = rows.iter().map(|m| m.key.as_deref()).collect();
            let classes: Vec<&str> = chunk.rejected.iter().map(|r| r.class.as_str()).collect();
            let reasons: Vec<&str> = chunk.rejected.iter().map(|r| r.reason.as_str()).collect();
            let payloads: Vec<&[u8]> = rows.iter().map(|m| m.payload.as_slice()).collect();
            tx.execute(
                "INSERT INTO rejected_messages (kafka_topic, kafka_partition, kafka_offset, message_key, reason_class, reason, payload)
                 SELECT * FROM unnest($1::text[], $2::int[], $3::int8[], $4::bytea[], $5::text[], $6::text[], $7::bytea[])
                 ON CONFLICT DO NOTHING",
                &[&topics, &partitions, &offsets, &keys, &classes, &reasons, &payloads],
            )
            .await?;
        }
        if self.backend == StorageBackend::PostgreSql && !minutes.is_empty() {
            let buckets: Vec<OffsetDateTime> = minutes.into_iter().map(timestamp).collect();
            tx.execute(
                "INSERT INTO rollup_pending (bucket) SELECT unnest($1::timestamptz[]) ON CONFLICT DO NOTHING",
                &[&buckets],
            )
            .await?;
        } else if self.backend == StorageBackend::TimescaleDb {
            let late = late_rollups::late_hours(&minutes, crate::time::unix_ms_now());
            if !late.is_empty() {
                late_rollups::mark(&tx, &late).await?;
            }
        }
        if !site_hours.is_empty() {
            // In key order, so concurrent writers lock the marks in the same
            // order (no deadlock between two chunks of the same site-hours).
            let (sites, hours): (Vec<i32>, Vec<OffsetDateTime>) = site_hours
                .into_iter()
                .map(|(site, hour)| (site, timestamp(hour)))
                .unzip();
            tx.execute(
                "INSERT INTO lake_pending (site_id, hour)
                 SELECT * FROM unnest($1::int[], $2::timestamptz[])
                 ON CONFLICT (site_id, hour) DO UPDATE
                 SET generation = lake_pending.generation + 1, marked_at = now()",
                &[&sites, &hours],
            )
            .await?;
        }
        let evaluated = match &self.rules {
            Some(rules) if !written.is_empty() && !rules.is_empty() => {
                let mut batches: Vec<CommittedBatch> = written
                    .iter()
                    .map(|b| CommittedBatch {
                        site_id: b.site_id,
                        partition: chunk.messages[b.message].partition,
                        frames: &b.live,
                    })
                    .collect();
                // Rules see derived points like any other.
                for (b, frames) in written.iter().zip(&derived) {
                    if !frames.is_empty() {
                        batches.push(CommittedBatch {
                            site_id: b.site_id,
                            partition: chunk.messages[b.message].partition,
                            frames,
                        });
                    }
                }
                match rules.evaluate(&tx, &batches).await {
                    Ok(evaluated) => Some((rules, evaluated)),
                    Err(e) => {
                        rules.failed(written.iter().map(|b| b.site_id));
                        return Err(e.into());
                    }
                }
            }
            _ => None,
        };
        if let Err(e) = tx.commit().await {
            if let Some((rules, _)) = &evaluated {
                rules.failed(written.iter().map(|b| b.site_id));
            }
            return Err(e.into());
        }
        if let Some((rules, evaluated)) = &evaluated {
            rules.committed(evaluated);
        }
        self.last_seen.written(&last_seen);
        Ok(outcome)
    }
}

/// Binary COPY tuples of derived frames (no header/trailer).
fn encode_derived(derived: &[Vec<PolledFrame>]) -> Vec<u8> {
    let mut encoder = FrameCopyEncoder { buf: Vec::new() };
    for frame in derived.iter().flatten() {
        let layout = frame.layout();
        encoder.frame(
            layout.layout_id,
            frame.ts_ms,
            &layout.points,
            &frame.readings,
        );
    }
    encoder.buf
}
