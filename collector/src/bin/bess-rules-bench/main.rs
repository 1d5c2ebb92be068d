//! `bess-rules-bench`: what processing costs the collector, measured in one
//! run on one broker.
//!
//! 1. **Ingest with and without rules.** The topic is loaded with a fleet
//!    of small sites; one collector drains it with no rules, then another
//!    (own consumer group, own database) drains the same messages with
//!    `--rules N` alert rules and `--derived M` derived points. Printed:
//!    both rates and their ratio, episodes, derived frames.
//! 2. **Threshold → notification latency.** A few sites send one-second
//!    batches of current readings whose `soc` crosses a threshold every
//!    ten seconds; a webhook receiver in this process records when each
//!    episode's notification arrives. Printed: p50/p90/p99/max from the
//!    reading that crossed (the episode's start) to the webhook's receipt.
//!    The edge's batch seal (15 s by default) comes on top: this measures
//!    the collector, its transaction, the outbox and the notifier.
//!
//! ```sh
//! cargo run --release -p bess-collector --bin bess-rules-bench -- --sites 1000 --seconds 120
//! ```

use axum::routing::post;
use clap::Parser;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use bess_collector::ingest::KafkaSettings;
use bess_collector::service::{self, CollectorSettings, StorageSettings};
use bess_collector::storage::StoragePreference;
use bess_collector::time::unix_ms_now;
use bess_protocol::*;

#[path = "../bess-collector-bench/shapes.rs"]
#[allow(dead_code)]
mod shapes;
#[path = "../bench-support/stack.rs"]
mod stack;

use shapes::{small_catalog, small_frames};
use stack::{counter, quantile, Broker, ScratchDatabases};

#[derive(Parser)]
#[command(
    name = "bess-rules-bench",
    about = "Collector ingest with and without alert rules and derived points; threshold-to-notification latency"
)]
struct Args {
    /// Number of simulated sites (3 controllers x 20 points each).
    #[arg(long, default_value_t = 1000)]
    sites: usize,
    /// Seconds of data per site.
    #[arg(long, default_value_t = 120)]
    seconds: i64,
    /// Seconds of frames per batch (the edge's default seal).
    #[arg(long, default_value_t = 15)]
    batch_seconds: i64,
    /// Alert rules, spread over the sites (threshold, rate of change, stale, deviation).
    #[arg(long, default_value_t = 10_000)]
    rules: usize,
    /// Derived points, spread over the sites.
    #[arg(long, default_value_t = 1_000)]
    derived: usize,
    /// Topic partitions.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Sites of the latency phase.
    #[arg(long, default_value_t = 20)]
    latency_sites: usize,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 60)]
    latency_seconds: u64,
    /// PostgreSQL server (admin database); the bench creates and drops its own databases.
    #[arg(
        long,
        env = "BESS_TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    admin_url: String,
    /// Tansu binary.
    #[arg(long, env = "BESS_TANSU_BIN")]
    tansu: Option<PathBuf>,
}

const TOPIC: &str = "bess.telemetry";
const LATENCY_TOPIC: &str = "bess.latency";

fn site_name(site: usize) -> String {
    format!("site-{site:04}")
}

/// `rules` rules and `derived` derived points over `sites` sites of the
/// small shape, and one webhook receiver.
fn rules_file(sites: usize, rules: usize, derived: usize, webhook: &str) -> String {
    let mut out =
        format!("[[receiver]]\nname = \"bench\"\nkind = \"webhook\"\nurl = \"{webhook}\"\n\n");
    for r in 0..rules {
        let site = site_name(r % sites);
        let device = 1 + (r / sites) % 3;
        let point = 1 + (r / sites) % 7;
        let body = match (r / sites) % 10 {
            // fast_i reads about 50 + i with a wobble of +-0.2: a threshold
            // just above that flaps, as a badly tuned real one does.
            0..=5 => format!(
                "point = \"fast_{point}\"\nkind = \"threshold\"\nabove = {}\nhysteresis = 0.05\nfor = \"5s\"",
                50.0 + point as f64 + 0.1
            ),
            6 | 7 => format!(
                "point = \"fast_{point}\"\nkind = \"rate_of_change\"\nmax_change = 0.3\nwindow = \"10s\""
            ),
            8 => "point = \"soc\"\nkind = \"stale\"\nafter = \"30s\"".to_owned(),
            _ => "point = \"fast_*\"\nkind = \"deviation\"\nmax_spread = 8.0\nfor = \"10s\"".to_owned(),
        };
        out.push_str(&format!(
            "[[rule]]\nname = \"r{r}\"\nsite = \"{site}\"\ndevice = \"bms-{device}\"\n{body}\n\n"
        ));
    }
    for d in 0..derived {
        let site = site_name(d % sites);
        let n = d / sites;
        out.push_str(&format!(
            "[[derived]]\nname = \"power_{n}\"\nsite = \"{site}\"\nexpression = \"sum(*/fast_{}) / 3\"\n\n",
            1 + n % 7
        ));
    }
    out
}

