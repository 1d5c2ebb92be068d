//! Alert rules managed over the API against a real database: created,
//! listed (with where each rule is defined) and in force at once; refused
//! with every problem named by its field, or for a name the file or
//! another rule uses; replaced, disabled (its open episode closed),
//! enabled and deleted; by admins only, a site-scoped one for its own
//! sites alone; and followed by a second instance on the same database.

mod support;

use anyhow::Context as _;
use std::sync::Arc;
use std::time::Duration;

use bess_collector::api::ApiState;
use bess_collector::auth::{self, AuthMode, Role, SiteScope};
use bess_collector::rules::model::{Bound, Condition, RuleSet};
use bess_collector::rules::Rules;
use bess_tests::{wait_for, TestDatabase};
use serde_json::{json, Value};

/// The rules file of these tests.
const FILE: &str = r#"
[[rule]]
name = "cell-overtemp"
device = "bms*"
point = "cell_temp_max"
kind = "threshold"
above = 45.0

[[receiver]]
name = "ops"
kind = "alertmanager"
url = "http://alertmanager:9093"
"#;

/// How long another instance may take to follow a change: many polls.
const FOLLOW: Duration = Duration::from_secs(30);

fn file(text: &str) -> anyhow::Result<RuleSet> {
    Ok(bess_collector::rules::config::parse_with_env(
        text,
        std::path::Path::new("rules.toml"),
        &|_| None,
    )?)
}

struct Fleet {
    url: String,
    pool: deadpool_postgres::Pool,
    rules: Arc<Rules>,
    _database: TestDatabase,
}

impl Fleet {
    async fn start(test: &str) -> anyhow::Result<Self> {
        let database = TestDatabase::create(test).await?;
        let pool = bess_collector::service::pool(&database.url(), 4)?;
        let storage =
            bess_collector::service::prepare_database(&pool, Duration::from_secs(10)).await?;
        let rules = Rules::new(file(FILE)?);
        rules.refresh_api_rules(&**pool.get().await?).await?;
        let url = support::serve_api(ApiState {
            rules: rules.clone(),
            ..support::api_state(pool.clone(), storage, AuthMode::Required)
        })
        .await?;
        Ok(Self {
            url,
            pool,
            rules,
            _database: database,
        })
    }

