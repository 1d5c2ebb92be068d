//! `bess-lake-bench`: the history lake's figures in one run. Stores a day
//! (or `--hours`) of `--sites` simulated sites through the collector's
//! writer, exports every site-hour to a local S3 server (moto) with the
//! exporter, and reports in the same run:
//!
//! - write rate (samples/s committed by `SampleWriter`, binary COPY, no
//!   Kafka) next to the export rate (samples/s from database to objects in
//!   the bucket), and the export's encode-only rate (database read +
//!   Parquet, no upload) to show where its time goes;
//! - bytes per sample in Parquet;
//! - the time DuckDB takes to scan the exported day (every row of every
//!   file, aggregated per point), and that time scaled to 1 000 sites.
//!
//! The site profile is `bess-collector-bench`'s (3 controllers, 8 points at
//! 1 s and 12 at 1 min each). Needs `moto_server`, `python3` with `duckdb`
//! (deploy/local/test.sh installs them) and a PostgreSQL server.
//!
//! ```sh
//! cargo run --release -p bess-collector --bin bess-lake-bench -- --sites 10 --hours 24
//! ```

use anyhow::Context as _;
use clap::Parser;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use bess_collector::lake::{pending, ExportSettings, Exporter, Lake, LakeLocation};
use bess_collector::message::IngestMessage;
use bess_collector::service;
use bess_collector::writer::SampleWriter;
use bess_protocol::*;

#[derive(Parser)]
#[command(
    name = "bess-lake-bench",
    about = "History lake: write vs export rate, bytes per sample in Parquet, DuckDB scan of a day"
)]
struct Args {
    /// Simulated sites.
    #[arg(long, default_value_t = 10)]
    sites: usize,
    /// Hours of data per site.
    #[arg(long, default_value_t = 24)]
    hours: i64,
    /// Site-hours exported at the same time.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// PostgreSQL server (admin database); the bench creates and drops its own database.
    #[arg(
        long,
        env = "BESS_TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    admin_url: String,
    /// The local S3 server to start.
    #[arg(long, env = "BESS_MOTO_SERVER", default_value = "moto_server")]
    moto: PathBuf,
}

const DEVICES: usize = 3;
const FAST_POINTS: usize = 8;
const SLOW_POINTS: usize = 12;
const SLOW_EVERY_S: i64 = 60;
/// Seconds of frames per batch (the writer's unit of work here).
const BATCH_SECONDS: i64 = 60;
/// Batches per writer transaction.
const CHUNK: usize = 64;

fn catalog() -> Catalog {
    let mut devices = Vec::new();
    let mut groups = Vec::new();
    for d in 0..DEVICES {
        devices.push(DeviceInfo {
            name: format!("bms-{}", d + 1),
            model: "bess-controller v1".into(),
        });
        let point = |i: usize, prefix: &str| {
            PointInfo::new(&format!("{prefix}{i}"), "V", PointKind::Analog, 0.01, 0.0)
        };
        let mut fast: Vec<PointInfo> = (0..FAST_POINTS).map(|i| point(i, "fast_")).collect();
        fast[0] = PointInfo::new("soc", "%", PointKind::Analog, 0.01, 0.0);
        groups.push(GroupInfo {
            device: d as u16,
            name: "fast".into(),
            interval_ms: 1000,
            points: fast,
        });
        groups.push(GroupInfo {
            device: d as u16,
            name: "slow".into(),
            interval_ms: (SLOW_EVERY_S * 1000) as u32,
            points: (0..SLOW_POINTS).map(|i| point(i, "slow_")).collect(),
        });
    }
    Catalog { devices, groups }
}

