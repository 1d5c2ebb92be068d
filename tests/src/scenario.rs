//! Building blocks for end-to-end scenarios: start the simulator, the
//! collector and the edge as processes, wired to a broker and a database.

use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::audit::{load_record, load_stored, reconcile, unrecorded_batches};
use crate::proxy::LinkProxy;
use crate::{binary, connect, edge_config, free_port, wait_for, Broker, Proc, Scratch};

pub struct Sim {
    pub proc: Proc,
    pub addr: SocketAddr,
}

/// A simulated site: `units` controllers on one free port.
pub async fn start_sim(dir: &Path, units: u8, seed: u64) -> anyhow::Result<Sim> {
    start_sim_with_config(dir, units, seed, None).await
}

/// Like [`start_sim`], with a `bess-sim` config file (schedule, faults).
pub async fn start_sim_with_config(
    dir: &Path,
    units: u8,
    seed: u64,
    config: Option<&Path>,
) -> anyhow::Result<Sim> {
    let units = units.to_string();
    let seed = seed.to_string();
    let mut args = vec![
        "site",
        "--listen",
        "127.0.0.1:0",
        "--units",
        &units,
        "--seed",
        &seed,
    ];
    let config = config.map(|c| c.display().to_string());
    if let Some(config) = &config {
        args.extend(["--config", config]);
    }
    let mut proc = Proc::spawn("sim", &binary("bess-sim"), &args, dir)?;
    let line = proc
        .wait_for_line("bess-sim: unit 1 on ", Duration::from_secs(30))
        .await?;
    let addr = line.rsplit(' ').next().context("address")?.parse()?;
    Ok(Sim { proc, addr })
}

/// A broker that clients reach only through a [`LinkProxy`] (the broker
/// advertises the proxy's address), so cutting the proxy cuts the site's link.
pub async fn broker_behind_link(scratch: &Scratch) -> anyhow::Result<(LinkProxy, Broker)> {
    let proxy_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let broker_port = free_port();
    let proxy = LinkProxy::start(proxy_listener, ([127, 0, 0, 1], broker_port).into())?;
    let broker = Broker::start_advertising(&scratch.dir, broker_port, proxy.addr.port()).await?;
    Ok((proxy, broker))
}

/// The `bess-collector run` flags of a lab: a new site's first key is
/// pinned, unsigned batches are stored.
pub const LAB_SIGNATURES: [&str; 3] = ["--batch-signatures", "optional", "--pin-first-key"];

/// A collector on a free API port; returns it with its API base URL.
pub async fn start_collector(
    dir: &Path,
    name: &str,
    database_url: &str,
    brokers: &str,
) -> anyhow::Result<(Proc, String)> {
    start_collector_with(dir, name, database_url, brokers, &[]).await
}

/// Like [`start_collector`], with more `run` flags (`--storage`, ...).
pub async fn start_collector_with(
    dir: &Path,
    name: &str,
    database_url: &str,
    brokers: &str,
    extra: &[&str],
) -> anyhow::Result<(Proc, String)> {
    let mut args = vec![
        "run",
        "--database-url",
        database_url,
        "--brokers",
        brokers,
        "--listen",
        "127.0.0.1:0",
        "--session-timeout",
        "3s",
        "--auth",
        "disabled",
    ];
    // Scenarios' edges sign with keys made on their first run: pinned on
    // first use, with unsigned batches (simulated fleets, tools) allowed.
    // A scenario that passes `--batch-signatures` chooses for itself.
    if !extra.contains(&"--batch-signatures") {
        args.extend(LAB_SIGNATURES);
    }
    args.extend_from_slice(extra);
    let mut proc = Proc::spawn(name, &binary("bess-collector"), &args, dir)?;
    let api = proc.wait_for_url("bess-collector: API on ").await?;
    Ok((proc, api))
}

