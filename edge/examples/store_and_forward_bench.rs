//! Store-and-forward figures for `docs/benchmarks.md`:
//!
//! 1. sealing rate into the SQLite buffer (samples/s) and bytes on disk per
//!    sample, against the ceiling of the same work without SQLite (encode
//!    only) measured in the same run;
//! 2. draining a one-hour backlog of a 50-device site to a real broker while
//!    live batches keep arriving: drain rate as a multiple of the live rate,
//!    and the time it takes.
//!
//! Run: `cargo run --release -p bess-edge --example store_and_forward_bench`
//! (needs the Tansu broker: `deploy/tools/install-tansu.sh`).

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use bess_edge::buffer::{BatchContent, BufferHandle, SealSummary, SqliteBuffer};
use bess_edge::config::KafkaConfig;
use bess_edge::status::AgentStatus;
use bess_edge::uplink::{DrainOrder, KafkaUplink};
use bess_protocol::*;

const DEVICES: u16 = 50;
const POINTS: usize = 15;
/// One batch per second: one frame per device.
const FRAMES_PER_BATCH: usize = DEVICES as usize;
const BACKLOG_SECONDS: i64 = 3600;

fn catalog() -> Catalog {
    Catalog {
        devices: (0..DEVICES)
            .map(|d| DeviceInfo {
                name: format!("bms-{d}"),
                model: "bench".into(),
            })
            .collect(),
        groups: (0..DEVICES)
            .map(|d| GroupInfo {
                device: d,
                name: "fast".into(),
                interval_ms: 1000,
                points: (0..POINTS)
                    .map(|p| PointInfo::new(&format!("p{p}"), "V", PointKind::Analog, 0.1, 0.0))
                    .collect(),
            })
            .collect(),
    }
}

/// One second of the site: a frame per device with slowly moving values.
fn second(t: i64) -> Vec<Frame> {
    (0..DEVICES)
        .map(|d| Frame {
            group: GroupIndex(d),
            ts_ms: 1_764_000_000_000 + t * 1000 + i64::from(d),
            values: (0..POINTS)
                .map(|p| Reading::Int(5000 + (t + p as i64 * 7 + i64::from(d)) % 40))
                .collect(),
        })
        .collect()
}

fn batch(
    site: &SiteId,
    hash: CatalogHash,
    seq: BatchSeq,
    frames: Vec<Frame>,
    gaps: Vec<Gap>,
) -> Batch {
    Batch {
        site: site.clone(),
        seq,
        catalog_hash: hash,
        catalog: None,
        frames,
        gaps,
    }
}

fn summary(t: i64, sealed_at_ms: i64) -> SealSummary {
    SealSummary {
        frames: FRAMES_PER_BATCH as u32,
        samples: (FRAMES_PER_BATCH * POINTS) as u32,
        first_ts_ms: Some(t),
        last_ts_ms: Some(t),
        sealed_at_ms,
    }
}

