//! The HTTP API (axum): sites, latest values, series, a live WebSocket,
//! health and Prometheus metrics.

mod error;
mod handlers;
mod live;

use axum::extract::rejection::QueryRejection;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::broadcast;

pub use error::AppError;

use crate::live::LiveMessage;

#[derive(Clone)]
pub struct ApiState {
    pub pool: deadpool_postgres::Pool,
    pub live: broadcast::Sender<LiveMessage>,
    pub metrics: PrometheusHandle,
    pub shutdown: tokio_util::sync::CancellationToken,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .route("/api/v1/sites", get(handlers::sites))
        .route("/api/v1/sites/{site}/latest", get(handlers::latest))
        .route("/api/v1/series", get(handlers::series))
        .route("/api/v1/live", get(live::live))
        .fallback(|| async { AppError::NotFound("no such route; see /api/v1/sites".into()) })
        .with_state(state)
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A query string that does not parse becomes a JSON 400.
pub(crate) fn bad_query(rejection: QueryRejection) -> AppError {
    AppError::BadRequest(rejection.body_text())
}
