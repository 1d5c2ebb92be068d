//! Alert notifications from the outbox against a real database: webhook
//! deliveries retried with the same idempotency key and a valid signature,
//! a real Alertmanager showing an episode firing and then resolved, open
//! episodes re-sent to Alertmanager (and only those it was told about),
//! rows for a receiver that is gone set aside, and two notifiers on one
//! database delivering every row once, `resolved` after `firing`.
//!
//! Episodes and outbox rows are written by SQL, as the rules write them;
//! the webhook receiver is the scenarios' (`bess_tests::webhook`), which
//! records every request and answers as the test says.

use anyhow::Context as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use bess_collector::notify::webhook::verify_signature;
use bess_collector::notify::{Cycle, Notifier, NotifierSettings};
use bess_collector::rules::model::{
    Condition, Pattern, Receiver, ReceiverKind, Rule, RuleSet, Severity, Target,
};
use bess_collector::storage::StoragePreference;
use bess_tests::alertmanager::Alertmanager;
use bess_tests::webhook::{Delivery, WebhookReceiver, HOOK_PATH};
use bess_tests::{wait_for, Scratch, TestDatabase};

const SECRET: &str = "s3cret";
const LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- database

struct Outbox {
    pool: deadpool_postgres::Pool,
    client: tokio_postgres::Client,
    site_id: i32,
    _database: TestDatabase,
}

impl Outbox {
    /// A migrated database with one site, `site-001`.
    async fn create(test: &str) -> anyhow::Result<Self> {
        let database = TestDatabase::create(test).await?;
        let mut client = database.client().await?;
        bess_collector::migrations::apply(&mut client, StoragePreference::PostgreSql).await?;
        let site_id = client
            .query_one(
                "INSERT INTO sites (name) VALUES ('site-001') RETURNING site_id",
                &[],
            )
            .await?
            .get(0);
        Ok(Self {
            pool: bess_collector::service::pool(&database.url(), 4)?,
            client,
            site_id,
            _database: database,
        })
    }

    /// An open episode of `rule` on `target`.
    async fn open(&self, rule: &str, target: &str) -> anyhow::Result<i64> {
        Ok(self
            .client
            .query_one(
                "INSERT INTO alert_episodes (rule, site_id, target, severity, summary, started_at, peak)
                 VALUES ($1, $2, $3, 'critical', 'cell temperature above 45 °C',
                         '2025-01-01T00:00:00Z', 47.5)
                 RETURNING episode_id",
                &[&rule, &self.site_id, &target],
            )
            .await?
            .get(0))
    }

    /// Queue `transition` of `episode` for `receiver`; its idempotency key.
    async fn queue(
        &self,
        episode: i64,
        transition: &str,
        receiver: &str,
    ) -> anyhow::Result<String> {
        let key = format!("{episode}-{transition}-{receiver}");
        self.client
            .execute(
                "INSERT INTO notification_outbox (episode_id, transition, receiver, idempotency_key)
                 VALUES ($1, $2, $3, $4)",
                &[&episode, &transition, &receiver, &key],
            )
            .await?;
        Ok(key)
    }

    /// End `episode` and queue `resolved` for `receiver`, in one
    /// transaction as the rules do.
    async fn resolve(&mut self, episode: i64, receiver: &str) -> anyhow::Result<String> {
        let key = format!("{episode}-resolved-{receiver}");
        let tx = self.client.transaction().await?;
        tx.execute(
            "UPDATE alert_episodes SET ended_at = '2025-01-01T00:10:00Z' WHERE episode_id = $1",
            &[&episode],
        )
        .await?;
        tx.execute(
            "INSERT INTO notification_outbox (episode_id, transition, receiver, idempotency_key)
             VALUES ($1, 'resolved', $2, $3)",
            &[&episode, &receiver, &key],
        )
        .await?;
        tx.commit().await?;
        Ok(key)
    }

