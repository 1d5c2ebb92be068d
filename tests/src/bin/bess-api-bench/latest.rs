//! `bess-api-bench latest`: `GET /api/v1/sites/{site}/latest` with token
//! auth, at fixed request rates (open loop) and at wrk's maximum throughput
//! (closed loop, the ceiling), in one run against one stack.
//!
//! Open loop: each of `--connections` keep-alive connections has its own
//! schedule, request `j` of connection `k` being due at
//! `start + (k + j × connections) / rate`. A request is sent when it is due,
//! or as soon as its connection is free if the previous one is late, and its
//! latency runs from when it was *due* — a slow response delays the requests
//! behind it and they count that delay (no coordinated omission). The time
//! from actually sending is reported too, as *service time*.

use anyhow::Context as _;
use std::time::{Duration, Instant};

use crate::measure::{self, mib, CpuWindow, Millis, Percentiles};
use crate::stack::{Auth, Stack};

#[derive(Debug, clap::Args)]
pub struct LatestArgs {
    /// Fixed request rates to measure, per second, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,3000")]
    rates: Vec<u32>,
    /// How long each fixed rate (and the wrk ceiling) runs.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Keep-alive connections, for the fixed rates and for wrk.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Sites the load generator keeps writing (3 devices each, one frame per
    /// device per second) while the API is measured; the requests ask for
    /// load-site-001.
    #[arg(long, default_value_t = 10)]
    sites: u16,
    /// Skip the wrk ceiling (wrk missing, or only the fixed rates wanted).
    #[arg(long)]
    no_ceiling: bool,
}

/// One fixed-rate run.
struct RateRun {
    target: u32,
    achieved: f64,
    ok: u64,
    errors: u64,
    from_due: Percentiles,
    service: Percentiles,
    collector_cpu: f64,
}

/// wrk's figures.
struct Ceiling {
    requests_per_s: f64,
    p50: String,
    p99: String,
    non_2xx: u64,
}

pub async fn run(args: LatestArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.connections > 0, "need connections");
    let stack = Stack::start("latest-bench", Auth::Token).await?;
    let token = stack.token.clone().context("token")?;
    let collector_pid = stack.collector.pid();
    let url = format!("{}/api/v1/sites/load-site-001/latest", stack.api);
    // Longer than every phase: it keeps writing while the API is measured.
    let phases = args.rates.len() as u32 + 2;
    let mut load = stack.start_load(
        "load",
        args.sites,
        3,
        args.duration * phases + Duration::from_secs(120),
    )?;
    bess_tests::wait_for(
        "latest values of load-site-001",
        Duration::from_secs(60),
        || {
            let (url, token) = (url.clone(), token.clone());
            async move {
                let body = reqwest::Client::new()
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                body.contains("\"soc\"").then_some(())
            }
        },
    )
    .await?;
    println!(
        "GET {url} with a token; {} sites x 3 devices written at 1 Hz meanwhile; {} connections, {} s per phase",
        args.sites,
        args.connections,
        args.duration.as_secs()
    );

    let ceiling = if args.no_ceiling {
        None
    } else {
        println!("wrk (closed loop, as fast as it goes)...");
        let cpu = CpuWindow::start(collector_pid)?;
        let ceiling = wrk(&url, &token, args.connections, args.duration).await?;
        println!(
            "  {:.0} req/s, p50 {}, p99 {}, collector CPU {:.0} %",
            ceiling.requests_per_s,
            ceiling.p50,
            ceiling.p99,
            cpu.percent()?
        );
        Some(ceiling)
    };

    let mut runs = Vec::new();
    for &rate in &args.rates {
        println!("{rate} req/s (open loop)...");
        let cpu = CpuWindow::start(collector_pid)?;
        let mut run = fixed_rate(&url, &token, rate, args.connections, args.duration).await?;
        run.collector_cpu = cpu.percent()?;
        println!(
            "  achieved {:.0} req/s, p50 {}, p99 {}, {} ok, {} errors",
            run.achieved,
            Millis(run.from_due.p50),
            Millis(run.from_due.p99),
            run.ok,
            run.errors
        );
        runs.push(run);
    }
    let memory = measure::memory(collector_pid)?;
    load.signal("TERM");
    let _ = load.wait_exit(Duration::from_secs(30)).await;

    println!();
    println!("| target req/s | achieved | p50 | p90 | p99 | max | service p50 / p99 | errors | collector CPU | share of the ceiling |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for run in &runs {
        let share = ceiling.as_ref().map_or("—".to_owned(), |c| {
            format!("{:.0} %", f64::from(run.target) / c.requests_per_s * 100.0)
        });
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} / {} | {} | {:.0} % | {share} |",
            run.target,
            run.achieved,
            Millis(run.from_due.p50),
            Millis(run.from_due.p90),
            Millis(run.from_due.p99),
            Millis(run.from_due.max),
            Millis(run.service.p50),
            Millis(run.service.p99),
            run.errors,
            run.collector_cpu,
        );
    }
    if let Some(c) = &ceiling {
        println!(
            "| wrk ceiling | {:.0} | {} | | {} | | | {} non-2xx | | 100 % |",
            c.requests_per_s, c.p50, c.p99, c.non_2xx
        );
        for run in &runs {
            println!(
                "{} req/s is {:.0} % of the {:.0} req/s ceiling measured in this run.",
                run.target,
                f64::from(run.target) / c.requests_per_s * 100.0,
                c.requests_per_s
            );
        }
    }
    println!(
        "collector memory at the end: VmRSS {} / VmHWM {}",
        mib(memory.rss_kib),
        mib(memory.peak_kib)
    );
    Ok(())
}

