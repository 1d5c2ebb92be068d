//! What every HTTP response carries for browsers' sake, and what a request
//! may send: the security headers, the origins allowed to read the API
//! cross-origin (CORS), and the largest request body.
//!
//! Every response, API and dashboard alike, says `nosniff`, may not be
//! framed (`X-Frame-Options: DENY` and CSP `frame-ancestors 'none'`) and
//! sends no referrer. The dashboard's pages get a Content-Security-Policy
//! that allows only its own scripts, styles and connections (its assets are
//! built into the binary, so nothing else is ever needed); every other
//! response gets `default-src 'none'`. Nothing is stored by caches
//! (`Cache-Control: no-store`) unless the response says otherwise, as the
//! dashboard's assets do. `Strict-Transport-Security` is sent only when the
//! collector itself serves TLS: browsers ignore it over plain HTTP, and
//! behind a load balancer that terminates TLS the balancer sets it.
//!
//! CORS is off unless origins are configured: without it browsers refuse
//! cross-origin reads of the API. A configured origin gets exactly its own
//! name back, never `*`.

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, Method};
use axum::response::Response;
use std::str::FromStr;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

/// The largest request body the JSON endpoints read (64 KiB); larger is a
/// 413 with the API's JSON error.
pub const BODY_LIMIT: usize = 64 << 10;

/// The dashboard's policy: its own scripts, styles, images and connections
/// (`'self'` covers its WebSocket on the same host), no plugins, no framing.
const DASHBOARD_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Everything that is not a dashboard page loads nothing.
const API_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// One year, the usual HSTS lifetime; subdomains are left to the operator.
const HSTS: &str = "max-age=31536000";

/// How long a browser may reuse a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

type ChooseValue = fn(&Response) -> Option<HeaderValue>;

/// `X-Content-Type-Options: nosniff`.
pub fn no_sniffing() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    )
}

/// `X-Frame-Options: DENY` (the CSP's `frame-ancestors` says the same to
/// newer browsers).
pub fn no_framing() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"))
}

/// `Referrer-Policy: no-referrer`: tokens in a dashboard URL never leak.
pub fn no_referrer() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    )
}

/// The dashboard's policy on HTML, `default-src 'none'` on everything else.
pub fn content_security_policy() -> SetResponseHeaderLayer<ChooseValue> {
    SetResponseHeaderLayer::if_not_present(header::CONTENT_SECURITY_POLICY, |response| {
        let policy = if content_type_is(response, "text/html") {
            DASHBOARD_POLICY
        } else {
            API_POLICY
        };
        Some(HeaderValue::from_static(policy))
    })
}

/// `Cache-Control: no-store` on every response that does not say
/// otherwise: API JSON, series in any format, metrics. (The dashboard's
/// assets say `no-cache`: kept, but revalidated.)
pub fn not_stored() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    )
}

/// `Strict-Transport-Security`, for the API served over TLS only.
pub fn strict_transport_security() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS),
    )
}

/// Request bodies larger than [`BODY_LIMIT`] are refused.
pub fn body_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(BODY_LIMIT)
}

fn content_type_is(response: &Response, mime: &str) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(mime))
}

/// The CORS layer for these origins; `None` (no CORS headers at all) when
/// there are none.
pub fn cors(origins: &[CorsOrigin]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allowed: Vec<HeaderValue> = origins.iter().map(|o| o.0.clone()).collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([header::RETRY_AFTER])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

/// A browser origin allowed to read the API: `scheme://host[:port]`, as
/// browsers send it in `Origin` (no path, no trailing slash, no `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsOrigin(HeaderValue);

#[derive(Debug, thiserror::Error)]
#[error("{origin:?} is not an origin: {why} (expected e.g. https://grid.example.com or http://localhost:3000)")]
pub struct InvalidOrigin {
    origin: String,
    why: &'static str,
}

impl FromStr for CorsOrigin {
    type Err = InvalidOrigin;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let origin = s.trim();
        let invalid = |why| InvalidOrigin {
            origin: origin.to_owned(),
            why,
        };
        if origin == "*" || origin.eq_ignore_ascii_case("null") {
            return Err(invalid("only named origins can be allowed"));
        }
        let uri: axum::http::Uri = origin.parse().map_err(|_| invalid("not a URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(invalid("the scheme must be http or https"));
        }
        let Some(authority) = uri.authority() else {
            return Err(invalid("no host"));
        };
        if authority.as_str().contains('@') {
            return Err(invalid("an origin has no user name"));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") || origin.ends_with('/') {
            return Err(invalid("an origin has no path, not even a trailing /"));
        }
        HeaderValue::from_str(origin)
            .map(Self)
            .map_err(|_| invalid("not a header value"))
    }
}

impl std::fmt::Display for CorsOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.to_str().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for good in [
            "https://grid.example.com",
            "http://localhost:3000",
            "https://10.0.0.5:8443",
        ] {
            let origin: CorsOrigin = good.parse().unwrap();
            assert_eq!(origin.to_string(), good);
        }
        for bad in [
            "*",
            "null",
            "grid.example.com",
            "ftp://grid.example.com",
            "https://grid.example.com/",
            "https://grid.example.com/app",
            "https://user@grid.example.com",
        ] {
            let error = bad.parse::<CorsOrigin>().unwrap_err().to_string();
            assert!(error.contains("is not an origin"), "{bad}: {error}");
        }
    }
}
