//! Wires the agent's tasks together and runs them until shutdown:
//!
//! ```text
//! ModbusPoller (one per device) ──frames──► BatchSealer ──► SqliteBuffer ──► KafkaUplink ──► Kafka
//!                                           (bounded channel; pollers wait when it is full)
//! ```
//!
//! Shutdown order: pollers stop, the sealer seals what they read, the
//! uplink gets `grace` to drain the buffer; anything unsent stays on disk.

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::buffer::{BufferHandle, SqliteBuffer};
use crate::clock::now_ms;
use crate::config::ValidConfig;
use crate::poller::ModbusPoller;
use crate::recorder::FrameRecorder;
use crate::sealer::BatchSealer;
use crate::status::{AgentStatus, StatusServer, Totals};
use crate::uplink::KafkaUplink;

/// Frames waiting between the pollers and the sealer.
const FRAME_QUEUE: usize = 4096;

pub struct RunOptions {
    pub record: Option<PathBuf>,
    pub status_listen: Option<SocketAddr>,
    pub shutdown_grace: Duration,
}

pub async fn run(config: ValidConfig, options: RunOptions, metrics: PrometheusHandle, cancel: CancellationToken) -> anyhow::Result<()> {
    let buffer = SqliteBuffer::open(&config.buffer.path, now_ms())
        .with_context(|| format!("opening buffer {}", config.buffer.path.display()))?;
    let buffer = BufferHandle::new(buffer);
    let stats = buffer.stats().await?;
    metrics::gauge!("bess_edge_buffer_batches").set(stats.batches as f64);
    if stats.batches > 0 {
        tracing::info!(batches = stats.batches, oldest_seq = ?stats.oldest_seq, "resuming with unsent batches in the buffer");
    }
    let status = Arc::new(AgentStatus::new(config.site.to_string(), config.devices.iter().map(|d| d.name.clone())));

    let listen = options.status_listen.unwrap_or(config.status.listen);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding status address {listen}"))?;
    let status_addr = listener.local_addr()?;
    let router = StatusServer { status: status.clone(), buffer: buffer.clone(), metrics }.router();
    let server_stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = server_stop.clone();
        async move { axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await }
    });
    println!("bess-edge: status on http://{status_addr}");
    tracing::info!(site = %config.site, devices = config.devices.len(), points = config.catalog.point_count(), %status_addr, "edge agent started");

    let sealed = Arc::new(Notify::new());
    let uplink = KafkaUplink::new(&config.kafka, config.site.clone(), buffer.clone(), status.clone(), sealed.clone())
        .context("creating Kafka producer")?;
    let uplink_stop = CancellationToken::new();
    let uplink_task = tokio::spawn(uplink.run(uplink_stop.clone(), options.shutdown_grace));

    let (frames_tx, frames_rx) = mpsc::channel(FRAME_QUEUE);
    let recorder = match &options.record {
        Some(path) => Some(FrameRecorder::create(path).with_context(|| format!("opening record file {}", path.display()))?),
        None => None,
    };
    let sealer = BatchSealer {
        site: config.site.clone(),
        catalog: config.catalog.clone(),
        buffer: buffer.clone(),
        config: config.batch,
        recorder,
        sealed,
        status: status.clone(),
    };
    let sealer_task = tokio::spawn(sealer.run(frames_rx));

    let mut pollers = JoinSet::new();
    for (index, device) in config.devices.into_iter().enumerate() {
        let poller = ModbusPoller::new(device, index, frames_tx.clone(), status.clone());
        pollers.spawn(poller.run(cancel.clone()));
    }
    drop(frames_tx);

    cancel.cancelled().await;
    tracing::info!("shutting down: stopping pollers");
    while pollers.join_next().await.is_some() {}
    match sealer_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("sealer: {e}"),
        Err(e) => tracing::error!("sealer task: {e}"),
    }
    tracing::info!(grace = ?options.shutdown_grace, "draining buffer to Kafka");
    uplink_stop.cancel();
    uplink_task.await.ok();
    let left = buffer.stats().await.map(|s| s.batches).unwrap_or(0);
    if left > 0 {
        tracing::warn!(batches = left, "batches left in the buffer; they are sent on the next start");
    }
    server_stop.cancel();
    server.await.ok();
    let totals = &status.totals;
    println!(
        "bess-edge: stopped; read {} samples, sealed {} samples in {} batches, {} batches acknowledged, {} left in the buffer",
        Totals::get(&totals.samples_read),
        Totals::get(&totals.samples_sealed),
        Totals::get(&totals.batches_sealed),
        Totals::get(&totals.batches_acked),
        left
    );
    tracing::info!("edge agent stopped");
    Ok(())
}