    async fn row(&self, key: &str) -> anyhow::Result<tokio_postgres::Row> {
        self.client
            .query_one(
                "SELECT attempts, delivered_at IS NOT NULL AS delivered, last_error,
                        next_attempt_at = 'infinity' AS set_aside
                 FROM notification_outbox WHERE idempotency_key = $1",
                &[&key],
            )
            .await
            .with_context(|| format!("outbox row {key}"))
    }

    async fn wait_delivered(&self, key: &str) -> anyhow::Result<()> {
        wait_for(&format!("{key} to be delivered"), LIMIT, || async {
            let row = self.row(key).await.ok()?;
            row.get::<_, bool>("delivered").then_some(())
        })
        .await
    }

    async fn undelivered(&self) -> anyhow::Result<i64> {
        Ok(self
            .client
            .query_one(
                "SELECT count(*) FROM notification_outbox WHERE delivered_at IS NULL",
                &[],
            )
            .await?
            .get(0))
    }
}

// ---------------------------------------------------------------- rules

fn webhook(name: &str, url: String, secret: Option<&str>) -> Receiver {
    Receiver {
        name: name.into(),
        kind: ReceiverKind::Webhook {
            url,
            secret: secret.map(str::to_owned),
        },
    }
}

fn alertmanager(name: &str, url: String) -> Receiver {
    Receiver {
        name: name.into(),
        kind: ReceiverKind::Alertmanager { url },
    }
}

fn rule(name: &str, receivers: &[&str]) -> Rule {
    Rule {
        name: name.into(),
        severity: Severity::Critical,
        summary: "cell temperature above 45 °C".into(),
        target: Target {
            site: Pattern::any(),
            device: Pattern::any(),
            point: Pattern::any(),
        },
        condition: Condition::Stale {
            after: Duration::from_secs(60),
        },
        receivers: receivers.iter().map(|r| r.to_string()).collect(),
        notify_past: false,
    }
}

fn rule_set(rules: Vec<Rule>, receivers: Vec<Receiver>) -> watch::Receiver<Arc<RuleSet>> {
    watch::channel(Arc::new(RuleSet {
        rules,
        receivers,
        ..RuleSet::default()
    }))
    .1
}

/// Quick polling, so the tests wait on conditions and not on the pace.
fn settings() -> NotifierSettings {
    NotifierSettings {
        poll_interval: Duration::from_millis(50),
        ..NotifierSettings::new()
    }
}

