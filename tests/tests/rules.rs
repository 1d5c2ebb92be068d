//! Alert rules end to end: the simulator's scripted faults drive rules in
//! real collectors, whose notifications reach a webhook receiver or a real
//! Alertmanager. Every scenario counts what it expects exactly: each
//! episode stored once, fired once and resolved once, each notification
//! accepted once under its own key.
//!
//! - scripted faults across a collector killed with SIGKILL while an
//!   episode is open;
//! - a site that falls silent: its offline rule fires by the clock, with
//!   nothing arriving, and resolves when batches return;
//! - a fault entirely inside a cut of the site's link: the drained backlog
//!   records the episode with its real start and end (drained oldest
//!   first, and in the edge's default order, live first);
//! - a rebalance: the episode opened on one collector resolves on the other;
//! - Alertmanager shows the alert while it fires, and not after;
//! - SIGHUP reloads the rules; a file with an error is refused, located,
//!   and the rules in force stay.
//!
//! Scenarios run one at a time (they are heavy for a 2-core machine). Some
//! faults are scheduled by the simulator's wall clock; where a step must
//! come before a fault starts, the test checks the simulator's log and
//! says so instead of passing by luck.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

use bess_tests::alertmanager::Alertmanager;
use bess_tests::proxy::LinkProxy;
use bess_tests::scenario::*;
use bess_tests::webhook::{Delivery, WebhookReceiver};
use bess_tests::*;

static SERIAL: Mutex<()> = Mutex::const_new(());

const LONG: Duration = Duration::from_secs(120);
const SECRET: &str = "rules-test-secret";
const SECRET_ENV: &str = "BESS_TEST_WEBHOOK_SECRET";
/// The edge's `site_id` in the example config.
const SITE: &str = "site-001";

// ---------------------------------------------------------------- rules

/// Any unit's hottest cell above 100 °C for 2 s (an out-of-range fault
/// reads 300 °C, a healthy pack about 25 °C); `extra` adds fields.
fn overtemp(extra: &str) -> String {
    format!(
        r#"
[[rule]]
name = "overtemp"
summary = "Hottest cell above 100 °C"
severity = "critical"
device = "bms-*"
point = "cell_temp_max"
kind = "threshold"
above = 100.0
hysteresis = 5.0
for = "2s"
{extra}
"#
    )
}

const CELL_SPREAD: &str = r#"
[[rule]]
name = "cell-spread"
device = "bms-*"
point = "cell_voltage_m*"
kind = "deviation"
max_spread = 1.0
hysteresis = 0.1
"#;

const COMM_LOSS: &str = r#"
[[rule]]
name = "comm-loss"
point = "soc"
kind = "stale"
after = "3s"
"#;

/// The shortest wait an offline rule may have.
const SITE_OFFLINE: &str = r#"
[[rule]]
name = "site-offline"
severity = "critical"
kind = "offline"
after = "30s"
"#;

/// The `[[receiver]]` every scenario's rules file ends with: the test's
/// webhook, signing with [`SECRET`].
fn webhook_receiver(url: &str) -> String {
    format!(
        r#"
[[receiver]]
name = "ops"
kind = "webhook"
url = "{url}"
secret_env = "{SECRET_ENV}"
"#
    )
}

// ---------------------------------------------------------------- faults

/// Unit 2 reads far out of range (cells at 300 °C and 6.5 V) from `at`
/// for `duration`, by wall time since the simulator started.
fn hot_unit_2(name: &str, at: &str, duration: &str) -> String {
    format!(
        r#"
[[fault]]
name = "{name}"
kind = "out-of-range"
units = [2]
at_wall = "{at}"
duration = "{duration}"
"#
    )
}

/// The whole site stops answering from `at` for `duration`.
fn site_silent(name: &str, at: &str, duration: &str) -> String {
    format!(
        r#"
[[fault]]
name = "{name}"
kind = "site-silent"
at_wall = "{at}"
duration = "{duration}"
"#
    )
}

// ---------------------------------------------------------------- platform

