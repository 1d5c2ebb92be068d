//! `AppError`: every API failure becomes a JSON body
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status;
//! internal details are logged, not sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

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
    Internal(String),
}

impl AppError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        AppError::Internal(e.to_string())
    }
}

impl From<tokio_postgres::Error> for AppError {
    fn from(e: tokio_postgres::Error) -> Self {
        AppError::internal(e)
    }
}

impl From<deadpool_postgres::PoolError> for AppError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        AppError::internal(e)
    }
}

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
