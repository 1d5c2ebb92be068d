//! The fleet's lists over the API against a real database, with batches
//! written by the real writer: sites, devices, points and gaps walked page
//! by page (nothing skipped, nothing repeated), alerts and their
//! acknowledgement (role `operate`), and token administration (role
//! `admin`, within the admin's own sites), and the stored frames read back
//! as series at every resolution and as completeness. Each body runs on
//! plain PostgreSQL and on TimescaleDB.

#[macro_use]
mod support;

use anyhow::Context as _;
use std::collections::BTreeSet;
use std::sync::Arc;

use bess_collector::api::ApiState;
use bess_collector::auth::{self, AuthMode, Role, SiteScope};
use bess_collector::latest::LatestCache;
use bess_collector::message::IngestMessage;
use bess_collector::writer::SampleWriter;
use bess_protocol::*;
use bess_tests::TestDatabase;
use support::Backend;

const T0: i64 = 1_767_225_600_000;

struct Fleet {
    url: String,
    pool: deadpool_postgres::Pool,
    writer: SampleWriter,
    latest: Arc<LatestCache>,
    offset: std::sync::atomic::AtomicI64,
    _database: TestDatabase,
}

/// Devices `bms-1..=bms-{devices}`, each with soc, power, an `alarms`
/// bitfield and a `fault` flag.
fn catalog(devices: usize) -> Catalog {
    Catalog {
        devices: (1..=devices)
            .map(|i| DeviceInfo {
                name: format!("bms-{i}"),
                model: "test-bms".into(),
            })
            .collect(),
        groups: (0..devices)
            .map(|d| GroupInfo {
                device: d as u16,
                name: "fast".into(),
                interval_ms: 1000,
                points: vec![
                    PointInfo::new("soc", "%", PointKind::Analog, 0.01, 0.0),
                    PointInfo::new("power", "kW", PointKind::Analog, 1.0, 0.0),
                    PointInfo::new("alarms", "", PointKind::Bitfield, 1.0, 0.0),
                    PointInfo::new("fault", "", PointKind::Flag, 1.0, 0.0),
                ],
            })
            .collect(),
    }
}

impl Fleet {
    async fn start(backend: Backend, test: &str, mode: AuthMode) -> anyhow::Result<Self> {
        let database = backend.database(test).await;
        let (pool, storage) = backend.prepare(&database, 4).await;
        let latest = Arc::new(LatestCache::default());
        let url = support::serve_api(ApiState {
            latest: latest.clone(),
            ..support::api_state(pool.clone(), storage, mode)
        })
        .await?;
        Ok(Self {
            url,
            writer: SampleWriter::new(pool.clone(), storage),
            pool,
            latest,
            offset: Default::default(),
            _database: database,
        })
    }

    /// Write one batch for `site` (frames of every device, then `gaps`)
    /// through the writer and feed its frames to the latest-value cache.
    async fn write(
        &self,
        site: &str,
        devices: usize,
        seq: u64,
        alarms: f64,
        gaps: Vec<Gap>,
    ) -> anyhow::Result<()> {
        let catalog = catalog(devices);
        let batch = Batch {
            site: SiteId::new(site)?,
            seq: BatchSeq(seq),
            catalog_hash: catalog.hash(),
            catalog: Some(catalog),
            frames: (0..devices)
                .map(|d| Frame {
                    group: GroupIndex(d as u16),
                    ts_ms: T0 + seq as i64 * 1000,
                    values: vec![
                        Reading::Int(5000),
                        Reading::Float(-12.5),
                        Reading::Int(if d == 0 { alarms as i64 } else { 0 }),
                        Reading::Int(0),
                    ],
                })
                .collect(),
            gaps,
        };
        let offset = self
            .offset
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let outcome = self
            .writer
            .write(&[IngestMessage {
                topic: "t".into(),
                partition: 0,
                offset,
                key: Some(site.as_bytes().to_vec()),
                payload: batch.encode(Codec::Zstd)?,
                received_ms: 0,
            }])
            .await?;
        for frame in &outcome.live {
            self.latest.apply_frame(frame);
        }
        Ok(())
    }

