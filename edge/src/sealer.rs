//! `BatchSealer`: gathers frames from all pollers and seals them into
//! numbered batches in the buffer, by count or by age. The first batch after
//! a start, and one at least every `catalog_every`, carries the catalog.
//! Each seal also enforces the buffer's disk cap; the gap records that
//! produces travel in the next batch.

use std::sync::Arc;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use bess_protocol::{Batch, Catalog, CatalogHash, Codec, Frame, SiteId};

use crate::buffer::{BufferError, BufferHandle, SealSummary};
use crate::clock::now_ms;
use crate::config::BatchConfig;
use crate::recorder::FrameRecorder;
use crate::status::{AgentStatus, Totals};

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
        let catalog_hash = self.catalog.hash();
        self.buffer.remember_catalog(self.catalog.clone()).await?;
        let event_groups = crate::buffer::event_groups(&self.catalog);
        let max_frames = self.config.max_frames.get() as usize;
        let mut pending: Vec<Frame> = Vec::with_capacity(max_frames);
        let mut oldest: Option<Instant> = None;
        let mut catalog_sent_at: Option<Instant> = None;
        loop {
            let deadline = oldest.map(|t| t + self.config.max_age);
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
                self.seal(
                    std::mem::take(&mut pending),
                    catalog_hash,
                    with_catalog,
                    &event_groups,
                )
                .await?;
                if with_catalog {
                    catalog_sent_at = Some(Instant::now());
                }
                oldest = None;
            }
        }
        if !pending.is_empty() {
            self.seal(
                pending,
                catalog_hash,
                catalog_sent_at.is_none(),
                &event_groups,
            )
            .await?;
        }
        // Gap records made by the last seals must not wait for the next start.
        if self.buffer.stats().await?.pending_gaps > 0 {
            self.seal_pending_gaps(catalog_hash).await?;
        }
        Ok(())
    }

    /// Seal a batch with no frames that carries the pending gap records. It
    /// is exempt from the disk cap (a few dozen bytes).
    async fn seal_pending_gaps(&mut self, catalog_hash: CatalogHash) -> Result<(), BufferError> {
        let site = self.site.clone();
        let summary = SealSummary {
            sealed_at_ms: now_ms(),
            ..SealSummary::default()
        };
        let (seq, _) = self
            .buffer
            .seal_capped(
                summary,
                crate::buffer::BatchContent::Carrier,
                None,
                move |seq, gaps| {
                    Batch {
                        site,
                        seq,
                        catalog_hash,
                        catalog: None,
                        frames: Vec::new(),
                        gaps,
                    }
                    .encode(Codec::Zstd)
                },
            )
            .await?;
        metrics::counter!("bess_edge_batches_sealed_total").increment(1);
        metrics::gauge!("bess_edge_buffer_batches").increment(1.0);
        Totals::add(&self.status.totals.batches_sealed, 1);
        tracing::info!(%seq, "sealed the pending gap records");
        self.sealed.notify_one();
        Ok(())
    }

    async fn seal(
        &mut self,
        frames: Vec<Frame>,
        catalog_hash: CatalogHash,
        with_catalog: bool,
        event_groups: &std::collections::HashSet<u16>,
    ) -> Result<(), BufferError> {
        let content = crate::buffer::content_of(&frames, event_groups);
        let summary = SealSummary {
            frames: frames.len() as u32,
            samples: frames.iter().map(|f| f.values.len() as u32).sum(),
            first_ts_ms: frames.iter().map(|f| f.ts_ms).min(),
            last_ts_ms: frames.iter().map(|f| f.ts_ms).max(),
            sealed_at_ms: now_ms(),
        };
        let mut batch = Batch {
            site: self.site.clone(),
            seq: bess_protocol::BatchSeq(0),
            catalog_hash,
            catalog: with_catalog.then(|| self.catalog.clone()),
            frames,
            gaps: Vec::new(),
        };
        let (batch, seq, dropped) = {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let (seq, dropped) = self
                .buffer
                .seal_capped(summary, content, self.cap_bytes, move |seq, gaps| {
                    batch.seq = seq;
                    batch.gaps = gaps;
                    let bytes = batch.encode(Codec::Zstd);
                    let _ = tx.send(batch);
                    bytes
                })
                .await?;
            (rx.await.expect("encode closure ran"), seq, dropped)
        };
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
        tracing::debug!(%seq, frames = summary.frames, samples = summary.samples, "sealed batch");
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
