//! Wires the agent's tasks together and runs them until shutdown:
//!
//! ```text
//! ModbusLink (one per connection or bus, shared by the devices behind it)
//!     ▲
//! ModbusPoller (one per device) ──frames──► ClockGate ──► BatchSealer ──► SqliteBuffer ──► KafkaUplink | MqttUplink
//!                                              ├──► LiveLane (unbuffered, to the live topic)
//!                                              └──► MqttMirror (optional, best effort)
//!                                   (bounded channels; pollers wait when they are full)
//! ```
//!
//! SunSpec devices are discovered before anything is sealed, so the first
//! batch already carries the full catalog.
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

use crate::buffer::{BufferHandle, Opened, SqliteBuffer};
use crate::clock::now_ms;
use crate::clock::{ntp_synchronized, ClockGate};
use crate::config::{UplinkConfig, ValidConfig};
use crate::link::links_for;
use crate::live::{KafkaLiveSink, LiveFeed, LiveLane, MqttLiveSink};
use crate::mirror::MqttMirror;
use crate::poller::ModbusPoller;
use crate::recorder::FrameRecorder;
use crate::sealer::BatchSealer;
use crate::status::{AgentStatus, StatusServer, Totals};
use crate::uplink::{DrainOrder, KafkaUplink, MqttUplink};

/// Frames waiting between the pollers and the sealer.
const FRAME_QUEUE: usize = 4096;

pub struct RunOptions {
    pub record: Option<PathBuf>,
    pub status_listen: Option<SocketAddr>,
    pub shutdown_grace: Duration,
}

