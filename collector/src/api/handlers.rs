//! REST handlers.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::error::AppError;
use super::state::ApiState;

/// Liveness and database check.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "service",
    responses(
        (status = 200, description = "`{\"status\":\"ok\",\"database\":\"ok\",\"storage\":\"timescaledb|postgresql\"}`", body = Object),
        (status = 500, description = "The database does not answer", body = super::error::ErrorBody),
    )
)]
pub async fn health(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, AppError> {
    let client = state.pool.get().await?;
    client.query_one("SELECT 1", &[]).await?;
    Ok(Json(
        serde_json::json!({ "status": "ok", "database": "ok", "storage": state.storage.as_str() }),
    ))
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "service",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

pub(crate) fn parse_time(field: &str, value: &str) -> Result<OffsetDateTime, AppError> {
    OffsetDateTime::parse(value, &Rfc3339).map_err(|e| {
        AppError::BadRequest(format!(
            "`{field}` is not an RFC 3339 time ({value:?}): {e}"
        ))
    })
}
