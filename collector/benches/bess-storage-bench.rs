//! `bess-storage-bench`: the collector's storage on TimescaleDB and on plain
//! PostgreSQL, side by side in one run, on one day of the simulator's
//! signals (the pack model of `bess-sim`, measurement noise included, in the
//! load generator's frame shape: 3 controllers per site, one 1 s poll group
//! of 15 points each).
//!
//! For each backend: collector ingest (Kafka → database, the real collector
//! in this process) against a binary COPY ceiling into the same table (the
//! hypertable on TimescaleDB); bytes per sample on disk before and after
//! compression; the time to compress the day; the rollup refresh for the day
//! (continuous aggregates on TimescaleDB, the collector's own refresh on
//! plain PostgreSQL); and, on TimescaleDB, COPY with direct compress on and
//! off, and other table shapes for the same rows (narrow rows, raw
//! integers) compressed the same way.
//!
//! A bench target, not a binary, so that the collector library does not
//! depend on the simulator (it is a dev-dependency):
//!
//! ```sh
//! cargo bench -p bess-collector --bench bess-storage-bench -- --sites 10
//! ```

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use clap::Parser;
use futures::{pin_mut, SinkExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use bess_collector::catalog::CatalogRegistry;
use bess_collector::copy::{FrameCopyEncoder, COPY_FRAMES, COPY_HEADER, COPY_TRAILER};
use bess_collector::ingest::KafkaSettings;
use bess_collector::service::{self, CollectorSettings, StorageSettings};
use bess_collector::storage::{self, FramePartitions, StorageBackend, StoragePreference};
use bess_protocol::{Batch, BatchSeq, Codec, Frame, GroupIndex, SiteId};
use bess_sim::load::{readings, site_catalog};
use bess_sim::{RegisterSnapshot, SimulatedPack};

const MS_PER_DAY: i64 = 86_400_000;
/// Controllers (poll groups) per site, as `bess-sim load --units 3`.
const UNITS: u8 = 3;
/// 100 ms model steps per 1 s frame.
const STEPS_PER_FRAME: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Storage {
    #[value(name = "postgresql")]
    PostgreSql,
    #[value(name = "timescaledb")]
    TimescaleDb,
    Both,
}

#[derive(Parser)]
#[command(
    name = "bess-storage-bench",
    about = "Storage on TimescaleDB vs plain PostgreSQL: ingest vs COPY ceiling, bytes/sample, compression, rollup refresh, direct compress",
    long_about = "Storage on TimescaleDB and on plain PostgreSQL, side by side in one run, on \
        --hours of the simulator's signals (bess-sim's pack model with its measurement noise; \
        3 controllers per site, one 1 s poll group of 15 points each, as `bess-sim load`) for \
        --sites sites. For each backend (a fresh database on each server, dropped at the end):\n\n\
        1. collector ingest: the real collector, in this process, consumes the batches from Tansu \
        (samples/s from the first send to the last commit), against the ceiling: the same rows by \
        binary COPY into the same table (the hypertable on TimescaleDB) of a second fresh \
        database, in transactions of the same size;\n\
        2. bytes per sample on disk (frames with its indexes, after VACUUM): uncompressed, and on \
        TimescaleDB after compressing every chunk (goal: 1.5 B/sample or less);\n\
        3. the time to compress the data (total and per site-day);\n\
        4. the rollup refresh for the data: refresh_continuous_aggregate of rollup_1m and rollup_1h \
        on TimescaleDB, the collector's own refresh of its rollup tables on plain PostgreSQL;\n\
        5. TimescaleDB only: binary COPY with timescaledb.enable_direct_compress_copy off and on, \
        in the collector's transaction sizes and as one COPY of everything, with bytes per sample \
        after each;\n\
        6. TimescaleDB only, on the first --variant-sites sites: the same samples in other table \
        shapes (narrow rows, raw register integers), compressed the same way, to see which schema \
        would reach the goal.\n\n\
        TimescaleDB's background jobs (compression, continuous-aggregate refresh) are paused in \
        the bench's databases so that each figure measures one thing. A backend that cannot be \
        reached, or a TimescaleDB server without the extension preloaded, ends the run with an \
        error before anything is measured.",
    after_help = "Run in release mode (a bench target of bess-collector, which may use the simulator):\n  \
        deploy/tools/install-tansu.sh   # once\n  \
        export BESS_TEST_TIMESCALEDB_URL=$(deploy/tools/ensure-timescaledb.sh)\n  \
        cargo bench -p bess-collector --bench bess-storage-bench -- --sites 10 --hours 24"
)]
struct Args {
    /// Simulated sites (3 controllers each).
    #[arg(long, default_value_t = 10)]
    sites: usize,
    /// Hours of data per site, from midnight UTC one or more days ago.
    #[arg(long, default_value_t = 24)]
    hours: i64,
    /// Seconds of frames per batch (the edge seals every `max_age`, 1 s by default).
    #[arg(long, default_value_t = 1)]
    batch_seconds: i64,
    /// Topic partitions.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Which backends to measure.
    #[arg(long, value_enum, default_value_t = Storage::Both)]
    storage: Storage,
    /// Plain PostgreSQL server (admin database); the bench creates and drops its own databases.
    #[arg(
        long,
        env = "BESS_TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// PostgreSQL server with TimescaleDB preloaded (admin database), e.g. from deploy/tools/ensure-timescaledb.sh.
    #[arg(
        long,
        env = "BESS_TEST_TIMESCALEDB_URL",
        default_value = "postgres://postgres@127.0.0.1:5433/postgres"
    )]
    timescaledb_url: String,
    /// Tansu binary.
    #[arg(long, env = "BESS_TANSU_BIN")]
    tansu: Option<PathBuf>,
    /// Seed of the simulated packs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Sites whose samples are also stored in the other table shapes (TimescaleDB); 0 skips them.
    #[arg(long, default_value_t = 1)]
    variant_sites: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The encoded batches of the whole run, in production order.
