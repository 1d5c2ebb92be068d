//! Alerts over the API against a real database: device alarms (written by
//! the real writer) and rule episodes (seeded in `alert_episodes`) in one
//! list, filtered and paged without skips or repeats; the episode history;
//! acknowledging episodes (role `operate`); silences created, listed and
//! ended, with every bad request a 4xx JSON error naming the field; the
//! rules in force without their secrets. A token for one site never sees
//! another's episodes or silences by any path.

mod support;

use anyhow::Context as _;
use std::collections::BTreeSet;
use std::sync::Arc;

use bess_collector::api::ApiState;
use bess_collector::auth::{self, AuthMode, Role, SiteScope};
use bess_collector::latest::LatestCache;
use bess_collector::message::IngestMessage;
use bess_collector::rules::Rules;
use bess_collector::writer::SampleWriter;
use bess_protocol::*;
use bess_tests::TestDatabase;

const T0: i64 = 1_767_225_600_000;

/// The rules in force for these tests; the webhook's secret must never be shown.
const RULES: &str = r#"
[[rule]]
name = "cell-overtemp"
summary = "Hottest cell above 45 °C"
severity = "critical"
device = "bms*"
point = "cell_temp_max"
kind = "threshold"
above = 45.0
hysteresis = 2.0
for = "30s"
receivers = ["ops"]

[[rule]]
name = "site-silent"
site = "site-a"
kind = "offline"
after = "2m"

[[rule]]
name = "comm-loss"
site = "site-b"
severity = "info"
kind = "stale"
after = "1m 30s"

[[receiver]]
name = "ops"
kind = "webhook"
url = "https://hooks.example.com/bess"
secret_env = "HOOK_SECRET"

[[receiver]]
name = "am"
kind = "alertmanager"
url = "http://alertmanager:9093"
"#;

const SECRET: &str = "hook-secret-never-shown";

struct Fleet {
    url: String,
    pool: deadpool_postgres::Pool,
    writer: SampleWriter,
    latest: Arc<LatestCache>,
    offset: std::sync::atomic::AtomicI64,
    _database: TestDatabase,
}

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
                    PointInfo::new("alarms", "", PointKind::Bitfield, 1.0, 0.0),
                ],
            })
            .collect(),
    }
}