    async fn token(&self, scope: SiteScope, role: Role) -> anyhow::Result<String> {
        Ok(
            auth::create(&**self.pool.get().await?, "fleet-test", role, scope)
                .await?
                .secret,
        )
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let body = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("{path}: not JSON: {text}"))?
        };
        Ok((status, body))
    }

    async fn get(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        self.request(reqwest::Method::GET, path, token, None).await
    }

    /// Every item of a paged list, following `next_cursor`; also the number of pages.
    async fn walk(
        &self,
        path: &str,
        field: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(Vec<serde_json::Value>, usize)> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let separator = if path.contains('?') { '&' } else { '?' };
            let url = match &cursor {
                Some(c) => format!("{path}{separator}cursor={c}"),
                None => path.to_owned(),
            };
            let (status, body) = self.get(&url, token).await?;
            anyhow::ensure!(status == 200, "{url}: {status} {body}");
            pages += 1;
            items.extend(
                body[field]
                    .as_array()
                    .context("list field")?
                    .iter()
                    .cloned(),
            );
            match body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok((items, pages)),
            }
            anyhow::ensure!(pages < 1000, "{path}: the cursor never ends");
        }
    }
}

fn names(items: &[serde_json::Value], field: &str) -> Vec<String> {
    items
        .iter()
        .map(|i| i[field].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn only(sites: &[&str]) -> SiteScope {
    SiteScope::Only(sites.iter().map(|s| (*s).to_owned()).collect())
}

on_both_backends!(sites_devices_and_points_are_listed_page_by_page_without_skips_or_repeats -> anyhow::Result<()>);
async fn sites_devices_and_points_are_listed_page_by_page_without_skips_or_repeats(
    backend: Backend,
) -> anyhow::Result<()> {
    let fleet = Fleet::start(backend, "lists_pages", AuthMode::Required).await?;
    for i in 1..=7 {
        fleet
            .write(&format!("site-{i:02}"), 1, 1, 0.0, vec![])
            .await?;
    }
    fleet.write("site-01", 5, 2, 0.0, vec![]).await?;
    let all = fleet.token(SiteScope::All, Role::Read).await?;

    let (sites, pages) = fleet
        .walk("/api/v1/sites?limit=3", "sites", Some(&all))
        .await?;
    let expected: Vec<String> = (1..=7).map(|i| format!("site-{i:02}")).collect();
    assert_eq!(names(&sites, "site"), expected);
    assert_eq!(pages, 3, "7 sites in pages of 3");
    assert_eq!(sites[0]["devices"], 5);

    // A scoped token pages through its own sites only.
    let scoped = fleet
        .token(only(&["site-02", "site-05", "site-07"]), Role::Read)
        .await?;
    let (sites, _) = fleet
        .walk("/api/v1/sites?limit=2", "sites", Some(&scoped))
        .await?;
    assert_eq!(names(&sites, "site"), ["site-02", "site-05", "site-07"]);

    let (devices, pages) = fleet
        .walk(
            "/api/v1/sites/site-01/devices?limit=2",
            "devices",
            Some(&all),
        )
        .await?;
    assert_eq!(
        names(&devices, "device"),
        ["bms-1", "bms-2", "bms-3", "bms-4", "bms-5"]
    );
    assert_eq!(pages, 3);
    assert_eq!(devices[0]["points"], 4);
    assert_eq!(devices[0]["model"], "test-bms");

    let (points, _) = fleet
        .walk("/api/v1/sites/site-01/points?limit=7", "points", Some(&all))
        .await?;
    let unique: BTreeSet<String> = names(&points, "point").into_iter().collect();
    assert_eq!(points.len(), 20, "5 devices × 4 points");
    assert_eq!(unique.len(), 20, "no point twice");
    let soc = points
        .iter()
        .find(|p| p["point"] == "site-01/bms-3/soc")
        .context("soc of bms-3")?;
    assert_eq!(soc["unit"], "%");
    assert_eq!(soc["kind"], "analog");
    assert_eq!(soc["interval_ms"], 1000);

    let (status, body) = fleet
        .get("/api/v1/sites/site-01/points?device=bms-2", Some(&all))
        .await?;
    assert_eq!(status, 200);
    assert_eq!(
        names(body["points"].as_array().context("points")?, "name"),
        ["alarms", "fault", "power", "soc"]
    );

    // Bad requests are 4xx with a JSON error.
    for (path, code) in [
        ("/api/v1/sites?limit=0", 400),
        ("/api/v1/sites?limit=abc", 400),
        ("/api/v1/sites?cursor=nothex", 400),
        // Six bytes of UTF-8 in three characters: once a panic that dropped the connection.
        ("/api/v1/sites?cursor=%F0%A5%AE%83%C3%8F", 400),
        ("/api/v1/sites/site-01/points?device=nope", 404),
        ("/api/v1/sites/nowhere/devices", 404),
    ] {
        let (status, body) = fleet.get(path, Some(&all)).await?;
        assert_eq!(status, code, "{path}: {body}");
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
    }
    // Empty parameters count as absent.
    let (status, body) = fleet
        .get(
            "/api/v1/sites/site-01/points?cursor=&limit=&device=",
            Some(&all),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["points"].as_array().map(Vec::len), Some(20));
    // An empty range is a question with an empty answer.
    let at = "2026-01-01T00:00:00Z";
    let (status, body) = fleet
        .get(
            &format!("/api/v1/series?point=site-01/bms-1/soc&from={at}&to={at}"),
            Some(&all),
        )
        .await?;
    assert_eq!(
        (status, &body["count"]),
        (200, &serde_json::json!(0)),
        "{body}"
    );
    let (status, body) = fleet
        .get(
            &format!("/api/v1/sites/site-01/completeness?from={at}&to={at}"),
            Some(&all),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    // axum's own rejections are JSON errors too.
    for (method, path, code) in [
        (reqwest::Method::POST, "/api/v1/sites", 405),
        (reqwest::Method::GET, "/api/v1/live", 400),
        (reqwest::Method::DELETE, "/api/v1/sites/site-01/points", 405),
    ] {
        let (status, body) = fleet
            .request(method.clone(), path, Some(&all), None)
            .await?;
        assert!(
            status == code || (path == "/api/v1/live" && (400..500).contains(&status)),
            "{method} {path}: {status}"
        );
        assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{method} {path}: {body}"
        );
    }
    // A cursor of one list is refused by another.
    let (_, body) = fleet.get("/api/v1/sites?limit=1", Some(&all)).await?;
    let site_cursor = body["next_cursor"].as_str().context("cursor")?.to_owned();
    let (status, _) = fleet
        .get(
            &format!("/api/v1/sites/site-01/points?cursor={site_cursor}"),
            Some(&all),
        )
        .await?;
    assert_eq!(status, 400);
    // Out of scope: 403.
    let (status, _) = fleet
        .get("/api/v1/sites/site-01/devices", Some(&scoped))
        .await?;
    assert_eq!(status, 403);
    Ok(())
}

on_both_backends!(gaps_sharing_a_start_time_are_paged_without_skips_or_repeats -> anyhow::Result<()>);
async fn gaps_sharing_a_start_time_are_paged_without_skips_or_repeats(
    backend: Backend,
) -> anyhow::Result<()> {
    let fleet = Fleet::start(backend, "lists_gaps", AuthMode::Disabled).await?;
    let gap = |device: u16, first: i64, samples: u64| Gap {
        device,
        first_ts_ms: T0 + first,
        last_ts_ms: T0 + first + 999,
        samples,
        reason: GapReason::DiskCap,
    };
    // Eleven gaps, several starting at the same instant.
    fleet
        .write(
            "site-g",
            2,
            1,
            0.0,
            (0..6).map(|i| gap(i % 2, 0, 10 + i as u64)).collect(),
        )
        .await?;
    fleet
        .write(
            "site-g",
            2,
            2,
            0.0,
            (0..5)
                .map(|i| gap(i % 2, i as i64 * 500, 100 + i as u64))
                .collect(),
        )
        .await?;
    let (gaps, pages) = fleet
        .walk("/api/v1/sites/site-g/gaps?limit=4", "gaps", None)
        .await?;
    assert_eq!(pages, 3);
    let samples: BTreeSet<i64> = gaps
        .iter()
        .map(|g| g["samples"].as_i64().unwrap())
        .collect();
    assert_eq!(gaps.len(), 11);
    assert_eq!(samples.len(), 11, "each gap once: {gaps:?}");
    assert_eq!(
        gaps.iter()
            .map(|g| g["samples"].as_i64().unwrap())
            .sum::<i64>(),
        (10..16).sum::<i64>() + (100..105).sum::<i64>()
    );
    let starts: Vec<time::OffsetDateTime> = gaps
        .iter()
        .map(|g| {
            let ts = g["first_ts"].as_str().unwrap();
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).unwrap()
        })
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] <= w[1]),
        "in time order: {starts:?}"
    );
    Ok(())
}

