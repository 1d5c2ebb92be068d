//! The HTTP API (axum): sites, devices and points, latest values, series
//! (raw or rolled up), alerts, gaps and completeness reports, token
//! administration, a live WebSocket, health and Prometheus metrics.

mod alerts;
pub mod auth;
mod dashboard;
mod error;
mod handlers;
mod inventory;
mod latest_cache;
mod live;
mod openapi;
pub mod page;
mod reports;
mod series;
mod series_render;
mod tokens;

use axum::extract::rejection::QueryRejection;
use axum::routing::{delete, get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub use error::AppError;
pub use latest_cache::{feed as feed_latest, LatestCache};
pub use live::LiveTimings;

use crate::live::LiveHub;

#[derive(Clone)]
pub struct ApiState {
    pub pool: deadpool_postgres::Pool,
    pub live: LiveHub,
    pub metrics: PrometheusHandle,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub storage: crate::storage::StorageBackend,
    /// Tokens, site scopes and rate limits for `/api/v1`.
    pub access: auth::AccessControl,
    /// Latest values, fed by the committed stream.
    pub latest: std::sync::Arc<LatestCache>,
    /// Pings and timeouts of live WebSocket clients.
    pub live_timings: LiveTimings,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .route("/api/v1/sites", get(inventory::sites))
        .route("/api/v1/sites/{site}/devices", get(inventory::devices))
        .route("/api/v1/sites/{site}/points", get(inventory::points))
        .route("/api/v1/sites/{site}/latest", get(latest_cache::latest))
        .route("/api/v1/alerts", get(alerts::list))
        .route(
            "/api/v1/sites/{site}/alerts/{device}/{point}/ack",
            post(alerts::acknowledge),
        )
        .route("/api/v1/sites/{site}/gaps", get(reports::gaps))
        .route(
            "/api/v1/sites/{site}/completeness",
            get(reports::completeness),
        )
        .route("/api/v1/series", get(series::series))
        .route("/api/v1/live", get(live::live))
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/tokens/{id}", delete(tokens::revoke))
        .route("/api/v1/openapi.json", get(openapi::document))
        .merge(dashboard::routes())
        .fallback(|| async { AppError::NotFound("no such route; see /api/v1/sites".into()) })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_access,
        ))
        // A handler that panics answers 500 (as JSON, by the layer below)
        // instead of dropping the connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(axum::middleware::map_response(error::json_errors))
        .with_state(state)
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A query string that does not parse becomes a JSON 400.
pub(crate) fn bad_query(rejection: QueryRejection) -> AppError {
    AppError::BadRequest(rejection.body_text())
}
