//! `bess-api-bench live`: WebSocket fan-out. Many clients on
//! `GET /api/v1/live`, each subscribed to one site, while the load generator
//! writes one frame per site per second.
//!
//! Sequence: start the stack; a short priming load registers every site's
//! catalog (so catalog sign-up is not measured) and fills the latest
//! values; all clients connect and subscribe (each waits for its
//! snapshot); the measured load runs for `--duration`; the clients drain
//! what is still in flight. Every frame carries `received_ms`, when the
//! collector took its Kafka message off the topic, so a client's latency is
//! its receipt time minus `received_ms` (same host, same clock; whole
//! milliseconds, so figures may read up to 1 ms high). Expected frames per
//! client are the frames its site gained in the database during the
//! measured load; every client should receive each exactly once.

use anyhow::Context as _;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use bess_tests::{get_text, prometheus_value};

use crate::measure::{self, mib, CpuWindow, Millis, Percentiles};
use crate::stack::{finish_load, Auth, Stack};

#[derive(Debug, clap::Args)]
pub struct LiveArgs {
    /// WebSocket clients, spread evenly over the sites (client i follows site i mod SITES).
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Sites written by the load generator (load-site-001, ...), one device
    /// each, one frame per site per second.
    #[arg(long, default_value_t = 100)]
    sites: u16,
    /// How long the measured load runs, with every client connected.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How a client picks its site: a `{"subscribe":{"sites":[..]}}` message
    /// after connecting (it then waits for the snapshot), or `?site=` in the URL.
    #[arg(long, value_enum, default_value_t = SubscribeBy::Message)]
    subscribe_by: SubscribeBy,
    /// WebSocket handshakes in flight while the clients connect.
    #[arg(long, default_value_t = 200)]
    connect_parallel: usize,
    /// How often to print progress.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    progress: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SubscribeBy {
    Message,
    Query,
}

/// Counters shared by all clients, for progress lines.
#[derive(Default)]
struct Progress {
    connected: AtomicU64,
    frames: AtomicU64,
    failed: AtomicU64,
    /// Frames consumed by the collector before this (Unix ms) are not counted.
    count_from_ms: AtomicI64,
}

/// What one client saw.
#[derive(Default)]
struct ClientReport {
    site: usize,
    connected: bool,
    error: Option<String>,
    /// Distinct frames of its site, by (device, ts_ms).
    frames: HashSet<(String, i64)>,
    duplicates: u64,
    /// Frames of another site (a filter bug if not zero).
    foreign: u64,
    lagged_notices: u64,
    /// Receipt minus `received_ms` in microseconds, per frame (device, ts_ms).
    latencies: Vec<((String, i64), u64)>,
    missing_received_ms: bool,
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
    ts_ms: i64,
    received_ms: Option<i64>,
}

