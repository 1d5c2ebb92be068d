//! Alert rules end to end: the simulator's scripted faults drive rules in
//! a real collector, whose notifications reach a webhook receiver; every
//! expected episode fires once and resolves once, also across a collector
//! killed with SIGKILL while an episode is open.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bess_tests::scenario::*;
use bess_tests::webhook::WebhookReceiver;
use bess_tests::*;

const LONG: Duration = Duration::from_secs(120);
const SECRET: &str = "rules-test-secret";

/// The simulator's faults, by wall time since its start: unit 2 reads far
/// out of range (cells at 300 °C and 6.5 V) for 12 s, then the whole site
/// stops answering for 20 s (the three units share one link, so each
/// is polled less often while requests time out).
const SIM_FAULTS: &str = r#"
[[fault]]
name = "hot"
kind = "out-of-range"
units = [2]
at_wall = "15s"
duration = "12s"

[[fault]]
name = "quiet"
kind = "site-silent"
at_wall = "40s"
duration = "20s"
"#;

fn rules_file(webhook: &str) -> String {
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

[[rule]]
name = "cell-spread"
device = "bms-*"
point = "cell_voltage_m*"
kind = "deviation"
max_spread = 1.0
hysteresis = 0.1

[[rule]]
name = "comm-loss"
point = "soc"
kind = "stale"
after = "3s"

[[receiver]]
name = "ops"
kind = "webhook"
url = "{webhook}"
secret_env = "BESS_TEST_WEBHOOK_SECRET"
"#
    )
}

/// (rule, target) → (started, ended) of every episode in the database.
async fn episodes(database_url: &str) -> anyhow::Result<Vec<(String, String, bool)>> {
    let db = connect(database_url).await?;
    Ok(db
        .query(
            "SELECT rule, target, ended_at IS NOT NULL FROM alert_episodes ORDER BY rule, target, started_at",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_fire_each_episode_once_and_resolve_it_once_across_a_collector_kill(
) -> anyhow::Result<()> {
    let scratch = Scratch::new("rules-e2e");
    let database = TestDatabase::create("rules_e2e").await?;
    let broker = Broker::start(&scratch.dir).await?;
    let webhook = WebhookReceiver::start(SECRET).await?;
    let rules = scratch.path("rules.toml");
    std::fs::write(&rules, rules_file(&webhook.url))?;
    let rules_arg = rules.display().to_string();
    std::env::set_var("BESS_TEST_WEBHOOK_SECRET", SECRET);
    let collector_flags = ["--rules", rules_arg.as_str()];

    let sim_config = scratch.path("sim.toml");
    std::fs::write(&sim_config, SIM_FAULTS)?;
    let sim = start_sim_with_config(&scratch.dir, 3, 21, Some(&sim_config)).await?;
    let (mut collector, _api) = start_collector_with(
        &scratch.dir,
        "collector-1",
        &database.url(),
        &broker.brokers(),
        &collector_flags,
    )
    .await?;
    let config = write_edge_config(&scratch.dir, sim.addr, &broker.brokers(), "")?;
    let record = scratch.path("record.jsonl");
    let (mut edge, _status) = start_edge(&scratch.dir, "edge", &config, &record).await?;

    // The overheating unit fires; kill the collector while it is open.
    wait_for("the overtemp episode notified", LONG, || {
        let fired = webhook
            .accepted()
            .iter()
            .any(|d| d.rule() == "overtemp" && d.transition() == "firing");
        async move { fired.then_some(()) }
    })
    .await
    .map_err(|e| {
        let episodes = webhook.deliveries();
        e.context(format!(
            "webhook got {episodes:?}\ncollector:\n{}\nedge:\n{}",
            collector.log_tail(30),
            edge.log_tail(10)
        ))
    })?;
    collector.kill9();
    let (_collector, _api) = start_collector_with(
        &scratch.dir,
        "collector-2",
        &database.url(),
        &broker.brokers(),
        &collector_flags,
    )
    .await?;

    // Out of range on bms-2 (two rules), then every unit silent (its soc
    // goes stale): five episodes, each fired and resolved.
    let expected: BTreeSet<(String, String)> = [
        ("cell-spread", "bms-2"),
        ("comm-loss", "bms-1/soc"),
        ("comm-loss", "bms-2/soc"),
        ("comm-loss", "bms-3/soc"),
        ("overtemp", "bms-2/cell_temp_max"),
    ]
    .iter()
    .map(|(r, t)| (r.to_string(), t.to_string()))
    .collect();
    wait_for("five episodes resolved and notified", LONG, || {
        let resolved = webhook
            .accepted()
            .iter()
            .filter(|d| d.transition() == "resolved")
            .map(|d| (d.rule().to_owned(), d.target().to_owned()))
            .collect::<BTreeSet<_>>();
        let done = resolved == expected;
        async move { done.then_some(()) }
    })
    .await
    .map_err(|e| {
        let got: Vec<_> = webhook
            .accepted()
            .iter()
            .map(|d| format!("{} {} {}", d.rule(), d.target(), d.transition()))
            .collect();
        e.context(format!("webhook accepted {got:?}"))
    })?;
    edge.terminate(LONG).await?;

    let stored = episodes(&database.url()).await?;
    let stored_keys: Vec<(String, String)> = stored
        .iter()
        .map(|(r, t, _)| (r.clone(), t.clone()))
        .collect();
    assert_eq!(
        stored_keys,
        expected.iter().cloned().collect::<Vec<_>>(),
        "one episode per (rule, target), none twice"
    );
    assert!(stored.iter().all(|(_, _, ended)| *ended), "{stored:?}");

    // Every delivery signed; each (episode, transition) accepted under one
    // key, whatever was retried after the kill.
    let accepted = webhook.accepted();
    assert!(accepted.iter().all(|d| d.signed), "unsigned deliveries");
    let mut per_key: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    for d in &accepted {
        per_key.insert(
            d.idempotency_key.clone(),
            (
                d.rule().to_owned(),
                d.target().to_owned(),
                d.transition().to_owned(),
            ),
        );
    }
    let transitions: BTreeSet<(String, String, String)> = per_key.values().cloned().collect();
    assert_eq!(
        per_key.len(),
        10,
        "one key per episode transition: {per_key:?}"
    );
    assert_eq!(transitions.len(), 10, "{transitions:?}");
    Ok(())
}
