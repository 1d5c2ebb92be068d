//! The HTTP API (axum): sites, devices and points, latest values, series
//! (raw or rolled up), alerts (device alarms and rule episodes), their
//! history and silences, the alert rules (those in force, and those
//! managed over the API), gaps and completeness reports, token
//! administration, the sites' signing keys, a live WebSocket, health and Prometheus metrics.
//!
//! This layer only reads the domain: tokens and access decisions come from
//! `crate::auth`, latest values from `crate::latest`, frames from
//! `crate::live`, the rules in force from `crate::rules`; it turns requests into calls and answers into JSON (and
//! every failure into the error body of `error.rs`).

mod alerts;
mod auth;
mod dashboard;
mod episodes;
mod error;
mod handlers;
mod http_security;
mod inventory;
mod latest;
mod live;
mod openapi;
pub mod page;
mod params;
mod reports;
mod rules;
mod series;
mod series_render;
mod server;
mod silences;
mod site_keys;
mod state;
mod tls;
mod tokens;

use axum::routing::{delete, get, post, put};
use axum::Router;

pub use error::AppError;
pub use http_security::{CorsOrigin, InvalidOrigin, BODY_LIMIT};
pub use server::{app, serve, HttpSettings};
pub use state::{ApiState, LiveTimings};
pub use tls::{ApiTls, TlsError};

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .route("/api/v1/sites", get(inventory::sites))
        .route("/api/v1/sites/{site}/devices", get(inventory::devices))
        .route("/api/v1/sites/{site}/points", get(inventory::points))
        .route("/api/v1/sites/{site}/latest", get(latest::latest))
        .route("/api/v1/alerts", get(alerts::list))
        .route(
            "/api/v1/sites/{site}/alerts/{device}/{point}/ack",
            post(alerts::acknowledge),
        )
        .route("/api/v1/alerts/history", get(episodes::history))
        .route(
            "/api/v1/sites/{site}/episodes/{episode_id}/ack",
            post(episodes::acknowledge),
        )
        .route(
            "/api/v1/silences",
            get(silences::list).post(silences::create),
        )
        .route("/api/v1/silences/{silence_id}", delete(silences::end))
        .route("/api/v1/rules", get(rules::list).post(rules::create))
        .route(
            "/api/v1/rules/{name}",
            put(rules::replace).delete(rules::delete),
        )
        .route("/api/v1/rules/{name}/enable", post(rules::enable))
        .route("/api/v1/rules/{name}/disable", post(rules::disable))
        .route("/api/v1/sites/{site}/gaps", get(reports::gaps))
        .route(
            "/api/v1/sites/{site}/completeness",
            get(reports::completeness),
        )
        .route("/api/v1/series", get(series::series))
        .route("/api/v1/live", get(live::live))
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/tokens/{id}", delete(tokens::revoke))
        .route(
            "/api/v1/sites/{site}/keys",
            get(site_keys::list).post(site_keys::enrol),
        )
        .route(
            "/api/v1/sites/{site}/keys/{key_id}",
            delete(site_keys::revoke),
        )
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
        // Outside the error layer, so that error responses carry the
        // security headers too.
        .layer(http_security::no_sniffing())
        .layer(http_security::no_framing())
        .layer(http_security::no_referrer())
        .layer(http_security::content_security_policy())
        .layer(http_security::not_stored())
        .layer(http_security::body_limit())
        .with_state(state)
}