on_both_backends!(alarms_are_listed_and_only_operators_acknowledge_them -> anyhow::Result<()>);
async fn alarms_are_listed_and_only_operators_acknowledge_them(
    backend: Backend,
) -> anyhow::Result<()> {
    let fleet = Fleet::start(backend, "lists_alerts", AuthMode::Required).await?;
    fleet.write("site-a", 2, 1, 4.0, vec![]).await?;
    fleet.write("site-b", 1, 1, 1.0, vec![]).await?;
    fleet.write("site-c", 1, 1, 0.0, vec![]).await?;
    let reader = fleet.token(SiteScope::All, Role::Read).await?;
    let operator = fleet.token(only(&["site-a"]), Role::Operate).await?;

    let (alerts, _) = fleet
        .walk("/api/v1/alerts?limit=1", "alerts", Some(&reader))
        .await?;
    assert_eq!(
        names(&alerts, "point"),
        ["site-a/bms-1/alarms", "site-b/bms-1/alarms"],
        "only non-zero alarm points, in order: {alerts:?}"
    );
    assert_eq!(alerts[0]["value"], 4.0);
    assert!(alerts[0]["acknowledged"].is_null());

    // The operator sees its own site only.
    let (status, body) = fleet.get("/api/v1/alerts", Some(&operator)).await?;
    assert_eq!(status, 200);
    assert_eq!(
        names(body["alerts"].as_array().unwrap(), "site"),
        ["site-a"]
    );
    let (status, _) = fleet
        .get("/api/v1/alerts?site=site-b", Some(&operator))
        .await?;
    assert_eq!(status, 403);

    let ack = "/api/v1/sites/site-a/alerts/bms-1/alarms/ack";
    let note = serde_json::json!({ "note": "crew on site" });
    let (status, body) = fleet
        .request(
            reqwest::Method::POST,
            ack,
            Some(&reader),
            Some(note.clone()),
        )
        .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, body) = fleet
        .request(reqwest::Method::POST, ack, Some(&operator), Some(note))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["alert"]["acknowledged"]["note"], "crew on site");
    // A `null` body is no note.
    let (status, body) = fleet
        .request(
            reqwest::Method::POST,
            ack,
            Some(&operator),
            Some(serde_json::Value::Null),
        )
        .await?;
    assert_eq!(
        (status, &body["alert"]["acknowledged"]["note"]),
        (200, &serde_json::json!(""))
    );
    let (status, _) = fleet
        .request(
            reqwest::Method::POST,
            ack,
            Some(&operator),
            Some(serde_json::json!({ "note": "crew on site" })),
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(body["alert"]["acknowledged"]["by"], "fleet-test");

    let (_, body) = fleet
        .get("/api/v1/alerts?site=site-a", Some(&reader))
        .await?;
    assert_eq!(body["alerts"][0]["acknowledged"]["value"], 4.0);

    // Another bit raised: a new alarm, no longer acknowledged.
    fleet.write("site-a", 2, 2, 6.0, vec![]).await?;
    let (_, body) = fleet
        .get("/api/v1/alerts?site=site-a", Some(&reader))
        .await?;
    assert_eq!(body["alerts"][0]["value"], 6.0);
    assert!(body["alerts"][0]["acknowledged"].is_null(), "{body}");

    // Nothing to acknowledge, not an alarm point, another site.
    for (path, code) in [
        ("/api/v1/sites/site-a/alerts/bms-2/alarms/ack", 409),
        ("/api/v1/sites/site-a/alerts/bms-1/soc/ack", 404),
        ("/api/v1/sites/site-b/alerts/bms-1/alarms/ack", 403),
    ] {
        let (status, body) = fleet
            .request(reqwest::Method::POST, path, Some(&operator), None)
            .await?;
        assert_eq!(status, code, "{path}: {body}");
    }
    let (status, _) = fleet
        .request(
            reqwest::Method::POST,
            ack,
            Some(&operator),
            Some(serde_json::json!({ "nope": 1 })),
        )
        .await?;
    assert_eq!(status, 400);

    // Cleared: the alert is gone.
    fleet.write("site-a", 2, 3, 0.0, vec![]).await?;
    let (_, body) = fleet
        .get("/api/v1/alerts?site=site-a", Some(&reader))
        .await?;
    assert_eq!(body["alerts"], serde_json::json!([]));
    Ok(())
}

