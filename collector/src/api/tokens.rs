//! Token administration over the API (role `admin`), the same operations
//! as `bess-collector token …`: `GET /api/v1/tokens`, `POST /api/v1/tokens`,
//! `DELETE /api/v1/tokens/{id}`.
//!
//! An admin token scoped to some sites manages only tokens within those
//! sites: it cannot create a token for another site or for every site, and
//! does not see or revoke tokens that reach beyond its sites.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use super::error::AppError;
use super::error::{ApiErrors, Conflict, NotFound};
use super::page::{Page, PageQuery};
use super::state::ApiState;
use crate::auth::{self, Access, Role, SiteScope, TokenError, TokenRecord};
use crate::time::rfc3339;

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenView {
    id: i32,
    name: String,
    /// read, operate or admin.
    #[schema(value_type = String, example = "read")]
    role: &'static str,
    /// `null`: every site.
    sites: Option<Vec<String>>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokensPage {
    tokens: Vec<TokenView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    record: TokenView,
    /// The token itself. Shown only here, once; only its hash is stored.
    #[schema(example = "bess_0123…")]
    token: String,
}

impl From<&TokenRecord> for TokenView {
    fn from(t: &TokenRecord) -> Self {
        Self {
            id: t.id,
            name: t.name.clone(),
            role: t.role.as_str(),
            sites: match &t.sites {
                SiteScope::All => None,
                SiteScope::Only(s) => Some(s.iter().cloned().collect()),
            },
            created_at: rfc3339(t.created_at),
            revoked_at: t.revoked_at.map(rfc3339),
        }
    }
}

/// Whether every site of `inner` is within `outer`.
fn within(inner: &SiteScope, outer: &SiteScope) -> bool {
    match (outer, inner) {
        (SiteScope::All, _) => true,
        (SiteScope::Only(_), SiteScope::All) => false,
        (SiteScope::Only(outer), SiteScope::Only(inner)) => inner.is_subset(outer),
    }
}

fn token_error(e: TokenError) -> AppError {
    match e {
        TokenError::NoSites | TokenError::UnknownRole(_) => AppError::BadRequest(e.to_string()),
        other => AppError::internal(other),
    }
}

/// API tokens within the caller's sites (role `admin`), oldest first.
///
/// Revoked tokens are listed too. Secrets are never shown.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    operation_id = "list_tokens",
    tag = "admin",
    params(PageQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of tokens", body = TokensPage), ApiErrors)
)]
pub async fn list(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<TokensPage>, AppError> {
    access.require(Role::Admin)?;
    let page = Page::from_query(page)?;
    let after = match page.after_key(1)? {
        Some(k) => Some(
            k[0].parse::<i32>()
                .map_err(|_| AppError::BadRequest("`cursor` is not valid here".into()))?,
        ),
        None => None,
    };
    let client = state.pool.get().await?;
    let scope = access.scope();
    let tokens: Vec<TokenRecord> = auth::list(&client)
        .await
        .map_err(token_error)?
        .into_iter()
        .filter(|t| after.is_none_or(|a| t.id > a) && within(&t.sites, &scope))
        .take(page.limit + 1)
        .collect();
    let (tokens, next_cursor) = page.finish(tokens, |t| vec![t.id.to_string()]);
    let tokens: Vec<TokenView> = tokens.iter().map(TokenView::from).collect();
    Ok(Json(TokensPage {
        tokens,
        next_cursor,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// What the token is for, e.g. "site-7 dashboard".
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: String,
    /// read, operate or admin.
    #[schema(example = "read", pattern = "^(read|operate|admin)$")]
    role: String,
    /// Site names, or `"*"` for every site.
    #[schema(schema_with = sites_schema)]
    sites: SitesField,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum SitesField {
    /// `"*"`: every site.
    Every(String),
    Only(Vec<String>),
}

/// The schema of [`SitesField`]: `"*"` or a non-empty list of site names.
fn sites_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^\*$"))
                .description(Some("`*`: every site")),
        )
        .item(
            ArrayBuilder::new()
                .items(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1)),
                )
                .min_items(Some(1))
                .description(Some("Site names")),
        )
        .build()
        .into()
}

/// Create an API token (role `admin`), for the caller's sites only.
///
/// The answer carries the token itself, once.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    operation_id = "create_token",
    tag = "admin",
    request_body = CreateBody,
    security(("bearer" = [])),
    responses((status = 201, description = "The new token, with its secret", body = CreatedToken), ApiErrors)
)]
pub async fn create(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedToken>), AppError> {
    access.require(Role::Admin)?;
    let body: CreateBody = serde_json::from_slice(&body).map_err(|e| {
        AppError::BadRequest(format!(
            "expected {{\"name\": \"...\", \"role\": \"read|operate|admin\", \"sites\": [\"site-1\", ...] or \"*\"}}: {e}"
        ))
    })?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(AppError::BadRequest(
            "`name` must be 1 to 200 characters".into(),
        ));
    }
    let role: Role = body.role.parse().map_err(token_error)?;
    let sites = match body.sites {
        SitesField::Every(star) if star == "*" => SiteScope::All,
        SitesField::Every(other) => {
            return Err(AppError::BadRequest(format!(
                "`sites` is a list of site names or \"*\", got {other:?}"
            )))
        }
        SitesField::Only(list) => SiteScope::Only(
            list.into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<BTreeSet<_>>(),
        ),
    };
    if !within(&sites, &access.scope()) {
        return Err(AppError::Forbidden(format!(
            "this token may only create tokens for its own sites ({})",
            access.scope()
        )));
    }
    let client = state.pool.get().await?;
    let created = auth::create(&client, name, role, sites)
        .await
        .map_err(token_error)?;
    tracing::info!(id = created.record.id, name, role = %role, by = %access.actor().0, "API token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            record: TokenView::from(&created.record),
            token: created.secret,
        }),
    ))
}

/// Revoke a token (role `admin`, within the caller's sites).
///
/// This instance refuses it at once, other instances within 5 seconds.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    operation_id = "revoke_token",
    tag = "admin",
    params(("id" = i32, Path, description = "Token id, as listed")),
    security(("bearer" = [])),
    responses((status = 204, description = "Revoked"), NotFound, Conflict, ApiErrors)
)]
pub async fn revoke(
    State(state): State<ApiState>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    access.require(Role::Admin)?;
    let id: i32 = id
        .parse()
        .map_err(|_| AppError::BadRequest(format!("token id must be a number, got {id:?}")))?;
    let client = state.pool.get().await?;
    let token = auth::list(&client)
        .await
        .map_err(token_error)?
        .into_iter()
        .find(|t| t.id == id && within(&t.sites, &access.scope()))
        .ok_or_else(|| AppError::NotFound(format!("no token {id}")))?;
    if token.revoked_at.is_some() {
        return Err(AppError::Conflict(format!("token {id} is already revoked")));
    }
    auth::revoke(&client, id).await.map_err(token_error)?;
    state.access.forget_token(id);
    tracing::info!(id, by = %access.actor().0, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(sites: &[&str]) -> SiteScope {
        SiteScope::Only(sites.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn a_scope_is_within_another_only_if_all_its_sites_are() {
        assert!(within(&only(&["a"]), &SiteScope::All));
        assert!(within(&SiteScope::All, &SiteScope::All));
        assert!(within(&only(&["a"]), &only(&["a", "b"])));
        assert!(!within(&only(&["a", "c"]), &only(&["a", "b"])));
        assert!(!within(&SiteScope::All, &only(&["a"])));
    }
}
