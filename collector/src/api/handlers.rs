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
/// or unscheduled jobs). With a read replica (`--read-database-url`) it
/// adds `read_replica`: whether it answers, whether it is in recovery and
/// how far its replay trails (`lag_seconds`, the age of the last replayed
/// transaction; it grows while the primary is idle). The status stays `ok`
/// while the primary answers: problems are for an operator, not a load
/// balancer.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "service",
    params(("detail" = Option<String>, Query, description = "`storage` adds the storage report")),
    responses(
        (status = 200, description = "`{\"status\":\"ok\",\"database\":\"ok\",\"storage\":\"timescaledb|postgresql\"}`, with `storage_detail` when asked", body = Object),
        (status = 400, description = "An unknown `detail`", body = super::error::ErrorBody),
        (status = 503, description = "The database does not answer (`unavailable`)", body = super::error::ErrorBody),
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
    if let Some(replica) = &state.replica {
        body["read_replica"] = replica_status(replica).await;
    }
    Ok(Json(body))
}

/// Whether the read replica answers, and how far its replay trails.
async fn replica_status(replica: &deadpool_postgres::Pool) -> serde_json::Value {
    let row = async {
        let client = replica.get().await.map_err(|e| e.to_string())?;
        client
            .query_one(
                "SELECT pg_is_in_recovery(),
                        extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8",
                &[],
            )
            .await
            .map_err(|e| e.to_string())
    };
    match row.await {
        Ok(row) => serde_json::json!({
            "status": "ok",
            "in_recovery": row.get::<_, bool>(0),
            "lag_seconds": row.get::<_, Option<f64>>(1),
        }),
        Err(error) => serde_json::json!({ "status": "unreachable", "error": error }),
    }
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
