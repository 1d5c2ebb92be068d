//! `GET /api/v1/sites/{site}/latest`: the newest value of every point of a
//! site, read from the in-memory [`crate::latest::LatestCache`] (which asks
//! the database itself when this instance's stream does not cover the
//! site). This handler only reads the cache.

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;

use super::error::AppError;
use super::error::{ApiErrors, NotFound};
use super::state::ApiState;
use crate::latest::LatestPoint;

#[derive(Serialize, utoipa::ToSchema)]
pub struct LatestValues {
    site: String,
    points: Vec<LatestPoint>,
}

/// Latest value of every point of a site, from memory.
///
/// The newest value of every point, over all catalog versions, as the
/// committed stream fed it (no database query per request).
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/latest",
    operation_id = "latest_values",
    tag = "fleet",
    params(("site" = String, Path, description = "Site name, e.g. site-001"),),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Latest values", body = LatestValues),
        NotFound,
        ApiErrors,
    )
)]
pub async fn latest(
    State(state): State<ApiState>,
    Path(site): Path<String>,
) -> Result<Json<LatestValues>, AppError> {
    match state.latest.fetch(&state.pool, &site).await? {
        Some(points) => Ok(Json(LatestValues { site, points })),
        None => Err(AppError::NotFound(format!("no site named {site:?}"))),
    }
}
