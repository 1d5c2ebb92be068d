//! Polling benchmark: the edge polls N devices × R holding registers at
//! 1 Hz (default 50 × 200) through the real pipeline — `ModbusLink`s,
//! `ModbusPoller`s, `BatchSealer`, `SqliteBuffer`, the live lane's
//! encoding — with a drain standing in for the uplink's acknowledgements
//! and a sink that discards what the live lane's broker client would send. The devices are served by a child
//! process (this binary with `serve`), so the figures are the edge's alone:
//!
//! - CPU share: CPU time of this process / wall time, in % of one core;
//! - peak memory: `VmHWM` of this process;
//! - Modbus requests per cycle, counted, against the minimum possible.
//!
//! ```text
//! cargo run --release -p bess-edge --example poll_bench -- [--devices 50] [--registers 200] [--seconds 30]
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use bess_edge::buffer::{BufferHandle, SqliteBuffer};
use bess_edge::clock::now_ms;
use bess_edge::config::ValidConfig;
use bess_edge::link::links_for;
use bess_edge::live::{LiveFeed, LiveLane, LiveSink};
use bess_edge::poller::ModbusPoller;
use bess_edge::sealer::BatchSealer;
use bess_edge::status::{AgentStatus, Totals};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The live lane's broker client, with nothing sent.
struct DiscardingSink;

impl LiveSink for DiscardingSink {
    const NAME: &'static str = "discarding";
    fn send(&mut self, _message: Vec<u8>) -> bool {
        true
    }
    async fn next_loss(&mut self) {
        std::future::pending().await
    }
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        return serve(
            arg("--devices", 50) as usize,
            arg("--registers", 200) as u16,
        );
    }
    let devices = arg("--devices", 50) as usize;
    let registers = arg("--registers", 200) as u16;
    let seconds = arg("--seconds", 30);

    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "serve",
            "--devices",
            &devices.to_string(),
            "--registers",
            &registers.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
    let ports: Vec<u16> = line
        .trim()
        .strip_prefix("ports ")
        .unwrap_or_default()
        .split(',')
        .filter_map(|p| p.parse().ok())
        .collect();
    anyhow::ensure!(ports.len() == devices, "server did not start: {line:?}");

    let config = ValidConfig::parse(&config_text(&ports, registers))
        .map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let (requests_per_cycle, minimum): (usize, usize) = config
        .devices
        .iter()
        .flat_map(|d| &d.groups)
        .fold((0, 0), |(r, m), g| {
            (r + g.requests.len(), m + g.min_requests)
        });

    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let figures = runtime.block_on(async {
        let buffer = BufferHandle::new(SqliteBuffer::open(
            &dir.path().join("bench.sqlite"),
            now_ms(),
        )?);
        let status = Arc::new(AgentStatus::new(
            "bench".into(),
            config.devices.iter().map(|d| d.name.clone()),
        ));
        let (tx, from_pollers) = mpsc::channel(4096);
        let sealed = Arc::new(Notify::new());
        let sealer = BatchSealer {
            site: config.site.clone(),
            catalog: config.catalog.clone(),
            buffer: buffer.clone(),
            config: config.batch,
            recorder: None,
            sealed: sealed.clone(),
            status: status.clone(),
            cap_bytes: None,
        };
        // Every frame also goes through the live lane, as in the agent.
        let (to_sealer, rx) = mpsc::channel(4096);
        let (feed, live_frames) = LiveFeed::channel();
        let live_task = tokio::spawn(
            LiveLane::new(config.catalog.hash(), &config.live, DiscardingSink).run(live_frames),
        );
        let tee = tokio::spawn(async move {
            let mut from_pollers = from_pollers;
            while let Some(frame) = from_pollers.recv().await {
                feed.offer(&frame);
                if to_sealer.send(frame).await.is_err() {
                    break;
                }
            }
        });
        let sealer_task = tokio::spawn(sealer.run(rx));
        // Stand-in for the uplink: acknowledge every sealed batch.
        let drain_stop = CancellationToken::new();
        let drain = tokio::spawn({
            let (buffer, stop) = (buffer.clone(), drain_stop.clone());
            async move {
                while !stop.is_cancelled() {
                    tokio::select! { () = sealed.notified() => {}, () = stop.cancelled() => {} }
                    if let Ok(batches) = buffer.oldest(None, 1000).await {
                        let _ = buffer
                            .remove(batches.into_iter().map(|b| b.seq).collect())
                            .await;
                    }
                }
            }
        });
        let stop = CancellationToken::new();
        let links = links_for(&config.devices);
        let mut pollers = Vec::new();
        for ((i, device), link) in config.devices.iter().cloned().enumerate().zip(links) {
            pollers.push(tokio::spawn(
                ModbusPoller::with_link(device, i, link, tx.clone(), status.clone())
                    .run(stop.clone()),
            ));
        }
        drop(tx);
        // Warm up (connections, first batches), then measure.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (cpu0, wall0, requests0, samples0) = (
            cpu_seconds(),
            Instant::now(),
            counter(&metrics, "bess_edge_modbus_requests_total"),
            Totals::get(&status.totals.samples_read),
        );
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (cpu1, wall, requests1, samples1) = (
            cpu_seconds(),
            wall0.elapsed(),
            counter(&metrics, "bess_edge_modbus_requests_total"),
            Totals::get(&status.totals.samples_read),
        );
        stop.cancel();
        for p in pollers {
            p.await?;
        }
        tee.await?;
        live_task.await?;
        sealer_task.await??;
        drain_stop.cancel();
        drain.await?;
        let errors: u64 = status.devices().iter().map(|d| d.errors).sum();
        anyhow::Ok((
            cpu1 - cpu0,
            wall,
            requests1 - requests0,
            samples1 - samples0,
            errors,
        ))
    })?;
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();

    let (cpu, wall, requests, samples, errors) = figures;
    let cycles = wall.as_secs_f64();
    println!("edge polling benchmark: {devices} devices × {registers} registers at 1 Hz, measured for {:.1} s", wall.as_secs_f64());
    println!(
        "  CPU share            {:.2} % of one core ({:.2} s CPU)",
        100.0 * cpu / wall.as_secs_f64(),
        cpu
    );
    println!(
        "  peak memory (VmHWM)  {:.1} MiB",
        peak_rss_kib() as f64 / 1024.0
    );
    println!("  requests per cycle   {:.1} measured, {requests_per_cycle} planned, {minimum} minimum possible", requests as f64 / cycles);
    println!(
        "  samples per second   {:.0} ({} expected)",
        samples as f64 / wall.as_secs_f64(),
        devices * usize::from(registers)
    );
    println!("  poll errors          {errors}");
    Ok(())
}

