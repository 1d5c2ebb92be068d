//! Access control for `/api/v1/*`: bearer tokens, site scopes and a
//! per-token rate limit, as one axum middleware ([`require_access`]).
//!
//! A request carries its token as `Authorization: Bearer <token>` or, for
//! WebSocket clients that cannot set headers, `?access_token=<token>`.
//! Missing, unknown or revoked: 401. Out of scope: 403 — a `{site}` path
//! segment, a `site=` parameter or the site prefix of a `point=` parameter
//! outside the token's sites. Lists (sites, alerts, tokens) show only the
//! token's sites, and the live stream only sends their frames: handlers
//! read the [`Access`] this middleware attaches, which also checks roles
//! ([`Access::require`]: `operate` to acknowledge alarms, `admin` to manage
//! tokens). `/health`, `/metrics`, the OpenAPI document
//! and the dashboard stay open.
//!
//! Token lookups are cached for [`TOKEN_CACHE_TTL`], so a revoked token stops
//! working within that time on every instance.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{ApiState, AppError};
use crate::auth::{self, Role, SiteScope, TokenRecord};

/// How long a looked-up token (or its absence) is trusted without asking the database.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);
/// Most cached lookups; the cache is cleared when it grows past this.
const TOKEN_CACHE_MAX: usize = 10_000;

/// Whether the API asks for tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AuthMode {
    /// Every `/api/v1` request needs a valid token (production).
    #[default]
    Required,
    /// No tokens: everyone sees every site (tests, a closed lab network).
    Disabled,
}

/// A token-bucket rate: `rate` requests per second on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "expected a rate like 50/s, 600/min or 10000/h (optionally :BURST, e.g. 50/s:200), got {0:?}"
)]
pub struct RateLimitParseError(String);

impl FromStr for RateLimit {
    type Err = RateLimitParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RateLimitParseError(s.to_owned());
        let (rate, burst) = match s.split_once(':') {
            Some((rate, burst)) => (rate, Some(burst.trim().parse::<f64>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let (n, unit) = rate.split_once('/').ok_or_else(bad)?;
        let n: f64 = n.trim().parse().map_err(|_| bad())?;
        let seconds = match unit.trim() {
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        let per_second = n / seconds;
        let burst = burst.unwrap_or(n.max(1.0));
        if !(per_second > 0.0 && per_second.is_finite() && burst >= 1.0 && burst.is_finite()) {
            return Err(bad());
        }
        Ok(Self { per_second, burst })
    }
}

/// The API's access settings.
#[derive(Debug, Clone)]
pub struct AccessSettings {
    pub mode: AuthMode,
    /// Per token; `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
}

impl AccessSettings {
    /// No tokens, no limit: for embedding the collector in tests and benchmarks.
    pub fn open() -> Self {
        Self {
            mode: AuthMode::Disabled,
            rate_limit: None,
        }
    }
}

/// What the current request may see; attached to every `/api/v1` request.
#[derive(Debug, Clone)]
pub struct Access {
    pub token: Option<Arc<TokenRecord>>,
}

impl Access {
    /// Access control is off: everything is allowed.
    pub fn everything() -> Self {
        Self { token: None }
    }

    pub fn allows_site(&self, site: &str) -> bool {
        self.token.as_ref().is_none_or(|t| t.sites.allows(site))
    }

    pub fn scope(&self) -> SiteScope {
        self.token
            .as_ref()
            .map_or(SiteScope::All, |t| t.sites.clone())
    }

    pub fn role(&self) -> Role {
        self.token.as_ref().map_or(Role::Admin, |t| t.role)
    }

    /// 403 unless the token's role is `role` or above.
    pub fn require(&self, role: Role) -> Result<(), AppError> {
        if self.role() >= role {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "this needs a token with role {role} or above; this token's role is {}",
                self.role()
            )))
        }
    }

    /// The sites of the token as a SQL parameter: `None` for every site.
    pub fn site_filter(&self) -> Option<Vec<String>> {
        match self.scope() {
            SiteScope::All => None,
            SiteScope::Only(sites) => Some(sites.into_iter().collect()),
        }
    }