impl Fleet {
    async fn start(test: &str) -> anyhow::Result<Self> {
        let database = TestDatabase::create(test).await?;
        let pool = bess_collector::service::pool(&database.url(), 4)?;
        let storage =
            bess_collector::service::prepare_database(&pool, std::time::Duration::from_secs(10))
                .await?;
        let rules = bess_collector::rules::config::parse_with_env(
            RULES,
            std::path::Path::new("rules.toml"),
            &|name| (name == "HOOK_SECRET").then(|| SECRET.to_owned()),
        )?;
        let latest = Arc::new(LatestCache::default());
        let url = support::serve_api(ApiState {
            latest: latest.clone(),
            rules: Rules::new(rules),
            ..support::api_state(pool.clone(), storage, AuthMode::Required)
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

    /// One batch of `site` through the writer, fed to the latest-value
    /// cache: `devices` devices, the first with `alarms` in its alarm word.
    async fn write(&self, site: &str, devices: usize, seq: u64, alarms: i64) -> anyhow::Result<()> {
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
                        Reading::Int(if d == 0 { alarms } else { 0 }),
                    ],
                })
                .collect(),
            gaps: vec![],
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

    /// An episode as the rules store writes it; its id.
    #[allow(clippy::too_many_arguments)]
    async fn episode(
        &self,
        site: &str,
        rule: &str,
        target: &str,
        severity: &str,
        started: &str,
        ended: Option<&str>,
        peak: Option<f64>,
    ) -> anyhow::Result<i64> {
        let row = self
            .pool
            .get()
            .await?
            .query_one(
                "INSERT INTO alert_episodes (rule, site_id, target, severity, summary, started_at, ended_at, peak)
                 SELECT $2, site_id, $3, $4, $2 || ' on ' || $3, $5::text::timestamptz, $6::text::timestamptz, $7
                 FROM sites WHERE name = $1
                 RETURNING episode_id",
                &[&site, &rule, &target, &severity, &started, &ended, &peak],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn token(&self, scope: SiteScope, role: Role) -> anyhow::Result<String> {
        Ok(
            auth::create(&**self.pool.get().await?, "alerts-test", role, scope)
                .await?
                .secret,
        )
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
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

    async fn get(&self, path: &str, token: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        self.request(reqwest::Method::GET, path, token, None).await
    }

    async fn post(
        &self,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        self.request(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    async fn delete(&self, path: &str, token: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        self.request(reqwest::Method::DELETE, path, token, None)
            .await
    }

    /// Every item of a paged list, following `next_cursor`.
    async fn walk(
        &self,
        path: &str,
        field: &str,
        token: &str,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        self.walk_from(path, field, token, None).await
    }

    /// The items of a paged list from `cursor` on.
    async fn walk_from(
        &self,
        path: &str,
        field: &str,
        token: &str,
        mut cursor: Option<String>,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut items = Vec::new();
        for _ in 0..1000 {
            let separator = if path.contains('?') { '&' } else { '?' };
            let url = match &cursor {
                Some(c) => format!("{path}{separator}cursor={c}"),
                None => path.to_owned(),
            };
            let (status, body) = self.get(&url, token).await?;
            anyhow::ensure!(status == 200, "{url}: {status} {body}");
            items.extend(
                body[field]
                    .as_array()
                    .context("list field")?
                    .iter()
                    .cloned(),
            );
            match body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(items),
            }
        }
        anyhow::bail!("{path}: the cursor never ends")
    }
}

fn only(sites: &[&str]) -> SiteScope {
    SiteScope::Only(sites.iter().map(|s| (*s).to_owned()).collect())
}

/// `site/source/point/rule` of each alert, to compare lists at a glance.
fn keys(alerts: &[serde_json::Value]) -> Vec<String> {
    alerts
        .iter()
        .map(|a| {
            format!(
                "{} {} {}",
                a["source"].as_str().unwrap_or("?"),
                a["point"].as_str().unwrap_or("?"),
                a["rule"].as_str().unwrap_or("-"),
            )
        })
        .collect()
}

/// A 4xx whose JSON error names `field` in its message.
fn assert_refused(status: u16, body: &serde_json::Value, code: u16, field: &str) {
    assert_eq!(status, code, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("`{field}`")),
        "the message names `{field}`: {message}"
    );
}

/// The fleet most tests use: site-a with two devices (bms-1 raising alarm
/// bit 4), site-b with one (bit 1), site-c quiet; open episodes on site-a
/// (a critical threshold on a point, an offline rule on the whole site)
/// and site-b (a stale point), and an ended one on site-a.
async fn seeded(test: &str) -> anyhow::Result<(Fleet, [i64; 4])> {
    let fleet = Fleet::start(test).await?;
    fleet.write("site-a", 2, 1, 4).await?;
    fleet.write("site-b", 1, 1, 1).await?;
    fleet.write("site-c", 1, 1, 0).await?;
    let overtemp = fleet
        .episode(
            "site-a",
            "cell-overtemp",
            "bms-1/cell_temp_max",
            "critical",
            "2026-01-01T00:10:00Z",
            None,
            Some(47.5),
        )
        .await?;
    let silent = fleet
        .episode(
            "site-a",
            "site-silent",
            "",
            "warning",
            "2026-01-01T00:20:00Z",
            None,
            None,
        )
        .await?;
    let stale = fleet
        .episode(
            "site-b",
            "comm-loss",
            "bms-1/soc",
            "info",
            "2026-01-01T00:30:00Z",
            None,
            None,
        )
        .await?;
    let ended = fleet
        .episode(
            "site-a",
            "cell-overtemp",
            "bms-2/cell_temp_max",
            "critical",
            "2026-01-01T00:05:00Z",
            Some("2026-01-01T00:06:00Z"),
            Some(46.0),
        )
        .await?;
    Ok((fleet, [overtemp, silent, stale, ended]))
}

#[tokio::test]
async fn device_alarms_and_rule_episodes_are_one_list_paged_without_skips_or_repeats(
) -> anyhow::Result<()> {
    let (fleet, [overtemp, _, _, _]) = seeded("alerts_merged").await?;
    let reader = fleet.token(SiteScope::All, Role::Read).await?;

    let expected = [
        "device site-a/bms-1/alarms -",
        "rule site-a site-silent",
        "rule site-a/bms-1/cell_temp_max cell-overtemp",
        "device site-b/bms-1/alarms -",
        "rule site-b/bms-1/soc comm-loss",
    ];
    for limit in [1, 2, 3, 100] {
        let alerts = fleet
            .walk(&format!("/api/v1/alerts?limit={limit}"), "alerts", &reader)
            .await?;
        assert_eq!(keys(&alerts), expected, "pages of {limit}");
    }
    let (status, body) = fleet.get("/api/v1/alerts", &reader).await?;
    assert_eq!(status, 200, "{body}");
    let alerts = body["alerts"].as_array().context("alerts")?;

    // A device alarm keeps every field it had, and says what it is.
    let alarm = &alerts[0];
    assert_eq!(
        (
            &alarm["site"],
            &alarm["device"],
            &alarm["name"],
            &alarm["value"]
        ),
        (
            &"site-a".into(),
            &"bms-1".into(),
            &"alarms".into(),
            &4.0.into()
        ),
        "{alarm}"
    );
    assert!(
        alarm["ts"].is_string() && alarm["acknowledged"].is_null(),
        "{alarm}"
    );
    assert_eq!(
        (
            &alarm["source"],
            &alarm["severity"],
            &alarm["state"],
            &alarm["late"]
        ),
        (
            &"device".into(),
            &"warning".into(),
            &"firing".into(),
            &false.into()
        ),
        "{alarm}"
    );
    for field in ["rule", "episode_id", "started_at"] {
        assert!(alarm[field].is_null(), "{field}: {alarm}");
    }
    assert!(
        alarm["summary"].as_str().is_some_and(|s| !s.is_empty()),
        "{alarm}"
    );

    // A rule episode on a point: device and name from its target, the peak as value.
    let episode = &alerts[2];
    assert_eq!(episode["episode_id"], overtemp, "{episode}");
    assert_eq!(
        (&episode["device"], &episode["name"], &episode["value"]),
        (&"bms-1".into(), &"cell_temp_max".into(), &47.5.into()),
        "{episode}"
    );
    assert_eq!(
        (&episode["severity"], &episode["state"], &episode["rule"]),
        (
            &"critical".into(),
            &"firing".into(),
            &"cell-overtemp".into()
        ),
        "{episode}"
    );
    assert_eq!(episode["started_at"], "2026-01-01T00:10:00Z");
    assert_eq!(episode["ts"], episode["started_at"]);
    assert_eq!(episode["summary"], "cell-overtemp on bms-1/cell_temp_max");
    // The whole site: no device, no point, no value.
    let silent = &alerts[1];
    assert_eq!(
        (&silent["device"], &silent["name"], &silent["point"]),
        (&"".into(), &"".into(), &"site-a".into()),
        "{silent}"
    );
    assert!(silent["value"].is_null(), "{silent}");

    // Filters, alone and together, with paging.
    for (query, expected) in [
        (
            "severity=critical",
            vec!["rule site-a/bms-1/cell_temp_max cell-overtemp"],
        ),
        (
            "severity=info,critical",
            vec![
                "rule site-a/bms-1/cell_temp_max cell-overtemp",
                "rule site-b/bms-1/soc comm-loss",
            ],
        ),
        (
            "source=device",
            vec![
                "device site-a/bms-1/alarms -",
                "device site-b/bms-1/alarms -",
            ],
        ),
        (
            "source=rule&site=site-a",
            vec![
                "rule site-a site-silent",
                "rule site-a/bms-1/cell_temp_max cell-overtemp",
            ],
        ),
        (
            "severity=warning&site=site-b,site-c",
            vec!["device site-b/bms-1/alarms -"],
        ),
        ("state=acknowledged,silenced", vec![]),
        (
            "state=firing&source=rule&severity=info",
            vec!["rule site-b/bms-1/soc comm-loss"],
        ),
        // Empty parameters count as absent.
        ("site=&severity=&state=&source=", expected.to_vec()),
    ] {
        let alerts = fleet
            .walk(
                &format!("/api/v1/alerts?limit=1&{query}"),
                "alerts",
                &reader,
            )
            .await?;
        assert_eq!(keys(&alerts), expected, "{query}");
    }
    for (query, field) in [
        ("severity=loud", "severity"),
        ("state=asleep", "state"),
        ("source=edge", "source"),
        ("state=firing,", "state"),
    ] {
        let (status, body) = fleet
            .get(&format!("/api/v1/alerts?{query}"), &reader)
            .await?;
        if query.ends_with(',') {
            // A trailing comma is no value.
            assert_eq!(status, 200, "{query}: {body}");
            continue;
        }
        assert_refused(status, &body, 400, field);
    }
    let (status, body) = fleet.get("/api/v1/alerts?cursor=00", &reader).await?;
    assert_eq!(status, 400, "{body}");

    // A cursor from before rule alerts, (site, device, point), still pages on.
    let old: String = serde_json::to_vec(&["site-a", "bms-1", "alarms"])?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (status, body) = fleet
        .get(&format!("/api/v1/alerts?cursor={old}"), &reader)
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        keys(body["alerts"].as_array().context("alerts")?),
        expected[1..]
    );

    // A new episode and a cleared alarm between two pages: nothing is
    // skipped or repeated of what stays.
    let (_, first) = fleet.get("/api/v1/alerts?limit=2", &reader).await?;
    let cursor = first["next_cursor"].as_str().context("cursor")?.to_owned();
    fleet
        .episode(
            "site-a",
            "cell-overtemp",
            "bms-2/cell_temp_max",
            "critical",
            "2026-01-01T01:00:00Z",
            None,
            Some(45.5),
        )
        .await?;
    fleet.write("site-b", 1, 2, 0).await?;
    let rest = fleet
        .walk_from("/api/v1/alerts?limit=1", "alerts", &reader, Some(cursor))
        .await?;
    assert_eq!(
        keys(&rest),
        [
            "rule site-a/bms-1/cell_temp_max cell-overtemp",
            "rule site-a/bms-2/cell_temp_max cell-overtemp",
            "rule site-b/bms-1/soc comm-loss",
        ]
    );
    Ok(())
}

#[tokio::test]
async fn history_is_newest_first_filtered_and_within_the_tokens_sites() -> anyhow::Result<()> {
    let (fleet, [overtemp, silent, stale, ended]) = seeded("alerts_history").await?;
    let reader = fleet.token(SiteScope::All, Role::Read).await?;
    let site_a = fleet.token(only(&["site-a"]), Role::Operate).await?;
    let ids = |episodes: &[serde_json::Value]| -> Vec<i64> {
        episodes
            .iter()
            .map(|e| e["episode_id"].as_i64().unwrap_or(-1))
            .collect()
    };

    let all = fleet
        .walk("/api/v1/alerts/history?limit=1", "episodes", &reader)
        .await?;
    assert_eq!(ids(&all), [ended, stale, silent, overtemp], "newest first");
    let old = &all[0];
    assert_eq!(
        (&old["site"], &old["rule"], &old["target"], &old["severity"]),
        (
            &"site-a".into(),
            &"cell-overtemp".into(),
            &"bms-2/cell_temp_max".into(),
            &"critical".into()
        ),
        "{old}"
    );
    assert_eq!(
        (
            &old["started_at"],
            &old["ended_at"],
            &old["peak"],
            &old["late"]
        ),
        (
            &"2026-01-01T00:05:00Z".into(),
            &"2026-01-01T00:06:00Z".into(),
            &46.0.into(),
            &false.into()
        ),
        "{old}"
    );
    assert!(
        old["acknowledged"].is_null() && old["detected_at"].is_string(),
        "{old}"
    );
    assert!(all[1]["ended_at"].is_null(), "open: {}", all[1]);

    for (query, expected) in [
        ("rule=cell-overtemp", vec![ended, overtemp]),
        ("rule=cell-overtemp,comm-loss&severity=info", vec![stale]),
        ("severity=warning,info", vec![stale, silent]),
        ("site=site-b", vec![stale]),
        ("from=2026-01-01T00:10:00Z", vec![stale, silent, overtemp]),
        (
            "from=2026-01-01T00:10:00Z&to=2026-01-01T00:30:00Z",
            vec![silent, overtemp],
        ),
        ("to=2026-01-01T00:10:00Z", vec![ended]),
        ("rule=nothing-like-it", vec![]),
        (
            "from=&to=&rule=&severity=&site=",
            vec![ended, stale, silent, overtemp],
        ),
    ] {
        let episodes = fleet
            .walk(
                &format!("/api/v1/alerts/history?limit=1&{query}"),
                "episodes",
                &reader,
            )
            .await?;
        assert_eq!(ids(&episodes), expected, "{query}");
    }
    for (query, field) in [
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("severity=urgent", "severity"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("limit=0", "limit"),
    ] {
        let (status, body) = fleet
            .get(&format!("/api/v1/alerts/history?{query}"), &reader)
            .await?;
        assert_refused(status, &body, 400, field);
    }
    let (status, body) = fleet
        .get("/api/v1/alerts/history?cursor=22782200", &reader)
        .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );

    // A token for site-a: site-a's episodes only, by every path.
    let episodes = fleet
        .walk("/api/v1/alerts/history?limit=2", "episodes", &site_a)
        .await?;
    assert_eq!(ids(&episodes), [ended, silent, overtemp]);
    let episodes = fleet
        .walk("/api/v1/alerts/history?rule=comm-loss", "episodes", &site_a)
        .await?;
    assert!(episodes.is_empty(), "{episodes:?}");
    let alerts = fleet
        .walk("/api/v1/alerts?limit=1", "alerts", &site_a)
        .await?;
    assert!(
        alerts.iter().all(|a| a["site"] == "site-a") && alerts.len() == 3,
        "{alerts:?}"
    );
    for path in [
        "/api/v1/alerts/history?site=site-b",
        "/api/v1/alerts/history?site=site-a,site-b",
        "/api/v1/alerts?site=site-b&source=rule",
    ] {
        let (status, body) = fleet.get(path, &site_a).await?;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{path}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn operators_acknowledge_episodes_of_their_own_sites() -> anyhow::Result<()> {
    let (fleet, [overtemp, _, stale, ended]) = seeded("alerts_episode_ack").await?;
    let reader = fleet.token(SiteScope::All, Role::Read).await?;
    let operator = fleet.token(only(&["site-a"]), Role::Operate).await?;
    let ack = |site: &str, id: i64| format!("/api/v1/sites/{site}/episodes/{id}/ack");
    let note = serde_json::json!({ "note": "crew on site" });

    let (status, body) = fleet
        .post(&ack("site-a", overtemp), &reader, note.clone())
        .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );

    let (status, body) = fleet
        .post(&ack("site-a", overtemp), &operator, note.clone())
        .await?;
    assert_eq!(status, 200, "{body}");
    let episode = &body["episode"];
    assert_eq!(episode["episode_id"], overtemp);
    assert_eq!(episode["acknowledged"]["by"], "alerts-test");
    assert_eq!(episode["acknowledged"]["note"], "crew on site");
    assert!(episode["acknowledged"]["at"].is_string(), "{episode}");
    let row = fleet
        .pool
        .get()
        .await?
        .query_one(
            "SELECT acknowledged_by, acknowledged_at IS NOT NULL, ack_note FROM alert_episodes WHERE episode_id = $1",
            &[&overtemp],
        )
        .await?;
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, bool>(1),
            row.get::<_, String>(2)
        ),
        ("alerts-test".to_owned(), true, "crew on site".to_owned())
    );

    // The list shows it acknowledged, and filters by it.
    let (_, body) = fleet
        .get("/api/v1/alerts?state=acknowledged", &reader)
        .await?;
    let alerts = body["alerts"].as_array().context("alerts")?;
    assert_eq!(
        keys(alerts),
        ["rule site-a/bms-1/cell_temp_max cell-overtemp"]
    );
    assert_eq!(alerts[0]["acknowledged"]["by"], "alerts-test");
    assert!(
        alerts[0]["acknowledged"]["value"].is_null(),
        "{}",
        alerts[0]
    );
    let (_, body) = fleet
        .get(
            "/api/v1/alerts/history?rule=cell-overtemp&from=2026-01-01T00:10:00Z",
            &reader,
        )
        .await?;
    assert_eq!(body["episodes"][0]["acknowledged"]["note"], "crew on site");

    // An ended episode may be acknowledged: it records who looked at it.
    // No body is no note.
    let (status, body) = fleet
        .request(
            reqwest::Method::POST,
            &ack("site-a", ended),
            &operator,
            None,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["episode"]["acknowledged"]["note"], "");
    assert!(body["episode"]["ended_at"].is_string(), "{body}");

    // Another site's episode: not under this site, and not this token's site.
    let (status, body) = fleet
        .post(&ack("site-a", stale), &operator, note.clone())
        .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, body) = fleet
        .post(&ack("site-b", stale), &operator, note.clone())
        .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let stale_ack: Option<String> = fleet
        .pool
        .get()
        .await?
        .query_one(
            "SELECT acknowledged_by FROM alert_episodes WHERE episode_id = $1",
            &[&stale],
        )
        .await?
        .get(0);
    assert_eq!(stale_ack, None);

    for (path, body, code, field) in [
        (ack("site-a", 999_999), note.clone(), 404, ""),
        (
            "/api/v1/sites/site-a/episodes/first/ack".to_owned(),
            note.clone(),
            400,
            "episode_id",
        ),
        (
            ack("site-a", overtemp),
            serde_json::json!({ "nope": 1 }),
            400,
            "",
        ),
        (
            ack("site-a", overtemp),
            serde_json::json!({ "note": "x".repeat(1001) }),
            400,
            "note",
        ),
    ] {
        let (status, reply) = fleet.post(&path, &operator, body).await?;
        assert_eq!(status, code, "{path}: {reply}");
        assert!(reply["error"]["code"].is_string(), "{path}: {reply}");
        if !field.is_empty() {
            assert_refused(status, &reply, code, field);
        }
    }
    Ok(())
}

#[tokio::test]
async fn silences_are_created_listed_and_ended_within_the_tokens_sites() -> anyhow::Result<()> {
    let (fleet, _) = seeded("alerts_silences").await?;
    let reader = fleet.token(SiteScope::All, Role::Read).await?;
    let operator = fleet.token(only(&["site-a"]), Role::Operate).await?;
    let site_admin = fleet.token(only(&["site-a"]), Role::Admin).await?;
    let root = fleet.token(SiteScope::All, Role::Admin).await?;
    let silences = "/api/v1/silences";

    // bms-1 of site-a in maintenance: its alarm and its episode are silenced,
    // the site-wide episode is not.
    let (status, created) = fleet
        .post(
            silences,
            &operator,
            serde_json::json!({ "site": "site-a", "device": "bms-1", "duration": "2h", "comment": "pack swap" }),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (
            &created["site"],
            &created["device"],
            &created["rule"],
            &created["active"]
        ),
        (
            &"site-a".into(),
            &"bms-1".into(),
            &serde_json::Value::Null,
            &true.into()
        ),
        "{created}"
    );
    assert_eq!(created["created_by"], "alerts-test");
    assert_eq!(created["comment"], "pack swap");
    let maintenance = created["silence_id"].as_i64().context("silence_id")?;
    let (_, body) = fleet.get("/api/v1/alerts?site=site-a", &reader).await?;
    let states: Vec<String> = body["alerts"]
        .as_array()
        .context("alerts")?
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["point"].as_str().unwrap_or("?"),
                a["state"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            "site-a/bms-1/alarms silenced",
            "site-a firing",
            "site-a/bms-1/cell_temp_max silenced",
        ]
    );

