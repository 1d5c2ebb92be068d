//! Access control on the API against a real database: 401 without a valid
//! token, 403 outside the token's sites (REST and WebSocket), 429 past the
//! rate limit, open health and metrics; and the live subscribe protocol.
//! The bodies that read stored data (latest values, series) run on plain
//! PostgreSQL and on TimescaleDB.

#[macro_use]
mod support;

use anyhow::Context as _;
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

use bess_collector::api::{self, ApiState, LiveTimings};
use bess_collector::auth::{
    self, AccessControl, AccessSettings, AuthMode, RateLimit, Role, SiteScope,
};
use bess_collector::catalog::{CatalogLayouts, Layout, PointMeta};
use bess_collector::latest::LatestCache;
use bess_collector::live::{LiveHub, LiveMessage, PolledFrame};
use bess_protocol::Reading;
use bess_tests::TestDatabase;
use support::Backend;

struct Api {
    url: String,
    live: LiveHub,
    pool: deadpool_postgres::Pool,
    _database: TestDatabase,
}

/// An API server on a free port over a fresh database with sites `a` and `b`.
async fn start(test: &str, access: AccessSettings) -> anyhow::Result<Api> {
    start_with(Backend::PostgreSql, test, access, LiveTimings::default()).await
}

/// The same on `backend`.
async fn start_on(backend: Backend, test: &str, access: AccessSettings) -> anyhow::Result<Api> {
    start_with(backend, test, access, LiveTimings::default()).await
}

