//! `bess-collector-bench`: loads a Tansu broker with realistic batches for
//! many sites, then measures in the same run the collector's sustained
//! ingest (samples/s committed, Kafka → database) against the ceiling (a raw
//! binary COPY of the same rows into the same schema, no Kafka, no
//! decoding), bytes per sample on the topic and on disk, the rollup refresh,
//! and the p99 latency of `/api/v1/series` for one day of one point at raw,
//! 1-minute and 1-hour resolution.
//!
//! ```sh
//! cargo run --release -p bess-collector --bin bess-collector-bench -- --sites 1000 --seconds 300
//! ```

use bytes::Bytes;
use clap::Parser;
use futures::{pin_mut, SinkExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use bess_collector::catalog::CatalogRegistry;
use bess_collector::copy::{FrameCopyEncoder, COPY_FRAMES, COPY_HEADER, COPY_TRAILER};
use bess_collector::ingest::KafkaSettings;
use bess_collector::service::{self, CollectorSettings, StorageSettings};
use bess_collector::storage::{FramePartitions, StoragePreference};
use bess_protocol::*;

mod shapes;
#[path = "../bench-support/stack.rs"]
mod stack;

use shapes::{small_catalog, small_frames, Shape};
use stack::{connect, counter, free_port};

#[derive(Parser)]
#[command(
    name = "bess-collector-bench",
    about = "Collector ingest vs raw COPY ceiling, bytes per sample, series latency"
)]
struct Args {
    /// Number of simulated sites.
    #[arg(long, default_value_t = 1000)]
    sites: usize,
    /// Seconds of data per site.
    #[arg(long, default_value_t = 300)]
    seconds: i64,
    /// Seconds of frames per batch (the edge seals every `batch.max_age`, 15 s by default).
    #[arg(long, default_value_t = 15)]
    batch_seconds: i64,
    /// Topic partitions.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
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
    /// Fleet shape: many small sites, or cell-level sites (use `--sites 100`).
    #[arg(long, value_enum, default_value_t = Shape::Small)]
    shape: Shape,
    /// Series requests per resolution for the latency figures.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Sign every batch with its site's own key (enrolled before the
    /// collector starts) and require signatures, as a production collector
    /// does; compare with a run without it.
    #[arg(long)]
    signed: bool,
}

/// The bench's key of site `site`: the same on every run.
fn site_signer(site: usize) -> SiteSigner {
    let mut seed = [7u8; 32];
    seed[..8].copy_from_slice(&(site as u64).to_le_bytes());
    SiteSigner::from_seed(seed)
}

/// Bytes the live lane would carry for the same frames: each site's frames
/// of one second in one message, encoded as the edge encodes them (whole
/// at the edge's default interval), key = site id.
fn live_lane_bytes(args: &Args, t0_ms: i64) -> usize {
    let hash = args.shape.catalog().hash();
    (0..args.sites)
        .map(|site| {
            let key = format!("site-{site:04}").len();
            let mut encoder = LiveEncoder::new(hash, DEFAULT_KEYFRAME_EVERY_MS, site as u64);
            (0..args.seconds)
                .map(|s| {
                    key + encoder
                        .encode(&args.shape.frames(site, t0_ms, s, s + 1))
                        .len()
                })
                .sum::<usize>()
        })
        .sum()
}