    // A silence of one rule; one that starts later; one of every site by
    // the admin of every site; one of site-b.
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .expect("a time")
    };
    let now = time::OffsetDateTime::now_utc();
    let tomorrow = rfc3339(now + time::Duration::days(1));
    let (status, body) = fleet
        .post(
            silences,
            &operator,
            serde_json::json!({ "site": "site-a", "rule": "site-silent", "ends_at": tomorrow }),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let (_, body) = fleet
        .get(
            "/api/v1/alerts?site=site-a&state=silenced&source=rule",
            &reader,
        )
        .await?;
    assert_eq!(body["alerts"].as_array().map(Vec::len), Some(2), "{body}");
    let later = rfc3339(now + time::Duration::hours(1));
    let (status, future) = fleet
        .post(
            silences,
            &operator,
            serde_json::json!({ "site": "site-a", "starts_at": later, "duration": "1h" }),
        )
        .await?;
    assert_eq!(
        (status, &future["active"]),
        (201, &false.into()),
        "{future}"
    );
    let (status, everywhere) = fleet
        .post(
            silences,
            &root,
            serde_json::json!({ "site": null, "rule": "comm-loss", "duration": "30m" }),
        )
        .await?;
    assert_eq!(status, 201, "{everywhere}");
    assert!(everywhere["site"].is_null(), "{everywhere}");
    let (status, site_b) = fleet
        .post(
            silences,
            &root,
            serde_json::json!({ "site": "site-b", "duration": "30m" }),
        )
        .await?;
    assert_eq!(status, 201, "{site_b}");

    // Listed page by page: the reader sees all five, site-a's operator
    // its own and the one of every site, never site-b's.
    let all = fleet
        .walk("/api/v1/silences?limit=2", "silences", &reader)
        .await?;
    assert_eq!(all.len(), 5, "{all:?}");
    let ids: BTreeSet<i64> = all
        .iter()
        .filter_map(|s| s["silence_id"].as_i64())
        .collect();
    assert_eq!(ids.len(), 5, "each once");
    let mine = fleet
        .walk("/api/v1/silences?limit=1", "silences", &operator)
        .await?;
    assert_eq!(mine.len(), 4, "{mine:?}");
    assert!(mine.iter().all(|s| s["site"] != "site-b"), "{mine:?}");
    let (_, body) = fleet.get("/api/v1/silences?site=site-b", &reader).await?;
    assert_eq!(
        body["silences"].as_array().map(Vec::len),
        Some(2),
        "site-b's and every site's: {body}"
    );
    let (status, _) = fleet.get("/api/v1/silences?site=site-b", &operator).await?;
    assert_eq!(status, 403);

    // Who may create what.
    for (token, body, code) in [
        (
            &reader,
            serde_json::json!({ "site": "site-a", "duration": "1h" }),
            403,
        ),
        (
            &operator,
            serde_json::json!({ "site": "site-b", "duration": "1h" }),
            403,
        ),
        (
            &operator,
            serde_json::json!({ "site": null, "duration": "1h" }),
            403,
        ),
        (
            &site_admin,
            serde_json::json!({ "site": null, "duration": "1h" }),
            403,
        ),
    ] {
        let (status, reply) = fleet.post(silences, token, body.clone()).await?;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (code, Some("forbidden")),
            "{body}: {reply}"
        );
    }

    // Every bad request is a 400 naming the field.
    for (body, field) in [
        (serde_json::json!({ "duration": "1h" }), "site"),
        (
            serde_json::json!({ "site": "site-a", "rule": "no-such-rule", "duration": "1h" }),
            "rule",
        ),
        (
            serde_json::json!({ "site": "site-a", "device": " ", "duration": "1h" }),
            "device",
        ),
        (serde_json::json!({ "site": "site-a" }), "ends_at"),
        (
            serde_json::json!({ "site": "site-a", "ends_at": "2020-01-01T00:00:00Z" }),
            "ends_at",
        ),
        (
            serde_json::json!({ "site": "site-a", "ends_at": "tomorrow" }),
            "ends_at",
        ),
        (
            serde_json::json!({ "site": "site-a", "duration": "31d" }),
            "duration",
        ),
        (
            serde_json::json!({ "site": "site-a", "duration": "soon" }),
            "duration",
        ),
        (
            serde_json::json!({ "site": "site-a", "duration": "1h", "ends_at": tomorrow }),
            "duration",
        ),
        (
            serde_json::json!({ "site": "site-a", "ends_at": "2099-01-01T00:00:00Z" }),
            "ends_at",
        ),
        (
            serde_json::json!({ "site": "site-a", "starts_at": "2099-01-02T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z" }),
            "ends_at",
        ),
        (
            serde_json::json!({ "site": "site-a", "duration": "1h", "comment": "x".repeat(1001) }),
            "comment",
        ),
        (
            serde_json::json!({ "site": "site-a", "duration": "1h", "reason": "x" }),
            "reason",
        ),
    ] {
        let (status, reply) = fleet.post(silences, &operator, body.clone()).await?;
        assert_refused(status, &reply, 400, field);
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        if field == "rule" {
            assert!(
                message.contains("cell-overtemp"),
                "the known rules: {message}"
            );
        }
    }
    let (status, reply) = fleet
        .post(
            silences,
            &root,
            serde_json::json!({ "site": "nowhere", "duration": "1h" }),
        )
        .await?;
    assert_refused(status, &reply, 400, "site");
    let (status, reply) = fleet
        .post(
            silences,
            &operator,
            serde_json::json!({ "site": 7, "duration": "1h" }),
        )
        .await?;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{reply}"
    );
    let (status, reply) = fleet
        .post(
            silences,
            &operator,
            serde_json::json!({ "site": "site-a" , "rule": "nope" }),
        )
        .await?;
    assert_eq!(status, 400);
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`rule`") && message.contains("`ends_at`"),
        "every problem at once: {message}"
    );

    // Ending: the row stays with its end now; not listed; twice is a conflict.
    let path = format!("{silences}/{maintenance}");
    let (status, body) = fleet.delete(&path, &reader).await?;
    assert_eq!(status, 403, "{body}");
    let (status, ended) = fleet.delete(&path, &operator).await?;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["active"], false);
    let (status, body) = fleet.delete(&path, &operator).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    let (kept, over): (i64, bool) = {
        let row = fleet
            .pool
            .get()
            .await?
            .query_one(
                "SELECT count(*), bool_and(ends_at <= now()) FROM alert_silences WHERE silence_id = $1",
                &[&maintenance],
            )
            .await?;
        (row.get(0), row.get(1))
    };
    assert_eq!((kept, over), (1, true));
    let (_, body) = fleet.get("/api/v1/alerts?site=site-a", &reader).await?;
    assert_eq!(body["alerts"][0]["state"], "firing", "{body}");
    // One that had not started yet ends too.
    let (status, body) = fleet
        .delete(&format!("{silences}/{}", future["silence_id"]), &operator)
        .await?;
    assert_eq!(status, 200, "{body}");
    let left = fleet.walk(silences, "silences", &reader).await?;
    assert_eq!(left.len(), 3, "{left:?}");

    // Not this token's to end: another site's is not found, every site's is forbidden.
    let (status, body) = fleet
        .delete(&format!("{silences}/{}", site_b["silence_id"]), &operator)
        .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, body) = fleet
        .delete(
            &format!("{silences}/{}", everywhere["silence_id"]),
            &operator,
        )
        .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    for (path, code) in [
        (format!("{silences}/999999"), 404),
        (format!("{silences}/latest"), 400),
    ] {
        let (status, body) = fleet.delete(&path, &root).await?;
        assert_eq!(status, code, "{path}: {body}");
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
    }
    Ok(())
}

