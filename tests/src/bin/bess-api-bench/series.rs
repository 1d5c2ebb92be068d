//! `bess-api-bench series`: `GET /api/v1/series` latency with the database
//! warm, on plain PostgreSQL and on TimescaleDB in one run.
//!
//! For each backend it starts a stack on that server, stores `--days` days
//! of one poll group (8 points at 1 s, noisy values, as `frames` rows
//! written by SQL: the collector's own shape), brings the rollups up to date
//! (the upkeep task on plain PostgreSQL, a refresh of the continuous
//! aggregates on TimescaleDB, whose older chunks are then compressed as the
//! policy would), and times sequential requests after a warm-up: one day at
//! raw (JSON rows, JSON columns, CSV), 1-minute and 1-hour rollups, a month
//! at 1 hour, and all 8 points of the group in one raw request.

use anyhow::Context as _;
use std::time::{Duration, Instant};

use crate::measure::{Millis, Percentiles};
use crate::stack::{Auth, Stack, StackOptions};

#[derive(Debug, clap::Args)]
pub struct SeriesArgs {
    /// Backends to measure: postgresql, timescaledb (its server from
    /// BESS_TEST_TIMESCALEDB_URL), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "postgresql,timescaledb")]
    backends: Vec<String>,
    /// Days of 1 s frames stored (the month query reads up to 30 of them).
    #[arg(long, default_value_t = 30)]
    days: i64,
    /// Timed requests per query (after 3 warm-up requests).
    #[arg(long, default_value_t = 50)]
    requests: usize,
    /// Another `bess-collector` binary to measure instead of the one next to
    /// this bench (to compare two builds on the same data shape).
    #[arg(long)]
    collector: Option<std::path::PathBuf>,
}

const POINTS: usize = 8;
const DAY_MS: i64 = 86_400_000;

struct Query {
    name: &'static str,
    path: String,
}

pub async fn run(args: SeriesArgs) -> anyhow::Result<()> {
    let mut tables = Vec::new();
    for backend in &args.backends {
        let admin_url = match backend.as_str() {
            "postgresql" => bess_tests::TestDatabase::admin_url(),
            "timescaledb" => std::env::var(bess_tests::TIMESCALEDB_URL_VAR).with_context(|| {
                format!(
                    "{} is not set (deploy/tools/ensure-timescaledb.sh prints it)",
                    bess_tests::TIMESCALEDB_URL_VAR
                )
            })?,
            other => anyhow::bail!("unknown backend {other:?}: postgresql or timescaledb"),
        };
        tables.push((backend.clone(), measure_backend(&args, admin_url).await?));
    }
    println!();
    println!(
        "GET /api/v1/series, one poll group of {POINTS} points at 1 s, {} days stored, {} requests each (ms):",
        args.days, args.requests
    );
    println!(
        "{:<34} {:>12} {:>8} {:>8} {:>8} {:>10}",
        "query", "backend", "p50", "p90", "p99", "bytes"
    );
    let ms = |micros: u64| format!("{:.1}", micros as f64 / 1000.0);
    for (backend, rows) in &tables {
        for (query, bytes, p) in rows {
            println!(
                "{:<34} {:>12} {:>8} {:>8} {:>8} {:>10}",
                query,
                backend,
                ms(p.p50),
                ms(p.p90),
                ms(p.p99),
                bytes
            );
        }
    }
    Ok(())
}

async fn measure_backend(
    args: &SeriesArgs,
    admin_url: String,
) -> anyhow::Result<Vec<(&'static str, usize, Percentiles)>> {
    let stack = Stack::start_with(
        "bench-series",
        Auth::Disabled,
        StackOptions {
            admin_url: Some(admin_url),
            collector_bin: args.collector.clone(),
            run_args: vec!["--maintenance-interval".into(), "1s".into()],
        },
    )
    .await?;
    let client = stack.database.client().await?;
    let backend: String = client
        .query_one(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
                    THEN 'timescaledb' ELSE 'postgresql' END",
            &[],
        )
        .await?
        .get(0);
    println!(
        "{backend}: storing {} days of {POINTS} points at 1 s ...",
        args.days
    );
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let today_ms = now_ms.div_euclid(DAY_MS) * DAY_MS;
    let first_ms = today_ms - args.days * DAY_MS;
    let stored = Instant::now();
    store(&client, &backend, first_ms, args.days).await?;
    println!(
        "{backend}: stored and rolled up in {:.1} s",
        stored.elapsed().as_secs_f64()
    );

    let fmt = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .expect("a time")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("formats")
    };
    let day = (today_ms - DAY_MS, today_ms);
    let month = (today_ms - 30.min(args.days) * DAY_MS, today_ms);
    let one = "site-day/bms-1/p1";
    let all: Vec<String> = (1..=POINTS)
        .map(|i| format!("site-day/bms-1/p{i}"))
        .collect();
    let range = |(from, to): (i64, i64)| format!("from={}&to={}", fmt(from), fmt(to));
    let queries = [
        (
            "day raw, 1 point, JSON rows",
            format!(
                "point={one}&{}&resolution=raw&max_points=100000",
                range(day)
            ),
        ),
        (
            "day raw, 1 point, JSON columns",
            format!(
                "point={one}&{}&resolution=raw&max_points=100000&format=columns",
                range(day)
            ),
        ),
        (
            "day raw, 1 point, CSV",
            format!(
                "point={one}&{}&resolution=raw&max_points=100000&format=csv",
                range(day)
            ),
        ),
        (
            "day raw, 8 points, JSON columns",
            format!(
                "point={}&{}&resolution=raw&max_points=100000&format=columns",
                all.join(","),
                range(day)
            ),
        ),
        (
            "day 1m, 1 point",
            format!("point={one}&{}&resolution=1m", range(day)),
        ),
        (
            "day 1h, 1 point",
            format!("point={one}&{}&resolution=1h", range(day)),
        ),
        (
            "month 1h, 1 point",
            format!("point={one}&{}&resolution=1h", range(month)),
        ),
        (
            "day 1m, 8 points",
            format!("point={}&{}&resolution=1m", all.join(","), range(day)),
        ),
    ]
    .map(|(name, query)| Query {
        name,
        path: format!("{}/api/v1/series?{query}", stack.api),
    });
    let http = reqwest::Client::new();
    let mut rows = Vec::new();
    for query in &queries {
        let mut micros = Vec::with_capacity(args.requests);
        let mut bytes = 0;
        for i in 0..args.requests + 3 {
            let start = Instant::now();
            let response = http.get(&query.path).send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            anyhow::ensure!(
                status.is_success(),
                "{}: {status} {}",
                query.name,
                String::from_utf8_lossy(&body)
            );
            if i >= 3 {
                micros.push(start.elapsed().as_micros() as u64);
            }
            bytes = body.len();
        }
        let p = Percentiles::of(&mut micros);
        println!(
            "{backend}: {:<34} p50 {} p99 {} ({bytes} bytes)",
            query.name,
            Millis(p.p50),
            Millis(p.p99)
        );
        rows.push((query.name, bytes, p));
    }
    Ok(rows)
}

