//! REST handlers.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::error::AppError;
use super::state::ApiState;

#[derive(Debug, serde::Deserialize)]
pub struct HealthQuery {
    /// `storage` adds the storage report.
    detail: Option<String>,
}

/// Liveness and database check.
///
/// With `?detail=storage` it adds the storage report (`storage_detail`): on
/// TimescaleDB the extension's version, chunks, compression ratio and each
/// policy job's last run and failures; on plain PostgreSQL the day
/// partitions and the minutes waiting for rollups; and `problems` (failed
/// or unscheduled jobs). The status stays `ok` while the database answers:
/// problems are for an operator, not a load balancer.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "service",
    params(("detail" = Option<String>, Query, description = "`storage` adds the storage report")),
    responses(
        (status = 200, description = "`{\"status\":\"ok\",\"database\":\"ok\",\"storage\":\"timescaledb|postgresql\"}`, with `storage_detail` when asked", body = Object),
        (status = 400, description = "An unknown `detail`", body = super::error::ErrorBody),
        (status = 500, description = "The database does not answer", body = super::error::ErrorBody),
    )
)]
pub async fn health(
    State(state): State<ApiState>,
    Query(query): Query<HealthQuery>,
) -> Result<Json<serde_json::Value>, AppError> {
    let client = state.pool.get().await?;
    client.query_one("SELECT 1", &[]).await?;
    let mut body =
        serde_json::json!({ "status": "ok", "database": "ok", "storage": state.storage.as_str() });
    match query.detail.as_deref() {
        None | Some("") => {}
        Some("storage") => {
            let report = crate::storage_health::report(&**client, state.storage).await?;
            body["storage_detail"] = serde_json::to_value(report).map_err(AppError::internal)?;
        }
        Some(other) => {
            return Err(AppError::BadRequest(format!(
                "`detail` must be storage, got {other:?}"
            )))
        }
    }
    Ok(Json(body))
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