fn fill(buffer: &mut SqliteBuffer, seconds: i64, sealed_at_ms: i64) {
    let site = SiteId::new("bench-site").unwrap();
    let hash = catalog().hash();
    for t in 0..seconds {
        let frames = second(t);
        let site = site.clone();
        buffer
            .seal_with_content(
                summary(t, sealed_at_ms),
                BatchContent::Measurements,
                move |seq, gaps| batch(&site, hash, seq, frames, gaps).encode(Codec::Zstd),
            )
            .unwrap();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let samples_per_second = (FRAMES_PER_BATCH * POINTS) as f64;

    // 1. Sealing rate vs encode-only ceiling.
    let seconds = 600;
    let started = Instant::now();
    let site = SiteId::new("bench-site").unwrap();
    let hash = catalog().hash();
    let mut encoded_bytes = 0usize;
    for t in 0..seconds {
        encoded_bytes += batch(&site, hash, BatchSeq(t as u64), second(t), Vec::new())
            .encode(Codec::Zstd)?
            .len();
    }
    let encode_only = started.elapsed();
    let path = dir.path().join("seal.sqlite");
    let mut buffer = SqliteBuffer::open(&path, 1)?;
    let started = Instant::now();
    fill(&mut buffer, seconds, 0);
    let seal = started.elapsed();
    drop(buffer);
    let samples = seconds as f64 * samples_per_second;
    let file_bytes: u64 = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum();
    println!("sealing: {seconds} batches of {FRAMES_PER_BATCH} frames x {POINTS} points ({samples} samples)");
    println!(
        "  encode only (ceiling): {:>10.0} samples/s",
        samples / encode_only.as_secs_f64()
    );
    println!(
        "  seal into SQLite:      {:>10.0} samples/s  ({:.0}% of ceiling; synchronous=FULL, one fsync per batch)",
        samples / seal.as_secs_f64(),
        100.0 * encode_only.as_secs_f64() / seal.as_secs_f64()
    );
    println!(
        "  encoded batch bytes per sample: {:.2}",
        encoded_bytes as f64 / samples
    );
    println!(
        "  buffer file bytes per sample:   {:.2}",
        file_bytes as f64 / samples
    );

    // 2. Drain a one-hour backlog while live batches keep coming.
    let broker = bess_tests::Broker::start(dir.path()).await?;
    let path = dir.path().join("drain.sqlite");
    let mut buffer = SqliteBuffer::open(&path, 2)?;
    print!("filling a {BACKLOG_SECONDS} s backlog of a {DEVICES}-device site ... ");
    fill(&mut buffer, BACKLOG_SECONDS, 0);
    println!("done ({} batches)", buffer.stats()?.batches);
    let buffer = BufferHandle::new(buffer);
    let status = Arc::new(AgentStatus::new("bench-site".into(), Vec::new()));
    let sealed = Arc::new(Notify::new());
    let kafka = KafkaConfig {
        brokers: broker.brokers(),
        topic: "bench.telemetry".into(),
        live_topic: "bench.live".into(),
        delivery_timeout: Duration::from_secs(30),
        properties: Default::default(),
        tls: None,
    };
    let uplink = KafkaUplink::new(
        &kafka,
        site.clone(),
        buffer.clone(),
        status.clone(),
        sealed.clone(),
    )?
    .with_drain_order(DrainOrder::LiveFirst {
        window: Duration::from_secs(10),
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(uplink.run(stop.clone(), Duration::from_secs(5)));

    // The live source: one batch per second, as a real site would seal.
    let live_stop = CancellationToken::new();
    let live = tokio::spawn({
        let (buffer, sealed, stop) = (buffer.clone(), sealed.clone(), live_stop.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut t = BACKLOG_SECONDS;
            while !stop.is_cancelled() {
                tick.tick().await;
                let (site, frames) = (site.clone(), second(t));
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64;
                buffer
                    .seal(summary(t, now), move |seq, gaps| {
                        batch(&site, hash, seq, frames, gaps).encode(Codec::Zstd)
                    })
                    .await
                    .unwrap();
                sealed.notify_one();
                t += 1;
            }
        }
    });
    let started = Instant::now();
    let total = BACKLOG_SECONDS as u64;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let left = buffer.stats().await?.batches;
        let acked = bess_edge::status::Totals::get(&status.totals.batches_acked);
        eprint!("\r  drained {acked} batches, {left} waiting   ");
        if left <= 1 && acked >= total {
            break;
        }
    }
    let drained = started.elapsed();
    eprintln!();
    live_stop.cancel();
    live.await?;
    stop.cancel();
    task.await?;
    let acked = bess_edge::status::Totals::get(&status.totals.batches_acked);
    let drain_rate = acked as f64 * samples_per_second / drained.as_secs_f64();
    println!("draining: one hour of a {DEVICES}-device site ({total} batches, {:.0} samples) with live polling going on", total as f64 * samples_per_second);
    println!("  live rate:   {samples_per_second:>10.0} samples/s");
    println!(
        "  drain rate:  {drain_rate:>10.0} samples/s  ({:.0}x the live rate)",
        drain_rate / samples_per_second
    );
    println!("  time to drain the hour: {:.1} s", drained.as_secs_f64());
    Ok(())
}
