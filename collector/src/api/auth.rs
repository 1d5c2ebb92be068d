//! The HTTP side of access control for `/api/v1/*`: one axum middleware
//! ([`require_access`]) that finds the presented token and the sites a
//! request names, and asks [`crate::auth::AccessControl`] (token lookup,
//! rate limit, scopes and roles) what the request may do.
//!
//! A request carries its token as `Authorization: Bearer <token>` or, for
//! WebSocket clients that cannot set headers, `?access_token=<token>`.
//! Missing, unknown or revoked: 401. Out of scope: 403 — a `{site}` path
//! segment, a `site=` parameter or the site prefix of a `point=` parameter
//! outside the token's sites. Lists (sites, alerts, alert history,
//! silences, tokens) show only the token's sites, and the live stream only
//! sends their frames: handlers read the [`Access`] this middleware
//! attaches, which also checks roles ([`Access::require`]: `operate` to
//! acknowledge alarms and episodes and to manage silences, `admin` to
//! manage tokens). A site named in a request body (a silence's `site`) is
//! checked by its handler. `/health`, `/metrics`, the OpenAPI document and
//! the dashboard stay open.
//!
//! Token lookups are cached for [`crate::auth::TOKEN_CACHE_TTL`], so a
//! revoked token stops working within that time on every instance.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::AppError;
use super::state::ApiState;
use crate::auth::{Access, AuthMode};

/// Paths under `/api/v1` that need no token.
fn is_public(path: &str) -> bool {
    !path.starts_with("/api/v1/") && path != "/api/v1" || path == "/api/v1/openapi.json"
}

fn presented_token(request: &Request) -> Option<String> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    query_pairs(request)
        .into_iter()
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v)
}

fn query_pairs(request: &Request) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(request.uri())
        .map(|q| q.0)
        .unwrap_or_default()
}

/// The sites a request names: the `{site}` segment of `/api/v1/sites/{site}/…`,
/// `site=` parameters and the site part of `point=SITE/DEVICE/POINT` parameters.
pub fn sites_named(path: &str, query: &[(String, String)]) -> Vec<String> {
    let mut sites = Vec::new();
    if let Some(rest) = path.strip_prefix("/api/v1/sites/") {
        if let Some(segment) = rest.split('/').next().filter(|s| !s.is_empty()) {
            sites.push(percent_decode(segment));
        }
    }
    for (key, value) in query {
        match key.as_str() {
            "site" => sites.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            ),
            "point" => sites.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| p.split('/').next().unwrap_or(p).to_owned()),
            ),
            _ => {}
        }
    }
    sites
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The middleware: authenticate, rate-limit, check sites, attach [`Access`].
pub async fn require_access(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    if is_public(&path) {
        return next.run(request).await;
    }
    if state.access.mode() == AuthMode::Disabled {
        request.extensions_mut().insert(Access::everything());
        return next.run(request).await;
    }
    let Some(secret) = presented_token(&request) else {
        return AppError::Unauthorized(
            "an API token is required: send `Authorization: Bearer <token>` (create one with `bess-collector token create`)"
                .into(),
        )
        .into_response();
    };
    let token = match state.access.authenticate(&state.pool, &secret).await {
        Ok(Some(token)) => token,
        Ok(None) => {
            return AppError::Unauthorized("unknown or revoked API token".into()).into_response()
        }
        Err(e) => return AppError::from(e).into_response(),
    };
    if let Err(e) = state.access.check_rate(&token) {
        return AppError::from(e).into_response();
    }
    let access = Access { token: Some(token) };
    if let Some(site) = sites_named(&path, &query_pairs(&request))
        .into_iter()
        .find(|s| !access.allows_site(s))
    {
        return AppError::Forbidden(format!("this token may not access site {site:?}"))
            .into_response();
    }
    request.extensions_mut().insert(access);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn sites_are_found_in_paths_and_parameters() {
        assert_eq!(
            sites_named("/api/v1/sites/site%2D1/latest", &[]),
            vec!["site-1"]
        );
        assert_eq!(sites_named("/api/v1/sites", &[]), Vec::<String>::new());
        assert_eq!(
            sites_named(
                "/api/v1/series",
                &pairs(&[("point", "a/bms-1/soc,b/bms-2/soc"), ("from", "x")])
            ),
            vec!["a", "b"]
        );
        assert_eq!(
            sites_named("/api/v1/live", &pairs(&[("site", "c")])),
            vec!["c"]
        );
    }

    #[test]
    fn only_api_paths_need_a_token() {
        assert!(is_public("/health"));
        assert!(is_public("/metrics"));
        assert!(is_public("/"));
        assert!(is_public("/api/v1/openapi.json"));
        assert!(!is_public("/api/v1/sites"));
        assert!(!is_public("/api/v1/live"));
    }
}
