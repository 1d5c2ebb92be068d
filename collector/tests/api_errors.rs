//! The API's error paths, driven through the real router and real state
//! (over a fresh database on the local PostgreSQL) without a socket:
//! every refusal — 400, 401, 403, 404, 405, 429, and 503 for a database
//! that does not answer — has its status and the JSON body
//! `{"error": {"code", "message"}}`.

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt as _;

use bess_collector::api::{self, ApiState, LiveTimings};
use bess_collector::auth::{
    self, AccessControl, AccessSettings, AuthMode, RateLimit, Role, SiteScope,
};
use bess_collector::latest::LatestCache;
use bess_collector::live::LiveHub;
use bess_collector::service;
use bess_tests::TestDatabase;

/// The router over a fresh database with sites `a` and `b`.
struct Api {
    router: Router,
    pool: deadpool_postgres::Pool,
    _database: TestDatabase,
}

/// One answer: status, headers and the JSON body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: serde_json::Value,
}

impl Answer {
    /// The status and the error body's code; the message must say something.
    fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/json",
            "{status}"
        );
        assert_eq!(self.body["error"]["code"], code, "{}", self.body);
        let message = self.body["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("a message: {}", self.body));
        assert!(!message.is_empty(), "{}", self.body);
        assert_eq!(
            self.body.as_object().map(|o| o.len()),
            Some(1),
            "only `error`: {}",
            self.body
        );
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

async fn start(test: &str, rate_limit: Option<RateLimit>) -> anyhow::Result<Api> {
    start_with_replica(test, rate_limit, None).await
}

/// As [`start`], with history queries sent to the read replica at `replica`.
async fn start_with_replica(
    test: &str,
    rate_limit: Option<RateLimit>,
    replica: Option<&str>,
) -> anyhow::Result<Api> {
    let database = TestDatabase::create(test).await?;
    let pool = service::pool(&database.url(), 4)?;
    let storage = service::prepare_database(&pool, Duration::from_secs(10)).await?;
    pool.get()
        .await?
        .batch_execute("INSERT INTO sites (name) VALUES ('a'), ('b')")
        .await?;
    let state = ApiState {
        pool: pool.clone(),
        replica: replica.map(|url| service::pool(url, 2)).transpose()?,
        live: LiveHub::new(16, 16),
        metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle(),
        shutdown: tokio_util::sync::CancellationToken::new(),
        storage,
        access: AccessControl::new(AccessSettings {
            mode: AuthMode::Required,
            rate_limit,
        }),
        latest: Arc::new(LatestCache::default()),
        live_timings: LiveTimings::default(),
        rules: bess_collector::rules::Rules::new(bess_collector::rules::model::RuleSet::default()),
    };
    Ok(Api {
        router: api::router(state),
        pool,
        _database: database,
    })
}

impl Api {
    async fn token(&self, scope: SiteScope, role: Role) -> anyhow::Result<String> {
        Ok(
            auth::create(&**self.pool.get().await?, "errors", role, scope)
                .await?
                .secret,
        )
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::empty())?)
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
        let body = serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    async fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<Answer> {
        self.call(Method::GET, path, token).await
    }
}

fn only(site: &str) -> SiteScope {
    SiteScope::Only([site.to_owned()].into())
}

#[tokio::test]
async fn a_parameter_or_cursor_that_does_not_parse_is_a_400() -> anyhow::Result<()> {
    let api = start("err400", None).await?;
    let token = api.token(SiteScope::All, Role::Read).await?;

    let answer = api.get("/api/v1/sites?limit=0", Some(&token)).await?;
    answer.assert_error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(answer.message().contains("limit"), "{}", answer.body);

    let answer = api
        .get(
            "/api/v1/series?point=a/bms-1/soc&from=yesterday&to=2026-01-02T00:00:00Z",
            Some(&token),
        )
        .await?;
    answer.assert_error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(answer.message().contains("from"), "{}", answer.body);

    for cursor in ["zz", "abc", "00"] {
        let answer = api
            .get(&format!("/api/v1/sites?cursor={cursor}"), Some(&token))
            .await?;
        answer.assert_error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(answer.message().contains("cursor"), "{}", answer.body);
    }
    Ok(())
}

#[tokio::test]
async fn a_request_without_a_token_or_with_an_unknown_one_is_a_401() -> anyhow::Result<()> {
    let api = start("err401", None).await?;

    let answer = api.get("/api/v1/sites", None).await?;
    answer.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Bearer");

    let answer = api.get("/api/v1/sites", Some("bess_not-a-token")).await?;
    answer.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Bearer");
    Ok(())
}