/// Write the edge config for this scenario and return its path.
pub fn write_edge_config(
    dir: &Path,
    sim: SocketAddr,
    brokers: &str,
    extra: &str,
) -> anyhow::Result<PathBuf> {
    let path = dir.join("edge.toml");
    std::fs::write(
        &path,
        edge_config(sim, brokers, &dir.join("buffer.sqlite"), extra),
    )?;
    Ok(path)
}

/// An edge run recording to `record`; returns it with its status URL.
pub async fn start_edge(
    dir: &Path,
    name: &str,
    config: &Path,
    record: &Path,
) -> anyhow::Result<(Proc, String)> {
    let mut proc = Proc::spawn(
        name,
        &binary("bess-edge"),
        &[
            "run",
            "--config",
            config.to_str().context("path")?,
            "--status-listen",
            "127.0.0.1:0",
            "--record",
            record.to_str().context("path")?,
        ],
        dir,
    )?;
    let status = proc.wait_for_url("bess-edge: status on ").await?;
    Ok((proc, status))
}

pub async fn ledger_count(db: &tokio_postgres::Client) -> i64 {
    match db.query_one("SELECT count(*) FROM batch_ledger", &[]).await {
        Ok(row) => row.get(0),
        Err(_) => -1,
    }
}

/// Wait until the ledger holds at least `n` batches.
pub async fn wait_for_ledger(database_url: &str, n: i64, limit: Duration) -> anyhow::Result<()> {
    wait_for(
        &format!("{n} batches in the ledger"),
        limit,
        || async move {
            let db = crate::connect(database_url).await.ok()?;
            (ledger_count(&db).await >= n).then_some(())
        },
    )
    .await
}

/// The number of batches the edge acknowledged so far, from its /status.
pub async fn edge_acked(status_url: &str) -> Option<u64> {
    let (_, status) = crate::get_json(&format!("{status_url}/status"))
        .await
        .ok()?;
    status["totals"]["batches_acked"].as_u64()
}

/// Stop the last edge cleanly, wait for the collector to write every batch
/// the ledger should hold, and count.
pub async fn stop_and_count(
    mut edge: Proc,
    records: &[PathBuf],
    database_url: &str,
    max_unrecorded_batches: usize,
) -> anyhow::Result<()> {
    let exit = edge.terminate(Duration::from_secs(60)).await?;
    assert!(exit.success(), "edge exit {exit}\n{}", edge.log_tail(30));
    let summary = edge
        .stdout_lines()
        .into_iter()
        .find(|l| l.starts_with("bess-edge: stopped;"));
    assert!(
        summary
            .as_deref()
            .is_some_and(|s| s.ends_with(" 0 left in the buffer")),
        "{summary:?}"
    );
    let paths: Vec<&std::path::Path> = records.iter().map(PathBuf::as_path).collect();
    let recorded = load_record(&paths)?;
    assert!(recorded.count > 0, "the edge recorded nothing");
    // Every recorded batch must arrive; batches a kill -9 kept out of the
    // record may arrive too.
    let db = connect(database_url).await?;
    wait_for(
        "every recorded batch in the ledger",
        Duration::from_secs(120),
        || {
            let (db, recorded) = (&db, &recorded);
            async move {
                let ledger: std::collections::HashSet<i64> = db
                    .query("SELECT seq FROM batch_ledger", &[])
                    .await
                    .ok()?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                recorded.seqs.is_subset(&ledger).then_some(())
            }
        },
    )
    .await?;
    let stored = load_stored(&db).await?;
    let unrecorded = unrecorded_batches(&db, &recorded).await?;
    let verdict = reconcile(&recorded, &stored);
    eprintln!(
        "recorded {} samples, stored {}, lost {}, doubled {}, unrecorded batches {}",
        verdict.recorded,
        verdict.stored,
        verdict.lost.len(),
        verdict.doubled.len(),
        unrecorded.len()
    );
    verdict.assert_exactly_once(max_unrecorded_batches, unrecorded.len());
    Ok(())
}