/// An episode as `alert_episodes` holds it, times in Unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
struct StoredEpisode {
    id: i64,
    rule: String,
    target: String,
    started_ms: i64,
    ended_ms: Option<i64>,
    late: bool,
}

/// One scenario's platform: a database, a broker (reached directly or
/// through a link proxy standing for the site's WAN link), the webhook
/// receiver and the rules file every collector reads; the simulator, the
/// edge and the collectors are started on it as the scenario needs them.
struct Deployment {
    scratch: Scratch,
    database: TestDatabase,
    brokers: String,
    link: Option<LinkProxy>,
    _broker: Broker,
    webhook: WebhookReceiver,
    rules: PathBuf,
}

impl Deployment {
    /// Collectors and edge reach the broker directly. `test` names the
    /// scratch directory and the database (`[a-z0-9_]`).
    async fn start(test: &str) -> anyhow::Result<Self> {
        let scratch = Scratch::new(test);
        let broker = Broker::start(&scratch.dir).await?;
        Self::around(test, scratch, broker, None).await
    }

    /// Every client reaches the broker through [`Deployment::link`].
    async fn behind_link(test: &str) -> anyhow::Result<Self> {
        let scratch = Scratch::new(test);
        let (proxy, broker) = broker_behind_link(&scratch).await?;
        Self::around(test, scratch, broker, Some(proxy)).await
    }

    async fn around(
        test: &str,
        scratch: Scratch,
        broker: Broker,
        link: Option<LinkProxy>,
    ) -> anyhow::Result<Self> {
        let database = TestDatabase::create(test).await?;
        let webhook = WebhookReceiver::start(SECRET).await?;
        // Inherited by the collectors, which resolve `secret_env` with it.
        std::env::set_var(SECRET_ENV, SECRET);
        let brokers = match &link {
            Some(proxy) => proxy.addr.to_string(),
            None => broker.brokers(),
        };
        let rules = scratch.path("rules.toml");
        Ok(Self {
            scratch,
            database,
            brokers,
            link,
            _broker: broker,
            webhook,
            rules,
        })
    }

    fn link(&self) -> &LinkProxy {
        self.link.as_ref().expect("a deployment behind a link")
    }

    /// Write the rules file: `rules`, then the webhook's receiver.
    fn write_rules(&self, rules: &str) -> anyhow::Result<()> {
        let text = format!("{rules}{}", webhook_receiver(&self.webhook.url));
        std::fs::write(&self.rules, text)?;
        Ok(())
    }

    /// A simulated site of three units with these faults.
    async fn start_sim(&self, faults: &str) -> anyhow::Result<Sim> {
        let config = self.scratch.path("sim.toml");
        std::fs::write(&config, faults)?;
        start_sim_with_config(&self.scratch.dir, 3, 21, Some(&config)).await
    }

    /// A collector of the one consumer group, reading the rules file.
    async fn start_collector(&self, name: &str) -> anyhow::Result<(Proc, String)> {
        let rules = self.rules.display().to_string();
        start_collector_with(
            &self.scratch.dir,
            name,
            &self.database.url(),
            &self.brokers,
            &["--rules", rules.as_str()],
        )
        .await
    }

    /// An edge polling `sim` with the example config; every run shares one
    /// buffer. Returns it with its status URL.
    async fn start_edge(&self, sim: &Sim, name: &str) -> anyhow::Result<(Proc, String)> {
        self.start_edge_draining(sim, name, None).await
    }

    /// [`start_edge`](Self::start_edge), with `buffer.drain` set to `drain`
    /// (`None`: the example's, "live-first").
    async fn start_edge_draining(
        &self,
        sim: &Sim,
        name: &str,
        drain: Option<&str>,
    ) -> anyhow::Result<(Proc, String)> {
        let config = write_edge_config(&self.scratch.dir, sim.addr, &self.brokers, "")?;
        if let Some(drain) = drain {
            let text = std::fs::read_to_string(&config)?;
            let line = text
                .lines()
                .find(|l| l.starts_with("drain = "))
                .expect("the example's buffer.drain line")
                .to_owned();
            std::fs::write(
                &config,
                text.replacen(&line, &format!("drain = \"{drain}\""), 1),
            )?;
        }
        let record = self.scratch.path(&format!("{name}.jsonl"));
        start_edge(&self.scratch.dir, name, &config, &record).await
    }