pub fn site_name(index: usize) -> String {
    format!("load-site-{:03}", index + 1)
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

pub async fn run(args: LiveArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.sites > 0 && args.clients > 0, "need sites and clients");
    let sites = usize::from(args.sites);
    println!(
        "live fan-out: {} clients over {} sites, subscribing by {:?}, {} s of load",
        args.clients,
        sites,
        args.subscribe_by,
        args.duration.as_secs()
    );
    let stack = Stack::start("live-bench", Auth::Disabled).await?;
    let collector_pid = stack.collector.pid();
    println!("collector pid {collector_pid}, API {}", stack.api);

    println!("priming: 3 s of load so every site has a catalog and latest values");
    stack
        .run_load("load-prime", args.sites, 1, Duration::from_secs(3))
        .await?;
    let db = stack.database.client().await?;
    bess_tests::wait_for(
        "every site's first frames in the database",
        Duration::from_secs(60),
        || {
            let db = &db;
            async move {
                let counts = frames_per_site(db).await.ok()?;
                (counts.len() >= sites).then_some(())
            }
        },
    )
    .await?;

    let progress = Arc::new(Progress::default());
    progress.count_from_ms.store(i64::MAX, Ordering::SeqCst);
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(args.connect_parallel.max(1)));
    let ws_base = stack.api.replacen("http://", "ws://", 1) + "/api/v1/live";
    let connecting = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for index in 0..args.clients {
        clients.spawn(client(
            index % sites,
            ws_base.clone(),
            args.subscribe_by,
            gate.clone(),
            progress.clone(),
            stop_rx.clone(),
        ));
    }
    let all_in = bess_tests::wait_for("every client to connect", Duration::from_secs(300), || {
        let progress = progress.clone();
        let total = args.clients as u64;
        async move {
            let done = progress.connected.load(Ordering::Relaxed)
                + progress.failed.load(Ordering::Relaxed);
            (done >= total).then_some(())
        }
    })
    .await;
    let connected = progress.connected.load(Ordering::Relaxed);
    println!(
        "{connected} of {} clients connected and subscribed in {:.1} s ({} failed){}",
        args.clients,
        connecting.elapsed().as_secs_f64(),
        progress.failed.load(Ordering::Relaxed),
        if all_in.is_err() {
            " — gave up waiting"
        } else {
            ""
        }
    );

    // The measured window: from the load's start to its end.
    let before = frames_per_site(&db).await?;
    let metrics_before = get_text(&format!("{}/metrics", stack.api)).await?;
    progress
        .count_from_ms
        .store(unix_micros() / 1000, Ordering::SeqCst);
    let collector_cpu = CpuWindow::start(collector_pid)?;
    let own_cpu = CpuWindow::start(std::process::id())?;
    let window = Instant::now();
    let mut load = stack.start_load("load", args.sites, 1, args.duration)?;
    let mut tick = tokio::time::interval(args.progress);
    tick.tick().await;
    let mut last = (Instant::now(), 0u64);
    let mut interval_cpu = CpuWindow::start(collector_pid)?;
    while load.is_running() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
        }
        let frames = progress.frames.load(Ordering::Relaxed);
        let rate = (frames - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), frames);
        let memory = measure::memory(collector_pid)?;
        println!(
            "[{:>4.0} s] clients {} | frames received {frames} ({rate:.0}/s) | collector CPU {:.0} % of a core, RSS {}",
            window.elapsed().as_secs_f64(),
            progress.connected.load(Ordering::Relaxed),
            interval_cpu.percent()?,
            mib(memory.rss_kib),
        );
        interval_cpu = CpuWindow::start(collector_pid)?;
    }
    let summary = finish_load(&mut load, args.duration).await?;
    let window_secs = window.elapsed().as_secs_f64();
    let collector_cpu = collector_cpu.percent()?;
    let own_cpu = own_cpu.percent()?;
    let memory = measure::memory(collector_pid)?;
    println!("{summary}");

    // Drain: until the database and the clients have been quiet for 3 s.
    let mut quiet_since = Instant::now();
    let mut seen = (progress.frames.load(Ordering::Relaxed), total(&before));
    let drain_limit = Instant::now() + Duration::from_secs(60);
    while quiet_since.elapsed() < Duration::from_secs(3) && Instant::now() < drain_limit {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = (
            progress.frames.load(Ordering::Relaxed),
            total(&frames_per_site(&db).await?),
        );
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        }
    }
    let after = frames_per_site(&db).await?;
    let metrics_after = get_text(&format!("{}/metrics", stack.api)).await?;
    let delta = |name: &str| {
        prometheus_value(&metrics_after, name) - prometheus_value(&metrics_before, name)
    };

    stop_tx.send(true).ok();
    let mut reports = Vec::with_capacity(args.clients);
    while let Some(report) = clients.join_next().await {
        reports.push(report?);
    }

    let expected: Vec<u64> = (0..sites)
        .map(|i| {
            let name = site_name(i);
            after.get(&name).copied().unwrap_or(0) - before.get(&name).copied().unwrap_or(0)
        })
        .collect();
    let mut latencies = Vec::new();
    // Per frame: its fastest and slowest delivery over the clients of its site.
    let mut per_frame: HashMap<(usize, String, i64), (u64, u64)> = HashMap::new();
    let mut tally = Tally::default();
    for report in &mut reports {
        tally.add(report, expected[report.site]);
        for ((device, ts_ms), latency) in report.latencies.drain(..) {
            latencies.push(latency);
            let span = per_frame
                .entry((report.site, device, ts_ms))
                .or_insert((latency, latency));
            span.0 = span.0.min(latency);
            span.1 = span.1.max(latency);
        }
    }
    let mut first: Vec<u64> = per_frame.values().map(|span| span.0).collect();
    let mut spread: Vec<u64> = per_frame.values().map(|span| span.1 - span.0).collect();
    let first = Percentiles::of(&mut first);
    let spread = Percentiles::of(&mut spread);
    if let Some(error) = reports.iter().find_map(|r| r.error.as_ref()) {
        println!("first client error: {error}");
    }
    anyhow::ensure!(
        !reports.iter().any(|r| r.missing_received_ms),
        "the collector's frames carry no received_ms: it is older than this benchmark"
    );
    let latency = Percentiles::of(&mut latencies);

    println!();
    println!(
        "| figure | {} clients, {} sites, {} s |",
        args.clients,
        sites,
        args.duration.as_secs()
    );
    println!("|---|---|");
    println!(
        "| clients connected / failed or closed early | {} / {} |",
        tally.connected, tally.failed
    );
    println!(
        "| frames stored during the load (all sites) | {} |",
        expected.iter().sum::<u64>()
    );
    println!(
        "| frames expected by clients / received once | {} / {} |",
        tally.expected, tally.received
    );
    println!(
        "| missing / duplicated / other sites' | {} (in {} clients) / {} / {} |",
        tally.missing, tally.clients_missing, tally.duplicates, tally.foreign
    );
    println!(
        "| delivery latency p50 / p90 / p99 / max ({} frames) | {} / {} / {} / {} |",
        latency.count,
        Millis(latency.p50),
        Millis(latency.p90),
        Millis(latency.p99),
        Millis(latency.max)
    );
    println!(
        "| first client of each frame p50 / p99 (Kafka → COMMIT → first socket) | {} / {} |",
        Millis(first.p50),
        Millis(first.p99)
    );
    println!(
        "| spread from first to last client of a frame p50 / p99 (fan-out) | {} / {} |",
        Millis(spread.p50),
        Millis(spread.p99)
    );
    println!(
        "| collector CPU over the {window_secs:.0} s load (% of one core) | {collector_cpu:.0} % |"
    );
    println!(
        "| collector memory: VmRSS at the end / VmHWM | {} / {} |",
        mib(memory.rss_kib),
        mib(memory.peak_kib)
    );
    println!(
        "| coalesced / lagged frames; lagged notices seen by clients | {:.0} / {:.0}; {} |",
        delta("bess_collector_live_coalesced_total"),
        delta("bess_collector_live_lagged_total"),
        tally.lagged_notices
    );
    println!(
        "| send timeouts / idle closes | {:.0} / {:.0} |",
        delta("bess_collector_live_send_timeouts_total"),
        delta("bess_collector_live_idle_closed_total")
    );
    println!("| benchmark clients' own CPU (% of one core) | {own_cpu:.0} % |");
    Ok(())
}