fn config_text(ports: &[u16], registers: u16) -> String {
    let points: Vec<String> = (0..registers)
        .map(|a| format!("  {{ name = \"r{a}\", address = {a}, type = \"u16\" }},"))
        .collect();
    let mut text = format!(
        "site_id = \"bench\"\n[kafka]\nbrokers = \"127.0.0.1:1\"\n[maps.bench]\n[[maps.bench.groups]]\nname = \"all\"\ninterval = \"1s\"\npoints = [\n{}\n]\n",
        points.join("\n")
    );
    for (i, port) in ports.iter().enumerate() {
        text.push_str(&format!("[[devices]]\nname = \"dev-{i}\"\nhost = \"127.0.0.1\"\nport = {port}\nmap = \"bench\"\n"));
    }
    text
}

fn counter(metrics: &metrics_exporter_prometheus::PrometheusHandle, name: &str) -> u64 {
    metrics
        .render()
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0) as u64
}

/// utime + stime of this process from /proc/self/stat, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields after the command name: utime is the 12th, stime the 13th (0-based 11, 12). Clock ticks are 100 Hz on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The device side: `devices` Modbus TCP servers with `registers` holding
/// registers each, answering function 03 only. Exits when stdin closes.
fn serve(devices: usize, registers: u16) -> anyhow::Result<()> {
    let listeners: Vec<TcpListener> = (0..devices)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let ports: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port().to_string()))
        .collect::<Result<_, _>>()?;
    println!("ports {}", ports.join(","));
    std::io::stdout().flush()?;
    for listener in listeners {
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || answer(stream, registers));
            }
        });
    }
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(())
}

fn answer(mut stream: std::net::TcpStream, registers: u16) {
    stream.set_nodelay(true).ok();
    let started = Instant::now();
    let mut header = [0u8; 7];
    loop {
        if stream.read_exact(&mut header).is_err() {
            return;
        }
        let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
        let mut pdu = vec![0u8; len.saturating_sub(1)];
        if stream.read_exact(&mut pdu).is_err() || pdu.len() < 5 {
            return;
        }
        let (start, count) = (
            u16::from_be_bytes([pdu[1], pdu[2]]),
            u16::from_be_bytes([pdu[3], pdu[4]]),
        );
        let mut body = Vec::new();
        if pdu[0] == 3
            && count <= 125
            && u32::from(start) + u32::from(count) <= u32::from(registers)
        {
            let tick = started.elapsed().as_secs() as u16;
            body.push(3);
            body.push((count * 2) as u8);
            for a in start..start + count {
                body.extend_from_slice(&a.wrapping_add(tick).to_be_bytes());
            }
        } else {
            body.extend_from_slice(&[pdu[0] | 0x80, 2]);
        }
        let mut frame = Vec::with_capacity(7 + body.len());
        frame.extend_from_slice(&header[..4]);
        frame.extend_from_slice(&((body.len() + 1) as u16).to_be_bytes());
        frame.push(header[6]);
        frame.extend_from_slice(&body);
        if stream.write_all(&frame).is_err() {
            return;
        }
    }
}