#[tokio::test]
async fn a_site_outside_the_scope_or_a_role_too_low_is_a_403() -> anyhow::Result<()> {
    let api = start("err403", None).await?;
    let reader = api.token(only("a"), Role::Read).await?;

    let answer = api.get("/api/v1/sites/b/devices", Some(&reader)).await?;
    answer.assert_error(StatusCode::FORBIDDEN, "forbidden");
    assert!(answer.message().contains("\"b\""), "{}", answer.body);
    assert_eq!(
        api.get("/api/v1/sites/a/devices", Some(&reader))
            .await?
            .status,
        StatusCode::OK
    );

    let answer = api.get("/api/v1/tokens", Some(&reader)).await?;
    answer.assert_error(StatusCode::FORBIDDEN, "forbidden");
    assert!(
        answer.message().contains("role admin"),
        "names the role needed: {}",
        answer.body
    );
    let answer = api
        .call(
            Method::POST,
            "/api/v1/sites/a/alerts/bms-1/alarm/ack",
            Some(&reader),
        )
        .await?;
    answer.assert_error(StatusCode::FORBIDDEN, "forbidden");
    assert!(answer.message().contains("role operate"), "{}", answer.body);
    Ok(())
}

#[tokio::test]
async fn an_unknown_site_or_route_is_a_404() -> anyhow::Result<()> {
    let api = start("err404", None).await?;
    let token = api.token(SiteScope::All, Role::Read).await?;

    let answer = api
        .get("/api/v1/sites/nowhere/devices", Some(&token))
        .await?;
    answer.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert!(answer.message().contains("nowhere"), "{}", answer.body);

    let answer = api
        .get("/api/v1/sites/nowhere/latest", Some(&token))
        .await?;
    answer.assert_error(StatusCode::NOT_FOUND, "not_found");

    let answer = api.get("/api/v1/no-such-thing", Some(&token)).await?;
    answer.assert_error(StatusCode::NOT_FOUND, "not_found");
    let answer = api.get("/no-such-page", None).await?;
    answer.assert_error(StatusCode::NOT_FOUND, "not_found");
    Ok(())
}

#[tokio::test]
async fn a_route_asked_with_the_wrong_method_is_a_405() -> anyhow::Result<()> {
    let api = start("err405", None).await?;
    let token = api.token(SiteScope::All, Role::Admin).await?;

    let answer = api
        .call(Method::DELETE, "/api/v1/sites", Some(&token))
        .await?;
    answer.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let answer = api.call(Method::POST, "/health", None).await?;
    answer.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    Ok(())
}

#[tokio::test]
async fn a_token_past_its_rate_limit_is_a_429_with_retry_after() -> anyhow::Result<()> {
    let api = start("err429", Some("1/min:1".parse()?)).await?;
    let token = api.token(SiteScope::All, Role::Read).await?;

    assert_eq!(
        api.get("/api/v1/sites", Some(&token)).await?.status,
        StatusCode::OK
    );
    let answer = api.get("/api/v1/sites", Some(&token)).await?;
    answer.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry: u64 = answer.headers[header::RETRY_AFTER].to_str()?.parse()?;
    assert!((1..=60).contains(&retry), "retry after {retry} s");
    assert!(
        answer.message().contains(&format!("{retry} s")),
        "{}",
        answer.body
    );
    Ok(())
}

#[tokio::test]
async fn a_read_replica_that_does_not_answer_is_a_503_and_the_primary_goes_on() -> anyhow::Result<()>
{
    // Nothing listens on port 1: a replica that is down.
    let api = start_with_replica(
        "errors_replica_down",
        None,
        Some("postgres://postgres@127.0.0.1:1/postgres"),
    )
    .await?;
    let token = api.token(SiteScope::All, Role::Admin).await?;

    for path in [
        "/api/v1/sites",
        "/api/v1/sites/a/devices",
        "/api/v1/sites/a/gaps",
        "/api/v1/sites/a/completeness?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z",
        "/api/v1/series?point=a/bms-1/soc&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z",
    ] {
        let answer = api.get(path, Some(&token)).await?;
        answer.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        assert!(
            answer.headers.contains_key(header::RETRY_AFTER),
            "{path}: Retry-After"
        );
        assert!(
            !answer.message().contains("127.0.0.1"),
            "{path}: no connection details in the body: {}",
            answer.message()
        );
    }

    // The primary still answers what is read and written there.
    let tokens = api.get("/api/v1/tokens", Some(&token)).await?;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    let health = api.get("/health?detail=storage", None).await?;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    assert_eq!(health.body["database"], "ok");
    assert_eq!(
        health.body["read_replica"]["status"], "unreachable",
        "{}",
        health.body
    );
    Ok(())
}
