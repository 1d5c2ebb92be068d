//! `BatchSealer`: gathers frames from all pollers and seals them into
//! numbered batches in the buffer, by count or by age. The first batch after
//! a start (sealed within a second whatever `max_age` says), and one at
//! least every `catalog_every`, carries the catalog.
//! Each seal is one call to the buffer, which numbers and encodes the batch
//! and enforces the disk cap in the same step; the gap records that
//! produces travel in the next batch.

use std::sync::Arc;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use bess_protocol::{Catalog, Frame, SiteId};

use crate::buffer::{BufferError, BufferHandle, SealRequest, Sealed};
use crate::clock::now_ms;
use crate::config::BatchConfig;
use crate::recorder::FrameRecorder;
use crate::status::{AgentStatus, Totals};

/// The first batch after a start is sealed at this age at the latest.
pub const FIRST_BATCH_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

pub struct BatchSealer {
    pub site: SiteId,
    pub catalog: Catalog,
    pub buffer: BufferHandle,
    pub config: BatchConfig,
    pub recorder: Option<FrameRecorder>,
    /// Woken after every seal, so the uplink need not poll.
    pub sealed: Arc<Notify>,
    pub status: Arc<AgentStatus>,
    /// The buffer's disk cap in bytes of sealed batches (`buffer.max_size`).
    pub cap_bytes: Option<u64>,
}

impl BatchSealer {
    /// Seal until every poller has hung up, then seal what is left.
    pub async fn run(mut self, mut frames: mpsc::Receiver<Frame>) -> Result<(), BufferError> {
        let catalog = Arc::new(self.catalog.clone());
        self.buffer.remember_catalog(self.catalog.clone()).await?;
        let max_frames = self.config.max_frames.get() as usize;
        let mut pending: Vec<Frame> = Vec::with_capacity(max_frames);
        let mut oldest: Option<Instant> = None;
        let mut catalog_sent_at: Option<Instant> = None;
        loop {
            // The first batch (it carries the catalog) goes within a second,
            // so the cloud can read the live lane's frames from the start.
            let max_age = if catalog_sent_at.is_none() {
                self.config.max_age.min(FIRST_BATCH_MAX_AGE)
            } else {
                self.config.max_age
            };
            let deadline = oldest.map(|t| t + max_age);
            let seal_now = tokio::select! {
                frame = frames.recv() => match frame {
                    Some(frame) => {
                        oldest.get_or_insert_with(Instant::now);
                        pending.push(frame);
                        pending.len() >= max_frames
                    }
                    None => break,
                },
                () = sleep_until_opt(deadline) => true,
            };
            if seal_now && !pending.is_empty() {
                let with_catalog =
                    catalog_sent_at.is_none_or(|t| t.elapsed() >= self.config.catalog_every);
                self.seal(std::mem::take(&mut pending), &catalog, with_catalog)
                    .await?;
                if with_catalog {
                    catalog_sent_at = Some(Instant::now());
                }
                oldest = None;
            }
        }
        if !pending.is_empty() {
            self.seal(pending, &catalog, catalog_sent_at.is_none())
                .await?;
        }
        // Gap records made by the last seals must not wait for the next start.
        if self.buffer.stats().await?.pending_gaps > 0 {
            self.seal_pending_gaps(&catalog).await?;
        }
        Ok(())
    }

    /// Seal a batch with no frames that carries the pending gap records. It
    /// is exempt from the disk cap (a few dozen bytes).
    async fn seal_pending_gaps(&mut self, catalog: &Arc<Catalog>) -> Result<(), BufferError> {
        let sealed = self
            .buffer
            .seal_batch(SealRequest {
                site: self.site.clone(),
                catalog: catalog.clone(),
                with_catalog: false,
                frames: Vec::new(),
                sealed_at_ms: now_ms(),
                cap_bytes: None,
            })
            .await?;
        metrics::counter!("bess_edge_batches_sealed_total").increment(1);
        metrics::gauge!("bess_edge_buffer_batches").increment(1.0);
        Totals::add(&self.status.totals.batches_sealed, 1);
        tracing::info!(seq = %sealed.seq(), "sealed the pending gap records");
        self.sealed.notify_one();
        Ok(())
    }