#[derive(Default)]
struct Tally {
    connected: u64,
    failed: u64,
    expected: u64,
    received: u64,
    missing: u64,
    clients_missing: u64,
    duplicates: u64,
    foreign: u64,
    lagged_notices: u64,
}

impl Tally {
    fn add(&mut self, report: &ClientReport, expected: u64) {
        if !report.connected || report.error.is_some() {
            self.failed += 1;
        }
        if !report.connected {
            return;
        }
        self.connected += 1;
        let received = report.frames.len() as u64;
        self.expected += expected;
        self.received += received;
        let missing = expected.saturating_sub(received);
        self.missing += missing;
        self.clients_missing += u64::from(missing > 0);
        self.duplicates += report.duplicates;
        self.foreign += report.foreign;
        self.lagged_notices += report.lagged_notices;
    }
}

fn total(counts: &HashMap<String, u64>) -> u64 {
    counts.values().sum()
}

/// Stored frames per site name.
async fn frames_per_site(db: &tokio_postgres::Client) -> anyhow::Result<HashMap<String, u64>> {
    let rows = db
        .query(
            "SELECT s.name, count(*) FROM frames f
             JOIN layouts l USING (layout_id) JOIN sites s ON s.site_id = l.site_id
             GROUP BY s.name",
            &[],
        )
        .await
        .context("counting frames per site")?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
        .collect())
}