fn batches(args: &Args, t0_ms: i64) -> Vec<Batch> {
    let catalog = small_catalog();
    let mut out = Vec::new();
    for start in (0..args.seconds).step_by(args.batch_seconds as usize) {
        for site in 0..args.sites {
            out.push(Batch {
                site: SiteId::new(site_name(site)).expect("valid"),
                seq: BatchSeq(1 + (start / args.batch_seconds) as u64),
                catalog_hash: catalog.hash(),
                catalog: (start == 0).then(|| catalog.clone()),
                frames: small_frames(
                    site,
                    t0_ms,
                    start,
                    (start + args.batch_seconds).min(args.seconds),
                ),
                gaps: vec![],
            });
        }
    }
    out
}

fn settings(
    database_url: &str,
    brokers: &str,
    topic: &str,
    group: &str,
    rules_file: Option<PathBuf>,
) -> CollectorSettings {
    CollectorSettings {
        database_url: database_url.to_owned(),
        read_database_url: None,
        pool_size: 8,
        kafka: KafkaSettings {
            brokers: brokers.to_owned(),
            topic: topic.into(),
            group: group.into(),
            session_timeout: Duration::from_secs(2),
            properties: vec![],
            dead_letter_topic: None,
        },
        live_topic: None,
        live_replay: Duration::ZERO,
        create_topic_partitions: None,
        listen: ([127, 0, 0, 1], stack::free_port()).into(),
        database_wait: Duration::from_secs(10),
        storage: StorageSettings {
            preference: StoragePreference::Auto,
            retention: None,
            maintenance_interval: Duration::from_secs(3600),
        },
        live_timings: Default::default(),
        rules_file,
        signatures: bess_collector::site_keys::SignaturePolicy::MIGRATING,
        http: Default::default(),
    }
}

/// What one drain of the topic measured.
struct Drain {
    seconds: f64,
    episodes: f64,
    derived_frames: f64,
}