    async fn seal(
        &mut self,
        frames: Vec<Frame>,
        catalog: &Arc<Catalog>,
        with_catalog: bool,
    ) -> Result<(), BufferError> {
        let Sealed {
            batch,
            summary,
            dropped,
            ..
        } = self
            .buffer
            .seal_batch(SealRequest {
                site: self.site.clone(),
                catalog: catalog.clone(),
                with_catalog,
                frames,
                sealed_at_ms: now_ms(),
                cap_bytes: self.cap_bytes,
            })
            .await?;
        if dropped.samples > 0 {
            tracing::warn!(
                samples = dropped.samples,
                downsampled = dropped.downsampled,
                batches_removed = dropped.batches_removed,
                batches_trimmed = dropped.batches_trimmed,
                "buffer reached its disk cap: thinned or dropped the oldest measurements; gap records report them"
            );
            metrics::counter!("bess_edge_samples_dropped_total").increment(dropped.samples);
            metrics::gauge!("bess_edge_buffer_batches").decrement(dropped.batches_removed as f64);
            Totals::add(&self.status.totals.samples_dropped, dropped.samples);
        }
        if !batch.gaps.is_empty() {
            metrics::counter!("bess_edge_gap_records_sent_total")
                .increment(batch.gaps.len() as u64);
        }
        metrics::counter!("bess_edge_batches_sealed_total").increment(1);
        metrics::counter!("bess_edge_frames_sealed_total").increment(summary.frames as u64);
        metrics::counter!("bess_edge_samples_sealed_total").increment(u64::from(summary.samples));
        metrics::gauge!("bess_edge_buffer_batches").increment(1.0);
        Totals::add(&self.status.totals.batches_sealed, 1);
        Totals::add(
            &self.status.totals.samples_sealed,
            u64::from(summary.samples),
        );
        tracing::debug!(seq = %batch.seq, frames = summary.frames, samples = summary.samples, "sealed batch");
        if let Some(recorder) = &mut self.recorder {
            recorder.record(&batch, &self.catalog);
        }
        self.sealed.notify_one();
        Ok(())
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::fixtures::{catalog, decode_all, frames};
    use crate::buffer::SqliteBuffer;
    use std::num::NonZeroU32;
    use std::time::Duration;

    /// Run a sealer over `frames` (two per batch) into `buffer`, under `cap_bytes`.
    async fn seal_all(
        buffer: &BufferHandle,
        frames: Vec<Frame>,
        cap_bytes: Option<u64>,
    ) -> Arc<AgentStatus> {
        let status = Arc::new(AgentStatus::new("s".into(), Vec::new()));
        let sealer = BatchSealer {
            site: SiteId::new("s").unwrap(),
            catalog: catalog(),
            buffer: buffer.clone(),
            config: BatchConfig {
                max_frames: NonZeroU32::new(2).unwrap(),
                max_age: Duration::from_secs(3600),
                catalog_every: Duration::from_secs(3600),
            },
            recorder: None,
            sealed: Arc::new(Notify::new()),
            status: status.clone(),
            cap_bytes,
        };
        let (tx, rx) = mpsc::channel(frames.len().max(1));
        for frame in frames {
            tx.send(frame).await.unwrap();
        }
        drop(tx);
        sealer.run(rx).await.unwrap();
        status
    }

    #[tokio::test]
    async fn frames_are_sealed_in_numbered_batches_and_only_the_first_carries_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sqlite");
        let buffer = BufferHandle::new(SqliteBuffer::open(&path, 1).unwrap());
        let sent: Vec<Frame> = (0..5).flat_map(|i| frames(&[0], 1_000 * i)).collect();
        let status = seal_all(&buffer, sent.clone(), None).await;

        let batches = decode_all(&SqliteBuffer::open(&path, 1).unwrap());
        assert_eq!(
            batches.iter().map(|b| b.seq.0).collect::<Vec<_>>(),
            vec![1000, 1001, 1002]
        );
        assert_eq!(
            batches
                .iter()
                .map(|b| b.catalog.is_some())
                .collect::<Vec<_>>(),
            vec![true, false, false]
        );
        let sealed: Vec<Frame> = batches.into_iter().flat_map(|b| b.frames).collect();
        assert_eq!(sealed, sent);
        assert_eq!(Totals::get(&status.totals.batches_sealed), 3);
        assert_eq!(Totals::get(&status.totals.samples_sealed), 10);
    }

    #[tokio::test]
    async fn samples_the_disk_cap_dropped_are_reported_before_the_sealer_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sqlite");
        let buffer = BufferHandle::new(SqliteBuffer::open(&path, 1).unwrap());
        let sent: Vec<Frame> = (0..6).flat_map(|i| frames(&[0], 1_000 * i)).collect();
        let status = seal_all(&buffer, sent, Some(0)).await;

        assert_eq!(buffer.stats().await.unwrap().pending_gaps, 0);
        let dropped = Totals::get(&status.totals.samples_dropped);
        assert_eq!(dropped, 12, "a cap of zero keeps no measurement");
        let batches = decode_all(&SqliteBuffer::open(&path, 1).unwrap());
        let reported: u64 = batches
            .iter()
            .flat_map(|b| &b.gaps)
            .map(|g| g.samples)
            .sum();
        assert_eq!(
            reported, dropped,
            "every dropped sample is in a sealed gap record"
        );
        assert!(batches.iter().all(|b| b.frames.is_empty()));
    }
}