#[tokio::test]
async fn admins_manage_tokens_within_their_own_sites() -> anyhow::Result<()> {
    let backend = Backend::PostgreSql; // tokens do not depend on the storage backend
    let fleet = Fleet::start(backend, "lists_tokens", AuthMode::Required).await?;
    fleet.write("site-a", 1, 1, 0.0, vec![]).await?;
    fleet.write("site-b", 1, 1, 0.0, vec![]).await?;
    let root = fleet.token(SiteScope::All, Role::Admin).await?;
    let operator = fleet.token(SiteScope::All, Role::Operate).await?;

    let (status, _) = fleet.get("/api/v1/tokens", Some(&operator)).await?;
    assert_eq!(status, 403, "listing tokens needs admin");

    // An all-sites admin creates a site-a admin; its secret works at once.
    let (status, created) = fleet
        .request(
            reqwest::Method::POST,
            "/api/v1/tokens",
            Some(&root),
            Some(
                serde_json::json!({ "name": "site-a admin", "role": "admin", "sites": ["site-a"] }),
            ),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    let site_admin = created["token"].as_str().context("secret")?.to_owned();
    assert_eq!(created["sites"], serde_json::json!(["site-a"]));
    let (status, _) = fleet
        .get("/api/v1/sites/site-a/devices", Some(&site_admin))
        .await?;
    assert_eq!(status, 200);

    // The site-a admin cannot reach beyond site-a.
    for sites in [
        serde_json::json!("*"),
        serde_json::json!(["site-a", "site-b"]),
    ] {
        let (status, body) = fleet
            .request(
                reqwest::Method::POST,
                "/api/v1/tokens",
                Some(&site_admin),
                Some(serde_json::json!({ "name": "x", "role": "read", "sites": sites })),
            )
            .await?;
        assert_eq!(status, 403, "{body}");
    }
    let (status, reader) = fleet
        .request(
            reqwest::Method::POST,
            "/api/v1/tokens",
            Some(&site_admin),
            Some(serde_json::json!({ "name": "site-a dashboard", "role": "read", "sites": ["site-a"] })),
        )
        .await?;
    assert_eq!(status, 201);
    let reader_secret = reader["token"].as_str().context("secret")?.to_owned();

    let (listed, _) = fleet
        .walk("/api/v1/tokens?limit=1", "tokens", Some(&site_admin))
        .await?;
    assert_eq!(
        names(&listed, "name"),
        ["site-a admin", "site-a dashboard"],
        "tokens reaching beyond site-a are not shown"
    );
    let (listed, _) = fleet.walk("/api/v1/tokens", "tokens", Some(&root)).await?;
    assert_eq!(listed.len(), 4);
    assert!(
        listed.iter().all(|t| t.get("token").is_none()),
        "secrets are never listed"
    );

    // Revoking works at once on this instance; twice is a conflict.
    let path = format!("/api/v1/tokens/{}", reader["id"]);
    let (status, _) = fleet.get("/api/v1/sites", Some(&reader_secret)).await?;
    assert_eq!(status, 200);
    let (status, _) = fleet
        .request(reqwest::Method::DELETE, &path, Some(&site_admin), None)
        .await?;
    assert_eq!(status, 204);
    let (status, _) = fleet.get("/api/v1/sites", Some(&reader_secret)).await?;
    assert_eq!(status, 401);
    let (status, _) = fleet
        .request(reqwest::Method::DELETE, &path, Some(&site_admin), None)
        .await?;
    assert_eq!(status, 409);
    // The root token is not the site admin's to revoke.
    let (listed, _) = fleet.walk("/api/v1/tokens", "tokens", Some(&root)).await?;
    let root_id = listed[0]["id"].clone();
    let (status, _) = fleet
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/tokens/{root_id}"),
            Some(&site_admin),
            None,
        )
        .await?;
    assert_eq!(status, 404);

    for body in [
        serde_json::json!({ "name": "x", "role": "superuser", "sites": "*" }),
        serde_json::json!({ "name": "", "role": "read", "sites": "*" }),
        serde_json::json!({ "name": "x", "role": "read", "sites": [] }),
        serde_json::json!({ "name": "x", "role": "read", "sites": "everything" }),
    ] {
        let (status, reply) = fleet
            .request(
                reqwest::Method::POST,
                "/api/v1/tokens",
                Some(&root),
                Some(body.clone()),
            )
            .await?;
        assert_eq!(status, 400, "{body}: {reply}");
    }
    Ok(())
}

