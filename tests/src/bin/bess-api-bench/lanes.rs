//! `bess-api-bench lanes`: the whole path at default settings, every part
//! a real binary: `bess-sim fleet` → one `bess-edge` per site → Tansu →
//! 1 (then 3) `bess-collector` instances in one group → WebSocket clients
//! spread over the sites and the instances.
//!
//! Per instance count it prints: read → client latency (the edge's poll
//! timestamp to the client's receipt, same host and clock), frames
//! expected / received / missing / duplicated per client (expected: the
//! frames of the client's site stored with a timestamp in the measured
//! window), bytes per sample on each lane as measured on the topics (key +
//! value + headers), and CPU and RSS of the collectors and the edges.

use anyhow::Context as _;
use futures::{SinkExt, StreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use bess_protocol::{Batch, LiveDecoder};
use bess_tests::{binary, workspace_root, Broker, Proc, Scratch, TestDatabase};

use crate::measure::{self, mib, CpuWindow, Millis, Percentiles};

#[derive(Debug, clap::Args)]
pub struct LanesArgs {
    /// Sites, each a `bess-edge` process polling 3 simulated controllers.
    #[arg(long, default_value_t = 20)]
    sites: usize,
    /// WebSocket clients; client i follows site i mod SITES on instance i mod INSTANCES.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Collector instance counts to run, one stack each.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    instances: Vec<usize>,
    /// How long the measured window lasts, every client connected.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// WebSocket handshakes in flight while the clients connect.
    #[arg(long, default_value_t = 200)]
    connect_parallel: usize,
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    frame: Option<FrameHead>,
}

#[derive(Deserialize)]
struct FrameHead {
    site: String,
    device: String,
    group: String,
    ts_ms: i64,
}

/// What one client saw inside the window.
#[derive(Default)]
struct ClientReport {
    site: usize,
    connected: bool,
    frames: HashSet<(String, String, i64)>,
    duplicates: u64,
    foreign: u64,
    /// Receipt minus the poll timestamp, microseconds.
    latencies: Vec<u64>,
}

struct Window {
    from_ms: AtomicI64,
    to_ms: AtomicI64,
}

impl Window {
    fn contains(&self, ts_ms: i64) -> bool {
        ts_ms >= self.from_ms.load(Ordering::Relaxed) && ts_ms < self.to_ms.load(Ordering::Relaxed)
    }
}

async fn client(
    site: usize,
    site_name: String,
    url: String,
    gate: Arc<Semaphore>,
    connected: Arc<AtomicU64>,
    window: Arc<Window>,
    mut stop: watch::Receiver<bool>,
) -> ClientReport {
    let mut report = ClientReport {
        site,
        ..ClientReport::default()
    };
    let permit = gate.acquire_owned().await;
    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else {
        return report;
    };
    let subscribe = format!(r#"{{"subscribe":{{"sites":["{site_name}"]}}}}"#);
    if socket
        .send(WsMessage::Text(subscribe.into()))
        .await
        .is_err()
    {
        return report;
    }
    drop(permit);
    report.connected = true;
    connected.fetch_add(1, Ordering::Relaxed);
    loop {
        let message = tokio::select! {
            message = socket.next() => message,
            _ = stop.changed() => break,
        };
        let Some(Ok(WsMessage::Text(text))) = message else {
            if message.is_none() {
                report.connected = false;
                break;
            }
            continue;
        };
        let received_us = unix_micros();
        let Ok(incoming) = serde_json::from_str::<Incoming>(&text) else {
            continue;
        };
        let (true, Some(frame)) = (incoming.kind == "frame", incoming.frame) else {
            continue;
        };
        if !window.contains(frame.ts_ms) {
            continue;
        }
        if frame.site != site_name {
            report.foreign += 1;
            continue;
        }
        let latency = (received_us - frame.ts_ms * 1000).max(0) as u64;
        if report
            .frames
            .insert((frame.device, frame.group, frame.ts_ms))
        {
            report.latencies.push(latency);
        } else {
            report.duplicates += 1;
        }
    }
    report
}

/// Bytes and samples on one topic.
#[derive(Default, Debug, Clone, Copy)]
struct LaneBytes {
    messages: u64,
    bytes: u64,
    samples: u64,
    /// Of these, the batches that carry a catalog (the first after a start).
    catalog_bytes: u64,
    catalog_samples: u64,
}

impl LaneBytes {
    fn per_sample(&self) -> f64 {
        self.bytes as f64 / self.samples.max(1) as f64
    }

    /// Without the batches that carry a catalog: what a running site sends.
    fn steady_per_sample(&self) -> f64 {
        (self.bytes - self.catalog_bytes) as f64
            / (self.samples - self.catalog_samples).max(1) as f64
    }
}

/// Read a topic from its start to its end now: bytes (key + value +
/// headers) and samples (decoded: batches, or each site's live chain).
fn measure_topic(brokers: &str, topic: &str, live: bool) -> anyhow::Result<LaneBytes> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-measure-{topic}"))
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32);
    let mut list = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for partition in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        if high > 0 {
            ends.insert(partition, high);
            list.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    consumer.assign(&list)?;
    let mut lane = LaneBytes::default();
    let mut decoders: HashMap<Vec<u8>, LiveDecoder> = HashMap::new();
    let mut done: HashSet<i32> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while done.len() < ends.len() && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_secs(1)) else {
            continue;
        };
        let message = message?;
        if message.offset() + 1 >= ends[&message.partition()] {
            done.insert(message.partition());
        }
        if message.offset() >= ends[&message.partition()] {
            continue;
        }
        let key = message.key().unwrap_or_default();
        let payload = message.payload().unwrap_or_default();
        let headers = message.headers().map_or(0, |h| {
            use rdkafka::message::Headers;
            h.iter()
                .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
                .sum::<usize>()
        });
        let bytes = (key.len() + payload.len() + headers) as u64;
        lane.messages += 1;
        lane.bytes += bytes;
        if live {
            let decoder = decoders.entry(key.to_vec()).or_default();
            lane.samples += decoder
                .decode(payload)
                .map_or(0, |u| u.frames.iter().map(|f| f.values.len() as u64).sum());
        } else if let Ok(batch) = Batch::decode(payload) {
            lane.samples += batch.sample_count() as u64;
            if batch.catalog.is_some() {
                lane.catalog_bytes += bytes;
                lane.catalog_samples += batch.sample_count() as u64;
            }
        }
    }
    Ok(lane)
}