async fn start_with(
    backend: Backend,
    test: &str,
    access: AccessSettings,
    timings: LiveTimings,
) -> anyhow::Result<Api> {
    let database = backend.database(test).await;
    let (pool, storage) = backend.prepare(&database, 4).await;
    pool.get()
        .await?
        .batch_execute("INSERT INTO sites (name) VALUES ('a'), ('b')")
        .await?;
    let live = LiveHub::new(64, 64);
    let state = ApiState {
        pool: pool.clone(),
        replica: None,
        live: live.clone(),
        metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle(),
        shutdown: tokio_util::sync::CancellationToken::new(),
        storage,
        access: AccessControl::new(access),
        latest: Arc::new(LatestCache::default()),
        live_timings: timings,
        rules: bess_collector::rules::Rules::new(bess_collector::rules::model::RuleSet::default()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
    Ok(Api {
        url,
        live,
        pool,
        _database: database,
    })
}

impl Api {
    async fn token(&self, scope: SiteScope, role: Role) -> anyhow::Result<String> {
        Ok(auth::create(&**self.pool.get().await?, "test", role, scope)
            .await?
            .secret)
    }

    async fn get(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(u16, serde_json::Value, reqwest::header::HeaderMap)> {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .json()
            .await
            .with_context(|| format!("{path}: body is not JSON"))?;
        Ok((status, body, headers))
    }
}

fn required() -> AccessSettings {
    AccessSettings {
        mode: AuthMode::Required,
        rate_limit: None,
    }
}

fn only(site: &str) -> SiteScope {
    SiteScope::Only([site.to_owned()].into())
}

/// A committed frame of `site`, device `bms-1`, group `fast`: these
/// points (name, unit) with these engineering values (scale 1).
fn committed(site: &str, ts_ms: i64, points: &[(&str, &str)], values: &[f64]) -> LiveMessage {
    let layout = Layout {
        layout_id: 1,
        device_id: 1,
        device: "bms-1".into(),
        interval_ms: 1000,
        group: "fast".into(),
        points: points
            .iter()
            .enumerate()
            .map(|(i, (name, unit))| PointMeta {
                point_id: i as i32 + 1,
                name: (*name).into(),
                unit: (*unit).into(),
                scale: 1.0,
                offset: 0.0,
                flags: Default::default(),
            })
            .collect(),
    };
    LiveMessage::new(PolledFrame {
        site: site.into(),
        layouts: Arc::new(CatalogLayouts {
            groups: vec![layout],
            device_ids: vec![1],
        }),
        group: 0,
        ts_ms,
        received_ms: ts_ms,
        readings: values.iter().map(|v| Reading::Float(*v)).collect(),
    })
}

fn frame(site: &str, soc: f64) -> LiveMessage {
    committed(
        site,
        1_767_225_600_000,
        &[("soc", "%"), ("power", "kW")],
        &[soc, 1.0],
    )
}

on_both_backends!(requests_without_a_valid_token_get_401_and_health_stays_open -> anyhow::Result<()>);
async fn requests_without_a_valid_token_get_401_and_health_stays_open(
    backend: Backend,
) -> anyhow::Result<()> {
    let api = start_on(backend, "auth401", required()).await?;
    let (code, body, headers) = api.get("/api/v1/sites", None).await?;
    assert_eq!(code, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (code, body, _) = api
        .get("/api/v1/sites/a/latest", Some("bess_not-a-token"))
        .await?;
    assert_eq!(code, 401, "{body}");

    let revoked = api.token(SiteScope::All, Role::Read).await?;
    let id = auth::list(&**api.pool.get().await?)
        .await?
        .last()
        .context("token")?
        .id;
    assert!(auth::revoke(&**api.pool.get().await?, id).await?);
    assert_eq!(api.get("/api/v1/sites", Some(&revoked)).await?.0, 401);

    let health = reqwest::get(format!("{}/health", api.url)).await?;
    assert_eq!(health.status(), 200);
    let metrics = reqwest::get(format!("{}/metrics", api.url)).await?;
    assert_eq!(metrics.status(), 200);
    let openapi = reqwest::get(format!("{}/api/v1/openapi.json", api.url)).await?;
    assert_eq!(openapi.status(), 200);
    Ok(())
}

on_both_backends!(a_token_for_one_site_gets_403_on_another_and_sees_only_its_own -> anyhow::Result<()>);
async fn a_token_for_one_site_gets_403_on_another_and_sees_only_its_own(
    backend: Backend,
) -> anyhow::Result<()> {
    let api = start_on(backend, "auth403", required()).await?;
    let token = api.token(only("a"), Role::Read).await?;

    let (code, body, _) = api.get("/api/v1/sites/a/latest", Some(&token)).await?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["site"], "a");
    let (code, body, _) = api.get("/api/v1/sites/b/latest", Some(&token)).await?;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (code, _, _) = api
        .get(
            "/api/v1/sites/b/gaps?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z",
            Some(&token),
        )
        .await?;
    assert_eq!(code, 403);
    let (code, _, _) = api
        .get("/api/v1/series?point=a/bms-1/soc,b/bms-1/soc&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", Some(&token))
        .await?;
    assert_eq!(code, 403);

    let (code, body, _) = api.get("/api/v1/sites", Some(&token)).await?;
    assert_eq!(code, 200);
    let names: Vec<&str> = body["sites"]
        .as_array()
        .context("sites")?
        .iter()
        .filter_map(|s| s["site"].as_str())
        .collect();
    assert_eq!(names, ["a"]);

    let everything = api.token(SiteScope::All, Role::Admin).await?;
    let (_, body, _) = api.get("/api/v1/sites", Some(&everything)).await?;
    assert_eq!(body["sites"].as_array().context("sites")?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn a_token_past_its_rate_limit_gets_429_with_retry_after() -> anyhow::Result<()> {
    let limit: RateLimit = "2/min:2".parse()?;
    let api = start(
        "auth429",
        AccessSettings {
            mode: AuthMode::Required,
            rate_limit: Some(limit),
        },
    )
    .await?;
    let token = api.token(SiteScope::All, Role::Read).await?;
    assert_eq!(api.get("/api/v1/sites", Some(&token)).await?.0, 200);
    assert_eq!(api.get("/api/v1/sites", Some(&token)).await?.0, 200);
    let (code, body, headers) = api.get("/api/v1/sites", Some(&token)).await?;
    assert_eq!(code, 429);
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry: u64 = headers["retry-after"].to_str()?.parse()?;
    assert!(retry >= 1);
    // Another token has its own bucket.
    let other = api.token(SiteScope::All, Role::Read).await?;
    assert_eq!(api.get("/api/v1/sites", Some(&other)).await?.0, 200);
    Ok(())
}

async fn next_json(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> anyhow::Result<serde_json::Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await?
            .context("socket closed")??;
        if let Message::Text(text) = message {
            return Ok(serde_json::from_str(&text)?);
        }
    }
}

#[tokio::test]
async fn a_websocket_client_never_receives_frames_of_sites_outside_its_scope() -> anyhow::Result<()>
{
    let api = start("authws", required()).await?;
    let token = api.token(only("a"), Role::Read).await?;
    let ws = api.url.replace("http://", "ws://");

    // No token: refused before the upgrade; a site outside the scope: 403.
    assert!(
        tokio_tungstenite::connect_async(format!("{ws}/api/v1/live"))
            .await
            .is_err()
    );
    assert!(tokio_tungstenite::connect_async(format!(
        "{ws}/api/v1/live?site=b&access_token={token}"
    ))
    .await
    .is_err());

    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("{ws}/api/v1/live?access_token={token}")).await?;
    // The subscription (to both sites) is answered with an error about b, and nothing of b is sent.
    socket
        .send(Message::Text(
            r#"{"subscribe":{"sites":["a","b"],"points":["so*"]}}"#.into(),
        ))
        .await?;
    let reply = next_json(&mut socket).await?;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["error"]["code"], "forbidden");
    // The subscription is in place once the reply came; send b first, then a.
    api.live.publish(frame("b", 10.0));
    api.live.publish(frame("a", 20.0));
    let first = next_json(&mut socket).await?;
    assert_eq!(first["type"], "frame", "{first}");
    assert_eq!(first["frame"]["site"], "a");
    let values = first["frame"]["values"].as_array().context("values")?;
    assert_eq!(values.len(), 1, "only points matching so*: {first}");
    assert_eq!(values[0]["point"], "soc");
    Ok(())
}

#[tokio::test]
async fn a_subscription_starts_with_a_snapshot_of_current_values() -> anyhow::Result<()> {
    let api = start("livesnap", AccessSettings::open()).await?;
    let ws = api.url.replace("http://", "ws://");
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{ws}/api/v1/live")).await?;
    socket
        .send(Message::Text(r#"{"subscribe":{"sites":["a"]}}"#.into()))
        .await?;
    let snapshot = next_json(&mut socket).await?;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(
        snapshot["points"].as_array().context("points")?.len(),
        0,
        "no frames stored yet"
    );
    api.live.publish(frame("a", 30.0));
    let update = next_json(&mut socket).await?;
    assert_eq!(update["type"], "frame");
    assert_eq!(update["frame"]["values"][0]["value"], 30.0);
    Ok(())
}

/// A frame of `site` at `ts_ms` with 60 values (about 4 KB of JSON).
fn wide_frame(site: &str, ts_ms: i64) -> LiveMessage {
    let names: Vec<String> = (0..60).map(|i| format!("cell_voltage_{i:02}")).collect();
    let points: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "V")).collect();
    let values: Vec<f64> = (0..60).map(|i| 3.3 + f64::from(i) / 1000.0).collect();
    committed(site, ts_ms, &points, &values)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_coalesced_and_never_holds_back_the_others(
) -> anyhow::Result<()> {
    const FRAMES: i64 = 6000;
    let api = start("liveslow", AccessSettings::open()).await?;
    let ws = api.url.replace("http://", "ws://");
    let subscribe = || async {
        let (mut socket, _) = tokio_tungstenite::connect_async(format!("{ws}/api/v1/live")).await?;
        socket
            .send(Message::Text(r#"{"subscribe":{"sites":["a"]}}"#.into()))
            .await?;
        let snapshot = next_json(&mut socket).await?;
        anyhow::ensure!(snapshot["type"] == "snapshot", "{snapshot}");
        anyhow::Ok(socket)
    };
    let mut slow = subscribe().await?;
    let mut fast = subscribe().await?;
    let (progress, mut fast_at) = tokio::sync::watch::channel(-1_i64);
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.last() != Some(&(FRAMES - 1)) {
            let message = next_json(&mut fast).await?;
            anyhow::ensure!(message["type"] == "frame", "fast client got {message}");
            let ts = message["frame"]["ts_ms"].as_i64().context("ts_ms")?;
            seen.push(ts);
            progress.send_replace(ts);
        }
        anyhow::Ok(seen)
    });

    // ~24 MB of frames, more than the slow client's queue and socket
    // buffers hold, published no more than 32 ahead of what the fast client
    // has received (the test hub's channels hold 64), however busy the
    // machine is.
    for ts in 0..FRAMES {
        api.live.publish(wide_frame("a", ts));
        let behind = ts - 32;
        tokio::time::timeout(
            Duration::from_secs(30),
            fast_at.wait_for(|at| *at >= behind),
        )
        .await
        .context("the fast client stopped receiving")??;
    }
    let seen = tokio::time::timeout(Duration::from_secs(60), reader).await???;
    assert_eq!(
        seen,
        (0..FRAMES).collect::<Vec<_>>(),
        "the fast client gets every frame, in order, while the other does not read"
    );

    // The slow client now reads: what was held back is coalesced to the newest frame.
    let mut slow_seen = Vec::new();
    while slow_seen.last() != Some(&(FRAMES - 1)) {
        let message = next_json(&mut slow).await?;
        match message["type"].as_str() {
            Some("frame") => slow_seen.push(message["frame"]["ts_ms"].as_i64().context("ts_ms")?),
            // Its server-side reader may fall behind the hub on a busy machine: also not the others' problem.
            Some("lagged") => {}
            _ => anyhow::bail!("slow client got {message}"),
        }
    }
    assert!(
        slow_seen.windows(2).all(|w| w[0] < w[1]),
        "in order, none twice"
    );
    assert!(
        (slow_seen.len() as i64) < FRAMES,
        "frames held back were coalesced ({} of {FRAMES} delivered)",
        slow_seen.len()
    );
    Ok(())
}

#[tokio::test]
async fn a_client_that_answers_no_pings_is_closed_and_the_others_stay() -> anyhow::Result<()> {
    let timings = LiveTimings {
        ping_every: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(500),
        send_timeout: Duration::from_secs(5),
    };
    let api = start_with(
        Backend::PostgreSql,
        "liveidle",
        AccessSettings::open(),
        timings,
    )
    .await?;
    let ws = api.url.replace("http://", "ws://");
    let (mut silent, _) = tokio_tungstenite::connect_async(format!("{ws}/api/v1/live")).await?;
    let (mut awake, _) = tokio_tungstenite::connect_async(format!("{ws}/api/v1/live")).await?;
    // The awake client reads (and so answers pings) for two seconds; the
    // silent one reads nothing, so it sends no pongs.
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut pings = 0;
    while let Ok(Some(message)) = tokio::time::timeout_at(until, awake.next()).await {
        if matches!(message?, Message::Ping(_)) {
            pings += 1;
        }
    }
    assert!(pings >= 3, "pings every 100 ms, got {pings} in 2 s");
    // The silent client finds a few pings, then the close.
    let mut closed = false;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(5), silent.next()).await? {
        match message {
            Ok(Message::Ping(_)) => {}
            Ok(Message::Close(_)) | Err(_) => {
                closed = true;
                break;
            }
            Ok(other) => anyhow::bail!("unexpected {other:?}"),
        }
    }
    assert!(
        closed || silent.next().await.is_none(),
        "the silent client is closed"
    );
    // The awake client still gets frames.
    api.live.publish(frame("a", 40.0));
    let update = next_json(&mut awake).await?;
    assert_eq!(update["frame"]["values"][0]["value"], 40.0);
    Ok(())
}