/// A notifier running in the background until dropped.
struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(notifier: Notifier) -> Self {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(notifier.run(cancel.clone()));
        Self { cancel, task }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.expect("notifier task");
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn webhook_retries_a_refused_notification_with_the_same_key_and_signature(
) -> anyhow::Result<()> {
    let mut db = Outbox::create("notify_webhook").await?;
    // Every notification is refused once, then taken.
    let hook = WebhookReceiver::answering(SECRET, |_, n| if n == 0 { 500 } else { 200 }).await?;
    let rules = rule_set(
        vec![rule("cell_hot", &[])],
        vec![webhook("ops", hook.url.clone(), Some(SECRET))],
    );
    let notifier =
        Notifier::with_settings(db.pool.clone(), rules, reqwest::Client::new(), settings());
    let episode = db.open("cell_hot", "bms-1/cell_temp_max").await?;
    let firing = db.queue(episode, "firing", "ops").await?;
    let running = Running::start(notifier);

    db.wait_delivered(&firing).await?;
    let seen = hook.deliveries();
    assert_eq!(seen.len(), 2, "one refused attempt, one accepted: {seen:?}");
    assert_eq!(
        seen.iter().map(|s| s.status).collect::<Vec<_>>(),
        [500, 200]
    );
    for request in &seen {
        assert_eq!(request.idempotency_key, firing);
        assert!(request.signed, "the receiver's own check of the signature");
        let signature = request.signature.as_deref().context("signature header")?;
        assert!(verify_signature(SECRET.as_bytes(), &request.raw, signature));
        assert!(!verify_signature(
            b"another secret",
            &request.raw,
            signature
        ));
    }
    assert_eq!(seen[0].raw, seen[1].raw, "a retry sends the same body");
    assert_eq!(
        seen[1].body,
        serde_json::json!({
            "idempotency_key": firing,
            "transition": "firing",
            "episode": {
                "id": episode,
                "rule": "cell_hot",
                "severity": "critical",
                "site": "site-001",
                "target": "bms-1/cell_temp_max",
                "summary": "cell temperature above 45 °C",
                "started_at": "2025-01-01T00:00:00Z",
                "ended_at": null,
                "peak": 47.5,
                "late": false
            }
        })
    );
    let row = db.row(&firing).await?;
    assert_eq!(row.get::<_, i32>("attempts"), 2);
    let error: Option<String> = row.get("last_error");
    assert!(error.context("last_error kept")?.contains("500"));

    let resolved = db.resolve(episode, "ops").await?;
    db.wait_delivered(&resolved).await?;
    let seen = hook.deliveries();
    assert_eq!(seen.len(), 4);
    let last = seen.last().expect("a request");
    assert_eq!(last.idempotency_key, resolved);
    assert!(last.signed);
    assert!(verify_signature(
        SECRET.as_bytes(),
        &last.raw,
        last.signature.as_deref().unwrap_or("")
    ));
    assert_eq!(last.transition(), "resolved");
    assert_eq!(last.body["episode"]["ended_at"], "2025-01-01T00:10:00Z");
    for key in [&firing, &resolved] {
        let accepted = seen
            .iter()
            .filter(|s| &s.idempotency_key == key && s.accepted())
            .count();
        assert_eq!(accepted, 1, "{key} taken once");
    }
    running.stop().await;
    assert_eq!(db.undelivered().await?, 0);
    Ok(())
}

#[tokio::test]
async fn alertmanager_shows_the_episode_firing_then_resolved() -> anyhow::Result<()> {
    let scratch = Scratch::new("notify_alertmanager");
    let am = Alertmanager::start(&scratch.dir).await?;
    let mut db = Outbox::create("notify_alertmanager").await?;
    let rules = rule_set(
        vec![rule("cell_hot", &[])],
        vec![alertmanager("am", am.url.clone())],
    );
    let notifier =
        Notifier::with_settings(db.pool.clone(), rules, reqwest::Client::new(), settings());
    let episode = db.open("cell_hot", "bms-1/cell_temp_max").await?;
    let firing = db.queue(episode, "firing", "am").await?;
    let running = Running::start(notifier);

    let episode_id = episode.to_string();
    let of_episode = |alerts: Vec<serde_json::Value>| {
        alerts
            .into_iter()
            .find(|a| a["annotations"]["episode_id"] == episode_id.as_str())
    };
    let alert = wait_for("the alert to be active", LIMIT, || async {
        let alert = of_episode(am.alerts("active=true").await.ok()?)?;
        (alert["status"]["state"] == "active").then_some(alert)
    })
    .await?;
    assert_eq!(
        alert["labels"],
        serde_json::json!({
            "alertname": "cell_hot",
            "site": "site-001",
            "target": "bms-1/cell_temp_max",
            "severity": "critical"
        })
    );
    assert_eq!(
        alert["annotations"]["summary"],
        "cell temperature above 45 °C"
    );
    assert_eq!(alert["startsAt"], "2025-01-01T00:00:00.000Z");
    db.wait_delivered(&firing).await?;
    assert_eq!(db.row(&firing).await?.get::<_, i32>("attempts"), 1);

    let resolved = db.resolve(episode, "am").await?;
    db.wait_delivered(&resolved).await?;
    wait_for("the alert to be resolved", LIMIT, || async {
        let alerts = am.alerts("active=true").await.ok()?;
        of_episode(alerts).is_none().then_some(())
    })
    .await?;
    running.stop().await;
    assert_eq!(db.row(&resolved).await?.get::<_, i32>("attempts"), 1);
    Ok(())
}

#[tokio::test]
async fn open_episodes_are_resent_to_the_alertmanagers_that_took_them() -> anyhow::Result<()> {
    let mut db = Outbox::create("notify_resend").await?;
    // One recording server stands for both receivers.
    let receiver = WebhookReceiver::start(SECRET).await?;
    let rules = rule_set(
        vec![rule("cell_hot", &[]), rule("soc_low", &["ops"])],
        vec![
            alertmanager("am", format!("{}/am", receiver.base_url)),
            webhook("ops", receiver.url.clone(), None),
        ],
    );
    let alerts_path = "/am/api/v2/alerts";
    let notifier = Notifier::with_settings(
        db.pool.clone(),
        rules.clone(),
        reqwest::Client::new(),
        settings(),
    );

    // Told to Alertmanager: re-sent.
    let told = db.open("cell_hot", "bms-1/cell_temp_max").await?;
    db.queue(told, "firing", "am").await?;
    db.queue(told, "firing", "ops").await?;
    // A rule that pages only the webhook.
    let webhook_only = db.open("soc_low", "bms-1/soc").await?;
    db.queue(webhook_only, "firing", "ops").await?;
    // Silenced: recorded, never notified.
    db.open("cell_hot", "bms-2/cell_temp_max").await?;
    // Its rule is gone since it was told.
    let orphan = db.open("retired_rule", "bms-1/soc").await?;
    db.queue(orphan, "firing", "am").await?;
    // Over already.
    let over = db.open("cell_hot", "bms-3/cell_temp_max").await?;
    db.queue(over, "firing", "am").await?;
    db.resolve(over, "am").await?;

    // `am` and `ops` deliveries; the orphan's `am` row too (its receiver
    // still exists).
    let cycle = notifier.deliver_due().await?;
    assert_eq!(cycle.delivered, 5, "{cycle:?}");
    let cycle = notifier.deliver_due().await?;
    assert_eq!(
        cycle.delivered, 1,
        "the resolved row after its firing: {cycle:?}"
    );
    let before = receiver.deliveries_at(alerts_path).len();

    assert_eq!(notifier.resend_open().await?, 1);
    let resends = receiver.deliveries_at(alerts_path);
    assert_eq!(resends.len(), before + 1);
    let body = &resends.last().expect("a re-send").body;
    let alerts = body.as_array().context("an array of alerts")?;
    assert_eq!(alerts.len(), 1, "{body}");
    assert_eq!(alerts[0]["annotations"]["episode_id"], told.to_string());
    assert!(alerts[0].get("endsAt").is_none(), "re-sent as firing");

    // And periodically while it stays open.
    let periodic = Running::start(Notifier::with_settings(
        db.pool.clone(),
        rules.clone(),
        reqwest::Client::new(),
        NotifierSettings {
            alertmanager_resend: Duration::from_millis(100),
            ..settings()
        },
    ));
    wait_for("three more re-sends", LIMIT, || async {
        (receiver.deliveries_at(alerts_path).len() >= before + 4).then_some(())
    })
    .await?;
    periodic.stop().await;

    let resolved = db.resolve(told, "am").await?;
    notifier.deliver_due().await?;
    db.row(&resolved)
        .await?
        .get::<_, bool>("delivered")
        .then_some(())
        .context("resolved delivered")?;
    let last = receiver
        .deliveries_at(alerts_path)
        .pop()
        .expect("a request")
        .body;
    assert_eq!(last[0]["endsAt"], "2025-01-01T00:10:00Z");
    assert_eq!(
        notifier.resend_open().await?,
        0,
        "nothing open is left to re-send"
    );
    Ok(())
}

#[tokio::test]
async fn a_row_for_a_receiver_that_is_gone_is_set_aside() -> anyhow::Result<()> {
    let db = Outbox::create("notify_gone").await?;
    let hook = WebhookReceiver::start(SECRET).await?;
    let rules = rule_set(
        vec![rule("cell_hot", &[])],
        vec![webhook("ops", hook.url.clone(), None)],
    );
    let notifier =
        Notifier::with_settings(db.pool.clone(), rules, reqwest::Client::new(), settings());
    let episode = db.open("cell_hot", "bms-1/cell_temp_max").await?;
    let gone = db.queue(episode, "firing", "pager").await?;
    let kept = db.queue(episode, "firing", "ops").await?;

    let cycle = notifier.deliver_due().await?;
    assert_eq!(
        cycle,
        Cycle {
            claimed: 2,
            delivered: 1,
            undeliverable: 1,
            ..Cycle::default()
        }
    );
    let row = db.row(&gone).await?;
    assert!(!row.get::<_, bool>("delivered"));
    assert!(row.get::<_, bool>("set_aside"));
    assert_eq!(row.get::<_, i32>("attempts"), 1);
    let error: String = row
        .get::<_, Option<String>>("last_error")
        .context("last_error")?;
    assert!(error.contains("pager"), "{error}");
    assert!(db.row(&kept).await?.get::<_, bool>("delivered"));
    assert_eq!(notifier.pending().await?, 1, "still counted as pending");
    assert_eq!(
        notifier.deliver_due().await?.claimed,
        0,
        "and never due again"
    );
    assert_eq!(hook.deliveries_at(HOOK_PATH).len(), 1);
    assert_eq!(hook.deliveries().len(), 1);
    Ok(())
}

#[tokio::test]
async fn two_notifiers_on_one_database_deliver_each_row_once() -> anyhow::Result<()> {
    let mut db = Outbox::create("notify_two").await?;
    // Every `firing` is refused once, so rows come due again while the
    // other notifier is polling.
    let hook = WebhookReceiver::answering(SECRET, |key, n| {
        if n == 0 && key.contains("-firing-") {
            500
        } else {
            200
        }
    })
    .await?;
    let rules = rule_set(
        vec![rule("cell_hot", &[])],
        vec![webhook("ops", hook.url.clone(), Some(SECRET))],
    );
    let mut keys = Vec::new();
    for n in 0..30 {
        let episode = db
            .open("cell_hot", &format!("bms-{n}/cell_temp_max"))
            .await?;
        let firing = db.queue(episode, "firing", "ops").await?;
        let resolved = db.resolve(episode, "ops").await?;
        keys.push((firing, resolved));
    }
    let contended = NotifierSettings {
        poll_interval: Duration::from_millis(10),
        batch_size: 4.try_into()?,
        concurrency: 2.try_into()?,
        ..NotifierSettings::new()
    };
    let notifiers: Vec<Running> = (0..2)
        .map(|_| {
            Running::start(Notifier::with_settings(
                db.pool.clone(),
                rules.clone(),
                reqwest::Client::new(),
                contended.clone(),
            ))
        })
        .collect();

    wait_for("every row to be delivered", LIMIT, || async {
        (db.undelivered().await.ok()? == 0).then_some(())
    })
    .await?;
    for notifier in notifiers {
        notifier.stop().await;
    }

    let seen = hook.deliveries();
    let mut requests: BTreeMap<String, Vec<(usize, &Delivery)>> = BTreeMap::new();
    for (at, request) in seen.iter().enumerate() {
        anyhow::ensure!(!request.idempotency_key.is_empty(), "no idempotency key");
        assert!(request.signed);
        assert!(verify_signature(
            SECRET.as_bytes(),
            &request.raw,
            request.signature.as_deref().unwrap_or("")
        ));
        requests
            .entry(request.idempotency_key.clone())
            .or_default()
            .push((at, request));
    }
    assert_eq!(requests.len(), 60);
    let accepted_at = |key: &str| {
        let accepted: Vec<usize> = requests[key]
            .iter()
            .filter(|(_, r)| r.accepted())
            .map(|(at, _)| *at)
            .collect();
        assert_eq!(accepted.len(), 1, "{key} taken exactly once");
        accepted[0]
    };
    for (firing, resolved) in &keys {
        assert!(
            accepted_at(firing) < accepted_at(resolved),
            "{resolved} before {firing}"
        );
        assert_eq!(
            requests[firing].len(),
            2,
            "{firing}: refused once, then taken"
        );
        assert_eq!(requests[resolved].len(), 1, "{resolved}");
        // Each attempt recorded once: no attempt went unrecorded or twice.
        assert_eq!(db.row(firing).await?.get::<_, i32>("attempts"), 2);
        assert_eq!(db.row(resolved).await?.get::<_, i32>("attempts"), 1);
    }
    Ok(())
}