struct Load {
    /// (key, zstd payload), time window by time window, site by site.
    payloads: Vec<(String, Vec<u8>)>,
    samples: u64,
    frames: u64,
    /// Samples of the first round (each site's first batch, with its catalog).
    first_round_samples: u64,
    start_ms: i64,
    days: i64,
}

fn generate(args: &Args) -> anyhow::Result<Load> {
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let today_ms = now_ms.div_euclid(MS_PER_DAY) * MS_PER_DAY;
    let days = ((args.hours * 3_600_000 + MS_PER_DAY - 1) / MS_PER_DAY).max(1);
    let start_ms = today_ms - days * MS_PER_DAY;
    let seconds = args.hours * 3600;
    let catalog = site_catalog(UNITS, 1000);
    let mut packs: Vec<Vec<SimulatedPack>> = (0..args.sites)
        .map(|site| {
            (1..=UNITS)
                .map(|u| SimulatedPack::new(args.seed ^ ((site as u64) << 16), u))
                .collect()
        })
        .collect();
    let mut load = Load {
        payloads: Vec::new(),
        samples: 0,
        frames: 0,
        first_round_samples: 0,
        start_ms,
        days,
    };
    for (round, window) in (0..seconds)
        .step_by(args.batch_seconds as usize)
        .enumerate()
    {
        for (site, units) in packs.iter_mut().enumerate() {
            let mut frames = Vec::new();
            for s in window..(window + args.batch_seconds).min(seconds) {
                for (device, pack) in units.iter_mut().enumerate() {
                    pack.advance(STEPS_PER_FRAME);
                    let snapshot = RegisterSnapshot::encode(&pack.spec, &pack.measure());
                    frames.push(Frame {
                        group: GroupIndex(device as u16),
                        ts_ms: start_ms + s * 1000 + (device as i64) * 7 + (site as i64 % 50),
                        values: readings(&snapshot),
                    });
                }
            }
            let batch = Batch {
                site: SiteId::new(format!("site-{site:03}")).expect("valid"),
                seq: BatchSeq(1 + round as u64),
                catalog_hash: catalog.hash(),
                catalog: (round == 0).then(|| catalog.clone()),
                frames,
                gaps: vec![],
            };
            let samples = batch.sample_count() as u64;
            load.samples += samples;
            load.frames += batch.frames.len() as u64;
            if round == 0 {
                load.first_round_samples += samples;
            }
            load.payloads
                .push((batch.site.as_str().to_owned(), batch.encode(Codec::Zstd)?));
        }
        if round % 10_000 == 0 && round > 0 {
            eprintln!("  generated {} of {seconds} s", window);
        }
    }
    Ok(load)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

fn database_url(admin: &str, name: &str) -> String {
    format!(
        "{}/{name}",
        admin.rsplit_once('/').map_or(admin, |(base, _)| base)
    )
}

fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

fn literal(ms: i64) -> String {
    bess_collector::time::rfc3339(bess_collector::time::timestamp(ms))
}

/// Fails unless `admin_url` answers and, for TimescaleDB, has the extension installed and preloaded.
async fn check_server(admin_url: &str, backend: StorageBackend) -> anyhow::Result<()> {
    let flag = match backend {
        StorageBackend::TimescaleDb => "--timescaledb-url / BESS_TEST_TIMESCALEDB_URL",
        StorageBackend::PostgreSql => "--postgres-url / BESS_TEST_DATABASE_URL",
    };
    let client = connect(admin_url)
        .await
        .with_context(|| format!("the {backend} server is not reachable (set {flag})"))?;
    if backend == StorageBackend::TimescaleDb {
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
                        EXISTS (SELECT 1 FROM pg_settings WHERE name LIKE 'timescaledb.%')",
                &[],
            )
            .await?;
        let (installed, loaded): (bool, bool) = (row.get(0), row.get(1));
        ensure!(
            installed && loaded,
            "{admin_url} has TimescaleDB {}: start a server that preloads it (deploy/tools/ensure-timescaledb.sh) and pass --timescaledb-url",
            if installed { "installed but not preloaded" } else { "not installed" }
        );
    }
    Ok(())
}