    /// Every stored episode, by rule, target and start.
    async fn episodes(&self) -> anyhow::Result<Vec<StoredEpisode>> {
        let db = connect(&self.database.url()).await?;
        Ok(db
            .query(
                "SELECT episode_id, rule, target,
                        (extract(epoch FROM started_at) * 1000)::int8,
                        (extract(epoch FROM ended_at) * 1000)::int8, late
                 FROM alert_episodes ORDER BY rule, target, started_at",
                &[],
            )
            .await?
            .iter()
            .map(|r| StoredEpisode {
                id: r.get(0),
                rule: r.get(1),
                target: r.get(2),
                started_ms: r.get(3),
                ended_ms: r.get(4),
                late: r.get(5),
            })
            .collect())
    }

    /// Wait until every stored episode has ended and there are `n`.
    async fn wait_episodes_ended(&self, n: usize) -> anyhow::Result<Vec<StoredEpisode>> {
        let waited = wait_for(&format!("{n} episodes, all ended"), LONG, || async {
            let episodes = self.episodes().await.ok()?;
            (episodes.len() == n && episodes.iter().all(|e| e.ended_ms.is_some()))
                .then_some(episodes)
        })
        .await;
        match waited {
            Ok(episodes) => Ok(episodes),
            Err(e) => Err(e.context(format!("stored episodes: {:?}", self.episodes().await?))),
        }
    }