/// One site, one device, one group of [`POINTS`] points at 1 s for `days`
/// days from `first_ms`, then the rollups brought up to date.
async fn store(
    client: &tokio_postgres::Client,
    backend: &str,
    first_ms: i64,
    days: i64,
) -> anyhow::Result<()> {
    client
        .batch_execute(&format!(
            "INSERT INTO sites (name) VALUES ('site-day');
             INSERT INTO devices (site_id, name) SELECT site_id, 'bms-1' FROM sites WHERE name = 'site-day';
             INSERT INTO points (device_id, name, unit, kind)
                 SELECT d.device_id, 'p' || g, 'V', 'analog' FROM devices d, generate_series(1, {POINTS}) g
                 WHERE d.name = 'bms-1';
             INSERT INTO layouts (site_id, catalog_hash, group_index, device_id, group_name, interval_ms, point_ids)
                 SELECT d.site_id, 1, 0, d.device_id, 'fast', 1000,
                        (SELECT array_agg(point_id ORDER BY point_id) FROM points WHERE device_id = d.device_id)
                 FROM devices d WHERE d.name = 'bms-1';"
        ))
        .await?;
    let start = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(first_ms) * 1_000_000)?;
    for day in 0..days {
        let from = start + Duration::from_secs(86_400 * day as u64);
        let to = from + Duration::from_secs(86_400);
        if backend == "postgresql" {
            client
                .execute("SELECT bess_ensure_frames_partition(($1::timestamptz AT TIME ZONE 'UTC')::date)", &[&from])
                .await?;
        }
        // Slow waves plus noise, rounded as registers with a 0.01 scale are.
        client
            .execute(
                &format!(
                    "INSERT INTO frames (layout_id, ts, vals)
                     SELECT l.layout_id, t,
                            ARRAY(SELECT round((50 + 10 * sin(extract(epoch FROM t) / (600 + 60 * p))
                                               + random())::numeric, 2)::float8
                                  FROM generate_series(1, {POINTS}) p)
                     FROM layouts l, generate_series($1::timestamptz, $2::timestamptz - interval '1 second', interval '1 second') t"
                ),
                &[&from, &to],
            )
            .await?;
        if backend == "postgresql" {
            client
                .execute(
                    "INSERT INTO rollup_pending
                     SELECT generate_series($1::timestamptz, $2::timestamptz - interval '1 minute', interval '1 minute')
                     ON CONFLICT DO NOTHING",
                    &[&from, &to],
                )
                .await?;
        }
    }
    match backend {
        "postgresql" => {
            // The collector's upkeep (every second here) rolls the minutes up.
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                let pending: i64 = client
                    .query_one("SELECT count(*) FROM rollup_pending", &[])
                    .await?
                    .get(0);
                if pending == 0 {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "rollups not done: {pending} minutes pending"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        _ => {
            for view in ["rollup_1m", "rollup_1h"] {
                let sql = format!("CALL refresh_continuous_aggregate('{view}', NULL, NULL)");
                // A refresh policy may be running: wait for it.
                let mut attempts = 0;
                while let Err(e) = client.batch_execute(&sql).await {
                    attempts += 1;
                    anyhow::ensure!(attempts < 600, "refreshing {view}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            // Older than the compression horizon, as the policy leaves them.
            client
                .batch_execute(
                    "SELECT compress_chunk(c, if_not_compressed => true)
                     FROM show_chunks('frames', older_than => now() - interval '2 days') c",
                )
                .await?;
        }
    }
    client.batch_execute("VACUUM ANALYZE").await?;
    Ok(())
}