/// One WebSocket client: connect, subscribe to `site`, then count and time
/// frames until told to stop.
async fn client(
    site: usize,
    ws_base: String,
    subscribe_by: SubscribeBy,
    gate: Arc<Semaphore>,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> ClientReport {
    let mut report = ClientReport {
        site,
        ..ClientReport::default()
    };
    let name = site_name(site);
    let permit = gate.acquire().await.expect("gate open");
    let url = match subscribe_by {
        SubscribeBy::Message => ws_base,
        SubscribeBy::Query => format!("{ws_base}?site={name}"),
    };
    let socket = match tokio_tungstenite::connect_async(&url).await {
        Ok((socket, _)) => socket,
        Err(e) => {
            report.error = Some(format!("connecting: {e}"));
            progress.failed.fetch_add(1, Ordering::Relaxed);
            return report;
        }
    };
    let (mut sink, mut stream) = socket.split();
    if subscribe_by == SubscribeBy::Message {
        let subscribe = serde_json::json!({ "subscribe": { "sites": [name] } }).to_string();
        let snapshot = async {
            sink.send(Message::text(subscribe)).await?;
            while let Some(message) = stream.next().await {
                if let Message::Text(text) = message? {
                    let incoming: Incoming = serde_json::from_str(&text)?;
                    match incoming.kind.as_str() {
                        "snapshot" => return Ok(()),
                        "error" => anyhow::bail!("subscribing: {text}"),
                        _ => {}
                    }
                }
            }
            anyhow::bail!("closed before the snapshot")
        };
        if let Err(e) = snapshot.await {
            report.error = Some(format!("{e:#}"));
            progress.failed.fetch_add(1, Ordering::Relaxed);
            return report;
        }
    }
    drop(permit);
    report.connected = true;
    progress.connected.fetch_add(1, Ordering::Relaxed);

    loop {
        let message = tokio::select! {
            _ = stop.changed() => break,
            message = stream.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                report.error = Some("closed by the collector".into());
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                report.error = Some(format!("reading: {e}"));
                break;
            }
        };
        let arrived_us = unix_micros();
        let incoming: Incoming = match serde_json::from_str(&text) {
            Ok(incoming) => incoming,
            Err(e) => {
                report.error = Some(format!("not JSON: {e}"));
                continue;
            }
        };
        match (incoming.kind.as_str(), incoming.frame) {
            ("frame", Some(frame)) => {
                let Some(received_ms) = frame.received_ms else {
                    report.missing_received_ms = true;
                    continue;
                };
                if received_ms < progress.count_from_ms.load(Ordering::Relaxed) {
                    continue;
                }
                if frame.site != name {
                    report.foreign += 1;
                    continue;
                }
                progress.frames.fetch_add(1, Ordering::Relaxed);
                let key = (frame.device, frame.ts_ms);
                if report.frames.insert(key.clone()) {
                    let latency = (arrived_us - received_ms * 1000).max(0) as u64;
                    report.latencies.push((key, latency));
                } else {
                    report.duplicates += 1;
                }
            }
            ("lagged", _) => report.lagged_notices += 1,
            _ => {}
        }
    }
    let _ = sink.close().await;
    report
}