on_both_backends!(series_at_every_resolution_and_completeness_read_the_stored_frames -> anyhow::Result<()>);
async fn series_at_every_resolution_and_completeness_read_the_stored_frames(
    backend: Backend,
) -> anyhow::Result<()> {
    let fleet = Fleet::start(backend, "lists_series", AuthMode::Disabled).await?;
    // One frame a second from T0 + 1 s to T0 + 120 s: minutes of 59, 60 and 1 frames.
    for seq in 1..=120 {
        fleet.write("site-01", 1, seq, 0.0, vec![]).await?;
    }
    backend.refresh_rollups(&fleet.pool).await;
    if backend == Backend::TimescaleDb {
        // Materialized rollups over compressed chunks: what an older range reads.
        let client = fleet.pool.get().await?;
        client
            .batch_execute("SELECT compress_chunk(c) FROM show_chunks('frames') c")
            .await?;
    }
    let (from, to) = ("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z");
    let series = |resolution: &'static str| {
        format!(
            "/api/v1/series?point=site-01/bms-1/power&from={from}&to={to}&resolution={resolution}"
        )
    };

    let (status, raw) = fleet.get(&series("raw"), None).await?;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(raw["count"], 120, "{raw}");
    assert_eq!(raw["samples"][0]["ts"], "2026-01-01T00:00:01Z", "{raw}");
    assert_eq!(raw["samples"][0]["value"], -12.5, "{raw}");

    let (status, minutes) = fleet.get(&series("1m"), None).await?;
    assert_eq!(status, 200, "{minutes}");
    let buckets: Vec<(String, i64)> = minutes["samples"]
        .as_array()
        .context("samples")?
        .iter()
        .map(|b| {
            (
                b["ts"].as_str().unwrap_or("").to_owned(),
                b["count"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        buckets,
        [
            ("2026-01-01T00:00:00Z".to_owned(), 59),
            ("2026-01-01T00:01:00Z".to_owned(), 60),
            ("2026-01-01T00:02:00Z".to_owned(), 1),
        ],
        "{minutes}"
    );
    for bucket in minutes["samples"].as_array().context("samples")? {
        for field in ["min", "max", "avg", "last", "value"] {
            assert_eq!(bucket[field], -12.5, "{field} in {bucket}");
        }
    }

    let (status, hours) = fleet.get(&series("1h"), None).await?;
    assert_eq!(status, 200, "{hours}");
    assert_eq!(hours["count"], 1, "{hours}");
    assert_eq!(hours["samples"][0]["count"], 120, "{hours}");

    let (status, report) = fleet
        .get(
            &format!("/api/v1/sites/site-01/completeness?from={from}&to={to}&by=range"),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{report}");
    let device = &report["devices"][0];
    assert_eq!(device["device"], "bms-1", "{report}");
    // Four points a frame, every value present.
    assert_eq!(
        (&device["received"], &device["good"]),
        (&serde_json::json!(480), &serde_json::json!(480)),
        "{report}"
    );
    Ok(())
}