/// A site's frames for `[start_s, end_s)`: slowly moving register values
/// (the generator of `bess-collector-bench`).
fn frames(site: usize, t0_ms: i64, start_s: i64, end_s: i64) -> Vec<Frame> {
    let mut out = Vec::new();
    for s in start_s..end_s {
        for d in 0..DEVICES {
            let ts_ms = t0_ms + s * 1000 + (d as i64) * 7 + (site as i64 % 50);
            let wobble = |i: usize| ((s * 31 + i as i64 * 17 + site as i64 * 13) % 41) - 20;
            let base = |i: usize| 5000 + (i as i64) * 100 + (s / 30) % 200;
            out.push(Frame {
                group: GroupIndex((2 * d) as u16),
                ts_ms,
                values: (0..FAST_POINTS)
                    .map(|i| Reading::Int(base(i) + wobble(i)))
                    .collect(),
            });
            if s % SLOW_EVERY_S == 0 {
                out.push(Frame {
                    group: GroupIndex((2 * d + 1) as u16),
                    ts_ms: ts_ms + 3,
                    values: (0..SLOW_POINTS)
                        .map(|i| Reading::Int(base(i) + wobble(i) / 4))
                        .collect(),
                });
            }
        }
    }
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let admin = connect(&args.admin_url)
        .await
        .context("connecting to PostgreSQL")?;
    let name = format!("bess_lake_bench_{}", std::process::id());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let url = match args.admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => anyhow::bail!("admin URL without a database"),
    };
    let scratch = std::env::temp_dir().join(format!("bess-lake-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let result = run(&args, &url, &scratch).await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .ok();
    std::fs::remove_dir_all(&scratch).ok();
    result
}

async fn run(args: &Args, url: &str, scratch: &std::path::Path) -> anyhow::Result<()> {
    // The S3 server and its bucket.
    let port = free_port();
    let _moto = tokio::process::Command::new(&args.moto)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::fs::File::create(scratch.join("moto.log"))?)
        .stderr(std::fs::File::create(scratch.join("moto.err"))?)
        .kill_on_drop(true)
        .spawn()
        .context("starting moto_server (python3 -m pip install 'moto[server]')")?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "moto did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let endpoint = format!("http://{addr}");
    reqwest::Client::new()
        .put(format!("{endpoint}/lake"))
        .send()
        .await?
        .error_for_status()?;

    // Store the data through the writer.
    let pool = service::pool(url, 4)?;
    let backend = service::prepare_database(&pool, Duration::from_secs(10)).await?;
    let writer = SampleWriter::new(pool.clone(), backend);
    let catalog = catalog();
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let t0_ms = now_ms.div_euclid(86_400_000) * 86_400_000 - 2 * 86_400_000; // two days ago, 00:00 UTC
    let seconds = args.hours * 3600;
    eprintln!(
        "storing {} sites x {} h through the writer ({backend}) ...",
        args.sites, args.hours
    );
    let mut stored = 0u64;
    let mut write_time = Duration::ZERO;
    let mut messages = Vec::with_capacity(CHUNK);
    for (n, start) in (0..seconds).step_by(BATCH_SECONDS as usize).enumerate() {
        for site in 0..args.sites {
            let batch = Batch {
                site: SiteId::new(format!("site-{site:04}")).expect("valid"),
                seq: BatchSeq(1 + n as u64),
                catalog_hash: catalog.hash(),
                catalog: (n == 0).then(|| catalog.clone()),
                frames: frames(site, t0_ms, start, (start + BATCH_SECONDS).min(seconds)),
                gaps: vec![],
            };
            messages.push(IngestMessage {
                topic: "bench".into(),
                partition: 0,
                offset: messages.len() as i64,
                key: None,
                payload: batch.encode(Codec::Zstd)?,
                received_ms: 0,
            });
            if messages.len() == CHUNK {
                let t = Instant::now();
                stored += writer.write(&messages).await?.samples_written;
                write_time += t.elapsed();
                messages.clear();
            }
        }
    }
    if !messages.is_empty() {
        let t = Instant::now();
        stored += writer.write(&messages).await?.samples_written;
        write_time += t.elapsed();
    }
    let write_rate = stored as f64 / write_time.as_secs_f64();
    connect(url).await?.batch_execute("VACUUM ANALYZE").await?;

    // Export: first without uploading (database read + encode), then for real.
    let location = LakeLocation::parse("s3://lake/bench", Some(endpoint.clone()))?;
    let lake = Lake::open_with_key(location.clone(), "bench", "bench", "us-east-1")?;
    let settings = ExportSettings {
        grace: Duration::ZERO,
        jobs: args.jobs,
        ..ExportSettings::default()
    };
    let keys = {
        let client = pool.get().await?;
        pending::eligible(&**client, Duration::ZERO, false, i64::MAX).await?
    };
    eprintln!("encoding {} site-hours without upload ...", keys.len());
    let encode_start = Instant::now();
    let mut encoded_rows = 0u64;
    for key in &keys {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        let rows = pending::read_rows(&tx, *key).await?;
        encoded_rows += rows.len() as u64;
        tokio::task::spawn_blocking(move || bess_collector::lake::schema::encode(&rows)).await??;
        tx.rollback().await?;
    }
    let encode_rate = encoded_rows as f64 / encode_start.elapsed().as_secs_f64();

    eprintln!("exporting {} site-hours to moto ...", keys.len());
    let exporter = Exporter::new(pool.clone(), lake.clone(), settings);
    let export_start = Instant::now();
    let totals = exporter.export_pending(&CancellationToken::new()).await?;
    let export_s = export_start.elapsed().as_secs_f64();
    anyhow::ensure!(
        totals.rows == stored,
        "exported {} of {stored} samples",
        totals.rows
    );
    let export_rate = totals.rows as f64 / export_s;

    // DuckDB over the day, from local copies of the objects.
    let local = scratch.join("lake");
    let client = pool.get().await?;
    let objects: Vec<String> = client
        .query("SELECT object FROM lake_exports ORDER BY 1", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for object in &objects {
        let path = local.join(object);
        std::fs::create_dir_all(path.parent().expect("a parent"))?;
        std::fs::write(&path, lake.get(object).await?)?;
    }
    let glob = local.join("bench/samples/**/*.parquet");
    let script = format!(
        "import duckdb, time\n\
         con = duckdb.connect()\n\
         q = \"SELECT site, device, point, count(*), avg(value), min(ts), max(ts) FROM read_parquet('{}', hive_partitioning = true) GROUP BY ALL\"\n\
         con.execute(q).fetchall()\n\
         best = None\n\
         for _ in range(3):\n\
         \x20   t = time.perf_counter(); rows = con.execute(q).fetchall(); e = time.perf_counter() - t\n\
         \x20   best = e if best is None else min(best, e)\n\
         n = con.execute(\"SELECT count(*) FROM read_parquet('{}')\").fetchone()[0]\n\
         print(best, len(rows), n)\n",
        glob.display(),
        glob.display()
    );
    let output = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .context("python3 with duckdb")?;
    anyhow::ensure!(
        output.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout)?;
    let mut fields = text.split_whitespace();
    let scan_s: f64 = fields.next().context("scan time")?.parse()?;
    let series: u64 = fields.next().context("groups")?.parse()?;
    let scanned: u64 = fields.next().context("rows")?.parse()?;
    anyhow::ensure!(
        scanned == stored,
        "DuckDB saw {scanned} of {stored} samples"
    );

    let site_days = args.sites as f64 * args.hours as f64 / 24.0;
    let fleet_scan = scan_s * 1000.0 / site_days;
    let per_sample = totals.bytes as f64 / totals.rows as f64;
    let rate_per_site = stored as f64 / (args.sites as f64 * seconds as f64);
    println!(
        "history lake, {} sites x {} h, {} samples ({rate_per_site:.1} samples/s per site), {backend}",
        args.sites, args.hours, stored
    );
    println!(
        "  write (SampleWriter)     {write_rate:>12.0} samples/s  ({:.1} s, binary COPY, no Kafka)",
        write_time.as_secs_f64()
    );
    println!(
        "  export to S3 (moto)      {export_rate:>12.0} samples/s  ({export_s:.1} s, {} objects, {} jobs)",
        totals.objects, args.jobs
    );
    println!("  export without upload    {encode_rate:>12.0} samples/s  (database read + Parquet encode, one at a time)");
    println!(
        "  Parquet                  {per_sample:>12.2} bytes/sample  ({:.1} MB, {:.0} kB per site-hour object)",
        totals.bytes as f64 / 1e6,
        totals.bytes as f64 / totals.objects as f64 / 1e3
    );
    println!(
        "  storage per site-year    {:>12.2} GB  (at {rate_per_site:.1} samples/s)",
        per_sample * rate_per_site * 365.0 * 86_400.0 / 1e9
    );
    println!(
        "  DuckDB scan              {scan_s:>12.3} s  ({scanned} rows, {series} series, {} files, best of 3, {} cores)",
        objects.len(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!(
        "  scaled to 1000 sites     {fleet_scan:>12.1} s  for one day (linear in rows and files)"
    );
    Ok(())
}
