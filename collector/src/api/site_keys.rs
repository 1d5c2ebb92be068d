//! A site's batch-signing keys over the API (role `admin`, within the
//! caller's sites), the same operations as `bess-collector site …`:
//! `GET /api/v1/sites/{site}/keys`, `POST /api/v1/sites/{site}/keys`,
//! `DELETE /api/v1/sites/{site}/keys/{key_id}` (revocation: the key is
//! kept, marked revoked). Every instance follows a change within about a
//! second.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::error::{ApiErrors, AppError, Conflict, NotFound};
use super::state::ApiState;
use crate::auth::{Access, Role};
use crate::site_keys::{store, Enrolment, KeyChangeError, SiteKeyRecord};
use crate::time::rfc3339;
use bess_protocol::signature::{format_public_key, parse_public_key};
use bess_protocol::KeyId;

#[derive(Serialize, utoipa::ToSchema)]
pub struct SiteKeyView {
    site: String,
    /// 16 hex digits: the first 8 bytes of SHA-256 over the public key.
    #[schema(example = "fe812c12f3ab4ce6")]
    key_id: String,
    #[schema(example = "ed25519:6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=")]
    public_key: String,
    /// The key signs readings from this time on; `null`: any time.
    #[schema(format = DateTime)]
    valid_from: Option<String>,
    /// The key signs readings before this time only; `null`: no end.
    #[schema(format = DateTime)]
    valid_until: Option<String>,
    note: String,
    enrolled_by: String,
    #[schema(format = DateTime)]
    enrolled_at: String,
    revoked_by: Option<String>,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
}

impl From<&SiteKeyRecord> for SiteKeyView {
    fn from(k: &SiteKeyRecord) -> Self {
        Self {
            site: k.site.clone(),
            key_id: k.key_id.to_string(),
            public_key: format_public_key(&k.public_key),
            valid_from: k.valid_from.map(rfc3339),
            valid_until: k.valid_until.map(rfc3339),
            note: k.note.clone(),
            enrolled_by: k.enrolled_by.clone(),
            enrolled_at: rfc3339(k.enrolled_at),
            revoked_by: k.revoked_by.clone(),
            revoked_at: k.revoked_at.map(rfc3339),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SiteKeysView {
    keys: Vec<SiteKeyView>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolBody {
    /// As `bess-edge key` prints it.
    #[schema(example = "ed25519:6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=")]
    public_key: String,
    #[schema(format = DateTime)]
    valid_from: Option<String>,
    #[schema(format = DateTime)]
    valid_until: Option<String>,
    #[serde(default)]
    note: String,
}

fn site_in_scope(access: &Access, site: &str) -> Result<(), AppError> {
    access.require(Role::Admin)?;
    if !access.allows_site(site) {
        return Err(AppError::Forbidden(format!(
            "this token may not manage site {site:?}"
        )));
    }
    Ok(())
}

fn time_field(field: &str, value: Option<String>) -> Result<Option<OffsetDateTime>, AppError> {
    value
        .map(|v| {
            OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339).map_err(
                |_| AppError::BadRequest(format!("`{field}` must be an RFC 3339 time, got {v:?}")),
            )
        })
        .transpose()
}

fn change_error(e: KeyChangeError) -> AppError {
    match e {
        KeyChangeError::Exists { .. } | KeyChangeError::AlreadyRevoked { .. } => {
            AppError::Conflict(e.to_string())
        }
        KeyChangeError::NotFound { .. } => AppError::NotFound(e.to_string()),
        KeyChangeError::WeakKey | KeyChangeError::EmptyWindow => {
            AppError::BadRequest(e.to_string())
        }
        KeyChangeError::Database(e) => e.into(),
    }
}

/// A site's signing keys, revoked ones included (role `admin`).
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/keys",
    operation_id = "list_site_keys",
    tag = "admin",
    params(("site" = String, Path, description = "Site id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The site's keys, oldest first", body = SiteKeysView), ApiErrors)
)]
pub async fn list(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Path(site): Path<String>,
) -> Result<Json<SiteKeysView>, AppError> {
    site_in_scope(&access, &site)?;
    let client = state.pool.get().await?;
    let keys = store::list(&**client, Some(&site)).await?;
    Ok(Json(SiteKeysView {
        keys: keys.iter().map(SiteKeyView::from).collect(),
    }))
}

/// Enroll a site's public key (role `admin`): the site's batches signed by
/// it are stored from then on, on every instance within a second.
#[utoipa::path(
    post,
    path = "/api/v1/sites/{site}/keys",
    operation_id = "enroll_site_key",
    tag = "admin",
    params(("site" = String, Path, description = "Site id")),
    request_body = EnrolBody,
    security(("bearer" = [])),
    responses((status = 201, description = "Enrolled", body = SiteKeyView), Conflict, ApiErrors)
)]
pub async fn enrol(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Path(site): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<SiteKeyView>), AppError> {
    site_in_scope(&access, &site)?;
    bess_protocol::SiteId::new(&site).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let body: EnrolBody = serde_json::from_slice(&body).map_err(|e| {
        AppError::BadRequest(format!(
            "expected {{\"public_key\": \"ed25519:...\", \"valid_from\"?: RFC 3339, \"valid_until\"?: RFC 3339, \"note\"?: \"...\"}}: {e}"
        ))
    })?;
    let public_key =
        parse_public_key(&body.public_key).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let enrolment = Enrolment {
        site,
        public_key,
        valid_from: time_field("valid_from", body.valid_from)?,
        valid_until: time_field("valid_until", body.valid_until)?,
        note: body.note,
        by: access.actor().0,
    };
    let mut client = state.pool.get().await?;
    let record = store::enrol(&mut client, &enrolment)
        .await
        .map_err(change_error)?;
    tracing::info!(site = %record.site, key_id = %record.key_id, by = %enrolment.by, "site key enrolled");
    Ok((StatusCode::CREATED, Json(SiteKeyView::from(&record))))
}

/// Revoke a site's key (role `admin`): batches it signed are set aside from
/// then on, on every instance within a second. The key stays listed.
#[utoipa::path(
    delete,
    path = "/api/v1/sites/{site}/keys/{key_id}",
    operation_id = "revoke_site_key",
    tag = "admin",
    params(
        ("site" = String, Path, description = "Site id"),
        ("key_id" = String, Path, description = "Key id (16 hex digits)")
    ),
    security(("bearer" = [])),
    responses((status = 200, description = "Revoked", body = SiteKeyView), NotFound, Conflict, ApiErrors)
)]
pub async fn revoke(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Path((site, key_id)): Path<(String, String)>,
) -> Result<Json<SiteKeyView>, AppError> {
    site_in_scope(&access, &site)?;
    let key_id = KeyId::parse(&key_id).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let by = access.actor().0;
    let mut client = state.pool.get().await?;
    let record = store::revoke(&mut client, &site, key_id, &by)
        .await
        .map_err(change_error)?;
    tracing::info!(site = %record.site, key_id = %record.key_id, by, "site key revoked");
    Ok(Json(SiteKeyView::from(&record)))
}
