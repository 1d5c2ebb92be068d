//! The agent's own status: per-device health, buffer and uplink state,
//! served over HTTP as `/health`, `/status` (JSON) and `/metrics`
//! (Prometheus text). `bess-edge status` reads `/status` and prints it as
//! tables.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bess_protocol::MissingReason;

use crate::buffer::BufferHandle;
use crate::clock::{ClockMonitor, ClockStatus};

pub enum PollOutcome {
    Good,
    Failed(MissingReason),
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct DeviceStatus {
    pub name: String,
    pub online: bool,
    pub last_poll_ms: Option<i64>,
    pub last_good_ms: Option<i64>,
    pub polls: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct UplinkStatus {
    pub connected: bool,
    pub last_acked_seq: Option<u64>,
    pub last_acked_at_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// Running totals since start, also exported as Prometheus counters.
#[derive(Debug, Default, Serialize)]
pub struct Totals {
    pub samples_read: AtomicU64,
    pub samples_sealed: AtomicU64,
    pub batches_sealed: AtomicU64,
    pub batches_acked: AtomicU64,
    /// Samples dropped under the disk cap (each reported in a gap record).
    pub samples_dropped: AtomicU64,
}

impl Totals {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// State shared by the pollers, the uplink and the status server.
pub struct AgentStatus {
    pub site: String,
    pub totals: Totals,
    /// Clock steps and whether the clock is trusted.
    pub clock: Arc<ClockMonitor>,
    devices: Mutex<Vec<DeviceStatus>>,
    uplink: Mutex<UplinkStatus>,
}

impl AgentStatus {
    pub fn new(site: String, device_names: impl IntoIterator<Item = String>) -> Self {
        let devices = device_names
            .into_iter()
            .map(|name| DeviceStatus {
                name,
                ..Default::default()
            })
            .collect();
        Self {
            site,
            totals: Totals::default(),
            clock: Arc::new(ClockMonitor::default()),
            devices: Mutex::new(devices),
            uplink: Mutex::new(UplinkStatus::default()),
        }
    }

    pub fn record_poll(&self, device: usize, ts_ms: i64, outcome: PollOutcome) {
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        let status = &mut devices[device];
        status.polls += 1;
        status.last_poll_ms = Some(ts_ms);
        match outcome {
            PollOutcome::Good => {
                status.online = true;
                status.last_good_ms = Some(ts_ms);
            }
            PollOutcome::Failed(reason) => {
                status.online = reason.quality() != bess_protocol::Quality::CommLoss;
                status.errors += 1;
                status.last_error = Some(reason.describe());
                metrics::counter!("bess_edge_poll_errors_total", "device" => status.name.clone())
                    .increment(1);
            }
        }
    }

    /// A device-level problem outside polling (e.g. failed discovery).
    pub fn record_device_error(&self, device: usize, error: String) {
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        devices[device].errors += 1;
        devices[device].last_error = Some(error);
    }

    pub fn record_ack(&self, seq: u64, at_ms: i64) {
        let mut uplink = self.uplink.lock().unwrap_or_else(|p| p.into_inner());
        uplink.connected = true;
        uplink.last_error = None;
        uplink.last_acked_seq = Some(uplink.last_acked_seq.map_or(seq, |s| s.max(seq)));
        uplink.last_acked_at_ms = Some(at_ms);
    }

    pub fn record_uplink_error(&self, error: String) {
        let mut uplink = self.uplink.lock().unwrap_or_else(|p| p.into_inner());
        uplink.connected = false;
        uplink.last_error = Some(error);
    }

    pub fn devices(&self) -> Vec<DeviceStatus> {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn uplink(&self) -> UplinkStatus {
        self.uplink
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[derive(Clone)]
pub struct StatusServer {
    pub status: Arc<AgentStatus>,
    pub buffer: BufferHandle,
    pub metrics: PrometheusHandle,
}

#[derive(Serialize)]
struct StatusReport<'a> {
    site: String,
    totals: &'a Totals,
    devices: Vec<DeviceStatus>,
    buffer: crate::buffer::BufferStats,
    uplink: UplinkStatus,
    clock: ClockStatus,
}

impl StatusServer {
    pub fn router(self) -> Router {
        Router::new()
            .route("/health", get(health))
            .route("/status", get(status))
            .route("/metrics", get(prometheus))
            .with_state(self)
    }
}

async fn health() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn status(
    State(server): State<StatusServer>,
) -> Result<Json<serde_json::Value>, (StatusCode, Json<serde_json::Value>)> {
    let buffer = server.buffer.stats().await.map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": { "code": "buffer", "message": e.to_string() } })),
        )
    })?;
    let report = StatusReport {
        site: server.status.site.clone(),
        totals: &server.status.totals,
        devices: server.status.devices(),
        buffer,
        uplink: server.status.uplink(),
        clock: server.status.clock.status(),
    };
    Ok(Json(serde_json::to_value(&report).unwrap_or_default()))
}

async fn prometheus(State(server): State<StatusServer>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        server.metrics.render(),
    )
}