/// Run a collector over the whole topic until `samples` more samples are
/// written; time it from its first message.
async fn drain(
    metrics: &metrics_exporter_prometheus::PrometheusHandle,
    settings: CollectorSettings,
    samples: u64,
) -> anyhow::Result<Drain> {
    let before = |name| counter(&metrics.render(), name);
    let (written0, received0) = (
        before("bess_collector_samples_written_total"),
        before("bess_collector_messages_received_total"),
    );
    let (episodes0, derived0) = (
        before("bess_collector_alert_episodes_fired_total"),
        before("bess_collector_derived_frames_written_total"),
    );
    let cancel = CancellationToken::new();
    let collector = tokio::spawn(service::run(settings, metrics.clone(), cancel.clone()));
    let deadline = Instant::now() + Duration::from_secs(3600);
    while counter(&metrics.render(), "bess_collector_messages_received_total") <= received0 {
        anyhow::ensure!(Instant::now() < deadline, "the collector received nothing");
        if collector.is_finished() {
            collector.await??;
            anyhow::bail!("the collector stopped");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start = Instant::now();
    while counter(&metrics.render(), "bess_collector_samples_written_total") - written0
        < samples as f64
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the collector did not finish in an hour"
        );
        if collector.is_finished() {
            collector.await??;
            anyhow::bail!("the collector stopped");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let text = metrics.render();
    let drain = Drain {
        seconds,
        episodes: counter(&text, "bess_collector_alert_episodes_fired_total") - episodes0,
        derived_frames: counter(&text, "bess_collector_derived_frames_written_total") - derived0,
    };
    cancel.cancel();
    collector.await??;
    Ok(drain)
}

/// Webhook receipts: episode id → (started_at ms, received ms).
type Receipts = Arc<Mutex<HashMap<i64, (i64, i64)>>>;

async fn webhook_receiver() -> anyhow::Result<(String, Receipts)> {
    let receipts: Receipts = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/hook",
        post({
            let receipts = receipts.clone();
            move |body: axum::Json<serde_json::Value>| {
                let received = unix_ms_now();
                let receipts = receipts.clone();
                async move {
                    let episode = &body["episode"];
                    if body["transition"] == "firing" {
                        let started = episode["started_at"]
                            .as_str()
                            .and_then(|t| {
                                time::OffsetDateTime::parse(
                                    t,
                                    &time::format_description::well_known::Rfc3339,
                                )
                                .ok()
                            })
                            .map(bess_collector::time::unix_ms);
                        if let (Some(id), Some(started)) = (episode["id"].as_i64(), started) {
                            receipts
                                .lock()
                                .expect("receipts")
                                .entry(id)
                                .or_insert((started, received));
                        }
                    }
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    Ok((url, receipts))
}

/// Sites sending one-second batches of current readings; soc crosses 80 %
/// upwards every ten seconds (5 s above, 5 s below).
async fn latency(
    args: &Args,
    broker: &Broker,
    metrics: &metrics_exporter_prometheus::PrometheusHandle,
    database_url: &str,
    scratch: &std::path::Path,
) -> anyhow::Result<(usize, Vec<f64>)> {
    let (webhook, receipts) = webhook_receiver().await?;
    let rules = scratch.join("latency-rules.toml");
    std::fs::write(
        &rules,
        format!(
            "[[receiver]]\nname = \"bench\"\nkind = \"webhook\"\nurl = \"{webhook}\"\n\n\
             [[rule]]\nname = \"soc-high\"\ndevice = \"bms-1\"\npoint = \"soc\"\nkind = \"threshold\"\nabove = 80.0\nhysteresis = 1.0\n"
        ),
    )?;
    broker.create_topic(LATENCY_TOPIC, args.partitions).await?;
    let cancel = CancellationToken::new();
    let collector = tokio::spawn(service::run(
        settings(
            database_url,
            &broker.brokers,
            LATENCY_TOPIC,
            "latency",
            Some(rules),
        ),
        metrics.clone(),
        cancel.clone(),
    ));
    let producer = broker.producer()?;
    let catalog = small_catalog();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for second in 0..args.latency_seconds {
        tick.tick().await;
        let now = unix_ms_now();
        let high = (second / 5) % 2 == 1;
        let messages: Vec<(String, Vec<u8>)> = (0..args.latency_sites)
            .map(|site| {
                // Read just now (the frames' offsets per device and site stay under 64 ms).
                let mut frames = small_frames(site, now - 64, 0, 1);
                for frame in frames.iter_mut().filter(|f| f.group.0 == 0) {
                    frame.values[0] = Reading::Int(if high { 9000 } else { 5000 });
                }
                let batch = Batch {
                    site: SiteId::new(format!("live-{site:03}")).expect("valid"),
                    seq: BatchSeq(1 + second),
                    catalog_hash: catalog.hash(),
                    catalog: (second == 0).then(|| catalog.clone()),
                    frames,
                    gaps: vec![],
                };
                Ok((batch.site.as_str().to_owned(), batch.encode(Codec::Zstd)?))
            })
            .collect::<Result<_, EncodeError>>()?;
        stack::produce(&producer, LATENCY_TOPIC, &messages).await?;
    }
    // Let the last notifications arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cancel.cancel();
    collector.await??;
    let receipts = receipts.lock().expect("receipts");
    let latencies = receipts
        .values()
        .map(|(started, received)| (received - started) as f64)
        .collect();
    Ok((receipts.len(), latencies))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tansu = stack::tansu_binary(args.tansu.clone())?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let mut databases = ScratchDatabases::new(&args.admin_url).await?;
    let result = run(&args, &tansu, &metrics, &mut databases).await;
    databases.drop_all().await;
    result
}

async fn run(
    args: &Args,
    tansu: &std::path::Path,
    metrics: &metrics_exporter_prometheus::PrometheusHandle,
    databases: &mut ScratchDatabases,
) -> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(format!("bess-rules-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let broker = Broker::start(tansu, &scratch).await?;
    broker.create_topic(TOPIC, args.partitions).await?;

    // Yesterday 06:00 UTC: old enough that nothing is "now", recent enough
    // for the default partitions.
    let today_ms = unix_ms_now().div_euclid(86_400_000) * 86_400_000;
    let t0_ms = today_ms - 86_400_000 + 6 * 3_600_000;
    eprintln!("encoding {} sites x {} s ...", args.sites, args.seconds);
    let batches = batches(args, t0_ms);
    let samples: u64 = batches.iter().map(|b| b.sample_count() as u64).sum();
    let messages: Vec<(String, Vec<u8>)> = batches
        .iter()
        .map(|b| {
            Ok((
                b.site.as_str().to_owned(),
                b.encode_with(Codec::Zstd, Effort::Compact)?,
            ))
        })
        .collect::<Result<_, EncodeError>>()?;
    eprintln!(
        "producing {} messages ({samples} samples) ...",
        messages.len()
    );
    stack::produce(&broker.producer()?, TOPIC, &messages).await?;

    let (webhook, _receipts) = webhook_receiver().await?;
    let rules_path = scratch.join("rules.toml");
    std::fs::write(
        &rules_path,
        rules_file(args.sites, args.rules, args.derived, &webhook),
    )?;

    eprintln!("draining without rules ...");
    let plain_db = databases.create("plain").await?;
    let plain = drain(
        metrics,
        settings(&plain_db, &broker.brokers, TOPIC, "plain", None),
        samples,
    )
    .await?;
    eprintln!(
        "draining with {} rules and {} derived points ...",
        args.rules, args.derived
    );
    let rules_db = databases.create("rules").await?;
    let with_rules = drain(
        metrics,
        settings(&rules_db, &broker.brokers, TOPIC, "rules", Some(rules_path)),
        samples,
    )
    .await?;

    eprintln!(
        "latency: {} sites for {} s ...",
        args.latency_sites, args.latency_seconds
    );
    let latency_db = databases.create("latency").await?;
    let (episodes, mut latencies) = latency(args, &broker, metrics, &latency_db, &scratch).await?;
    let _ = std::fs::remove_dir_all(&scratch);

    let rate = |d: &Drain| samples as f64 / d.seconds;
    println!(
        "bess-rules-bench: {} sites x {} s ({samples} samples, {} messages, {} s batches), {} partitions",
        args.sites,
        args.seconds,
        messages.len(),
        args.batch_seconds,
        args.partitions
    );
    println!(
        "  ingest without rules      {:>12.0} samples/s  ({:.2} s)",
        rate(&plain),
        plain.seconds
    );
    println!(
        "  ingest with rules         {:>12.0} samples/s  ({:.2} s; {} rules, {} derived points)",
        rate(&with_rules),
        with_rules.seconds,
        args.rules,
        args.derived
    );
    println!(
        "  ratio                     {:>12.2}",
        rate(&with_rules) / rate(&plain)
    );
    println!("  episodes fired            {:>12.0}", with_rules.episodes);
    println!(
        "  derived frames stored     {:>12.0}",
        with_rules.derived_frames
    );
    println!(
        "  threshold -> webhook      p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms  ({episodes} episodes of {} sites sending 1 s batches; the edge's seal comes on top)",
        quantile(&mut latencies, 0.5),
        quantile(&mut latencies, 0.9),
        quantile(&mut latencies, 0.99),
        quantile(&mut latencies, 1.0),
        args.latency_sites
    );
    Ok(())
}