fn batches(args: &Args, t0_ms: i64) -> Vec<Batch> {
    let catalog = args.shape.catalog();
    let mut out = Vec::new();
    for start in (0..args.seconds).step_by(args.batch_seconds as usize) {
        for site in 0..args.sites {
            out.push(Batch {
                site: SiteId::new(format!("site-{site:04}")).expect("valid"),
                seq: BatchSeq(1 + (start / args.batch_seconds) as u64),
                catalog_hash: catalog.hash(),
                catalog: (start == 0).then(|| catalog.clone()),
                frames: args.shape.frames(
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

async fn disk_bytes(client: &tokio_postgres::Client) -> anyhow::Result<i64> {
    Ok(client
        .query_one(
            "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0)::int8 FROM pg_inherits WHERE inhparent = 'frames'::regclass",
            &[],
        )
        .await?
        .get(0))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tansu = stack::tansu_binary(args.tansu.clone())?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;

    // Databases: one for the collector, one for the ceiling.
    let mut databases = stack::ScratchDatabases::new(&args.admin_url).await?;
    let collector_url = databases.create("collector").await?;
    let ceiling_url = databases.create("ceiling").await?;
    let result = run(&args, &tansu, &metrics, &collector_url, &ceiling_url).await;
    databases.drop_all().await;
    result
}

async fn run(
    args: &Args,
    tansu: &std::path::Path,
    metrics: &metrics_exporter_prometheus::PrometheusHandle,
    collector_url: &str,
    ceiling_url: &str,
) -> anyhow::Result<()> {
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let today_ms = now_ms.div_euclid(86_400_000) * 86_400_000;
    let t0_ms = today_ms - 86_400_000 + 6 * 3_600_000; // yesterday 06:00 UTC

    // Broker.
    let scratch = std::env::temp_dir().join(format!("bess-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let broker = stack::Broker::start(tansu, &scratch).await?;
    broker
        .create_topic("bess.telemetry", args.partitions)
        .await?;
    let brokers = broker.brokers.clone();

    // Load the topic.
    eprintln!("encoding {} sites x {} s ...", args.sites, args.seconds);
    let batches = batches(args, t0_ms);
    let samples: u64 = batches.iter().map(|b| b.sample_count() as u64).sum();
    let signers: Vec<SiteSigner> = if args.signed {
        (0..args.sites).map(site_signer).collect()
    } else {
        Vec::new()
    };
    let payloads: Vec<(String, Vec<u8>)> = batches
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let bytes = match signers.get(i % args.sites.max(1)) {
                Some(signer) => b.encode_signed(Codec::Zstd, Effort::Compact, signer)?,
                None => b.encode_with(Codec::Zstd, Effort::Compact)?,
            };
            Ok((b.site.as_str().to_owned(), bytes))
        })
        .collect::<Result<_, EncodeError>>()?;
    if args.signed {
        eprintln!("enrolling {} site keys ...", signers.len());
        let pool = service::pool(collector_url, 2)?;
        service::prepare_database(&pool, Duration::from_secs(10)).await?;
        let mut client = pool.get().await?;
        for (site, signer) in signers.iter().enumerate() {
            bess_collector::site_keys::store::enrol(
                &mut client,
                &bess_collector::site_keys::Enrolment {
                    site: format!("site-{site:04}"),
                    public_key: signer.public_key(),
                    valid_from: None,
                    valid_until: None,
                    note: "bench".into(),
                    by: "bench".into(),
                },
            )
            .await?;
        }
    }
    let topic_bytes: usize = payloads.iter().map(|(k, v)| k.len() + v.len()).sum();
    let live_bytes = live_lane_bytes(args, t0_ms);
    eprintln!(
        "producing {} messages ({samples} samples) ...",
        payloads.len()
    );
    let producer = broker.producer()?;
    let produce = |range: std::ops::Range<usize>| {
        stack::produce(&producer, "bess.telemetry", &payloads[range])
    };
    // Round 1: each site's first batch, which carries its catalog.
    produce(0..args.sites).await?;

    // The collector, in this process.
    let api_port = free_port();
    let cancel = CancellationToken::new();
    let settings = CollectorSettings {
        database_url: collector_url.to_owned(),
        read_database_url: None,
        pool_size: 8,
        kafka: KafkaSettings {
            brokers: brokers.clone(),
            topic: "bess.telemetry".into(),
            group: "bench".into(),
            session_timeout: Duration::from_secs(2),
            properties: vec![],
            dead_letter_topic: Some("bess.telemetry.dlq".into()),
        },
        live_topic: None,
        live_replay: std::time::Duration::ZERO,
        create_topic_partitions: None,
        listen: ([127, 0, 0, 1], api_port).into(),
        database_wait: Duration::from_secs(10),
        storage: StorageSettings {
            preference: StoragePreference::Auto,
            retention: None,
            maintenance_interval: Duration::from_secs(3600),
        },
        live_timings: Default::default(),
        rules_file: None,
        signatures: if args.signed {
            bess_collector::site_keys::SignaturePolicy::STRICT
        } else {
            bess_collector::site_keys::SignaturePolicy::MIGRATING
        },
        http: Default::default(),
    };
    let collector = tokio::spawn(service::run(settings, metrics.clone(), cancel.clone()));
    let deadline = Instant::now() + Duration::from_secs(1800);
    let wait_written = |target: u64| async move {
        loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the collector did not finish within 30 minutes"
            );
            if counter(&metrics.render(), "bess_collector_samples_written_total") as u64 >= target {
                return anyhow::Ok(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let warmup: u64 = batches
        .iter()
        .take(args.sites)
        .map(|b| b.sample_count() as u64)
        .sum();
    loop {
        if counter(&metrics.render(), "bess_collector_messages_received_total") > 0.0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the collector received nothing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let signup_start = Instant::now();
    let signup_s = (wait_written(warmup).await? - signup_start).as_secs_f64();
    // Round 2, timed from the first send: the collector consumes while it is produced.
    // Start both timed phases from a clean checkpoint, so neither pays for the other's dirty pages.
    connect(collector_url)
        .await?
        .batch_execute("CHECKPOINT")
        .await?;
    eprintln!(
        "producing the remaining {} messages ...",
        payloads.len() - args.sites
    );
    let steady_start = Instant::now();
    produce(args.sites..payloads.len()).await?;
    let steady_s = (wait_written(samples).await? - steady_start).as_secs_f64();
    let transactions = counter(&metrics.render(), "bess_collector_transactions_total");
    let collector_rate = (samples - warmup) as f64 / steady_s;

    let db = connect(collector_url).await?;
    db.batch_execute("VACUUM ANALYZE").await?;
    let disk = disk_bytes(&db).await?;

    // The ceiling: the same rows by binary COPY, the same transaction sizes, no Kafka, no decoding.
    let ceiling_pool = service::pool(ceiling_url, 2)?;
    service::prepare_database(&ceiling_pool, Duration::from_secs(5)).await?;
    let mut ceiling = connect(ceiling_url).await?;
    let catalogs = CatalogRegistry::default();
    let catalog = args.shape.catalog();
    let per_tx = ((payloads.len() as f64) / transactions.max(1.0))
        .ceil()
        .max(1.0) as usize;
    // Catalog registration, first time and after a restart (a new registry
    // reading back what is registered), on the ceiling database.
    let site_names: std::collections::BTreeSet<&str> =
        batches.iter().map(|b| b.site.as_str()).collect();
    let register_start = Instant::now();
    for site in &site_names {
        let site_id = catalogs.site_id(&ceiling, site).await?;
        catalogs
            .register(&mut ceiling, site_id, catalog.hash(), &catalog)
            .await?;
    }
    let register_ms = register_start.elapsed().as_secs_f64() * 1e3 / site_names.len() as f64;
    let restarted = CatalogRegistry::default();
    let reread_start = Instant::now();
    for site in &site_names {
        let site_id = restarted.site_id(&ceiling, site).await?;
        restarted
            .register(&mut ceiling, site_id, catalog.hash(), &catalog)
            .await?;
    }
    let reread_ms = reread_start.elapsed().as_secs_f64() * 1e3 / site_names.len() as f64;
    eprintln!("ceiling: COPY in transactions of {per_tx} batches ...");
    let mut chunks: Vec<Vec<Bytes>> = Vec::new();
    let mut days = std::collections::BTreeSet::new();
    for group in batches.chunks(per_tx) {
        let mut chunk = Vec::new();
        for batch in group {
            let site_id = catalogs.site_id(&ceiling, batch.site.as_str()).await?;
            let layouts = catalogs
                .register(&mut ceiling, site_id, catalog.hash(), &catalog)
                .await?;
            let mut encoder = FrameCopyEncoder::default();
            for frame in &batch.frames {
                let layout = &layouts[usize::from(frame.group.0)];
                encoder.frame(layout.layout_id, frame.ts_ms, &layout.points, &frame.values);
                days.insert(frame.ts_ms.div_euclid(86_400_000));
            }
            chunk.push(Bytes::from(encoder.buf));
        }
        chunks.push(chunk);
    }
    FramePartitions::default().ensure(&ceiling, &days).await?;
    ceiling.batch_execute("CHECKPOINT").await?;
    let copy_start = Instant::now();
    for chunk in &chunks {
        let tx = ceiling.transaction().await?;
        let sink = tx.copy_in::<_, Bytes>(COPY_FRAMES).await?;
        pin_mut!(sink);
        sink.feed(Bytes::from_static(COPY_HEADER)).await?;
        for rows in chunk {
            sink.feed(rows.clone()).await?;
        }
        sink.feed(Bytes::from_static(COPY_TRAILER)).await?;
        sink.finish().await?;
        tx.commit().await?;
    }
    let ceiling_s = copy_start.elapsed().as_secs_f64();
    let ceiling_rate = samples as f64 / ceiling_s;

    // One day of one site for the series latency (written by COPY, then rolled up).
    let day_start = today_ms - 86_400_000;
    let site_id = catalogs.site_id(&db, "site-day").await?;
    let mut db_mut = connect(collector_url).await?;
    let catalog = small_catalog();
    let layouts = CatalogRegistry::default()
        .register(&mut db_mut, site_id, catalog.hash(), &catalog)
        .await?;
    let mut encoder = FrameCopyEncoder::default();
    for frame in small_frames(0, day_start, 0, 86_400) {
        let layout = &layouts[usize::from(frame.group.0)];
        encoder.frame(layout.layout_id, frame.ts_ms, &layout.points, &frame.values);
    }
    {
        let tx = db_mut.transaction().await?;
        let sink = tx.copy_in::<_, Bytes>(COPY_FRAMES).await?;
        pin_mut!(sink);
        sink.feed(Bytes::from_static(COPY_HEADER)).await?;
        sink.feed(Bytes::from(encoder.buf)).await?;
        sink.feed(Bytes::from_static(COPY_TRAILER)).await?;
        sink.finish().await?;
        tx.execute(
            "INSERT INTO rollup_pending SELECT generate_series($1::timestamptz, $2::timestamptz - interval '1 minute', interval '1 minute') ON CONFLICT DO NOTHING",
            &[&bess_collector::time::timestamp(day_start), &bess_collector::time::timestamp(day_start + 86_400_000)],
        )
        .await?;
        tx.commit().await?;
    }
    let refresh_start = Instant::now();
    let pool = service::pool(collector_url, 1)?;
    service::maintain_once(&pool, &FramePartitions::default(), None).await?;
    let refresh_s = refresh_start.elapsed().as_secs_f64();
    let rolled: i64 = db
        .query_one("SELECT count(*) FROM frames", &[])
        .await?
        .get(0);
    db.batch_execute("ANALYZE").await?;

    let http = reqwest::Client::new();
    let fmt = |ms: i64| {
        bess_collector::time::rfc3339(bess_collector::time::timestamp(ms)).replace('+', "%2B")
    };
    let mut latency = Vec::new();
    for resolution in ["raw", "1m", "1h"] {
        let url = format!(
            "http://127.0.0.1:{api_port}/api/v1/series?point=site-day/bms-1/soc&from={}&to={}&resolution={resolution}&max_points=100000",
            fmt(day_start),
            fmt(day_start + 86_400_000)
        );
        let mut times = Vec::with_capacity(args.requests);
        let mut count = 0;
        for _ in 0..args.requests {
            let start = Instant::now();
            let body: serde_json::Value = http
                .get(&url)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            count = body["count"].as_u64().unwrap_or(0);
        }
        latency.push((resolution, count, stack::quantile(&mut times, 0.99)));
    }
    let report: serde_json::Value = http
        .get(format!(
            "http://127.0.0.1:{api_port}/api/v1/sites/site-day/completeness?from={}&to={}",
            fmt(day_start),
            fmt(day_start + 86_400_000)
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let device = &report["devices"][0];
    let completeness = format!(
        "{}: expected {}, received {}, {}%",
        device["device"], device["expected"], device["received"], device["completeness_pct"]
    );
    cancel.cancel();
    collector.await??;
    drop(broker);
    let _ = std::fs::remove_dir_all(&scratch);

    println!(
        "bess-collector-bench: {} sites ({:?}), {} s of data each, {} s per batch, {} partitions",
        args.sites, args.shape, args.seconds, args.batch_seconds, args.partitions
    );
    println!("  messages                 {:>12}", payloads.len());
    println!(
        "  signed                   {:>12}  ({} verified, {} rejected)",
        if args.signed { "yes" } else { "no" },
        counter(&metrics.render(), "bess_collector_batches_verified_total"),
        counter(&metrics.render(), "bess_collector_messages_rejected_total")
    );
    println!("  samples                  {:>12}", samples);
    println!(
        "  catalog sign-up          {:>12.2} s for the first batch (with catalog) of {} sites",
        signup_s, args.sites
    );
    println!(
        "  catalog registration     {:>12.2} ms/site first time, {:.2} ms/site after a restart (read back)",
        register_ms, reread_ms
    );
    println!("  collector ingest         {:>12.0} samples/s  ({steady_s:.2} s for the other batches, Kafka -> committed)", collector_rate);
    println!("  ceiling (binary COPY)    {:>12.0} samples/s  ({ceiling_s:.2} s, all rows, {transactions} transactions of the same size)", ceiling_rate);
    println!(
        "  ratio                    {:>12.1} %",
        100.0 * collector_rate / ceiling_rate
    );
    println!(
        "  topic bytes/sample       {:>12.2}",
        topic_bytes as f64 / samples as f64
    );
    println!(
        "  live lane bytes/sample   {:>12.2}  (the same frames as an edge's live lane sends them: one message per site and second, key + value)",
        live_bytes as f64 / samples as f64
    );
    println!(
        "  uplink bytes/sample      {:>12.2}  (both lanes, a site somebody watches)",
        (topic_bytes + live_bytes) as f64 / samples as f64
    );
    println!(
        "  disk bytes/sample        {:>12.2}  (frames partitions incl. indexes, plain PostgreSQL)",
        disk as f64 / samples as f64
    );
    println!("  rollup refresh           {:>12.2} s for one day of one site ({rolled} frame rows in the database)", refresh_s);
    println!("  completeness (site-day)  {completeness}");
    for (resolution, count, p99) in latency {
        println!("  series p99 {resolution:<4}          {p99:>10.1} ms  ({count} samples, one day of one point, {} requests)", args.requests);
    }
    Ok(())
}