/// A fresh, migrated database for `backend`, with TimescaleDB's background jobs paused.
async fn fresh_database(
    admin: &tokio_postgres::Client,
    admin_url: &str,
    name: &str,
    backend: StorageBackend,
) -> anyhow::Result<String> {
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .with_context(|| format!("creating database {name}"))?;
    let url = database_url(admin_url, name);
    let pool = service::pool(&url, 1)?;
    let preference = match backend {
        StorageBackend::TimescaleDb => StoragePreference::TimescaleDb,
        StorageBackend::PostgreSql => StoragePreference::PostgreSql,
    };
    let chosen = service::prepare_database_with(&pool, Duration::from_secs(10), preference)
        .await
        .with_context(|| format!("migrating {name}"))?;
    ensure!(chosen == backend, "{name} was set up for {chosen}");
    if backend == StorageBackend::TimescaleDb {
        connect(&url)
            .await?
            .batch_execute(
                "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs WHERE job_id >= 1000",
            )
            .await
            .context("pausing TimescaleDB's jobs")?;
    }
    Ok(url)
}

/// Bytes of `frames` on disk: every partition or chunk with its indexes and TOAST.
async fn frames_bytes(
    client: &tokio_postgres::Client,
    backend: StorageBackend,
    table: &str,
) -> anyhow::Result<i64> {
    let sql = match backend {
        StorageBackend::TimescaleDb => format!("SELECT hypertable_size('{table}')::int8"),
        StorageBackend::PostgreSql => format!(
            "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0)::int8 FROM pg_inherits WHERE inhparent = '{table}'::regclass"
        ),
    };
    Ok(client.query_one(&sql, &[]).await?.get(0))
}

/// Compress every chunk of `table`; seconds and chunks.
async fn compress_all(
    client: &tokio_postgres::Client,
    table: &str,
) -> anyhow::Result<(f64, usize)> {
    let chunks: Vec<String> = client
        .query(
            &format!("SELECT c::text FROM show_chunks('{table}') c"),
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let start = Instant::now();
    for chunk in &chunks {
        client
            .execute("SELECT compress_chunk($1::text::regclass)", &[chunk])
            .await
            .with_context(|| format!("compressing {chunk}"))?;
    }
    Ok((start.elapsed().as_secs_f64(), chunks.len()))
}

/// Chunks of `frames` in the columnstore, and all chunks.
async fn chunk_status(client: &tokio_postgres::Client) -> anyhow::Result<(i64, i64)> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE compression_status = 'Compressed'), count(*) FROM chunk_columnstore_stats('frames')",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

async fn count_rows(client: &tokio_postgres::Client) -> anyhow::Result<i64> {
    Ok(client
        .query_one("SELECT count(*) FROM frames", &[])
        .await?
        .get(0))
}

/// Pre-encoded COPY transactions of the whole load, as the ceiling sends them.
type CopyTransactions = Vec<Vec<Bytes>>;

async fn encode_ceiling(
    load: &Load,
    client: &mut tokio_postgres::Client,
    per_tx: usize,
) -> anyhow::Result<(CopyTransactions, BTreeSet<i64>)> {
    let catalogs = CatalogRegistry::default();
    let catalog = site_catalog(UNITS, 1000);
    let mut days = BTreeSet::new();
    let mut out = Vec::new();
    for group in load.payloads.chunks(per_tx) {
        let mut tx = Vec::with_capacity(group.len());
        for (_, payload) in group {
            let batch = Batch::decode(payload)?;
            let site_id = catalogs.site_id(&*client, batch.site.as_str()).await?;
            let layouts = catalogs
                .register(client, site_id, catalog.hash(), &catalog)
                .await?;
            let mut encoder = FrameCopyEncoder::default();
            for frame in &batch.frames {
                let layout = &layouts[usize::from(frame.group.0)];
                encoder.frame(layout.layout_id, frame.ts_ms, &layout.points, &frame.values);
                days.insert(frame.ts_ms.div_euclid(MS_PER_DAY));
            }
            tx.push(Bytes::from(encoder.buf));
        }
        out.push(tx);
    }
    Ok((out, days))
}

