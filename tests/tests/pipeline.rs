//! The whole pipeline on real components: `bess-sim` → `bess-edge` →
//! Tansu (Kafka) → `bess-collector` → PostgreSQL → the live API, each as its
//! own process. Every sample the edge read is counted into the database
//! exactly once, on plain PostgreSQL and on TimescaleDB.

use anyhow::Context as _;
use futures::StreamExt;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::collections::{BTreeMap, HashMap, HashSet};

use bess_tests::audit::{load_record, load_stored, reconcile, Sample, SampleKey};
use bess_tests::scenario::{start_collector_with, wait_for_ledger};
use std::time::Duration;

use bess_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_read_reaches_the_database_exactly_once_on_postgresql() -> anyhow::Result<()> {
    every_sample_read_reaches_the_database_exactly_once(&TestDatabase::admin_url(), "postgresql")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_read_reaches_the_database_exactly_once_on_timescaledb() -> anyhow::Result<()>
{
    let Some(admin_url) = TestDatabase::timescaledb_admin_url(
        "pipeline::every_sample_read_reaches_the_database_exactly_once_on_timescaledb",
    ) else {
        return Ok(());
    };
    every_sample_read_reaches_the_database_exactly_once(&admin_url, "timescaledb").await
}

/// The pipeline against the server of `admin_url`, the collector started
/// with `--storage storage`.
async fn every_sample_read_reaches_the_database_exactly_once(
    admin_url: &str,
    storage: &str,
) -> anyhow::Result<()> {
    let scratch = Scratch::new(&format!("pipeline-{storage}"));
    let broker = Broker::start(&scratch.dir).await?;
    let database = TestDatabase::create_on(admin_url, "pipeline").await?;

    // A simulated site with three controllers on one port.
    let ready = scratch.path("sim.ready");
    let mut sim = Proc::spawn(
        "sim",
        &binary("bess-sim"),
        &[
            "site",
            "--listen",
            "127.0.0.1:0",
            "--units",
            "3",
            "--seed",
            "7",
            "--ready-file",
            ready.to_str().unwrap(),
        ],
        &scratch.dir,
    )?;
    let line = sim
        .wait_for_line("bess-sim: unit 1 on ", Duration::from_secs(30))
        .await?;
    let sim_addr: std::net::SocketAddr = line.rsplit(' ').next().unwrap().parse()?;

    let (mut collector, api) = start_collector_with(
        &scratch.dir,
        "collector",
        &database.url(),
        &broker.brokers(),
        &["--storage", storage],
    )
    .await?;

    // A live client, subscribed before any data flows.
    let ws_url = format!(
        "{}/api/v1/live?site=site-001",
        api.replace("http://", "ws://")
    );
    let (mut live, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .context("connecting the live WebSocket")?;

    // A message that is not a batch must be set aside, not stop the partition.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .create()?;
    producer
        .send(
            FutureRecord::to("bess.telemetry")
                .key("site-001")
                .payload("not a batch"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;

    // The edge polls the three controllers plus one that never answers.
    let dead_port = free_port();
    let config = edge_config(
        sim_addr,
        &broker.brokers(),
        &scratch.path("buffer.sqlite"),
        &format!("\n[[devices]]\nname = \"bms-offline\"\nhost = \"127.0.0.1\"\nport = {dead_port}\nunit = 1\ntimeout = \"300ms\"\nmap = \"bess-controller-v1\"\n"),
    );
    std::fs::write(scratch.path("edge.toml"), config)?;
    let record = scratch.path("record.jsonl");
    let mut edge = Proc::spawn(
        "edge",
        &binary("bess-edge"),
        &[
            "run",
            "--config",
            scratch.path("edge.toml").to_str().unwrap(),
            "--status-listen",
            "127.0.0.1:0",
            "--record",
            record.to_str().unwrap(),
        ],
        &scratch.dir,
    )?;
    let edge_status = edge.wait_for_url("bess-edge: status on ").await?;

    // Let data flow until each live controller has at least 8 fast frames stored.
    let db = database.client().await?;
    wait_for(
        "8 stored frames per live controller",
        Duration::from_secs(90),
        || {
            let db = &db;
            async move {
                let rows = db
                    .query(
                        "SELECT d.name, count(*) FROM frames f JOIN layouts l USING (layout_id)
                     JOIN devices d USING (device_id) WHERE l.group_name = 'fast' GROUP BY d.name",
                        &[],
                    )
                    .await
                    .ok()?;
                let live = rows
                    .iter()
                    .filter(|r| r.get::<_, String>(0) != "bms-offline" && r.get::<_, i64>(1) >= 8)
                    .count();
                (live == 3).then_some(())
            }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", edge.log_tail(30), collector.log_tail(30)))?;

    // The edge reports each device's health; the offline one did not stop the rest.
    let (_, status) = get_json(&format!("{edge_status}/status")).await?;
    let devices = status["devices"].as_array().context("devices")?;
    for device in devices {
        let online = device["online"].as_bool().unwrap_or(false);
        let expect_online = device["name"] != "bms-offline";
        assert_eq!(online, expect_online, "device health: {device}");
    }
    let edge_metrics = get_text(&format!("{edge_status}/metrics")).await?;
    assert!(
        prometheus_value(&edge_metrics, "bess_edge_samples_read_total") > 0.0,
        "{edge_metrics}"
    );
    assert!(
        edge_metrics.contains("bess_edge_buffer_batches"),
        "{edge_metrics}"
    );

    // The live client sees frames of this site: the live lane's, from the
    // group's next whole frame (at most `live.keyframe_every` after the
    // collector began reading the live topic).
    let first = tokio::time::timeout(Duration::from_secs(30), live.next())
        .await
        .context("no live frame within 30 s")?
        .context("live stream ended")??;
    let frame: serde_json::Value = serde_json::from_str(first.to_text()?)?;
    assert_eq!(frame["type"], "frame", "{frame}");
    assert_eq!(frame["frame"]["site"], "site-001");

    // Stop the edge cleanly: it seals what it read and drains its buffer.
    let exit = edge.terminate(Duration::from_secs(30)).await?;
    assert!(exit.success(), "edge exit: {exit}\n{}", edge.log_tail(30));
    let summary = edge
        .stdout_lines()
        .into_iter()
        .find(|l| l.starts_with("bess-edge: stopped;"))
        .context("edge summary line")?;
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let [read, sealed, batches, acked, left] = numbers[..] else {
        panic!("summary: {summary}")
    };
    assert_eq!(read, sealed, "every sample read was sealed: {summary}");
    assert_eq!(batches, acked, "every batch was acknowledged: {summary}");
    assert_eq!(left, 0, "{summary}");

    // What the edge sealed (its audit record) against what the database holds.
    let recorded = load_record(&[record.as_path()])?;
    assert_eq!(
        recorded.count, sealed,
        "the record holds every sealed sample"
    );
    assert!(recorded.count > 0);
    let expected_batches = recorded.seqs.len() as i64;
    wait_for_ledger(&database.url(), expected_batches, Duration::from_secs(60))
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", collector.log_tail(30)))?;
    let ledger: HashSet<i64> = db
        .query("SELECT seq FROM batch_ledger", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        ledger, recorded.seqs,
        "ledger holds exactly the sealed batches"
    );
    let stored = load_stored(&db).await?;
    let verdict = reconcile(&recorded, &stored);
    verdict.assert_exactly_once(0, 0);
    assert!(
        verdict.unrecorded.is_empty(),
        "{} samples nobody read",
        verdict.unrecorded.len()
    );
    assert_eq!(stored.rows, recorded.count);
    let recorded_count = recorded.count;
    let stored = stored.samples;
    let recorded: HashMap<SampleKey, Sample> = recorded
        .samples
        .into_iter()
        .map(|(k, (_, s))| (k, s))
        .collect();
    // The offline controller's hole is visible with its reason.
    assert!(recorded
        .iter()
        .any(|((d, _, _), s)| d == "bms-offline" && s.quality == "comm-loss"));

    // `/latest` agrees with the newest stored frame of every point.
    let (code, latest) = get_json(&format!("{api}/api/v1/sites/site-001/latest")).await?;
    assert_eq!(code, 200, "{latest}");
    let mut newest: BTreeMap<(String, String), (i64, Sample)> = BTreeMap::new();
    for ((device, point, ts), samples) in &stored {
        let entry = newest
            .entry((device.clone(), point.clone()))
            .or_insert((i64::MIN, samples[0].clone()));
        if *ts > entry.0 {
            *entry = (*ts, samples[0].clone());
        }
    }
    let points = latest["points"].as_array().context("points")?;
    assert_eq!(points.len(), newest.len(), "one latest value per point");
    for point in points {
        let key = (
            point["device"].as_str().unwrap().to_owned(),
            point["name"].as_str().unwrap().to_owned(),
        );
        let (ts, sample) = &newest[&key];
        let api_ts = time::OffsetDateTime::parse(
            point["ts"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )?;
        assert_eq!(
            (api_ts.unix_timestamp_nanos() / 1_000_000) as i64,
            *ts,
            "{key:?}"
        );
        assert_eq!(point["value"].as_f64(), sample.value, "{key:?}");
        assert_eq!(
            point["quality"].as_str().unwrap(),
            sample.quality,
            "{key:?}"
        );
    }

    // `/series` returns exactly the stored raw samples of one point.
    let soc: Vec<i64> = {
        let mut ts: Vec<i64> = stored
            .keys()
            .filter(|(d, p, _)| d == "bms-1" && p == "soc")
            .map(|(_, _, t)| *t)
            .collect();
        ts.sort_unstable();
        ts
    };
    let from = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(soc[0]) * 1_000_000)?;
    let to = time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(*soc.last().unwrap() + 1) * 1_000_000,
    )?;
    let fmt = &time::format_description::well_known::Rfc3339;
    let url = format!(
        "{api}/api/v1/series?point=site-001/bms-1/soc&from={}&to={}",
        from.format(fmt)?.replace('+', "%2B"),
        to.format(fmt)?.replace('+', "%2B")
    );
    let (code, series) = get_json(&url).await?;
    assert_eq!(code, 200, "{series}");
    assert_eq!(series["count"].as_u64(), Some(soc.len() as u64), "{series}");
    assert_eq!(series["unit"], "%");
    let samples = series["samples"].as_array().expect("samples");
    let ts_ms: Vec<i64> = samples
        .iter()
        .map(|s| {
            let ts = time::OffsetDateTime::parse(s["ts"].as_str().unwrap(), fmt).unwrap();
            (ts.unix_timestamp_nanos() / 1_000_000) as i64
        })
        .collect();
    assert_eq!(ts_ms, soc, "the stored timestamps, in order");

    // The columnar and CSV answers hold the same samples.
    let (code, columns) = get_json(&format!("{url}&format=columns")).await?;
    assert_eq!(code, 200, "{columns}");
    let column_ts: Vec<i64> = serde_json::from_value(columns["ts_ms"].clone())?;
    assert_eq!(column_ts, soc);
    let values: Vec<&serde_json::Value> = samples.iter().map(|s| &s["value"]).collect();
    let column_values: Vec<&serde_json::Value> = columns["value"]
        .as_array()
        .expect("values")
        .iter()
        .collect();
    assert_eq!(column_values, values);
    let csv = get_text(&format!("{url}&format=csv")).await?;
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("point,ts,value,quality"));
    let csv_rows: Vec<(String, String)> = lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (fields[1].to_owned(), fields[2].to_owned())
        })
        .collect();
    let json_rows: Vec<(String, String)> = samples
        .iter()
        .map(|s| {
            let value = if s["value"].is_null() {
                String::new()
            } else {
                s["value"].to_string()
            };
            (s["ts"].as_str().unwrap().to_owned(), value)
        })
        .collect();
    assert_eq!(csv_rows, json_rows);

    // Bad requests get JSON 4xx errors.
    let (code, body) = get_json(&format!(
        "{api}/api/v1/series?point=site-001/bms-1/soc&from=yesterday&to=now"
    ))
    .await?;
    assert_eq!(code, 400);
    assert_eq!(body["error"]["code"], "bad_request");
    let (code, body) = get_json(&format!("{api}/api/v1/sites/no-such-site/latest")).await?;
    assert_eq!(code, 404);
    assert_eq!(body["error"]["code"], "not_found");

    // Sites list with last-seen time.
    let (_, sites) = get_json(&format!("{api}/api/v1/sites")).await?;
    assert_eq!(sites["sites"][0]["site"], "site-001");
    assert!(sites["sites"][0]["last_seen"].is_string());

    // The bad message was set aside and counted; nothing was doubled.
    let rejected: i64 = db
        .query_one("SELECT count(*) FROM rejected_messages", &[])
        .await?
        .get(0);
    assert_eq!(rejected, 1);
    let collector_metrics = get_text(&format!("{api}/metrics")).await?;
    assert_eq!(
        prometheus_value(&collector_metrics, "bess_collector_messages_rejected_total"),
        1.0
    );
    assert_eq!(
        prometheus_value(&collector_metrics, "bess_collector_samples_written_total"),
        recorded_count as f64
    );
    assert_eq!(
        prometheus_value(&collector_metrics, "bess_collector_batches_written_total"),
        expected_batches as f64
    );

    let exit = collector.terminate(Duration::from_secs(30)).await?;
    assert!(
        exit.success(),
        "collector exit: {exit}\n{}",
        collector.log_tail(30)
    );
    let exit = sim.terminate(Duration::from_secs(10)).await?;
    assert!(exit.success(), "simulator exit: {exit}");
    drop(broker);
    Ok(())
}
