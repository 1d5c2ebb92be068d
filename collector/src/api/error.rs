//! `AppError`: every API failure becomes a JSON body
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status;
//! internal details are logged, not sent. The same shape is documented
//! here for the OpenAPI document ([`ErrorBody`], [`ApiErrors`],
//! [`NotFound`], [`Conflict`]), and [`json_errors`] gives it to the
//! responses axum makes itself, so every 4xx/5xx reads alike.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::{IntoResponses, ToSchema};

use crate::auth::AccessError;
use crate::latest::LatestError;

/// Largest plain-text error body turned into a JSON message.
const PLAIN_ERROR_LIMIT: usize = 64 << 10;

#[derive(Debug)]
pub enum AppError {
    BadRequest(String),
    NotFound(String),
    /// No token, or one that is unknown or revoked.
    Unauthorized(String),
    /// A valid token that may not see this site or do this.
    Forbidden(String),
    /// The request is valid but does not fit the current state.
    Conflict(String),
    /// The token's rate limit is used up; retry after this many seconds.
    TooManyRequests {
        retry_after_secs: u64,
    },
    /// The database (or the read replica) does not answer; retry later.
    Unavailable(String),
    Internal(String),
}

impl AppError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        AppError::Internal(e.to_string())
    }
}

/// A query string that does not parse becomes a JSON 400.
pub(crate) fn bad_query(rejection: QueryRejection) -> AppError {
    AppError::BadRequest(rejection.body_text())
}

impl From<tokio_postgres::Error> for AppError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.is_closed() {
            AppError::Unavailable(e.to_string())
        } else {
            AppError::internal(e)
        }
    }
}

impl From<deadpool_postgres::PoolError> for AppError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match e {
            // No connection could be had: the server is down or unreachable.
            PoolError::Timeout(_) | PoolError::Backend(_) | PoolError::Closed => {
                AppError::Unavailable(e.to_string())
            }
            _ => AppError::internal(e),
        }
    }
}

impl From<LatestError> for AppError {
    fn from(e: LatestError) -> Self {
        AppError::internal(e)
    }
}

impl From<AccessError> for AppError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::RoleTooLow { .. } => AppError::Forbidden(e.to_string()),
            AccessError::RateLimited { retry_after } => AppError::TooManyRequests {
                retry_after_secs: retry_after.as_secs_f64().ceil().max(1.0) as u64,
            },
            AccessError::Lookup(_) | AccessError::Pool(_) => AppError::internal(e),
        }
    }
}

/// Every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// bad_request, unauthorized, forbidden, not_found, conflict, payload_too_large, rate_limited, unavailable or internal.
    #[schema(example = "not_found")]
    code: String,
    /// What went wrong, for people.
    message: String,
}

/// The errors any `/api/v1` operation can answer with. Documentation only:
/// the responses themselves come from [`AppError`].
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum ApiErrors {
    /// A parameter or body that does not parse (`bad_request`).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Missing, unknown or revoked token (`unauthorized`).
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The token may not access this site, or its role is too low (`forbidden`).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// The token's rate limit is used up (`rate_limited`); `Retry-After` says for how many seconds.
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    RateLimited(ErrorBody),
    /// Something failed inside the collector (`internal`); details are in its log.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// The database or the read replica does not answer (`unavailable`); `Retry-After` says when to try again.
    #[response(status = 503, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Unavailable(ErrorBody),
}

/// A named site, device, point or token that does not exist (`not_found`).
#[allow(dead_code)]
#[derive(IntoResponses)]
#[response(status = 404)]
pub struct NotFound(ErrorBody);

/// The request does not fit the current state (`conflict`).
#[allow(dead_code)]
#[derive(IntoResponses)]
#[response(status = 409)]
pub struct Conflict(ErrorBody);

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            AppError::Unauthorized(m) => {
                let body = serde_json::json!({ "error": { "code": "unauthorized", "message": m } });
                return (
                    StatusCode::UNAUTHORIZED,
                    [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                    Json(body),
                )
                    .into_response();
            }
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m),
            AppError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            AppError::TooManyRequests { retry_after_secs } => {
                let message = format!("rate limit exceeded; retry in {retry_after_secs} s");
                let body =
                    serde_json::json!({ "error": { "code": "rate_limited", "message": message } });
                let retry = retry_after_secs.to_string();
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(axum::http::header::RETRY_AFTER, retry)],
                    Json(body),
                )
                    .into_response();
            }
            AppError::Unavailable(m) => {
                tracing::warn!("database unavailable: {m}");
                let body = serde_json::json!({ "error": {
                    "code": "unavailable",
                    "message": "the database does not answer; retry shortly",
                } });
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(axum::http::header::RETRY_AFTER, "5")],
                    Json(body),
                )
                    .into_response();
            }
            AppError::Internal(m) => {
                tracing::error!("internal error: {m}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the collector's log".to_owned(),
                )
            }
        };
        (
            status,
            Json(serde_json::json!({ "error": { "code": code, "message": message } })),
        )
            .into_response()
    }
}

/// The `code` of an error response with this status.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UPGRADE_REQUIRED => "upgrade_required",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// Response middleware: an error response that is not JSON yet — axum's own
/// rejections (405, a WebSocket request without the upgrade headers, a
/// path that does not decode, a body over the limit) — becomes
/// `{"error": {"code", "message"}}` with the same status and headers, so
/// clients parse every 4xx/5xx alike.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, PLAIN_ERROR_LIMIT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!(
            "the request body is larger than {} KiB",
            super::http_security::BODY_LIMIT >> 10
        )
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let body = serde_json::json!({ "error": { "code": code_for(status), "message": message } });
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body.to_string()))
}