/// Send the transactions by binary COPY; seconds.
async fn copy_all(
    client: &mut tokio_postgres::Client,
    transactions: &[Vec<Bytes>],
    one_transaction: bool,
) -> anyhow::Result<f64> {
    client.batch_execute("CHECKPOINT").await?;
    let start = Instant::now();
    let groups: Vec<Vec<&Bytes>> = if one_transaction {
        vec![transactions.iter().flatten().collect()]
    } else {
        transactions.iter().map(|t| t.iter().collect()).collect()
    };
    for group in groups {
        let tx = client.transaction().await?;
        let sink = tx.copy_in::<_, Bytes>(COPY_FRAMES).await?;
        pin_mut!(sink);
        sink.feed(Bytes::from_static(COPY_HEADER)).await?;
        for rows in group {
            sink.feed(rows.clone()).await?;
        }
        sink.feed(Bytes::from_static(COPY_TRAILER)).await?;
        sink.finish().await?;
        tx.commit().await?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// The broker: Tansu with in-memory storage on a free port.
struct Broker {
    child: tokio::process::Child,
    brokers: String,
    scratch: PathBuf,
}

async fn start_broker(tansu: &Path) -> anyhow::Result<Broker> {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let scratch = std::env::temp_dir().join(format!("bess-storage-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let child = tokio::process::Command::new(tansu)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(std::fs::File::create(scratch.join("tansu.log"))?)
        .stderr(std::fs::File::create(scratch.join("tansu.err"))?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", tansu.display()))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "Tansu did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Broker {
        child,
        brokers: addr.to_string(),
        scratch,
    })
}

/// Direct compress on COPY: one measurement.
struct DirectCopy {
    label: &'static str,
    direct: bool,
    seconds: f64,
    bytes: i64,
    compressed_chunks: i64,
    chunks: i64,
}

/// Another table shape for the same samples (TimescaleDB).
struct Variant {
    label: &'static str,
    samples: i64,
    bytes_before: i64,
    bytes_after: i64,
    compress_s: f64,
}

/// Everything measured on one backend.
struct Figures {
    backend: StorageBackend,
    rows: i64,
    collector_rate: f64,
    steady_s: f64,
    transactions: f64,
    ceiling_rate: f64,
    ceiling_s: f64,
    bytes_uncompressed: i64,
    bytes_compressed: Option<i64>,
    compress_s: Option<(f64, usize)>,
    /// (what, seconds)
    refresh: Vec<(&'static str, f64)>,
    rollup_1m_rows: i64,
    rollup_1h_rows: i64,
    direct: Vec<DirectCopy>,
    variants: Vec<Variant>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.sites > 0 && args.hours > 0 && args.batch_seconds > 0,
        "--sites, --hours and --batch-seconds must be above 0"
    );
    let tansu = args
        .tansu
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/tansu"));
    ensure!(
        tansu.exists(),
        "no Tansu at {} (deploy/tools/install-tansu.sh, or --tansu / BESS_TANSU_BIN)",
        tansu.display()
    );
    let backends: Vec<(StorageBackend, String)> = match args.storage {
        Storage::PostgreSql => vec![(StorageBackend::PostgreSql, args.postgres_url.clone())],
        Storage::TimescaleDb => vec![(StorageBackend::TimescaleDb, args.timescaledb_url.clone())],
        Storage::Both => vec![
            (StorageBackend::PostgreSql, args.postgres_url.clone()),
            (StorageBackend::TimescaleDb, args.timescaledb_url.clone()),
        ],
    };
    // Every server first: a missing backend fails the run before anything is measured.
    for (backend, url) in &backends {
        check_server(url, *backend).await?;
    }
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;

    eprintln!(
        "generating {} sites x {} h of the simulator's signals ...",
        args.sites, args.hours
    );
    let started = Instant::now();
    let load = generate(&args)?;
    eprintln!(
        "  {} messages, {} frames, {} samples in {:.1} s",
        load.payloads.len(),
        load.frames,
        load.samples,
        started.elapsed().as_secs_f64()
    );
    let topic_bytes: usize = load.payloads.iter().map(|(k, v)| k.len() + v.len()).sum();

    let mut figures = Vec::new();
    let mut result = Ok(());
    for (backend, admin_url) in &backends {
        let admin = connect(admin_url).await?;
        let id = std::process::id();
        let names = [
            format!("bess_storage_bench_{id}_{backend}"),
            format!("bess_storage_bench_{id}_{backend}_ceiling"),
        ];
        // A broker per backend, so both start from the same, empty broker.
        let run = match start_broker(&tansu).await {
            Ok(mut broker) => {
                let run = measure(
                    &args,
                    &load,
                    &mut broker,
                    &metrics,
                    &admin,
                    admin_url,
                    *backend,
                    &names,
                )
                .await;
                broker.child.kill().await.ok();
                let _ = std::fs::remove_dir_all(&broker.scratch);
                run
            }
            Err(e) => Err(e),
        };
        for name in &names {
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .ok();
        }
        match run {
            Ok(f) => {
                eprintln!(
                    "[{backend}] done: ingest {:.0} samples/s, ceiling {:.0}, {:.2} B/sample uncompressed{}",
                    f.collector_rate,
                    f.ceiling_rate,
                    f.bytes_uncompressed as f64 / load.samples as f64,
                    f.bytes_compressed.map_or(String::new(), |b| format!(", {:.2} compressed", b as f64 / load.samples as f64))
                );
                figures.push(f);
            }
            Err(e) => {
                result = Err(e.context(format!("measuring {backend}")));
                break;
            }
        }
    }
    result?;
    report(&args, &load, topic_bytes, &figures);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &Args,
    load: &Load,
    broker: &mut Broker,
    metrics: &metrics_exporter_prometheus::PrometheusHandle,
    admin: &tokio_postgres::Client,
    admin_url: &str,
    backend: StorageBackend,
    names: &[String; 2],
) -> anyhow::Result<Figures> {
    let brokers = broker.brokers.clone();
    let brokers = brokers.as_str();
    eprintln!("[{backend}] preparing databases ...");
    let collector_url = fresh_database(admin, admin_url, &names[0], backend).await?;
    let ceiling_url = fresh_database(admin, admin_url, &names[1], backend).await?;
    let topic = format!("bess.telemetry.{backend}");
    let kafka_admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    for result in kafka_admin
        .create_topics(
            [&NewTopic::new(
                &topic,
                args.partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?
    {
        result.map_err(|(name, code)| anyhow::anyhow!("creating topic {name}: {code}"))?;
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .create()?;
    let produce = |range: std::ops::Range<usize>| {
        let (producer, payloads, topic) = (&producer, &load.payloads, &topic);
        async move {
            for start in range.clone().step_by(50_000) {
                let sends = payloads[start..(start + 50_000).min(range.end)].iter().map(
                    |(key, payload)| {
                        producer.send(
                            FutureRecord::to(topic).key(key).payload(payload),
                            Duration::from_secs(60),
                        )
                    },
                );
                for result in futures::future::join_all(sends).await {
                    result.map_err(|(e, _)| e)?;
                }
            }
            anyhow::Ok(())
        }
    };
    produce(0..args.sites).await?;

    // The collector, in this process, on the backend.
    let base_written = counter(&metrics.render(), "bess_collector_samples_written_total");
    let base_received = counter(&metrics.render(), "bess_collector_messages_received_total");
    let base_tx = counter(&metrics.render(), "bess_collector_transactions_total");
    let cancel = CancellationToken::new();
    let settings = CollectorSettings {
        database_url: collector_url.clone(),
        read_database_url: None,
        pool_size: 8,
        kafka: KafkaSettings {
            brokers: brokers.to_owned(),
            topic: topic.clone(),
            group: format!("bench-{backend}"),
            session_timeout: Duration::from_secs(2),
            properties: vec![],
            dead_letter_topic: Some(format!("{topic}.dlq")),
        },
        live_topic: None,
        live_replay: std::time::Duration::ZERO,
        create_topic_partitions: None,
        listen: ([127, 0, 0, 1], free_port()).into(),
        database_wait: Duration::from_secs(10),
        storage: StorageSettings {
            preference: match backend {
                StorageBackend::TimescaleDb => StoragePreference::TimescaleDb,
                StorageBackend::PostgreSql => StoragePreference::PostgreSql,
            },
            retention: None,
            maintenance_interval: Duration::from_secs(24 * 3600),
        },
        live_timings: Default::default(),
        rules_file: None,
        signatures: bess_collector::site_keys::SignaturePolicy::MIGRATING,
        http: Default::default(),
    };
    let mut collector = tokio::spawn(service::run(settings, metrics.clone(), cancel.clone()));
    let deadline = Instant::now() + Duration::from_secs(3600);
    let written =
        || counter(&metrics.render(), "bess_collector_samples_written_total") - base_written;
    let mut progress = (0.0, Instant::now());
    let mut wait_written = async |target: u64| -> anyhow::Result<Instant> {
        loop {
            ensure!(
                Instant::now() < deadline,
                "the collector did not finish within an hour"
            );
            if let Ok(Some(status)) = broker.child.try_wait() {
                bail!(
                    "Tansu exited ({status}) with {} of {target} samples written",
                    written()
                );
            }
            if written() > progress.0 {
                progress = (written(), Instant::now());
            }
            ensure!(
                progress.1.elapsed() < Duration::from_secs(120),
                "nothing written for 2 minutes ({} of {target} samples)",
                progress.0
            );
            if collector.is_finished() {
                match (&mut collector).await {
                    Ok(Err(e)) => return Err(e.context("the collector stopped")),
                    other => bail!("the collector stopped: {other:?}"),
                }
            }
            if written() as u64 >= target {
                return Ok(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    eprintln!("[{backend}] catalog sign-up ...");
    wait_written(load.first_round_samples).await?;
    ensure!(
        counter(&metrics.render(), "bess_collector_messages_received_total") > base_received,
        "the collector received nothing"
    );
    connect(&collector_url)
        .await?
        .batch_execute("CHECKPOINT")
        .await?;
    eprintln!(
        "[{backend}] producing the other {} messages; the collector consumes meanwhile ...",
        load.payloads.len() - args.sites
    );
    let steady_start = Instant::now();
    produce(args.sites..load.payloads.len()).await?;
    let steady_s = (wait_written(load.samples).await? - steady_start).as_secs_f64();
    let transactions = counter(&metrics.render(), "bess_collector_transactions_total") - base_tx;
    let collector_rate = (load.samples - load.first_round_samples) as f64 / steady_s;
    cancel.cancel();
    collector.await??;

    let mut db = connect(&collector_url).await?;
    let rows = count_rows(&db).await?;
    ensure!(
        rows as u64 == load.frames,
        "{rows} frame rows in the database, {} sent",
        load.frames
    );
    db.batch_execute("VACUUM ANALYZE frames").await?;
    let bytes_uncompressed = frames_bytes(&db, backend, "frames").await?;

    // Rollups of the data, as the backend keeps them.
    eprintln!("[{backend}] rollup refresh ...");
    let (from, to) = (load.start_ms, load.start_ms + args.hours * 3_600_000);
    let mut refresh = Vec::new();
    match backend {
        StorageBackend::TimescaleDb => {
            for view in ["rollup_1m", "rollup_1h"] {
                let start = Instant::now();
                db.batch_execute(&format!(
                    "CALL refresh_continuous_aggregate('{view}', '{}', '{}')",
                    literal(from),
                    literal(to)
                ))
                .await
                .with_context(|| format!("refreshing {view}"))?;
                refresh.push((view, start.elapsed().as_secs_f64()));
            }
        }
        StorageBackend::PostgreSql => {
            let start = Instant::now();
            let outcome = storage::refresh_rollups(&mut db).await?;
            ensure!(
                outcome.minutes as i64 >= args.hours * 60,
                "the rollup refresh covered {} minutes",
                outcome.minutes
            );
            refresh.push(("rollup_1m + rollup_1h", start.elapsed().as_secs_f64()));
        }
    }
    let rollup_rows = |view: &str| {
        format!(
            "SELECT count(*) FROM {view} WHERE bucket >= '{}' AND bucket < '{}'",
            literal(from),
            literal(to)
        )
    };
    let rollup_1m_rows: i64 = db.query_one(&rollup_rows("rollup_1m"), &[]).await?.get(0);
    let rollup_1h_rows: i64 = db.query_one(&rollup_rows("rollup_1h"), &[]).await?.get(0);

    let (bytes_compressed, compress_s) = if backend == StorageBackend::TimescaleDb {
        eprintln!("[{backend}] compressing ...");
        let compressed = compress_all(&db, "frames").await?;
        db.batch_execute("VACUUM ANALYZE frames").await?;
        (
            Some(frames_bytes(&db, backend, "frames").await?),
            Some(compressed),
        )
    } else {
        (None, None)
    };
    drop(db);

    // The ceiling: the same rows by binary COPY, transactions of the same size.
    eprintln!("[{backend}] ceiling ...");
    let mut ceiling = connect(&ceiling_url).await?;
    let per_tx = ((load.payloads.len() as f64) / transactions.max(1.0))
        .ceil()
        .max(1.0) as usize;
    let (copies, days) = encode_ceiling(load, &mut ceiling, per_tx).await?;
    if backend == StorageBackend::PostgreSql {
        FramePartitions::default().ensure(&ceiling, &days).await?;
    }
    let ceiling_s = copy_all(&mut ceiling, &copies, false).await?;
    let ceiling_rate = load.samples as f64 / ceiling_s;
    ensure!(
        count_rows(&ceiling).await? as u64 == load.frames,
        "the ceiling lost rows"
    );

    let mut variants = Vec::new();
    let mut direct = Vec::new();
    if backend == StorageBackend::TimescaleDb {
        if args.variant_sites > 0 {
            variants = measure_variants(&ceiling, args).await?;
        }
        ceiling.batch_execute("VACUUM ANALYZE frames").await?;
        let (compressed_chunks, chunks) = chunk_status(&ceiling).await?;
        direct.push(DirectCopy {
            label: "collector's transactions",
            direct: false,
            seconds: ceiling_s,
            bytes: frames_bytes(&ceiling, backend, "frames").await?,
            compressed_chunks,
            chunks,
        });
        for (label, one, on) in [
            ("collector's transactions", false, true),
            ("one COPY of everything", true, false),
            ("one COPY of everything", true, true),
        ] {
            eprintln!("[{backend}] COPY, {label}, direct compress {on} ...");
            ceiling.batch_execute("TRUNCATE frames").await?;
            ceiling
                .batch_execute(&format!(
                    "SET timescaledb.enable_direct_compress_copy = {}",
                    if on { "on" } else { "off" }
                ))
                .await
                .context("setting timescaledb.enable_direct_compress_copy")?;
            let seconds = copy_all(&mut ceiling, &copies, one).await?;
            ensure!(
                count_rows(&ceiling).await? as u64 == load.frames,
                "COPY lost rows"
            );
            ceiling.batch_execute("VACUUM ANALYZE frames").await?;
            let (compressed_chunks, chunks) = chunk_status(&ceiling).await?;
            direct.push(DirectCopy {
                label,
                direct: on,
                seconds,
                bytes: frames_bytes(&ceiling, backend, "frames").await?,
                compressed_chunks,
                chunks,
            });
        }
        ceiling
            .batch_execute("RESET timescaledb.enable_direct_compress_copy")
            .await?;
    }
    Ok(Figures {
        backend,
        rows,
        collector_rate,
        steady_s,
        transactions,
        ceiling_rate,
        ceiling_s,
        bytes_uncompressed,
        bytes_compressed,
        compress_s,
        refresh,
        rollup_1m_rows,
        rollup_1h_rows,
        direct,
        variants,
    })
}

/// The first `variant_sites` sites' samples in other table shapes, each a
/// hypertable of 1-day chunks compressed with segment-by the series key and
/// order-by ts, from the ceiling's `frames` (uncompressed).
async fn measure_variants(
    db: &tokio_postgres::Client,
    args: &Args,
) -> anyhow::Result<Vec<Variant>> {
    let points = &site_catalog(UNITS, 1000).groups[0].points;
    let scales: Vec<f64> = points.iter().map(|p| p.scale).collect();
    let offsets: Vec<f64> = points.iter().map(|p| p.offset).collect();
    let filter = format!(
        "layout_id IN (SELECT layout_id FROM layouts WHERE site_id IN (SELECT site_id FROM sites ORDER BY site_id LIMIT {}))",
        args.variant_sites
    );
    let raw = "ARRAY(SELECT round((u.v - u.o) / u.s)::int8 FROM unnest(f.vals, $1::float8[], $2::float8[]) WITH ORDINALITY AS u(v, s, o, n) ORDER BY u.n)";
    // (label, columns, segment-by, index, insert)
    let shapes: [(&'static str, &str, &str, &str, String); 5] = [
        (
            "frames as migrated: float8[] per frame",
            "layout_id int NOT NULL, ts timestamptz NOT NULL, vals float8[] NOT NULL, status int2[]",
            "layout_id",
            "layout_id, ts",
            format!("SELECT layout_id, ts, vals, status FROM frames f WHERE {filter} AND $1::float8[] IS NOT NULL AND $2::float8[] IS NOT NULL"),
        ),
        (
            "raw register integers: int8[] per frame",
            "layout_id int NOT NULL, ts timestamptz NOT NULL, vals int8[] NOT NULL, status int2[]",
            "layout_id",
            "layout_id, ts",
            format!("SELECT layout_id, ts, {raw}, status FROM frames f WHERE {filter}"),
        ),
        (
            "raw register integers: int4[] per frame",
            "layout_id int NOT NULL, ts timestamptz NOT NULL, vals int4[] NOT NULL, status int2[]",
            "layout_id",
            "layout_id, ts",
            format!("SELECT layout_id, ts, {}::int4[], status FROM frames f WHERE {filter}", raw),
        ),
        (
            "narrow: one float8 row per sample",
            "layout_id int NOT NULL, slot int2 NOT NULL, ts timestamptz NOT NULL, val float8",
            "layout_id, slot",
            "layout_id, slot, ts",
            format!("SELECT f.layout_id, u.n::int2, f.ts, u.v FROM frames f CROSS JOIN LATERAL unnest(f.vals) WITH ORDINALITY AS u(v, n) WHERE {filter} AND $1::float8[] IS NOT NULL AND $2::float8[] IS NOT NULL"),
        ),
        (
            "narrow: one raw int8 row per sample",
            "layout_id int NOT NULL, slot int2 NOT NULL, ts timestamptz NOT NULL, val int8",
            "layout_id, slot",
            "layout_id, slot, ts",
            format!("SELECT f.layout_id, u.n::int2, f.ts, round((u.v - u.o) / u.s)::int8 FROM frames f CROSS JOIN LATERAL unnest(f.vals, $1::float8[], $2::float8[]) WITH ORDINALITY AS u(v, s, o, n) WHERE {filter}"),
        ),
    ];
    let samples: i64 = db
        .query_one(
            &format!("SELECT coalesce(sum(cardinality(vals)), 0)::int8 FROM frames WHERE {filter}"),
            &[],
        )
        .await?
        .get(0);
    ensure!(samples > 0, "no samples for the table-shape variants");
    let mut out = Vec::new();
    for (i, (label, columns, segment_by, index, insert)) in shapes.into_iter().enumerate() {
        eprintln!("  table shape: {label} ...");
        let table = format!("shape_{i}");
        db.batch_execute(&format!(
            "CREATE TABLE {table} ({columns});
             SELECT create_hypertable('{table}', by_range('ts', INTERVAL '1 day'), create_default_indexes => false);
             CREATE INDEX ON {table} ({index});
             ALTER TABLE {table} SET (timescaledb.compress, timescaledb.compress_segmentby = '{segment_by}', timescaledb.compress_orderby = 'ts');"
        ))
        .await
        .with_context(|| format!("creating {table}"))?;
        db.execute(
            &format!("INSERT INTO {table} {insert}"),
            &[&scales, &offsets],
        )
        .await
        .with_context(|| format!("filling {table}"))?;
        db.batch_execute(&format!("VACUUM ANALYZE {table}")).await?;
        let bytes_before = frames_bytes(db, StorageBackend::TimescaleDb, &table).await?;
        let (compress_s, _) = compress_all(db, &table).await?;
        db.batch_execute(&format!("VACUUM ANALYZE {table}")).await?;
        let bytes_after = frames_bytes(db, StorageBackend::TimescaleDb, &table).await?;
        db.batch_execute(&format!("DROP TABLE {table}")).await?;
        out.push(Variant {
            label,
            samples,
            bytes_before,
            bytes_after,
            compress_s,
        });
    }
    Ok(out)
}

fn report(args: &Args, load: &Load, topic_bytes: usize, figures: &[Figures]) {
    let site_days = args.sites as f64 * args.hours as f64 / 24.0;
    let per_sample = |bytes: i64| bytes as f64 / load.samples as f64;
    println!(
        "bess-storage-bench: {} sites x {} h of bess-sim signals ({} controllers per site, {} points at 1 s), {} s per batch, {} partitions",
        args.sites,
        args.hours,
        UNITS,
        bess_sim::load::POINTS_PER_FRAME,
        args.batch_seconds,
        args.partitions
    );
    println!(
        "  {} messages, {} frame rows, {} samples, {:.2} topic bytes/sample; {} day(s) from {}",
        load.payloads.len(),
        load.frames,
        load.samples,
        topic_bytes as f64 / load.samples as f64,
        load.days,
        literal(load.start_ms)
    );
    let header: Vec<String> = figures.iter().map(|f| f.backend.to_string()).collect();
    println!(
        "\n  {:<44} {}",
        "figure",
        header
            .iter()
            .map(|h| format!("{h:>22}"))
            .collect::<String>()
    );
    let row = |name: &str, cells: Vec<String>| {
        println!(
            "  {:<44} {}",
            name,
            cells.iter().map(|c| format!("{c:>22}")).collect::<String>()
        );
    };
    row(
        "frame rows",
        figures.iter().map(|f| f.rows.to_string()).collect(),
    );
    row(
        "collector ingest (samples/s)",
        figures
            .iter()
            .map(|f| format!("{:.0}", f.collector_rate))
            .collect(),
    );
    row(
        "  over (s), transactions",
        figures
            .iter()
            .map(|f| format!("{:.1} s, {:.0} tx", f.steady_s, f.transactions))
            .collect(),
    );
    row(
        "binary COPY ceiling (samples/s)",
        figures
            .iter()
            .map(|f| format!("{:.0} ({:.1} s)", f.ceiling_rate, f.ceiling_s))
            .collect(),
    );
    row(
        "ratio",
        figures
            .iter()
            .map(|f| format!("{:.0} %", 100.0 * f.collector_rate / f.ceiling_rate))
            .collect(),
    );
    row(
        "disk B/sample, uncompressed",
        figures
            .iter()
            .map(|f| format!("{:.2}", per_sample(f.bytes_uncompressed)))
            .collect(),
    );
    row(
        "disk B/sample, compressed (goal <= 1.5)",
        figures
            .iter()
            .map(|f| {
                f.bytes_compressed
                    .map_or("n/a".into(), |b| format!("{:.2}", per_sample(b)))
            })
            .collect(),
    );
    row(
        "compress the data: total",
        figures
            .iter()
            .map(|f| {
                f.compress_s
                    .map_or("n/a".into(), |(s, c)| format!("{s:.1} s, {c} chunk(s)"))
            })
            .collect(),
    );
    row(
        "compress: per site-day",
        figures
            .iter()
            .map(|f| {
                f.compress_s
                    .map_or("n/a".into(), |(s, _)| format!("{:.2} s", s / site_days))
            })
            .collect(),
    );
    for i in 0..figures.iter().map(|f| f.refresh.len()).max().unwrap_or(0) {
        row(
            &format!("rollup refresh {}", i + 1),
            figures
                .iter()
                .map(|f| {
                    f.refresh
                        .get(i)
                        .map_or(String::new(), |(what, s)| format!("{what} {s:.1} s"))
                })
                .collect(),
        );
    }
    row(
        "rollup refresh per site-day (all)",
        figures
            .iter()
            .map(|f| {
                format!(
                    "{:.2} s",
                    f.refresh.iter().map(|(_, s)| s).sum::<f64>() / site_days
                )
            })
            .collect(),
    );
    row(
        "rollup_1m / rollup_1h rows",
        figures
            .iter()
            .map(|f| format!("{} / {}", f.rollup_1m_rows, f.rollup_1h_rows))
            .collect(),
    );
    for f in figures.iter().filter(|f| !f.direct.is_empty()) {
        println!("\n  {}: binary COPY into the hypertable, timescaledb.enable_direct_compress_copy off / on", f.backend);
        println!(
            "  {:<28} {:>7} {:>14} {:>10} {:>12} {:>12}",
            "COPY", "direct", "samples/s", "seconds", "B/sample", "compressed"
        );
        for d in &f.direct {
            println!(
                "  {:<28} {:>7} {:>14.0} {:>10.1} {:>12.2} {:>12}",
                d.label,
                if d.direct { "on" } else { "off" },
                load.samples as f64 / d.seconds,
                d.seconds,
                per_sample(d.bytes),
                format!("{}/{} chunks", d.compressed_chunks, d.chunks),
            );
        }
    }
    for f in figures.iter().filter(|f| !f.variants.is_empty()) {
        println!(
            "\n  {}: the first {} site(s)' samples in other table shapes (1-day chunks, order-by ts)",
            f.backend, args.variant_sites
        );
        println!(
            "  {:<42} {:>10} {:>14} {:>12} {:>16}",
            "table shape", "samples", "B/sample raw", "compressed", "compress/site-day"
        );
        for v in &f.variants {
            println!(
                "  {:<42} {:>10} {:>14.2} {:>12.2} {:>15.2}s",
                v.label,
                v.samples,
                v.bytes_before as f64 / v.samples as f64,
                v.bytes_after as f64 / v.samples as f64,
                v.compress_s / (args.variant_sites as f64 * args.hours as f64 / 24.0),
            );
        }
    }
}
