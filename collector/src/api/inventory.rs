//! What the fleet consists of, as the edges' catalogs registered it:
//! `GET /api/v1/sites`, `GET /api/v1/sites/{site}/devices` and
//! `GET /api/v1/sites/{site}/points` (with units, kinds and poll
//! intervals). All three are paged ([`super::page`]); the site list shows
//! only the sites the token may see.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::error::NotFound;
use super::error::{bad_query, AppError};
use super::page::{Page, PageQuery};
use super::state::ApiState;
use crate::auth::Access;
use crate::time::rfc3339;

/// The id of a site by name; 404 when there is none.
pub(crate) async fn site_id(client: &tokio_postgres::Client, site: &str) -> Result<i32, AppError> {
    client
        .query_opt("SELECT site_id FROM sites WHERE name = $1", &[&site])
        .await?
        .map(|r| r.get(0))
        .ok_or_else(|| AppError::NotFound(format!("no site named {site:?}")))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SiteSummary {
    site: String,
    /// When the first batch of the site arrived.
    #[schema(format = DateTime)]
    first_seen: String,
    /// The newest stored reading's time, at most a minute behind it.
    #[schema(format = DateTime)]
    last_seen: Option<String>,
    devices: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SitesPage {
    sites: Vec<SiteSummary>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// Sites the token may see.
///
/// With first/last-seen times and device counts, ordered by name.
#[utoipa::path(
    get,
    path = "/api/v1/sites",
    operation_id = "list_sites",
    tag = "fleet",
    params(PageQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of sites", body = SitesPage), super::error::ApiErrors)
)]
pub async fn sites(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<SitesPage>, AppError> {
    let page = Page::from_query(page)?;
    let after = page.after_key(1)?.map(|k| k[0].clone());
    let client = state.history().get().await?;
    let rows = client
        .query(
            "SELECT s.name, s.first_seen, s.last_seen,
                    (SELECT count(*) FROM devices d WHERE d.site_id = s.site_id)
             FROM sites s
             WHERE ($1::text[] IS NULL OR s.name = ANY($1))
               AND ($2::text IS NULL OR s.name > $2)
             ORDER BY s.name LIMIT $3",
            &[&access.site_filter(), &after, &page.fetch_limit()],
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
    let (sites, next_cursor) = page.finish(sites, |s| vec![s.site.clone()]);
    Ok(Json(SitesPage { sites, next_cursor }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeviceSummary {
    device: String,
    model: String,
    /// Points the device has had in any catalog version.
    points: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DevicesPage {
    site: String,
    devices: Vec<DeviceSummary>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// Devices of a site, ordered by name.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/devices",
    operation_id = "list_devices",
    tag = "fleet",
    params(("site" = String, Path, description = "Site name, e.g. site-001"), PageQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of devices", body = DevicesPage), NotFound, super::error::ApiErrors)
)]
pub async fn devices(
    State(state): State<ApiState>,
    Path(site): Path<String>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<DevicesPage>, AppError> {
    let page = Page::from_query(page)?;
    let after = page.after_key(1)?.map(|k| k[0].clone());
    let client = state.history().get().await?;
    let site_id = site_id(&client, &site).await?;
    let rows = client
        .query(
            "SELECT d.name, d.model, (SELECT count(*) FROM points p WHERE p.device_id = d.device_id)
             FROM devices d
             WHERE d.site_id = $1 AND ($2::text IS NULL OR d.name > $2)
             ORDER BY d.name LIMIT $3",
            &[&site_id, &after, &page.fetch_limit()],
        )
        .await?;
    let devices: Vec<DeviceSummary> = rows
        .iter()
        .map(|r| DeviceSummary {
            device: r.get(0),
            model: r.get(1),
            points: r.get(2),
        })
        .collect();
    let (devices, next_cursor) = page.finish(devices, |d| vec![d.device.clone()]);
    Ok(Json(DevicesPage {
        site,
        devices,
        next_cursor,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PointsQuery {
    /// Only the points of this device.
    device: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PointSummary {
    /// `SITE/DEVICE/POINT`, as `/series` and the live stream name it.
    point: String,
    device: String,
    name: String,
    unit: String,
    /// analog, counter, bitfield or flag.
    #[schema(example = "analog")]
    kind: String,
    /// Poll interval of the newest registered poll group holding the point.
    interval_ms: Option<i32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PointsPage {
    site: String,
    points: Vec<PointSummary>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// Points of a site, with units, kinds and poll intervals.
///
/// Ordered by device, then point name.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/points",
    operation_id = "list_points",
    tag = "fleet",
    params(("site" = String, Path, description = "Site name, e.g. site-001"), PointsQuery, PageQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of points", body = PointsPage), NotFound, super::error::ApiErrors)
)]
pub async fn points(
    State(state): State<ApiState>,
    Path(site): Path<String>,
    query: Result<Query<PointsQuery>, QueryRejection>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<PointsPage>, AppError> {
    let Query(mut query) = query.map_err(bad_query)?;
    query.device = query.device.filter(|d| !d.is_empty());
    let page = Page::from_query(page)?;
    let (after_device, after_point) = match page.after_key(2)? {
        Some(k) => (Some(k[0].clone()), Some(k[1].clone())),
        None => (None, None),
    };
    let client = state.history().get().await?;
    let site_id = site_id(&client, &site).await?;
    if let Some(device) = &query.device {
        client
            .query_opt(
                "SELECT 1 FROM devices WHERE site_id = $1 AND name = $2",
                &[&site_id, device],
            )
            .await?
            .ok_or_else(|| AppError::NotFound(format!("site {site:?} has no device {device:?}")))?;
    }
    let rows = client
        .query(
            "SELECT d.name, p.name, p.unit, p.kind,
                    (SELECT l.interval_ms FROM layouts l
                     WHERE l.site_id = d.site_id AND l.point_ids @> ARRAY[p.point_id]
                     ORDER BY l.layout_id DESC LIMIT 1)
             FROM points p JOIN devices d ON d.device_id = p.device_id
             WHERE d.site_id = $1
               AND ($2::text IS NULL OR d.name = $2)
               AND ($3::text IS NULL OR (d.name, p.name) > ($3, $4::text))
             ORDER BY d.name, p.name LIMIT $5",
            &[
                &site_id,
                &query.device,
                &after_device,
                &after_point,
                &page.fetch_limit(),
            ],
        )
        .await?;
    let points: Vec<PointSummary> = rows
        .iter()
        .map(|r| {
            let device: String = r.get(0);
            let name: String = r.get(1);
            PointSummary {
                point: format!("{site}/{device}/{name}"),
                device,
                name,
                unit: r.get(2),
                kind: r.get(3),
                interval_ms: r.get(4),
            }
        })
        .collect();
    let (points, next_cursor) = page.finish(points, |p| vec![p.device.clone(), p.name.clone()]);
    Ok(Json(PointsPage {
        site,
        points,
        next_cursor,
    }))
}