#[tokio::test]
async fn the_rules_in_force_are_listed_without_secrets() -> anyhow::Result<()> {
    let fleet = Fleet::start("alerts_rules").await?;
    let reader = fleet.token(SiteScope::All, Role::Read).await?;
    let site_a = fleet.token(only(&["site-a"]), Role::Read).await?;

    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/rules", fleet.url))
        .bearer_auth(&reader)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let text = response.text().await?;
    assert!(!text.contains(SECRET), "the secret is never shown: {text}");
    let body: serde_json::Value = serde_json::from_str(&text)?;
    let rules = body["rules"].as_array().context("rules")?;
    let names: Vec<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["cell-overtemp", "site-silent", "comm-loss"]);
    let overtemp = &rules[0];
    assert_eq!(
        overtemp,
        &serde_json::json!({
            "name": "cell-overtemp",
            "kind": "threshold",
            "severity": "critical",
            "summary": "Hottest cell above 45 °C",
            "site": "*",
            "device": "bms*",
            "point": "cell_temp_max",
            "condition": { "above": 45.0, "hysteresis": 2.0, "for": "30s" },
            "receivers": ["ops"],
            "notify_past": false,
            "source": "file",
            "enabled": true,
        })
    );
    assert_eq!(rules[1]["condition"], serde_json::json!({ "after": "2m" }));
    assert!(rules[1]["point"].is_null(), "offline rules watch no point");
    assert_eq!(
        rules[1]["receivers"],
        serde_json::json!(["ops", "am"]),
        "every receiver"
    );
    assert_eq!(
        rules[2]["condition"],
        serde_json::json!({ "after": "1m 30s" })
    );
    assert_eq!(
        body["receivers"],
        serde_json::json!([
            { "name": "ops", "kind": "webhook", "url": "https://hooks.example.com/bess", "signed": true },
            { "name": "am", "kind": "alertmanager", "url": "http://alertmanager:9093", "signed": false },
        ])
    );

    // A token for site-a: the rules that may match site-a.
    let (status, body) = fleet.get("/api/v1/rules", &site_a).await?;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["rules"]
        .as_array()
        .context("rules")?
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["cell-overtemp", "site-silent"]);
    let (status, body) = fleet.get("/api/v1/rules", "not-a-token").await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    Ok(())
}