    async fn token(&self, name: &str, scope: SiteScope, role: Role) -> anyhow::Result<String> {
        Ok(auth::create(&**self.pool.get().await?, name, role, scope)
            .await?
            .secret)
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
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
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("{path}: not JSON: {text}"))?
        };
        Ok((status, body))
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.request(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    async fn put(&self, path: &str, token: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.request(reqwest::Method::PUT, path, token, Some(body))
            .await
    }

    async fn delete(&self, path: &str, token: &str) -> anyhow::Result<(u16, Value)> {
        self.request(reqwest::Method::DELETE, path, token, None)
            .await
    }

    /// The listing, as `token` sees it.
    async fn listed(&self, token: &str) -> anyhow::Result<Value> {
        let (status, body) = self
            .request(reqwest::Method::GET, "/api/v1/rules", token, None)
            .await?;
        anyhow::ensure!(status == 200, "{status} {body}");
        Ok(body)
    }

    /// The listed rule of this name.
    async fn listed_rule(&self, token: &str, name: &str) -> anyhow::Result<Option<Value>> {
        let body = self.listed(token).await?;
        Ok(body["rules"]
            .as_array()
            .context("rules")?
            .iter()
            .find(|r| r["name"] == name)
            .cloned())
    }

    /// An open episode of `rule` on a new site; its id.
    async fn open_episode(&self, site: &str, rule: &str) -> anyhow::Result<i64> {
        let row = self
            .pool
            .get()
            .await?
            .query_one(
                "WITH site AS (INSERT INTO sites (name) VALUES ($1) RETURNING site_id)
                 INSERT INTO alert_episodes (rule, site_id, target, severity, started_at)
                 SELECT $2, site_id, 'bms-1/soc', 'warning', now() FROM site
                 RETURNING episode_id",
                &[&site, &rule],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn episode_is_open(&self, episode_id: i64) -> anyhow::Result<bool> {
        Ok(self
            .pool
            .get()
            .await?
            .query_one(
                "SELECT ended_at IS NULL FROM alert_episodes WHERE episode_id = $1",
                &[&episode_id],
            )
            .await?
            .get(0))
    }
}

/// Whether `rules` has a rule of this name in force.
fn in_force(rules: &Rules, name: &str) -> bool {
    rules.current().rules.iter().any(|r| r.name == name)
}

fn names(body: &Value, list: &str) -> Vec<String> {
    body[list]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|r| r["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn soc_high(site: &str) -> Value {
    json!({
        "name": "soc-high",
        "kind": "threshold",
        "site": site,
        "point": "soc",
        "above": 95,
        "for": "30s",
    })
}

/// An error response with this status and code whose message has `fragment`.
fn assert_error(status: u16, body: &Value, expected: u16, code: &str, fragment: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(fragment), "{fragment:?} in: {message}");
}

#[tokio::test]
async fn a_rule_created_over_the_api_is_listed_and_in_force_at_once() -> anyhow::Result<()> {
    let fleet = Fleet::start("api_rules_create").await?;
    let admin = fleet
        .token("ops-admin", SiteScope::All, Role::Admin)
        .await?;

    let (status, created) = fleet
        .post("/api/v1/rules", &admin, soc_high("site-a"))
        .await?;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "soc-high");
    assert_eq!(created["source"], "api");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["created_by"], "ops-admin");
    assert_eq!(
        created["condition"],
        json!({ "above": 95.0, "hysteresis": 0.0, "for": "30s" })
    );
    assert_eq!(
        created["receivers"],
        json!(["ops"]),
        "every receiver of the file"
    );
    assert!(in_force(&fleet.rules, "soc-high"));
    assert!(in_force(&fleet.rules, "cell-overtemp"), "beside the file's");

    let listed = fleet.listed(&admin).await?;
    assert_eq!(names(&listed, "rules"), ["cell-overtemp", "soc-high"]);
    let rules = listed["rules"].as_array().context("rules")?;
    assert_eq!(
        (&rules[0]["source"], &rules[0]["enabled"]),
        (&json!("file"), &json!(true))
    );
    assert!(rules[0].get("created_by").is_none(), "{}", rules[0]);
    assert_eq!(rules[1], created, "listed as created");
    assert!(rules[1]["updated_at"].is_string());
    assert_eq!(listed["skipped"], json!([]));

    // A token of site-b does not see a rule of site-a; one of site-a does.
    let site_b = fleet
        .token("b", SiteScope::Only(["site-b".into()].into()), Role::Read)
        .await?;
    assert_eq!(
        names(&fleet.listed(&site_b).await?, "rules"),
        ["cell-overtemp"]
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_definition_is_refused_with_each_problem_at_its_field() -> anyhow::Result<()> {
    let fleet = Fleet::start("api_rules_invalid").await?;
    let admin = fleet.token("admin", SiteScope::All, Role::Admin).await?;

    let (status, body) = fleet
        .post(
            "/api/v1/rules",
            &admin,
            json!({
                "name": "soc-high",
                "kind": "threshold",
                "above": "ninety-five",
                "for": "soon",
                "receivers": ["ops", "pager"],
            }),
        )
        .await?;
    assert_error(
        status,
        &body,
        400,
        "bad_request",
        "`above`: expected a number",
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    for fragment in [
        "`for`: not a duration",
        "`receivers[1]`: no [[receiver]] named \"pager\"",
    ] {
        assert!(message.contains(fragment), "{fragment:?} in: {message}");
    }
    assert!(
        !message.contains("rule[0]") && !message.contains("api:"),
        "no document the client never wrote: {message}"
    );

    for (body, field) in [
        (
            json!({ "kind": "stale", "after": "1m" }),
            "`name`: missing field",
        ),
        (
            json!({ "name": "x", "kind": "gauge" }),
            "`kind`: must be one of",
        ),
        (
            json!({ "name": "x", "kind": "stale", "after": "1m", "colour": "red" }),
            "`colour`: unknown field",
        ),
        (
            json!({ "name": "x", "kind": "stale", "after": "1m", "above": 3 }),
            "`above`: does not apply",
        ),
        (
            json!({ "name": "x", "kind": "stale", "after": null }),
            "`after`: null is not a value",
        ),
        (
            json!({ "name": "no spaces", "kind": "stale", "after": "1m" }),
            "`name`: must be",
        ),
        (
            json!(["not", "an", "object"]),
            "`body`: expected a JSON object",
        ),
    ] {
        let (status, refused) = fleet.post("/api/v1/rules", &admin, body.clone()).await?;
        assert_error(status, &refused, 400, "bad_request", field);
    }
    let (status, body) = fleet
        .request(reqwest::Method::POST, "/api/v1/rules", &admin, None)
        .await?;
    assert_error(status, &body, 400, "bad_request", "JSON object");
    assert_eq!(
        names(&fleet.listed(&admin).await?, "rules"),
        ["cell-overtemp"],
        "nothing was created"
    );
    Ok(())
}

#[tokio::test]
async fn names_are_unique_across_the_file_and_the_api() -> anyhow::Result<()> {
    let fleet = Fleet::start("api_rules_names").await?;
    let admin = fleet.token("admin", SiteScope::All, Role::Admin).await?;

    let mut clash = soc_high("site-a");
    clash["name"] = json!("cell-overtemp");
    let (status, body) = fleet.post("/api/v1/rules", &admin, clash).await?;
    assert_error(status, &body, 409, "conflict", "defined in the rules file");

    let (status, _) = fleet
        .post("/api/v1/rules", &admin, soc_high("site-a"))
        .await?;
    assert_eq!(status, 201);
    let (status, body) = fleet
        .post("/api/v1/rules", &admin, soc_high("site-b"))
        .await?;
    assert_error(status, &body, 409, "conflict", "exists already");

    // The file's rules are the file's to change.
    let path = "/api/v1/rules/cell-overtemp";
    let (status, body) = fleet.put(path, &admin, soc_high("site-a")).await?;
    assert_error(status, &body, 409, "conflict", "edit the file");
    for action in ["enable", "disable"] {
        let (status, body) = fleet
            .post(&format!("{path}/{action}"), &admin, json!({}))
            .await?;
        assert_error(status, &body, 409, "conflict", "edit the file");
    }
    let (status, body) = fleet.delete(path, &admin).await?;
    assert_error(status, &body, 409, "conflict", "edit the file");
    assert!(in_force(&fleet.rules, "cell-overtemp"));
    Ok(())
}

#[tokio::test]
async fn an_api_rule_is_replaced_disabled_enabled_and_deleted() -> anyhow::Result<()> {
    let fleet = Fleet::start("api_rules_lifecycle").await?;
    let admin = fleet.token("admin", SiteScope::All, Role::Admin).await?;
    let editor = fleet.token("editor", SiteScope::All, Role::Admin).await?;
    let path = "/api/v1/rules/soc-high";

    let (status, _) = fleet
        .post("/api/v1/rules", &admin, soc_high("site-a"))
        .await?;
    assert_eq!(status, 201);

    // Replaced: the name may be left out, and cannot change.
    let mut replacement = soc_high("site-a");
    replacement
        .as_object_mut()
        .context("object")?
        .remove("name");
    replacement["above"] = json!(97.5);
    let (status, replaced) = fleet.put(path, &editor, replacement).await?;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["condition"]["above"], 97.5);
    assert_eq!(
        (&replaced["created_by"], &replaced["updated_by"]),
        (&json!("admin"), &json!("editor"))
    );
    let set = fleet.rules.current();
    let rule = set
        .rules
        .iter()
        .find(|r| r.name == "soc-high")
        .context("in force")?;
    assert!(
        matches!(
            rule.condition,
            Condition::Threshold { bound: Bound::Above(limit), .. } if limit == 97.5
        ),
        "{rule:?}"
    );
    let mut renamed = soc_high("site-a");
    renamed["name"] = json!("soc-higher");
    let (status, body) = fleet.put(path, &admin, renamed).await?;
    assert_error(
        status,
        &body,
        400,
        "bad_request",
        "`name`: must be \"soc-high\"",
    );
    let (status, body) = fleet.put(path, &admin, json!({ "kind": "stale" })).await?;
    assert_error(status, &body, 400, "bad_request", "`after`: missing field");
    let (status, body) = fleet
        .put("/api/v1/rules/nothing-here", &admin, soc_high("site-a"))
        .await?;
    assert_error(status, &body, 404, "not_found", "nothing-here");

    // Disabled: out of force, its open episode closed, still listed.
    let episode = fleet.open_episode("site-a", "soc-high").await?;
    let (status, disabled) = fleet
        .post(&format!("{path}/disable"), &admin, json!({}))
        .await?;
    assert_eq!(status, 200, "{disabled}");
    assert_eq!(disabled["enabled"], false);
    assert!(!in_force(&fleet.rules, "soc-high"));
    assert!(
        !fleet.episode_is_open(episode).await?,
        "closed on disabling"
    );
    let listed = fleet
        .listed_rule(&admin, "soc-high")
        .await?
        .context("a disabled rule is listed")?;
    assert_eq!(
        (&listed["enabled"], &listed["source"]),
        (&json!(false), &json!("api"))
    );
    assert_eq!(listed["condition"]["above"], 97.5, "as it was replaced");

    // Enabled again, as it was.
    let (status, enabled) = fleet
        .post(&format!("{path}/enable"), &admin, json!({}))
        .await?;
    assert_eq!(status, 200, "{enabled}");
    assert_eq!(enabled["enabled"], true);
    assert!(in_force(&fleet.rules, "soc-high"));
    let (status, again) = fleet
        .post(&format!("{path}/enable"), &admin, json!({}))
        .await?;
    assert_eq!(
        (status, &again["enabled"]),
        (200, &json!(true)),
        "enabling twice is fine"
    );

    // Deleted: gone from the listing and the set; its episodes closed.
    let episode = fleet.open_episode("site-b", "soc-high").await?;
    let (status, body) = fleet.delete(path, &admin).await?;
    assert_eq!((status, &body), (204, &Value::Null));
    assert!(!in_force(&fleet.rules, "soc-high"));
    assert!(fleet.listed_rule(&admin, "soc-high").await?.is_none());
    assert!(!fleet.episode_is_open(episode).await?, "closed on deleting");
    let (status, body) = fleet.delete(path, &admin).await?;
    assert_error(status, &body, 404, "not_found", "soc-high");
    let (status, body) = fleet
        .post(&format!("{path}/enable"), &admin, json!({}))
        .await?;
    assert_error(status, &body, 404, "not_found", "soc-high");
    Ok(())
}

#[tokio::test]
async fn only_admins_manage_rules_and_a_site_scoped_admin_only_its_own_sites() -> anyhow::Result<()>
{
    let fleet = Fleet::start("api_rules_access").await?;
    let admin = fleet.token("admin", SiteScope::All, Role::Admin).await?;
    let site_a = SiteScope::Only(["site-a".into(), "site-c".into()].into());
    let scoped = fleet.token("a-admin", site_a.clone(), Role::Admin).await?;
    let operator = fleet
        .token("operator", SiteScope::All, Role::Operate)
        .await?;
    let reader = fleet.token("reader", SiteScope::All, Role::Read).await?;

    let (status, _) = fleet.post("/api/v1/rules", &admin, soc_high("*")).await?;
    assert_eq!(status, 201, "an admin of every site: any site pattern");
    for token in [&operator, &reader] {
        let path = "/api/v1/rules/soc-high";
        for (status, body) in [
            fleet
                .post("/api/v1/rules", token, soc_high("site-a"))
                .await?,
            fleet.put(path, token, soc_high("site-a")).await?,
            fleet
                .post(&format!("{path}/disable"), token, json!({}))
                .await?,
            fleet.delete(path, token).await?,
        ] {
            assert_error(status, &body, 403, "forbidden", "admin");
        }
    }
    assert!(in_force(&fleet.rules, "soc-high"), "nothing changed");

    // A site-scoped admin: rules of one of its sites, by name.
    let mut own = soc_high("site-a");
    own["name"] = json!("site-a-soc");
    let (status, body) = fleet.post("/api/v1/rules", &scoped, own.clone()).await?;
    assert_eq!(status, 201, "{body}");
    for site in [json!("site-b"), json!("site-*"), json!("*")] {
        let mut other = own.clone();
        other["name"] = json!("other");
        other["site"] = site;
        let (status, body) = fleet.post("/api/v1/rules", &scoped, other).await?;
        assert_error(status, &body, 403, "forbidden", "one of site-a, site-c");
    }
    let mut unsited = own.clone();
    unsited["name"] = json!("other");
    unsited.as_object_mut().context("object")?.remove("site");
    let (status, body) = fleet.post("/api/v1/rules", &scoped, unsited).await?;
    assert_error(status, &body, 403, "forbidden", "not \"*\"");

    // Its own rule: moved to another of its sites, not out of them.
    let path = "/api/v1/rules/site-a-soc";
    let mut moved = own.clone();
    moved["site"] = json!("site-c");
    let (status, body) = fleet.put(path, &scoped, moved).await?;
    assert_eq!((status, &body["site"]), (200, &json!("site-c")), "{body}");
    let (status, body) = fleet.put(path, &scoped, soc_high("site-b")).await?;
    assert_error(status, &body, 403, "forbidden", "site-b");

    // A rule of every site is not its to change, though it sees it.
    assert!(fleet.listed_rule(&scoped, "soc-high").await?.is_some());
    let path = "/api/v1/rules/soc-high";
    let (status, body) = fleet.put(path, &scoped, soc_high("site-a")).await?;
    assert_error(status, &body, 403, "forbidden", "not \"*\"");
    let (status, body) = fleet
        .post(&format!("{path}/disable"), &scoped, json!({}))
        .await?;
    assert_error(status, &body, 403, "forbidden", "not \"*\"");
    let (status, body) = fleet.delete(path, &scoped).await?;
    assert_error(status, &body, 403, "forbidden", "not \"*\"");
    assert!(in_force(&fleet.rules, "soc-high"));

    let (status, _) = fleet.delete("/api/v1/rules/site-a-soc", &scoped).await?;
    assert_eq!(status, 204);
    Ok(())
}

#[tokio::test]
async fn another_instance_follows_every_change_and_the_file_wins_a_clash() -> anyhow::Result<()> {
    let fleet = Fleet::start("api_rules_instances").await?;
    let admin = fleet.token("admin", SiteScope::All, Role::Admin).await?;
    let other = Rules::new(file(FILE)?);
    let cancel = tokio_util::sync::CancellationToken::new();
    let poll = tokio::spawn(
        other
            .clone()
            .poll_api_rules(fleet.pool.clone(), cancel.clone()),
    );

    let (status, _) = fleet
        .post("/api/v1/rules", &admin, soc_high("site-a"))
        .await?;
    assert_eq!(status, 201);
    wait_for(
        "the other instance to take the new rule",
        FOLLOW,
        || async { in_force(&other, "soc-high").then_some(()) },
    )
    .await?;

    let mut replacement = soc_high("site-a");
    replacement["above"] = json!(99);
    let (status, _) = fleet
        .put("/api/v1/rules/soc-high", &admin, replacement)
        .await?;
    assert_eq!(status, 200);
    wait_for(
        "the other instance to take the replacement",
        FOLLOW,
        || async {
            other
                .current()
                .rules
                .iter()
                .any(|r| {
                    r.name == "soc-high"
                        && matches!(
                            r.condition,
                            Condition::Threshold { bound: Bound::Above(limit), .. } if limit == 99.0
                        )
                })
                .then_some(())
        },
    )
    .await?;

    let (status, _) = fleet
        .post("/api/v1/rules/soc-high/disable", &admin, json!({}))
        .await?;
    assert_eq!(status, 200);
    wait_for(
        "the other instance to drop the disabled rule",
        FOLLOW,
        || async { (!in_force(&other, "soc-high")).then_some(()) },
    )
    .await?;
    let (status, _) = fleet
        .post("/api/v1/rules/soc-high/enable", &admin, json!({}))
        .await?;
    assert_eq!(status, 200);
    wait_for("the other instance to take it again", FOLLOW, || async {
        in_force(&other, "soc-high").then_some(())
    })
    .await?;

    // A new file on the first instance with the API rule's name: the file
    // wins, the API rule is listed as skipped until the file drops it.
    let clashing =
        format!("{FILE}\n[[rule]]\nname = \"soc-high\"\nkind = \"stale\"\nafter = \"1m\"\n");
    fleet
        .rules
        .replace_file(file(&clashing)?, &**fleet.pool.get().await?)
        .await?;
    let set = fleet.rules.current();
    let clashed: Vec<_> = set.rules.iter().filter(|r| r.name == "soc-high").collect();
    assert_eq!(clashed.len(), 1);
    assert_eq!(clashed[0].condition.kind(), "stale", "the file's");
    let listed = fleet.listed(&admin).await?;
    assert_eq!(names(&listed, "skipped"), ["soc-high"]);
    assert!(
        listed["skipped"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("rules file"),
        "{listed}"
    );
    let soc = listed["rules"]
        .as_array()
        .context("rules")?
        .iter()
        .find(|r| r["name"] == "soc-high")
        .context("listed")?;
    assert_eq!(soc["source"], "file");
    fleet
        .rules
        .replace_file(file(FILE)?, &**fleet.pool.get().await?)
        .await?;
    assert!(names(&fleet.listed(&admin).await?, "skipped").is_empty());
    assert!(in_force(&fleet.rules, "soc-high"), "the API rule is back");

    let (status, _) = fleet.delete("/api/v1/rules/soc-high", &admin).await?;
    assert_eq!(status, 204);
    wait_for(
        "the other instance to drop the deleted rule",
        FOLLOW,
        || async { (!in_force(&other, "soc-high")).then_some(()) },
    )
    .await?;
    cancel.cancel();
    poll.await?;
    Ok(())
}

#[tokio::test]
async fn a_rule_the_file_no_longer_fits_is_skipped_until_replaced() -> anyhow::Result<()> {
    let fleet = Fleet::start("api_rules_unfit").await?;
    let admin = fleet.token("admin", SiteScope::All, Role::Admin).await?;
    let mut paged = soc_high("site-a");
    paged["receivers"] = json!(["ops"]);
    let (status, body) = fleet.post("/api/v1/rules", &admin, paged).await?;
    assert_eq!(status, 201, "{body}");

    // A file without the receiver it names: out of force, listed as skipped.
    let without_ops = FILE.split("[[receiver]]").next().context("rules part")?;
    fleet
        .rules
        .replace_file(file(without_ops)?, &**fleet.pool.get().await?)
        .await?;
    assert!(!in_force(&fleet.rules, "soc-high"));
    let listed = fleet.listed(&admin).await?;
    assert_eq!(names(&listed, "skipped"), ["soc-high"]);
    let reason = listed["skipped"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("`receivers[0]`"), "{reason}");
    for action in ["enable", "disable"] {
        let (status, body) = fleet
            .post(
                &format!("/api/v1/rules/soc-high/{action}"),
                &admin,
                json!({}),
            )
            .await?;
        assert_error(status, &body, 409, "conflict", "no longer checks");
    }

    // Replaced with a definition that fits: in force again.
    let (status, body) = fleet
        .put("/api/v1/rules/soc-high", &admin, soc_high("site-a"))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert!(in_force(&fleet.rules, "soc-high"));
    assert!(names(&fleet.listed(&admin).await?, "skipped").is_empty());
    Ok(())
}