/// Requests at `rate` per second over `connections` keep-alive connections.
async fn fixed_rate(
    url: &str,
    token: &str,
    rate: u32,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<RateRun> {
    anyhow::ensure!(rate > 0, "rates must be above 0");
    let period = Duration::from_secs_f64(connections as f64 / f64::from(rate));
    let per_connection = (duration.as_secs_f64() / period.as_secs_f64()).floor() as u64;
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(10))
            .build()?;
        // Open the connection before the clock starts.
        client.get(url).bearer_auth(token).send().await?;
        clients.push(client);
    }
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut tasks = tokio::task::JoinSet::new();
    for (k, client) in clients.into_iter().enumerate() {
        let (url, token) = (url.to_owned(), token.to_owned());
        let offset = Duration::from_secs_f64(k as f64 / f64::from(rate));
        tasks.spawn(async move {
            let mut from_due = Vec::with_capacity(per_connection as usize);
            let mut service = Vec::with_capacity(per_connection as usize);
            let mut errors = 0u64;
            for j in 0..per_connection {
                let due = start + offset + period * j as u32;
                tokio::time::sleep_until(due).await;
                let sent = Instant::now();
                let ok = match client.get(&url).bearer_auth(&token).send().await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        ok && response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                let done = Instant::now();
                if ok {
                    from_due.push(done.duration_since(due.into_std()).as_micros() as u64);
                    service.push(done.duration_since(sent).as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (from_due, service, errors, Instant::now())
        });
    }
    let (mut from_due, mut service, mut errors) = (Vec::new(), Vec::new(), 0);
    let mut last_done = start.into_std();
    while let Some(result) = tasks.join_next().await {
        let (mut a, mut b, e, done) = result?;
        from_due.append(&mut a);
        service.append(&mut b);
        errors += e;
        last_done = last_done.max(done);
    }
    let ok = from_due.len() as u64;
    let elapsed = last_done.duration_since(start.into_std()).as_secs_f64();
    Ok(RateRun {
        target: rate,
        achieved: (ok + errors) as f64 / elapsed.max(1e-9),
        ok,
        errors,
        from_due: Percentiles::of(&mut from_due),
        service: Percentiles::of(&mut service),
        collector_cpu: 0.0,
    })
}

/// wrk with 2 threads; its request rate and latency percentiles.
async fn wrk(
    url: &str,
    token: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Ceiling> {
    let output = tokio::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{}s", duration.as_secs().max(1)),
            "--latency",
            "-H",
            &format!("Authorization: Bearer {token}"),
            url,
        ])
        .output()
        .await
        .context("running wrk (apt-get install wrk, or pass --no-ceiling)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "wrk failed: {text}");
    let line_value = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|rest| rest.trim().to_owned())
    };
    Ok(Ceiling {
        requests_per_s: line_value("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .context("no Requests/sec in wrk's output")?,
        p50: line_value("50%").unwrap_or_default(),
        p99: line_value("99%").unwrap_or_default(),
        non_2xx: line_value("Non-2xx or 3xx responses:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    })
}
