//! The live lane across processes: `bess-sim` → `bess-edge` → Tansu →
//! three `bess-collector` instances in one consumer group → WebSocket
//! clients on every instance. Any instance serves any site: every client
//! gets every frame of its site once, in timestamp order per poll group,
//! with exactly the values stored later; `/latest` is as fresh on every
//! instance; killing one instance interrupts nobody else, and its clients
//! resume elsewhere from a snapshot. The stored lane still holds every
//! sample exactly once.

use anyhow::Context as _;
use futures::{SinkExt, StreamExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

use bess_tests::audit::{load_derived, load_stored};
use bess_tests::scenario::{
    start_collector, start_collector_with, start_edge, start_sim, stop_and_count, write_edge_config,
};
use bess_tests::*;

/// One value of a live frame: (device, point, ts_ms) → (value, quality).
type LiveSample = ((String, String, i64), (Option<f64>, String));

/// What one WebSocket client saw.
#[derive(Default)]
struct Seen {
    snapshots: usize,
    /// (device, group) → timestamps in arrival order.
    frames: BTreeMap<(String, String), Vec<i64>>,
    samples: Vec<LiveSample>,
    closed: bool,
}

impl Seen {
    fn fast_frames(&self) -> usize {
        self.frames
            .iter()
            .filter(|((_, group), _)| group == "fast")
            .map(|(_, ts)| ts.len())
            .min()
            .unwrap_or(0)
    }

    fn newest_ts(&self) -> i64 {
        self.frames.values().flatten().copied().max().unwrap_or(0)
    }
}

/// A client of `/api/v1/live` on `api` subscribed to site-001 (as the
/// dashboard does: snapshot first, then frames), recording into a shared `Seen`.
async fn follow(api: &str) -> anyhow::Result<Arc<Mutex<Seen>>> {
    let url = format!("{}/api/v1/live", api.replace("http://", "ws://"));
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .with_context(|| format!("connecting {url}"))?;
    socket
        .send(Message::Text(
            r#"{"subscribe":{"sites":["site-001"]}}"#.into(),
        ))
        .await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                let mut seen = seen.lock().unwrap();
                match json["type"].as_str() {
                    Some("snapshot") => seen.snapshots += 1,
                    Some("frame") => {
                        let frame = &json["frame"];
                        let device = frame["device"].as_str().unwrap_or_default().to_owned();
                        let group = frame["group"].as_str().unwrap_or_default().to_owned();
                        let ts = frame["ts_ms"].as_i64().unwrap_or_default();
                        for value in frame["values"].as_array().into_iter().flatten() {
                            seen.samples.push((
                                (
                                    device.clone(),
                                    value["point"].as_str().unwrap_or_default().to_owned(),
                                    ts,
                                ),
                                (
                                    value["value"].as_f64(),
                                    value["quality"].as_str().unwrap_or_default().to_owned(),
                                ),
                            ));
                        }
                        seen.frames.entry((device, group)).or_default().push(ts);
                    }
                    _ => {}
                }
            }
            seen.lock().unwrap().closed = true;
        }
    });
    Ok(seen)
}