    /// `(episode, transition, receiver, delivered)` of every outbox row.
    async fn outbox(&self) -> anyhow::Result<Vec<(i64, String, String, bool)>> {
        let db = connect(&self.database.url()).await?;
        Ok(db
            .query(
                "SELECT episode_id, transition, receiver, delivered_at IS NOT NULL
                 FROM notification_outbox ORDER BY episode_id, transition, receiver",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    /// Wait until the outbox holds no undelivered row; its rows.
    async fn wait_outbox_delivered(&self) -> anyhow::Result<Vec<(i64, String, String, bool)>> {
        wait_for("every notification delivered", LONG, || async {
            let rows = self.outbox().await.ok()?;
            rows.iter()
                .all(|(_, _, _, delivered)| *delivered)
                .then_some(rows)
        })
        .await
    }

    /// Wait for the webhook to accept `transition` of `rule` on `target`;
    /// on a timeout, say what it got and how `procs` ended their logs.
    async fn wait_notified(
        &self,
        rule: &str,
        target: &str,
        transition: &str,
        procs: &[&Proc],
    ) -> anyhow::Result<Delivery> {
        let what = format!("{rule} {target:?} {transition} notified");
        wait_for(&what, LONG, || {
            let found =
                self.webhook.accepted().into_iter().find(|d| {
                    d.rule() == rule && d.target() == target && d.transition() == transition
                });
            async move { found }
        })
        .await
        .map_err(|e| {
            let logs: Vec<String> = procs.iter().map(|p| p.log_tail(30)).collect();
            e.context(format!(
                "webhook got {:?}\n{}",
                summary(&self.webhook.deliveries()),
                logs.join("\n")
            ))
        })
    }

    /// The webhook accepted exactly these `(rule, target, transition)`s,
    /// each under its own key, once, signed; nothing else.
    fn assert_notified_once(&self, expected: &[(&str, &str, &str)]) {
        let accepted = self.webhook.accepted();
        assert!(accepted.iter().all(|d| d.signed), "unsigned deliveries");
        let mut per_key: BTreeMap<&str, Vec<&Delivery>> = BTreeMap::new();
        for d in &accepted {
            per_key.entry(&d.idempotency_key).or_default().push(d);
        }
        assert!(
            per_key.values().all(|ds| ds.len() == 1),
            "a key accepted twice: {:?}",
            summary(&accepted)
        );
        let mut got = summary(&accepted);
        got.sort();
        let mut want: Vec<String> = expected
            .iter()
            .map(|(r, t, x)| format!("{r} {t:?} {x}"))
            .collect();
        want.sort();
        assert_eq!(got, want, "accepted notifications");
    }

    /// Wall time (Unix ms) the simulator logged `fault` as `edge`
    /// ("started" or "ended"), if it did.
    fn fault_edge_ms(&self, fault: &str, edge: &str) -> Option<i64> {
        let log = std::fs::read_to_string(self.scratch.path("sim.log")).ok()?;
        let needle = format!(" fault {fault} {edge} ");
        let line = log.lines().find(|l| l.contains(&needle))?;
        let stamp = line.split_whitespace().next()?;
        humantime::parse_rfc3339(stamp).ok().map(unix_ms)
    }

    async fn wait_fault_edge(&self, fault: &str, edge: &str) -> anyhow::Result<i64> {
        wait_for(&format!("fault {fault} {edge}"), LONG, || async {
            self.fault_edge_ms(fault, edge)
        })
        .await
    }

    /// Fail unless `fault` is still to come: a step the scenario needs
    /// before it took longer than its schedule allows.
    fn ensure_not_started(&self, fault: &str, step: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.fault_edge_ms(fault, "started").is_none(),
            "fault {fault} started before {step}: the machine is too slow for its schedule \
             in the simulator config; move its at_wall later"
        );
        Ok(())
    }
}

fn summary(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| format!("{} {:?} {}", d.rule(), d.target(), d.transition()))
        .collect()
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// An unlabelled counter from a collector's `/metrics`.
async fn metric(api: &str, name: &str) -> anyhow::Result<f64> {
    Ok(prometheus_value(
        &get_text(&format!("{api}/metrics")).await?,
        name,
    ))
}

/// The number of batches in the edge's buffer, from its /status.
async fn buffered_batches(status: &str) -> Option<u64> {
    let (_, s) = get_json(&format!("{status}/status")).await.ok()?;
    s["buffer"]["batches"].as_u64()
}

// ---------------------------------------------------------------- scenarios

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_fire_each_episode_once_and_resolve_it_once_across_a_collector_kill(
) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let site = Deployment::start("rules_e2e").await?;
    site.write_rules(&format!("{}{CELL_SPREAD}{COMM_LOSS}", overtemp("")))?;
    // Unit 2 out of range for 12 s, then every unit silent for 20 s (the
    // three units share one link, so each is polled less often while
    // requests time out).
    let sim = site
        .start_sim(&format!(
            "{}{}",
            hot_unit_2("hot", "15s", "12s"),
            site_silent("quiet", "40s", "20s")
        ))
        .await?;
    let (mut collector, _api) = site.start_collector("collector-1").await?;
    let (mut edge, _status) = site.start_edge(&sim, "edge").await?;

    // The overheating unit fires; kill the collector while it is open.
    site.wait_notified(
        "overtemp",
        "bms-2/cell_temp_max",
        "firing",
        &[&collector, &edge],
    )
    .await?;
    collector.kill9();
    let (_collector, _api) = site.start_collector("collector-2").await?;

    // Out of range on bms-2 (two rules), then every unit silent (its soc
    // goes stale): five episodes, each fired and resolved.
    let expected = [
        ("cell-spread", "bms-2"),
        ("comm-loss", "bms-1/soc"),
        ("comm-loss", "bms-2/soc"),
        ("comm-loss", "bms-3/soc"),
        ("overtemp", "bms-2/cell_temp_max"),
    ];
    let stored = site.wait_episodes_ended(expected.len()).await?;
    let stored_keys: Vec<(&str, &str)> = stored
        .iter()
        .map(|e| (e.rule.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        stored_keys, expected,
        "one episode per (rule, target), none twice"
    );
    site.wait_outbox_delivered().await?;
    edge.terminate(LONG).await?;

    // Each (episode, transition) accepted under one key, whatever was
    // retried after the kill (a delivery the killed collector made but
    // could not record is made again under the same key).
    let accepted = site.webhook.accepted();
    assert!(accepted.iter().all(|d| d.signed), "unsigned deliveries");
    let mut per_key: BTreeMap<String, String> = BTreeMap::new();
    for d in &accepted {
        per_key.insert(
            d.idempotency_key.clone(),
            format!("{} {:?} {}", d.rule(), d.target(), d.transition()),
        );
    }
    let mut transitions: Vec<&String> = per_key.values().collect();
    transitions.sort();
    transitions.dedup();
    assert_eq!(
        per_key.len(),
        2 * expected.len(),
        "one key per episode transition: {per_key:?}"
    );
    assert_eq!(transitions.len(), 2 * expected.len(), "{transitions:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_site_fires_its_offline_rule_by_the_clock_and_resolves_when_batches_return(
) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let site = Deployment::start("rules_offline").await?;
    site.write_rules(SITE_OFFLINE)?;
    let sim = site.start_sim("").await?;
    let (collector, _api) = site.start_collector("collector").await?;
    let first_run = now_ms();
    let (mut edge, _status) = site.start_edge(&sim, "edge-1").await?;
    wait_for_ledger(&site.database.url(), 3, LONG).await?;

    // The edge stops; from now on nothing arrives.
    let exit = edge.terminate(LONG).await?;
    assert!(exit.success(), "edge exit {exit}\n{}", edge.log_tail(20));
    let firing = site
        .wait_notified("site-offline", "", "firing", &[&collector])
        .await?;
    let episodes = site.episodes().await?;
    assert_eq!(episodes.len(), 1, "{episodes:?}");
    let episode = &episodes[0];
    assert_eq!(
        (
            episode.rule.as_str(),
            episode.target.as_str(),
            episode.ended_ms
        ),
        ("site-offline", "", None)
    );
    // The episode starts at the last arrival: after the newest batch was
    // written, and the rule waited its 30 s from there before firing.
    let db = connect(&site.database.url()).await?;
    let last_written: i64 = db
        .query_one(
            "SELECT (extract(epoch FROM max(written_at)) * 1000)::int8 FROM batch_ledger",
            &[],
        )
        .await?
        .get(0);
    assert!(
        first_run <= last_written && last_written <= episode.started_ms,
        "started {} before the last batch was written ({last_written})",
        episode.started_ms
    );
    assert!(
        unix_ms(firing.received_at) - episode.started_ms > 30_000,
        "fired {} ms after the last arrival",
        unix_ms(firing.received_at) - episode.started_ms
    );
    assert_eq!(firing.body["episode"]["site"], SITE);
    assert_eq!(firing.body["episode"]["ended_at"], serde_json::Value::Null);

    // The edge runs again: its first batch resolves the episode.
    let restarted = now_ms();
    let (mut edge, _status) = site.start_edge(&sim, "edge-2").await?;
    let resolved = site
        .wait_notified("site-offline", "", "resolved", &[&collector, &edge])
        .await?;
    assert!(resolved.body["episode"]["ended_at"].is_string());
    let exit = edge.terminate(LONG).await?;
    assert!(exit.success(), "edge exit {exit}");

    let episodes = site.wait_episodes_ended(1).await?;
    let ended = episodes[0].ended_ms.expect("ended");
    assert!(ended >= restarted, "ended at {ended}, before the restart");
    assert_eq!(episodes[0].started_ms, episode.started_ms);
    let outbox = site.wait_outbox_delivered().await?;
    assert_eq!(outbox.len(), 2, "{outbox:?}");
    site.assert_notified_once(&[
        ("site-offline", "", "firing"),
        ("site-offline", "", "resolved"),
    ]);
    Ok(())
}

/// The site's link is cut; while it is down unit 2 reads out of range and
/// recovers; then the link returns and the edge drains its buffer in
/// `drain` order. The episode is stored with the start and end the
/// readings carry.
async fn outage_with_backlog(test: &str, drain: Option<&str>) -> anyhow::Result<()> {
    let site = Deployment::behind_link(test).await?;
    site.write_rules(&overtemp(""))?;
    let sim = site.start_sim(&hot_unit_2("hot", "30s", "8s")).await?;
    let (collector, api) = site.start_collector("collector").await?;
    let (edge, status) = site.start_edge_draining(&sim, "edge", drain).await?;
    wait_for_ledger(&site.database.url(), 3, LONG).await?;

    site.ensure_not_started("hot", "the link was cut")?;
    let cut = now_ms();
    site.link().cut();
    let fault_start = site.wait_fault_edge("hot", "started").await?;
    let fault_end = site.wait_fault_edge("hot", "ended").await?;
    // Keep the link down until the fault's readings are older than the
    // edge's live window (10 s): 15 s of batches (sealed every 500 ms)
    // more in the buffer.
    let at_end = buffered_batches(&status).await.unwrap_or(0);
    wait_for("the backlog to grow past the fault", LONG, || async {
        buffered_batches(&status)
            .await
            .filter(|n| *n >= at_end + 30)
            .map(|_| ())
    })
    .await?;
    let restore = now_ms();
    site.link().restore();

    let episodes = match site.wait_episodes_ended(1).await {
        Ok(episodes) => episodes,
        Err(e) => {
            let skipped = metric(&api, "bess_collector_rule_readings_out_of_order").await?;
            return Err(e.context(format!(
                "readings the rules skipped as out of order: {skipped}\n{}",
                collector.log_tail(10)
            )));
        }
    };
    let episode = &episodes[0];
    assert_eq!(
        (episode.rule.as_str(), episode.target.as_str()),
        ("overtemp", "bms-2/cell_temp_max")
    );
    let ended = episode.ended_ms.expect("ended");
    // Event time: the first hot reading and the first cool one, both
    // taken while the link was down.
    assert!(
        cut <= fault_start && fault_start <= episode.started_ms && episode.started_ms < fault_end,
        "started at {}, the fault ran {fault_start}..{fault_end}",
        episode.started_ms
    );
    assert!(
        fault_end <= ended && ended < restore,
        "ended at {ended}, the fault ended at {fault_end}, the link returned at {restore}"
    );
    // Late means read more than 120 s before it reached the collector. This
    // cut lasts about 25 s, so these readings arrive well within that and
    // the episode is not late; an outage past two minutes would mark it.
    assert!(!episode.late, "{episode:?}");

    // Whether anyone is told depends on how the backlog was split into
    // transactions: an episode that fires and resolves in one is over
    // before anyone could be told (the rule does not ask for past
    // episodes); if they land in two, both transitions go out. Either way
    // no receiver hears one without the other.
    let outbox = site.wait_outbox_delivered().await?;
    let accepted = site.webhook.accepted();
    match outbox.len() {
        0 => assert!(accepted.is_empty(), "{:?}", summary(&accepted)),
        2 => site.assert_notified_once(&[
            ("overtemp", "bms-2/cell_temp_max", "firing"),
            ("overtemp", "bms-2/cell_temp_max", "resolved"),
        ]),
        _ => panic!("outbox {outbox:?}"),
    }
    wait_for("the edge's buffer drained", LONG, || async {
        buffered_batches(&status).await.filter(|n| *n == 0)
    })
    .await?;
    stop_and_count(
        edge,
        &[site.scratch.path("edge.jsonl")],
        &site.database.url(),
        0,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_inside_a_link_outage_is_recorded_with_its_real_start_and_end_from_the_backlog(
) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    outage_with_backlog("rules_outage", Some("oldest-first")).await
}

/// The edge's default drain order sends the batches of its last 10 s
/// first, then the backlog oldest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_inside_a_link_outage_is_recorded_when_the_edge_drains_live_first(
) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    outage_with_backlog("rules_outage_live", None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_episode_opened_on_one_collector_resolves_on_the_one_that_takes_its_partition(
) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let site = Deployment::start("rules_rebalance").await?;
    site.write_rules(&overtemp(""))?;
    // Long enough to stop one collector and hand its partitions over
    // while unit 2 is still hot.
    let sim = site.start_sim(&hot_unit_2("hot", "25s", "40s")).await?;
    let (a, api_a) = site.start_collector("collector-a").await?;
    let (b, api_b) = site.start_collector("collector-b").await?;
    let (edge, _status) = site.start_edge(&sim, "edge").await?;

    let target = "bms-2/cell_temp_max";
    site.wait_notified("overtemp", target, "firing", &[&a, &b])
        .await?;
    // The site's one partition is owned by the collector that opened the
    // episode.
    let fired = "bess_collector_alert_episodes_fired_total";
    let resolved = "bess_collector_alert_episodes_resolved_total";
    let fired_by = (
        metric(&api_a, fired).await? as u64,
        metric(&api_b, fired).await? as u64,
    );
    let (mut owner, owner_api, survivor, survivor_api) = match fired_by {
        (1, 0) => (a, api_a, b, api_b),
        (0, 1) => (b, api_b, a, api_a),
        other => panic!("episodes fired by (a, b): {other:?}"),
    };
    assert_eq!(metric(&owner_api, resolved).await?, 0.0);
    let exit = owner.terminate(LONG).await?;
    assert!(
        exit.success(),
        "{} exit {exit}\n{}",
        owner.name,
        owner.log_tail(20)
    );
    let open = site.episodes().await?;
    anyhow::ensure!(
        open.len() == 1 && open[0].ended_ms.is_none(),
        "the episode must still be open when {} has stopped (the fault ran out first: \
         lengthen it): {open:?}",
        owner.name
    );

    site.wait_notified("overtemp", target, "resolved", &[&survivor, &edge])
        .await?;
    assert_eq!(
        metric(&survivor_api, resolved).await?,
        1.0,
        "resolved by {}",
        survivor.name
    );
    assert_eq!(metric(&survivor_api, fired).await?, 0.0);
    let episodes = site.wait_episodes_ended(1).await?;
    assert_eq!(
        (episodes[0].rule.as_str(), episodes[0].target.as_str()),
        ("overtemp", target)
    );
    let outbox = site.wait_outbox_delivered().await?;
    assert_eq!(outbox.len(), 2, "{outbox:?}");
    site.assert_notified_once(&[
        ("overtemp", target, "firing"),
        ("overtemp", target, "resolved"),
    ]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_shows_the_alert_active_while_the_episode_fires_and_not_after(
) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let site = Deployment::start("rules_alertmanager").await?;
    let am = Alertmanager::start(&site.scratch.dir).await?;
    // The rule pages only Alertmanager.
    site.write_rules(&format!(
        "{}\n[[receiver]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"{}\"\n",
        overtemp("receivers = [\"am\"]"),
        am.url
    ))?;
    let sim = site.start_sim(&hot_unit_2("hot", "15s", "12s")).await?;
    let (collector, _api) = site.start_collector("collector").await?;
    let (_edge, _status) = site.start_edge(&sim, "edge").await?;

    let overtemp_alert = |alerts: Vec<serde_json::Value>| {
        alerts
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "overtemp")
    };
    let alert = wait_for("the alert active in Alertmanager", LONG, || async {
        overtemp_alert(am.alerts("active=true").await.ok()?)
    })
    .await
    .map_err(|e| e.context(collector.log_tail(30)))?;
    assert_eq!(
        alert["labels"],
        serde_json::json!({
            "alertname": "overtemp",
            "site": SITE,
            "target": "bms-2/cell_temp_max",
            "severity": "critical"
        })
    );
    assert_eq!(alert["status"]["state"], "active");
    assert_eq!(alert["annotations"]["summary"], "Hottest cell above 100 °C");

    let episodes = site.wait_episodes_ended(1).await?;
    assert_eq!(
        alert["annotations"]["episode_id"],
        episodes[0].id.to_string()
    );
    wait_for("the alert no longer active", LONG, || async {
        overtemp_alert(am.alerts("active=true").await.ok()?)
            .is_none()
            .then_some(())
    })
    .await?;
    let outbox = site.wait_outbox_delivered().await?;
    let id = episodes[0].id;
    assert_eq!(
        outbox,
        [
            (id, "firing".to_owned(), "am".to_owned(), true),
            (id, "resolved".to_owned(), "am".to_owned(), true),
        ]
    );
    assert!(
        site.webhook.deliveries().is_empty(),
        "the webhook is not among the rule's receivers"
    );
    Ok(())
}

/// The line and 1-based column where `value` starts in `text`.
fn position_of(text: &str, value: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .find_map(|(n, line)| line.find(value).map(|col| (n + 1, col + 1)))
        .expect("the value is in the text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_rules_and_a_file_with_an_error_leaves_the_rules_in_force(
) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let site = Deployment::start("rules_reload").await?;
    // bms-1's cells are always above 5 °C: it fires on the first readings.
    let warm = |above: &str| {
        format!(
            r#"
[[rule]]
name = "warm"
device = "bms-1"
point = "cell_temp_max"
kind = "threshold"
above = {above}
"#
        )
    };
    const OVERVOLT: &str = r#"
[[rule]]
name = "overvolt"
device = "bms-2"
point = "cell_voltage_max"
kind = "threshold"
above = 5.0
"#;
    site.write_rules(&warm("5.0"))?;
    let sim = site.start_sim(&hot_unit_2("hot", "35s", "6s")).await?;
    let (mut collector, _api) = site.start_collector("collector").await?;
    let (_edge, _status) = site.start_edge(&sim, "edge").await?;
    site.wait_notified("warm", "bms-1/cell_temp_max", "firing", &[&collector])
        .await?;

    // Raise the threshold and add a rule: the open episode resolves on the
    // next reading, and the new rule is watched.
    site.write_rules(&format!("{}{OVERVOLT}", warm("1000.0")))?;
    collector.signal("HUP");
    collector
        .wait_for_line("bess-collector: rules reloaded (2 rules)", LONG)
        .await?;
    site.wait_notified("warm", "bms-1/cell_temp_max", "resolved", &[&collector])
        .await?;

    // A file with an error (and without the new rule) is refused, located,
    // and the rules in force stay.
    site.ensure_not_started("hot", "the second reload")?;
    let broken = format!("{}{}", warm("\"hot\""), webhook_receiver(&site.webhook.url));
    std::fs::write(&site.rules, &broken)?;
    let (line, column) = position_of(&broken, "\"hot\"");
    let problem = format!("{}:{line}:{column}: rule[0].above: ", site.rules.display());
    collector.signal("HUP");
    let log = site.scratch.path("collector.log");
    wait_for("the refused reload in the collector's log", LONG, || {
        let found = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&problem));
        async move { found.then_some(()) }
    })
    .await
    .map_err(|e| {
        e.context(format!(
            "expected a line {problem:?}\n{}",
            collector.log_tail(20)
        ))
    })?;
    let reloads = collector
        .stdout_lines()
        .iter()
        .filter(|l| l.starts_with("bess-collector: rules reloaded"))
        .count();
    assert_eq!(reloads, 1, "the broken file was not loaded");
    site.ensure_not_started("hot", "the refused reload was logged")?;

    // The rule the broken file left out still fires.
    site.wait_notified(
        "overvolt",
        "bms-2/cell_voltage_max",
        "firing",
        &[&collector],
    )
    .await?;
    site.wait_notified(
        "overvolt",
        "bms-2/cell_voltage_max",
        "resolved",
        &[&collector],
    )
    .await?;
    let episodes = site.wait_episodes_ended(2).await?;
    let keys: Vec<(&str, &str)> = episodes
        .iter()
        .map(|e| (e.rule.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("overvolt", "bms-2/cell_voltage_max"),
            ("warm", "bms-1/cell_temp_max")
        ]
    );
    site.wait_outbox_delivered().await?;
    site.assert_notified_once(&[
        ("warm", "bms-1/cell_temp_max", "firing"),
        ("warm", "bms-1/cell_temp_max", "resolved"),
        ("overvolt", "bms-2/cell_voltage_max", "firing"),
        ("overvolt", "bms-2/cell_voltage_max", "resolved"),
    ]);
    Ok(())
}