/// The edge config for one site: the example config with this site's id,
/// simulator, broker and buffer, and every other setting at its default.
fn edge_config(
    site: &str,
    sim: &str,
    brokers: &str,
    buffer: &std::path::Path,
) -> anyhow::Result<String> {
    let example = std::fs::read_to_string(workspace_root().join("edge/bess-edge.example.toml"))?;
    let (host, port) = sim.rsplit_once(':').context("sim address")?;
    Ok(example
        .replace("site_id = \"site-001\"", &format!("site_id = \"{site}\""))
        .replace("port = 5020", &format!("port = {port}"))
        .replace("host = \"127.0.0.1\"", &format!("host = \"{host}\""))
        .replace(
            "brokers = \"127.0.0.1:9092\"",
            &format!("brokers = \"{brokers}\""),
        )
        .replace(
            "path = \"bess-edge-buffer.sqlite\"",
            &format!("path = \"{}\"", buffer.display()),
        ))
}

#[derive(Deserialize)]
struct FleetReady {
    sites: Vec<FleetSite>,
}

#[derive(Deserialize)]
struct FleetSite {
    site: String,
    addrs: Vec<String>,
}

pub async fn run(args: LanesArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.sites > 0 && args.clients > 0, "need sites and clients");
    let mut results = Vec::new();
    for &instances in &args.instances {
        results.push((instances, run_once(&args, instances.max(1)).await?));
    }
    println!();
    println!(
        "| figure | {} |",
        results
            .iter()
            .map(|(n, _)| format!("{n} instance(s)"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(results.len()));
    let rows: Vec<(&str, Figure)> = vec![
        (
            "clients connected",
            Box::new(|o: &Outcome| format!("{} of {}", o.connected, o.clients)),
        ),
        (
            "read → client latency p50 / p90 / p99 / max",
            Box::new(|o: &Outcome| {
                format!(
                    "{} / {} / {} / {}",
                    Millis(o.latency.p50),
                    Millis(o.latency.p90),
                    Millis(o.latency.p99),
                    Millis(o.latency.max)
                )
            }),
        ),
        (
            "frames expected / received once (all clients)",
            Box::new(|o: &Outcome| format!("{} / {}", o.expected, o.received)),
        ),
        (
            "missing / duplicated / other sites'",
            Box::new(|o: &Outcome| format!("{} / {} / {}", o.missing, o.duplicates, o.foreign)),
        ),
        (
            "stored lane B/sample, whole run (messages)",
            Box::new(|o: &Outcome| format!("{:.2} ({})", o.stored.per_sample(), o.stored.messages)),
        ),
        (
            "stored lane B/sample without the catalog batches",
            Box::new(|o: &Outcome| format!("{:.2}", o.stored.steady_per_sample())),
        ),
        (
            "live lane B/sample (messages)",
            Box::new(|o: &Outcome| format!("{:.2} ({})", o.live.per_sample(), o.live.messages)),
        ),
        (
            "uplink total B/sample, running site (stored without catalogs + live)",
            Box::new(|o: &Outcome| {
                format!("{:.2}", o.stored.steady_per_sample() + o.live.per_sample())
            }),
        ),
        (
            "collector CPU, all instances (% of a core)",
            Box::new(|o: &Outcome| format!("{:.0} %", o.collector_cpu)),
        ),
        (
            "collector RSS per instance (max)",
            Box::new(|o: &Outcome| mib(o.collector_rss_kib)),
        ),
        (
            "edge CPU per edge, mean (% of a core)",
            Box::new(|o: &Outcome| format!("{:.2} %", o.edge_cpu)),
        ),
        (
            "edge RSS per edge (max)",
            Box::new(|o: &Outcome| mib(o.edge_rss_kib)),
        ),
        (
            "beside: this bench's clients / Tansu (% of a core)",
            Box::new(|o: &Outcome| format!("{:.0} % / {:.0} %", o.bench_cpu, o.broker_cpu)),
        ),
    ];
    for (name, value) in rows {
        println!(
            "| {name} | {} |",
            results
                .iter()
                .map(|(_, o)| value(o))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    Ok(())
}

/// One row of the result table: how to show a figure of an outcome.
type Figure = Box<dyn Fn(&Outcome) -> String>;

struct Outcome {
    clients: usize,
    connected: usize,
    latency: Percentiles,
    expected: u64,
    received: u64,
    missing: u64,
    duplicates: u64,
    foreign: u64,
    stored: LaneBytes,
    live: LaneBytes,
    collector_cpu: f64,
    collector_rss_kib: u64,
    edge_cpu: f64,
    edge_rss_kib: u64,
    bench_cpu: f64,
    broker_cpu: f64,
}

async fn run_once(args: &LanesArgs, instances: usize) -> anyhow::Result<Outcome> {
    println!(
        "== {instances} collector instance(s), {} sites, {} clients, {} s window",
        args.sites,
        args.clients,
        args.duration.as_secs()
    );
    let scratch = Scratch::new(&format!("lanes-bench-{instances}"));
    let broker = Broker::start(&scratch.dir)
        .await
        .context("starting Tansu (deploy/tools/install-tansu.sh, or set BESS_TANSU_BIN)")?;
    let brokers = broker.brokers();
    let database = TestDatabase::create(&format!("lanes_bench_{instances}")).await?;
    let url = database.url();

    let ready = scratch.path("fleet.json");
    let sites = args.sites.to_string();
    let ready_arg = ready.display().to_string();
    let _fleet = Proc::spawn(
        "fleet",
        &binary("bess-sim"),
        &[
            "fleet",
            "--sites",
            &sites,
            "--base-port",
            "0",
            "--ready-file",
            &ready_arg,
        ],
        &scratch.dir,
    )?;
    let fleet: FleetReady =
        bess_tests::wait_for("the fleet's ready file", Duration::from_secs(60), || {
            let ready = ready.clone();
            async move { serde_json::from_str(&std::fs::read_to_string(&ready).ok()?).ok() }
        })
        .await?;

    let mut collectors = Vec::new();
    let mut apis = Vec::new();
    for i in 0..instances {
        let mut collector = Proc::spawn(
            &format!("collector-{}", i + 1),
            &binary("bess-collector"),
            &[
                "run",
                "--database-url",
                &url,
                "--brokers",
                &brokers,
                "--listen",
                "127.0.0.1:0",
                "--auth",
                "disabled",
                "--batch-signatures",
                "optional",
                "--pin-first-key",
            ],
            &scratch.dir,
        )?;
        apis.push(collector.wait_for_url("bess-collector: API on ").await?);
        collectors.push(collector);
    }
    let mut edges = Vec::new();
    for site in &fleet.sites {
        let config = scratch.path(&format!("{}.toml", site.site));
        std::fs::write(
            &config,
            edge_config(
                &site.site,
                &site.addrs[0],
                &brokers,
                &scratch.path(&format!("{}.sqlite", site.site)),
            )?,
        )?;
        let config = config.display().to_string();
        edges.push(Proc::spawn(
            &format!("edge-{}", site.site),
            &binary("bess-edge"),
            &["run", "--config", &config, "--status-listen", "127.0.0.1:0"],
            &scratch.dir,
        )?);
    }
    println!(
        "started the fleet, {} edges and {instances} collector(s)",
        edges.len()
    );

    // Every site's catalog stored (the instances read the live topic back
    // `--live-replay` far, so they hold every site's whole frames already).
    let db = database.client().await?;
    bess_tests::wait_for("every site's frames in the database", Duration::from_secs(120), || {
        let db = &db;
        let sites = fleet.sites.len() as i64;
        async move {
            let n: i64 = db
                .query_one("SELECT count(DISTINCT l.site_id) FROM frames f JOIN layouts l USING (layout_id)", &[])
                .await
                .ok()?
                .get(0);
            (n >= sites).then_some(())
        }
    })
    .await?;

    let window = Arc::new(Window {
        from_ms: AtomicI64::new(i64::MAX),
        to_ms: AtomicI64::new(i64::MAX),
    });
    let connected = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(args.connect_parallel.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut clients = tokio::task::JoinSet::new();
    for index in 0..args.clients {
        let site = index % fleet.sites.len();
        let api = &apis[index % instances];
        clients.spawn(client(
            site,
            fleet.sites[site].site.clone(),
            format!("{}/api/v1/live", api.replacen("http://", "ws://", 1)),
            gate.clone(),
            connected.clone(),
            window.clone(),
            stop_rx.clone(),
        ));
    }
    let connecting = Instant::now();
    let _ = bess_tests::wait_for("every client to connect", Duration::from_secs(300), || {
        let connected = connected.clone();
        let total = args.clients as u64;
        async move { (connected.load(Ordering::Relaxed) >= total).then_some(()) }
    })
    .await;
    println!(
        "{} of {} clients connected in {:.1} s; waiting 2 s for the subscriptions to settle",
        connected.load(Ordering::Relaxed),
        args.clients,
        connecting.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    let collector_cpu: Vec<CpuWindow> = collectors
        .iter()
        .map(|c| CpuWindow::start(c.pid()))
        .collect::<Result<_, _>>()?;
    let edge_cpu: Vec<CpuWindow> = edges
        .iter()
        .map(|e| CpuWindow::start(e.pid()))
        .collect::<Result<_, _>>()?;
    let bench_cpu = CpuWindow::start(std::process::id())?;
    let broker_cpu = CpuWindow::start(broker.pid())?;
    let from_ms = unix_micros() / 1000;
    window.from_ms.store(from_ms, Ordering::SeqCst);
    window
        .to_ms
        .store(from_ms + args.duration.as_millis() as i64, Ordering::SeqCst);
    let started = Instant::now();
    while started.elapsed() < args.duration {
        tokio::time::sleep(
            Duration::from_secs(5).min(args.duration.saturating_sub(started.elapsed())),
        )
        .await;
        let memory = measure::memory(collectors[0].pid())?;
        println!(
            "[{:>4.0} s] collector-1 RSS {}, edges running {}",
            started.elapsed().as_secs_f64(),
            mib(memory.rss_kib),
            edges
                .iter_mut()
                .map(Proc::is_running)
                .filter(|r| *r)
                .count()
        );
    }
    let (bench_cpu, broker_cpu) = (bench_cpu.percent()?, broker_cpu.percent()?);
    let collector_cpu: f64 = collector_cpu
        .iter()
        .map(|w| w.percent())
        .sum::<Result<f64, _>>()?;
    let edge_cpu = edge_cpu
        .iter()
        .map(|w| w.percent())
        .sum::<Result<f64, _>>()?
        / edges.len() as f64;
    let collector_rss_kib = collectors
        .iter()
        .map(|c| measure::memory(c.pid()).map(|m| m.rss_kib))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    let edge_rss_kib = edges
        .iter()
        .map(|e| measure::memory(e.pid()).map(|m| m.rss_kib))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    // Let the last frames of the window reach the clients, stop the edges
    // (they drain their buffers) and wait for the stored lane to settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_tx.send(true).ok();
    let mut reports = Vec::with_capacity(args.clients);
    while let Some(report) = clients.join_next().await {
        reports.push(report?);
    }
    for edge in &mut edges {
        edge.signal("TERM");
    }
    for edge in &mut edges {
        edge.wait_exit(Duration::from_secs(60)).await?;
    }
    let mut last = -1i64;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let n: i64 = db
            .query_one("SELECT count(*) FROM batch_ledger", &[])
            .await?
            .get(0);
        if n == last {
            break;
        }
        last = n;
    }
    let to_ms = window.to_ms.load(Ordering::SeqCst);
    let stored = db
        .query(
            "SELECT s.name, d.name, l.group_name, count(*)::int8 FROM frames f
               JOIN layouts l USING (layout_id) JOIN devices d ON d.device_id = l.device_id
               JOIN sites s ON s.site_id = l.site_id
              WHERE f.ts >= to_timestamp($1::float8 / 1000) AND f.ts < to_timestamp($2::float8 / 1000)
              GROUP BY 1, 2, 3",
            &[&(from_ms as f64), &(to_ms as f64)],
        )
        .await?;
    let mut expected_per_site: HashMap<String, u64> = HashMap::new();
    for row in &stored {
        *expected_per_site.entry(row.get(0)).or_default() += row.get::<_, i64>(3) as u64;
    }
    let stored_lane = tokio::task::spawn_blocking({
        let brokers = brokers.clone();
        move || measure_topic(&brokers, "bess.telemetry", false)
    })
    .await??;
    let live_lane = tokio::task::spawn_blocking({
        let brokers = brokers.clone();
        move || measure_topic(&brokers, "bess.live", true)
    })
    .await??;

    let mut latencies = Vec::new();
    let (mut expected, mut received, mut missing, mut duplicates, mut foreign, mut connected_n) =
        (0, 0, 0, 0, 0, 0);
    for report in &mut reports {
        let want = expected_per_site
            .get(&fleet.sites[report.site].site)
            .copied()
            .unwrap_or(0);
        connected_n += usize::from(report.connected);
        expected += want;
        received += report.frames.len() as u64;
        missing += want.saturating_sub(report.frames.len() as u64);
        duplicates += report.duplicates;
        foreign += report.foreign;
        latencies.append(&mut report.latencies);
    }
    for collector in &mut collectors {
        collector.signal("TERM");
    }
    for collector in &mut collectors {
        let _ = collector.wait_exit(Duration::from_secs(30)).await;
    }
    Ok(Outcome {
        clients: args.clients,
        connected: connected_n,
        latency: Percentiles::of(&mut latencies),
        expected,
        received,
        missing,
        duplicates,
        foreign,
        stored: stored_lane,
        live: live_lane,
        collector_cpu,
        collector_rss_kib,
        edge_cpu,
        edge_rss_kib,
        bench_cpu,
        broker_cpu,
    })
}