/// Wait until every client has at least `n` frames of each fast group.
async fn wait_for_frames(clients: &[Arc<Mutex<Seen>>], n: usize, what: &str) -> anyhow::Result<()> {
    wait_for(what, Duration::from_secs(60), || async {
        clients
            .iter()
            .all(|c| c.lock().unwrap().fast_frames() >= n)
            .then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_serves_every_frame_once_in_order_and_losing_one_interrupts_no_one_else(
) -> anyhow::Result<()> {
    let scratch = Scratch::new("live-lane");
    let broker = Broker::start(&scratch.dir).await?;
    let database = TestDatabase::create("live_lane").await?;
    let sim = start_sim(&scratch.dir, 3, 11).await?;
    let mut instances = Vec::new();
    for i in 1..=3 {
        instances.push(
            start_collector(
                &scratch.dir,
                &format!("collector-{i}"),
                &database.url(),
                &broker.brokers(),
            )
            .await?,
        );
    }
    let config = write_edge_config(&scratch.dir, sim.addr, &broker.brokers(), "")?;
    let record = scratch.path("record.jsonl");
    let (edge, edge_status) = start_edge(&scratch.dir, "edge", &config, &record).await?;

    // Two clients on each instance; only one instance consumes the site's
    // partition of the telemetry topic, all of them read the live topic.
    let mut clients = Vec::new();
    for (_, api) in &instances {
        for _ in 0..2 {
            clients.push(follow(api).await?);
        }
    }
    wait_for_frames(
        &clients,
        5,
        "5 live frames of every fast group on every client",
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\n{}\n{}",
            edge.log_tail(20),
            instances[0].0.log_tail(20)
        )
    })?;

    // `/latest` on every instance is at least as new as anything stored:
    // it comes from the live lane, which runs ahead of the database.
    let db = database.client().await?;
    for (_, api) in &instances {
        let stored_newest: i64 = db
            .query_one(
                "SELECT coalesce((extract(epoch FROM max(ts)) * 1000)::int8, 0) FROM frames",
                &[],
            )
            .await?
            .get(0);
        let (code, latest) = get_json(&format!("{api}/api/v1/sites/site-001/latest")).await?;
        assert_eq!(code, 200, "{latest}");
        let newest = latest["points"]
            .as_array()
            .context("points")?
            .iter()
            .filter_map(|p| p["ts"].as_str())
            .filter_map(|ts| {
                time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|ts| (ts.unix_timestamp_nanos() / 1_000_000) as i64)
            .max()
            .unwrap_or(0);
        assert!(
            newest >= stored_newest,
            "{api}: /latest at {newest}, database at {stored_newest}"
        );
    }

    // Kill the third instance: the clients of the others go on, its own
    // clients reconnect to the first and start from a snapshot.
    let killed_at = clients
        .iter()
        .map(|c| c.lock().unwrap().newest_ts())
        .max()
        .unwrap_or(0);
    let (mut third, _) = instances.pop().context("third instance")?;
    third.kill9();
    let orphans: Vec<_> = clients.drain(4..).collect();
    wait_for(
        "the killed instance's clients to see it close",
        Duration::from_secs(30),
        || async {
            orphans
                .iter()
                .all(|c| c.lock().unwrap().closed)
                .then_some(())
        },
    )
    .await?;
    let mut resumed = Vec::new();
    for _ in &orphans {
        resumed.push(follow(&instances[0].1).await?);
    }
    let all: Vec<_> = clients
        .iter()
        .chain(&orphans)
        .chain(&resumed)
        .cloned()
        .collect();
    let before: Vec<usize> = clients
        .iter()
        .map(|c| c.lock().unwrap().fast_frames())
        .collect();
    wait_for(
        "frames after the kill on every client",
        Duration::from_secs(60),
        || async {
            let survivors_moved = clients
                .iter()
                .zip(&before)
                .all(|(c, n)| c.lock().unwrap().fast_frames() >= n + 5);
            let resumed_moved = resumed.iter().all(|c| c.lock().unwrap().fast_frames() >= 5);
            (survivors_moved && resumed_moved).then_some(())
        },
    )
    .await?;
    for client in &resumed {
        assert_eq!(
            client.lock().unwrap().snapshots,
            1,
            "a resumed client starts from a snapshot"
        );
    }

    // The stored lane: every sample exactly once, through the kill.
    let metrics = get_text(&format!("{edge_status}/metrics")).await?;
    assert!(
        prometheus_value(&metrics, "bess_edge_live_messages_total") > 0.0,
        "{metrics}"
    );
    stop_and_count(edge, &[record], &database.url(), 0).await?;

    // Live against stored: every value shown live is the value stored for
    // that point and time; no client missed or doubled a stored frame of its
    // window; each group's frames arrived in timestamp order.
    let stored = load_stored(&db).await?;
    let mut stored_ts: HashMap<(String, String), BTreeSet<i64>> = HashMap::new();
    for (device, point, ts) in stored.samples.keys() {
        stored_ts
            .entry((device.clone(), point.clone()))
            .or_default()
            .insert(*ts);
    }
    for (index, client) in all.iter().enumerate() {
        let seen = client.lock().unwrap();
        for ((device, group), ts) in &seen.frames {
            assert!(
                ts.windows(2).all(|w| w[0] < w[1]),
                "client {index}: {device}/{group} out of order or doubled: {ts:?}"
            );
        }
        let mut live_ts: HashMap<(String, String), BTreeSet<i64>> = HashMap::new();
        for ((device, point, ts), (value, quality)) in &seen.samples {
            let at = stored
                .samples
                .get(&(device.clone(), point.clone(), *ts))
                .with_context(|| {
                    format!("client {index}: {device}/{point} at {ts} shown live, never stored")
                })?;
            assert_eq!(at.len(), 1);
            assert_eq!(
                (&at[0].value, &at[0].quality),
                (value, quality),
                "client {index}: {device}/{point} at {ts}"
            );
            live_ts
                .entry((device.clone(), point.clone()))
                .or_default()
                .insert(*ts);
        }
        for (key, shown) in &live_ts {
            let (first, last) = (
                shown.first().copied().unwrap(),
                shown.last().copied().unwrap(),
            );
            let expected: BTreeSet<i64> = stored_ts[key].range(first..=last).copied().collect();
            let missing: Vec<_> = expected.difference(shown).collect();
            assert!(
                missing.is_empty(),
                "client {index}: {key:?} missed stored frames {missing:?}"
            );
        }
        // Survivors' windows span the kill: they were not interrupted.
        if index < clients.len() {
            assert!(seen.frames.values().flatten().any(|ts| *ts < killed_at));
            assert!(seen
                .frames
                .values()
                .flatten()
                .any(|ts| *ts > killed_at + 3000));
        }
    }
    Ok(())
}

/// While the link is down nothing is kept as "live": when it returns,
/// dashboards get current frames (never ones polled during the outage),
/// while the backlog goes to the stored lane and is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_live_shows_current_values_and_the_backlog_is_stored_not_shown(
) -> anyhow::Result<()> {
    let scratch = Scratch::new("live-outage");
    let (link, broker) = bess_tests::scenario::broker_behind_link(&scratch).await?;
    let brokers = link.addr.to_string();
    let database = TestDatabase::create("live_outage").await?;
    let sim = start_sim(&scratch.dir, 3, 12).await?;
    let (_collector, api) =
        start_collector(&scratch.dir, "collector", &database.url(), &brokers).await?;
    let config = write_edge_config(&scratch.dir, sim.addr, &brokers, "")?;
    let record = scratch.path("record.jsonl");
    let (edge, _) = start_edge(&scratch.dir, "edge", &config, &record).await?;
    let client = follow(&api).await?;
    wait_for_frames(
        std::slice::from_ref(&client),
        3,
        "live frames before the outage",
    )
    .await?;

    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    let cut_at = now();
    link.cut();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let restored_at = now();
    link.restore();
    wait_for(
        "a live frame polled after the link returned",
        Duration::from_secs(60),
        || async { (client.lock().unwrap().newest_ts() > restored_at).then_some(()) },
    )
    .await?;

    // A live frame is at most `live.max_age` (5 s) old when it leaves: none
    // polled in the middle of the outage reaches a dashboard.
    let history = (cut_at + 5_000)..(restored_at - 5_000);
    let shown_from_outage: Vec<i64> = client
        .lock()
        .unwrap()
        .frames
        .values()
        .flatten()
        .copied()
        .filter(|ts| history.contains(ts))
        .collect();
    assert!(
        shown_from_outage.is_empty(),
        "shown live from the outage: {shown_from_outage:?}"
    );
    stop_and_count(edge, &[record], &database.url(), 0).await?;
    // The outage's frames are in the database: they were history, not lost.
    let db = database.client().await?;
    let stored_in_outage: i64 = db
        .query_one(
            "SELECT count(*) FROM frames WHERE ts >= to_timestamp($1::float8 / 1000) AND ts < to_timestamp($2::float8 / 1000)",
            &[&(history.start as f64), &(history.end as f64)],
        )
        .await?
        .get(0);
    assert!(stored_in_outage > 0, "the backlog of the outage was stored");
    drop(broker);
    Ok(())
}

/// An instance that starts after the edges shows their sites at once: it
/// reads the live topic back `--live-replay` far, so it holds each group's
/// last whole frame without waiting for the next. The edge here sends whole
/// frames only when its chain starts (`keyframe_every` of an hour), so an
/// instance that began at the topic's end would never show the site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_starts_later_reads_the_live_topic_back_and_shows_every_site(
) -> anyhow::Result<()> {
    let scratch = Scratch::new("live-replay");
    let broker = Broker::start(&scratch.dir).await?;
    let database = TestDatabase::create("live_replay").await?;
    let sim = start_sim(&scratch.dir, 3, 13).await?;
    let (_first, first_api) = start_collector(
        &scratch.dir,
        "collector-1",
        &database.url(),
        &broker.brokers(),
    )
    .await?;
    let config = write_edge_config(&scratch.dir, sim.addr, &broker.brokers(), "")?;
    let text = std::fs::read_to_string(&config)?;
    assert!(text.contains("keyframe_every = \"30s\""), "{text}");
    std::fs::write(
        &config,
        text.replace("keyframe_every = \"30s\"", "keyframe_every = \"1h\""),
    )?;
    let record = scratch.path("record.jsonl");
    let (edge, _) = start_edge(&scratch.dir, "edge", &config, &record).await?;
    let early = follow(&first_api).await?;
    wait_for_frames(
        std::slice::from_ref(&early),
        3,
        "live frames on the first instance",
    )
    .await?;

    let (_late, late_api) = start_collector(
        &scratch.dir,
        "collector-2",
        &database.url(),
        &broker.brokers(),
    )
    .await?;
    let late = follow(&late_api).await?;
    wait_for_frames(
        std::slice::from_ref(&late),
        3,
        "live frames on the instance that started later",
    )
    .await?;
    stop_and_count(edge, &[record], &database.url(), 0).await?;

    // What the late instance showed is what was stored.
    let db = database.client().await?;
    let stored = load_stored(&db).await?;
    let seen = late.lock().unwrap();
    for ((device, point, ts), (value, quality)) in &seen.samples {
        let at = stored
            .samples
            .get(&(device.clone(), point.clone(), *ts))
            .with_context(|| format!("{device}/{point} at {ts} shown live, never stored"))?;
        assert_eq!(
            (&at[0].value, &at[0].quality),
            (value, quality),
            "{device}/{point} at {ts}"
        );
    }
    drop(broker);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_points_go_live_and_are_stored_once_with_the_values_shown() -> anyhow::Result<()> {
    let scratch = Scratch::new("live-derived");
    let broker = Broker::start(&scratch.dir).await?;
    let database = TestDatabase::create("live_derived").await?;
    let rules = scratch.path("rules.toml");
    std::fs::write(
        &rules,
        r#"
[[derived]]
name = "power"
device = "site"
unit = "kW"
expression = "sum(*/active_power) / 1000"

[[derived]]
name = "{device}.cell_spread"
for_each = "bms-*"
unit = "V"
expression = "cell_voltage_max - cell_voltage_min"
"#,
    )?;
    let sim = start_sim(&scratch.dir, 3, 17).await?;
    let rules_arg = rules.display().to_string();
    let (_collector, api) = start_collector_with(
        &scratch.dir,
        "collector",
        &database.url(),
        &broker.brokers(),
        &["--rules", &rules_arg],
    )
    .await?;
    let config = write_edge_config(&scratch.dir, sim.addr, &broker.brokers(), "")?;
    let record = scratch.path("record.jsonl");
    let (edge, _) = start_edge(&scratch.dir, "edge", &config, &record).await?;
    let client = follow(&api).await?;
    wait_for(
        "five seconds of live site power",
        Duration::from_secs(60),
        || async {
            let seen = client.lock().unwrap();
            let power = seen
                .frames
                .get(&("site".to_owned(), "power".to_owned()))
                .map_or(0, Vec::len);
            (power >= 5).then_some(())
        },
    )
    .await?;
    // The edges' own samples are all stored once, derived points aside.
    stop_and_count(edge, &[record], &database.url(), 0).await?;

    let db = database.client().await?;
    let derived = load_derived(&db).await?;
    let live: Vec<LiveSample> = client
        .lock()
        .unwrap()
        .samples
        .iter()
        .filter(|((device, point, _), _)| device == "site" || point.ends_with(".cell_spread"))
        .cloned()
        .collect();
    assert!(live.len() >= 5, "{} derived samples live", live.len());
    for ((device, point, ts), (value, _)) in &live {
        let stored = derived
            .samples
            .get(&(device.clone(), point.clone(), *ts))
            .with_context(|| format!("{device}/{point} at {ts} shown live, never stored"))?;
        assert_eq!(
            stored.len(),
            1,
            "{device}/{point} at {ts} stored {} times",
            stored.len()
        );
        assert_eq!(&stored[0].value, value, "{device}/{point} at {ts}");
    }
    assert!(
        derived.samples.values().all(|s| s.len() == 1),
        "a derived sample stored twice"
    );
    let (_, latest) = get_json(&format!("{api}/api/v1/sites/site-001/latest")).await?;
    let text = latest.to_string();
    assert!(
        text.contains("\"power\""),
        "no site power in /latest: {text}"
    );
    drop(broker);
    Ok(())
}
