//! `SampleWriter`: decodes a chunk of Kafka messages and writes their
//! frames with binary COPY, together with one ledger row per batch, in one
//! database transaction. A batch whose (site, seq) is already in the ledger
//! is skipped; a message that is not a valid batch is set aside in
//! `rejected_messages` with the reason. The caller stores Kafka offsets only
//! after this returns `Ok`, i.e. after COMMIT.

use futures::pin_mut;
use std::collections::HashSet;
use std::sync::Arc;
use time::OffsetDateTime;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use bess_protocol::{Batch, Reading};

use crate::catalog::{CatalogRegistry, Layouts};
use crate::live::LiveFrame;

/// One message as taken off the topic.
#[derive(Debug, Clone)]
pub struct IngestMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct WriteOutcome {
    pub batches_written: u64,
    pub batches_duplicate: u64,
    pub messages_rejected: u64,
    pub frames_written: u64,
    pub samples_written: u64,
    pub live: Vec<LiveFrame>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

pub struct SampleWriter {
    pub pool: deadpool_postgres::Pool,
    pub catalogs: Arc<CatalogRegistry>,
}

/// A batch that decoded and matched its catalog.
struct Accepted {
    site_id: i32,
    batch: Batch,
    layouts: Layouts,
    message: usize,
}

struct Rejected {
    message: usize,
    reason: String,
}

impl SampleWriter {
    pub async fn write(&self, messages: &[IngestMessage]) -> Result<WriteOutcome, WriteError> {
        let mut client = self.pool.get().await?;
        let mut accepted = Vec::with_capacity(messages.len());
        let mut rejected = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            match self.check(&mut client, message).await? {
                Ok((site_id, batch, layouts)) => accepted.push(Accepted { site_id, batch, layouts, message: index }),
                Err(reason) => rejected.push(Rejected { message: index, reason }),
            }
        }

        let tx = client.transaction().await?;
        // Ledger rows first: the ones that come back are new; the rest were written before.
        let mut seen = HashSet::new();
        accepted.retain(|a| seen.insert((a.site_id, a.batch.seq.0)));
        let site_ids: Vec<i32> = accepted.iter().map(|a| a.site_id).collect();
        let seqs: Vec<i64> = accepted.iter().map(|a| a.batch.seq.0 as i64).collect();
        let partitions: Vec<i32> = accepted.iter().map(|a| messages[a.message].partition).collect();
        let offsets: Vec<i64> = accepted.iter().map(|a| messages[a.message].offset).collect();
        let frames: Vec<i32> = accepted.iter().map(|a| a.batch.frames.len() as i32).collect();
        let samples: Vec<i32> = accepted.iter().map(|a| a.batch.sample_count() as i32).collect();
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
        let duplicates = (messages.len() - rejected.len()) as u64 - new.len() as u64;
        accepted.retain(|a| new.contains(&(a.site_id, a.batch.seq.0 as i64)));

        let sink = tx.copy_in("COPY frames (layout_id, ts, vals, status) FROM STDIN BINARY").await?;
        let copy = BinaryCopyInWriter::new(sink, &[Type::INT4, Type::TIMESTAMPTZ, Type::FLOAT8_ARRAY, Type::INT2_ARRAY]);
        pin_mut!(copy);
        let mut outcome = WriteOutcome { batches_duplicate: duplicates, ..WriteOutcome::default() };
        let mut last_seen: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
        for a in &accepted {
            for frame in &a.batch.frames {
                let layout = &a.layouts[usize::from(frame.group.0)];
                let values: Vec<Option<f64>> = layout
                    .points
                    .iter()
                    .zip(&frame.values)
                    .map(|(point, reading)| reading.raw().map(|raw| point.engineering(raw)))
                    .collect();
                let status: Option<Vec<i16>> = frame
                    .values
                    .iter()
                    .any(|r| matches!(r, Reading::Missing(_)))
                    .then(|| frame.values.iter().map(status_code).collect());
                let ts = timestamp(frame.ts_ms);
                copy.as_mut().write(&[&layout.layout_id, &ts, &values, &status]).await?;
                let seen = last_seen.entry(a.site_id).or_insert(frame.ts_ms);
                *seen = (*seen).max(frame.ts_ms);
                outcome.frames_written += 1;
                outcome.samples_written += frame.values.len() as u64;
                outcome.live.push(LiveFrame::new(a.batch.site.as_str(), layout, frame.ts_ms, &values, &frame.values));
            }
        }
        copy.finish().await?;
        for (site_id, ts_ms) in last_seen {
            tx.execute(
                "UPDATE sites SET last_seen = greatest(coalesce(last_seen, $2), $2) WHERE site_id = $1",
                &[&site_id, &timestamp(ts_ms)],
            )
            .await?;
        }
        for r in &rejected {
            let m = &messages[r.message];
            tx.execute(
                "INSERT INTO rejected_messages (kafka_topic, kafka_partition, kafka_offset, message_key, reason, payload)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[&m.topic, &m.partition, &m.offset, &m.key, &r.reason, &m.payload],
            )
            .await?;
        }
        tx.commit().await?;

        outcome.batches_written = accepted.len() as u64;
        outcome.messages_rejected = rejected.len() as u64;
        Ok(outcome)
    }

    /// Decode a message and find its catalog. `Ok(Err(reason))` sets the
    /// message aside; `Err` is a database failure worth retrying.
    async fn check(
        &self,
        client: &mut tokio_postgres::Client,
        message: &IngestMessage,
    ) -> Result<Result<(i32, Batch, Layouts), String>, WriteError> {
        let batch = match Batch::decode(&message.payload) {
            Ok(batch) => batch,
            Err(e) => return Ok(Err(format!("undecodable: {e}"))),
        };
        let site_id = self.catalogs.site_id(&*client, batch.site.as_str()).await?;
        let layouts = match &batch.catalog {
            Some(catalog) => {
                let actual = catalog.hash();
                if actual != batch.catalog_hash {
                    return Ok(Err(format!("catalog hash {} does not match its catalog ({actual})", batch.catalog_hash)));
                }
                self.catalogs.register(client, site_id, batch.catalog_hash, catalog).await?
            }
            None => match self.catalogs.lookup(client, site_id, batch.catalog_hash).await? {
                Some(layouts) => layouts,
                None => return Ok(Err(format!("unknown catalog {} for site {}", batch.catalog_hash, batch.site))),
            },
        };
        for frame in &batch.frames {
            let Some(layout) = layouts.get(usize::from(frame.group.0)) else {
                return Ok(Err(format!("frame names group {} but the catalog has {}", frame.group.0, layouts.len())));
            };
            if layout.points.len() != frame.values.len() {
                return Ok(Err(format!(
                    "frame of group {:?} has {} values, the catalog {}",
                    layout.group,
                    frame.values.len(),
                    layout.points.len()
                )));
            }
        }
        Ok(Ok((site_id, batch, layouts)))
    }
}

fn status_code(reading: &Reading) -> i16 {
    match reading {
        Reading::Missing(reason) => reason.code() as i16,
        _ => 0,
    }
}

pub fn timestamp(ts_ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