    /// Who is acting, for audit columns: the token's name, or `anonymous`
    /// when access control is off.
    pub fn actor(&self) -> (String, Option<i32>) {
        match &self.token {
            Some(t) => (t.name.clone(), Some(t.id)),
            None => ("anonymous".to_owned(), None),
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Take one request's worth; the wait until one is available if empty.
    fn take(&mut self, limit: RateLimit, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / limit.per_second,
            ))
        }
    }
}

/// A token (or its absence) as looked up, and when.
type CachedLookup = (Option<Arc<TokenRecord>>, Instant);

/// Token lookups (cached) and rate-limit buckets, shared by all requests.
#[derive(Clone)]
pub struct AccessControl {
    settings: AccessSettings,
    lookups: Arc<Mutex<HashMap<[u8; 32], CachedLookup>>>,
    buckets: Arc<Mutex<HashMap<i32, Bucket>>>,
}

impl AccessControl {
    pub fn new(settings: AccessSettings) -> Self {
        Self {
            settings,
            lookups: Arc::default(),
            buckets: Arc::default(),
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.settings.mode
    }

    async fn token(
        &self,
        pool: &deadpool_postgres::Pool,
        secret: &str,
    ) -> Result<Option<Arc<TokenRecord>>, AppError> {
        let hash = auth::hash_secret(secret);
        if let Some((record, at)) = self.lookups.lock().expect("token cache lock").get(&hash) {
            if at.elapsed() < TOKEN_CACHE_TTL {
                return Ok(record.clone());
            }
        }
        let client = pool.get().await?;
        let record = auth::lookup(&client, &hash)
            .await
            .map_err(AppError::internal)?
            .map(Arc::new);
        let mut lookups = self.lookups.lock().expect("token cache lock");
        if lookups.len() >= TOKEN_CACHE_MAX {
            lookups.clear();
        }
        lookups.insert(hash, (record.clone(), Instant::now()));
        Ok(record)
    }

    /// Forget cached lookups of a revoked token, so this instance refuses
    /// it at once (others within [`TOKEN_CACHE_TTL`]).
    pub fn forget_token(&self, id: i32) {
        self.lookups
            .lock()
            .expect("token cache lock")
            .retain(|_, (record, _)| record.as_ref().is_none_or(|r| r.id != id));
    }

    fn check_rate(&self, token: &TokenRecord) -> Result<(), AppError> {
        let Some(limit) = self.settings.rate_limit else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        let bucket = buckets.entry(token.id).or_insert(Bucket {
            tokens: limit.burst,
            at: now,
        });
        bucket.take(limit, now).map_err(|wait| {
            metrics::counter!("bess_collector_api_rate_limited_total").increment(1);
            AppError::TooManyRequests {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }
}

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
    let token = match state.access.token(&state.pool, &secret).await {
        Ok(Some(token)) => token,
        Ok(None) => {
            return AppError::Unauthorized("unknown or revoked API token".into()).into_response()
        }
        Err(e) => return e.into_response(),
    };
    if let Err(e) = state.access.check_rate(&token) {
        return e.into_response();
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
    fn rates_parse_with_and_without_burst() {
        assert_eq!(
            "50/s".parse::<RateLimit>().unwrap(),
            RateLimit {
                per_second: 50.0,
                burst: 50.0
            }
        );
        assert_eq!(
            "600/min:20".parse::<RateLimit>().unwrap(),
            RateLimit {
                per_second: 10.0,
                burst: 20.0
            }
        );
        assert!("fast".parse::<RateLimit>().is_err());
        assert!("0/s".parse::<RateLimit>().is_err());
    }

    #[test]
    fn a_bucket_refuses_past_its_burst_and_says_how_long_to_wait() {
        let limit = RateLimit {
            per_second: 2.0,
            burst: 2.0,
        };
        let t0 = Instant::now();
        let mut bucket = Bucket {
            tokens: 2.0,
            at: t0,
        };
        assert!(bucket.take(limit, t0).is_ok());
        assert!(bucket.take(limit, t0).is_ok());
        let wait = bucket.take(limit, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(bucket.take(limit, t0 + Duration::from_millis(500)).is_ok());
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
