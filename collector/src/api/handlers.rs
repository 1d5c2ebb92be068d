//! REST handlers.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{rfc3339, ApiState, AppError};

pub async fn health(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, AppError> {
    let client = state.pool.get().await?;
    client.query_one("SELECT 1", &[]).await?;
    Ok(Json(
        serde_json::json!({ "status": "ok", "database": "ok", "storage": state.storage.as_str() }),
    ))
}

pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

#[derive(Serialize)]
pub struct SiteSummary {
    site: String,
    first_seen: String,
    last_seen: Option<String>,
    devices: i64,
}

pub async fn sites(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, AppError> {
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT s.name, s.first_seen, s.last_seen, (SELECT count(*) FROM devices d WHERE d.site_id = s.site_id)
             FROM sites s ORDER BY s.name",
            &[],
        )
        .await?;
    let sites: Vec<SiteSummary> = rows
        .iter()
        .map(|r| SiteSummary {
            site: r.get(0),
            first_seen: rfc3339(r.get(1)),
            last_seen: r.get::<_, Option<OffsetDateTime>>(2).map(rfc3339),
            devices: r.get(3),
        })
        .collect();
    Ok(Json(serde_json::json!({ "sites": sites })))
}

pub(crate) fn parse_time(field: &str, value: &str) -> Result<OffsetDateTime, AppError> {
    OffsetDateTime::parse(value, &Rfc3339).map_err(|e| {
        AppError::BadRequest(format!(
            "`{field}` is not an RFC 3339 time ({value:?}): {e}"
        ))
    })
}