pub async fn run(
    mut config: ValidConfig,
    options: RunOptions,
    metrics: PrometheusHandle,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let (mut buffer, opened) = SqliteBuffer::open_or_recover(&config.buffer.path, now_ms())
        .with_context(|| format!("opening buffer {}", config.buffer.path.display()))?;
    buffer.set_downsampling(config.buffer.downsampling());
    if config.signing.enabled {
        let key = &config.signing.key_file;
        let loaded = crate::signing::load_or_create(key)?;
        if loaded.created {
            tracing::warn!(
                key_file = %key.display(),
                "created this site's signing key; the collector rejects its batches until it is enrolled:\n{}",
                crate::signing::enrolment_text(&config.site, &loaded.signer)
            );
        }
        tracing::info!(key_id = %loaded.signer.key_id(), key_file = %key.display(), "signing batches");
        buffer.set_signer(Some(loaded.signer));
    } else {
        tracing::warn!("signing is off ([signing] enabled = false): batches go unsigned, and collectors that require signatures set them aside");
    }
    if let Some(warning) = crate::signing::permission_warning("buffer", &config.buffer.path) {
        tracing::warn!("{warning}");
    }
    if let Opened::RecoveredFromCorruption {
        moved_to,
        salvaged,
        reason,
    } = &opened
    {
        tracing::error!(
            buffer = %config.buffer.path.display(),
            moved_to = %moved_to.display(),
            salvaged_batches = salvaged,
            "BUFFER FILE WAS CORRUPT ({reason}): moved it aside, kept the batches that still read, \
             started a fresh buffer and queued a gap record for the rest"
        );
        metrics::counter!("bess_edge_buffer_corruptions_total").increment(1);
    }
    let buffer = BufferHandle::new(buffer);
    let stats = buffer.stats().await?;
    metrics::gauge!("bess_edge_buffer_batches").set(stats.batches as f64);
    if stats.batches > 0 {
        tracing::info!(batches = stats.batches, oldest_seq = ?stats.oldest_seq, "resuming with unsent batches in the buffer");
    }
    let status = Arc::new(AgentStatus::new(
        config.site.to_string(),
        config.devices.iter().map(|d| d.name.clone()),
    ));
    status.clock.set_threshold(config.clock.step_threshold);
    let links = links_for(&config.devices);
    discover_sunspec(&mut config, &links, &status).await;

    let listen = options.status_listen.unwrap_or(config.status.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding status address {listen}"))?;
    let status_addr = listener.local_addr()?;
    let router = StatusServer {
        status: status.clone(),
        buffer: buffer.clone(),
        metrics,
    }
    .router();
    let server_stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = server_stop.clone();
        async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    });
    println!("bess-edge: status on http://{status_addr}");
    tracing::info!(site = %config.site, devices = config.devices.len(), points = config.catalog.point_count(), %status_addr, "edge agent started");

    let sealed = Arc::new(Notify::new());
    let uplink_stop = CancellationToken::new();
    let drain = DrainOrder::from(&config.buffer);
    let uplink_task = match &config.uplink {
        UplinkConfig::Kafka(kafka) => {
            let uplink = KafkaUplink::new(
                kafka,
                config.site.clone(),
                buffer.clone(),
                status.clone(),
                sealed.clone(),
            )
            .context("creating Kafka producer")?
            .with_drain_order(drain);
            tokio::spawn(uplink.run(uplink_stop.clone(), options.shutdown_grace))
        }
        UplinkConfig::Mqtt(mqtt) => {
            let uplink = MqttUplink::new(
                mqtt,
                &config.site,
                buffer.clone(),
                status.clone(),
                sealed.clone(),
            )
            .context("creating MQTT uplink")?
            .with_drain_order(drain);
            tokio::spawn(uplink.run(uplink_stop.clone(), options.shutdown_grace))
        }
    };

    let live_stop = CancellationToken::new();
    let (live_feed, live_task) = if config.live.enabled {
        let (feed, frames) = LiveFeed::channel();
        let hash = config.catalog.hash();
        let task = match &config.uplink {
            UplinkConfig::Kafka(kafka) => {
                let sink = KafkaLiveSink::new(kafka, &config.live, config.site.clone())
                    .context("creating the live Kafka producer")?;
                tokio::spawn(LiveLane::new(hash, &config.live, sink).run(frames))
            }
            UplinkConfig::Mqtt(mqtt) => {
                let (sink, _driver) = MqttLiveSink::new(mqtt, &config.site, live_stop.clone())
                    .context("creating the live MQTT client")?;
                tokio::spawn(LiveLane::new(hash, &config.live, sink).run(frames))
            }
        };
        (Some(feed), Some(task))
    } else {
        (None, None)
    };

    let mirror_stop = CancellationToken::new();
    let mirror = match &config.mqtt_mirror {
        Some(mirror_config) => {
            let (mirror, eventloop) =
                MqttMirror::new(mirror_config, &config.site, config.catalog.clone())
                    .context("creating MQTT mirror")?;
            tokio::spawn(crate::mirror::drive(eventloop, mirror_stop.clone()));
            Some(mirror)
        }
        None => None,
    };

    let (frames_tx, gate_rx) = mpsc::channel(FRAME_QUEUE);
    let (gate_tx, frames_rx) = mpsc::channel(FRAME_QUEUE);
    let gate = ClockGate {
        monitor: status.clock.clone(),
        require_sync: config.clock.require_ntp_sync,
        wait_max: config.clock.ntp_wait_max,
        check_every: Duration::from_secs(5),
    };
    let gate_task = tokio::spawn(gate.run(
        gate_rx,
        gate_tx,
        move |frame| {
            if let Some(live) = &live_feed {
                live.offer(frame);
            }
            if let Some(mirror) = &mirror {
                mirror.publish_frame(frame);
            }
        },
        ntp_synchronized,
    ));
    let recorder = match &options.record {
        Some(path) => Some(
            FrameRecorder::create(path)
                .with_context(|| format!("opening record file {}", path.display()))?,
        ),
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
        cap_bytes: config.buffer.max_size.0,
    };
    let sealer_task = tokio::spawn(sealer.run(frames_rx));

    let mut pollers = JoinSet::new();
    for ((index, device), link) in config.devices.into_iter().enumerate().zip(links) {
        let poller =
            ModbusPoller::with_link(device, index, link, frames_tx.clone(), status.clone());
        pollers.spawn(poller.run(cancel.clone()));
    }
    drop(frames_tx);

    cancel.cancelled().await;
    tracing::info!("shutting down: stopping pollers");
    while pollers.join_next().await.is_some() {}
    gate_task.await.ok();
    if let Some(task) = live_task {
        task.await.ok();
    }
    live_stop.cancel();
    mirror_stop.cancel();
    match sealer_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("sealer: {e}"),
        Err(e) => tracing::error!("sealer task: {e}"),
    }
    tracing::info!(grace = ?options.shutdown_grace, "draining buffer to the uplink");
    uplink_stop.cancel();
    uplink_task.await.ok();
    let left = buffer.stats().await.map(|s| s.batches).unwrap_or(0);
    if left > 0 {
        tracing::warn!(
            batches = left,
            "batches left in the buffer; they are sent on the next start"
        );
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

/// Discover every SunSpec device's models and rebuild the catalog. A device
/// whose discovery fails keeps no groups (its status shows why) and is
/// discovered again on the next start.
async fn discover_sunspec(
    config: &mut ValidConfig,
    links: &[Arc<crate::link::ModbusLink>],
    status: &AgentStatus,
) {
    let mut any = false;
    for (index, device) in config.devices.iter_mut().enumerate() {
        let Some(sunspec) = device.sunspec else {
            continue;
        };
        any = true;
        let mut last_error = String::new();
        for attempt in 0..3u32 {
            match crate::sunspec::discover(&links[index], &device.link, sunspec.base).await {
                Ok(found) => {
                    device.groups = found.groups(DEFAULT_SUNSPEC_INTERVAL);
                    if device.model == "sunspec" {
                        device.model = found.describe();
                    }
                    let models: Vec<String> = found
                        .models
                        .iter()
                        .map(|m| format!("{} ({})", m.id, m.name()))
                        .collect();
                    tracing::info!(device = %device.name, base = found.base, models = %models.join(", "), groups = device.groups.len(), "SunSpec device discovered");
                    last_error.clear();
                    break;
                }
                Err(e) => {
                    last_error = e.to_string();
                    tokio::time::sleep(Duration::from_millis(500) * (attempt + 1)).await;
                }
            }
        }
        if !last_error.is_empty() {
            tracing::error!(device = %device.name, "SunSpec discovery failed: {last_error}; the device is not polled until the next start");
            status.record_device_error(index, format!("SunSpec discovery failed: {last_error}"));
        }
    }
    if any {
        config.rebuild_catalog();
    }
}

/// Poll interval of groups built by SunSpec discovery.
const DEFAULT_SUNSPEC_INTERVAL: Duration = Duration::from_secs(1);
