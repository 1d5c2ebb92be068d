//! `bess-sim` command line: parses flags, starts a simulated site, announces
//! where each unit listens (stdout and an optional ready file) and runs until
//! Ctrl-C or SIGTERM.

use std::{
    io::IsTerminal as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use bess_sim::{start_site, RunningSite, SiteSimConfig};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "bess-sim",
    version,
    about = "Simulated BESS battery controllers served over Modbus TCP",
    long_about = "Simulated BESS battery controllers served over Modbus TCP.\n\n\
        Each unit is an LFP battery pack that charges to 90 % SoC, rests 5 minutes, \
        discharges to 15 %, rests, and repeats. Values are served read-only as both \
        holding (FC03) and input (FC04) registers using the \"bess-controller v1\" map \
        (see REGISTERS.md). The same seed always gives the same batteries."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a site of simulated battery controllers.
    #[command(after_help = "\
Examples:
  # three units behind one gateway on port 5020, unit ids 1..=3
  bess-sim site

  # one port per unit (5020 = unit 1, 5021 = unit 2, ...), an hour per minute
  bess-sim site --units 4 --port-per-unit --time-scale 60

  # free ports, for tests: wait for the ready file, then read the addresses
  bess-sim site --listen 127.0.0.1:0 --ready-file /tmp/sim.json

Logs go to stderr; set RUST_LOG=debug for per-connection logs.")]
    Site(SiteArgs),
}

#[derive(Debug, clap::Args)]
struct SiteArgs {
    /// Address to listen on; port 0 picks a free port. With --port-per-unit
    /// this is unit 1's address and unit k gets the port + k - 1.
    #[arg(long, env = "BESS_SIM_LISTEN", default_value = "127.0.0.1:5020")]
    listen: SocketAddr,

    /// Number of simulated units, answering as Modbus unit ids 1..=N.
    #[arg(long, env = "BESS_SIM_UNITS", default_value_t = 3,
          value_parser = clap::value_parser!(u8).range(1..=247))]
    units: u8,

    /// Give each unit its own TCP port instead of sharing one listener.
    #[arg(long, env = "BESS_SIM_PORT_PER_UNIT")]
    port_per_unit: bool,

    /// Seed for the batteries' sizes, starting state and noise.
    #[arg(long, env = "BESS_SIM_SEED", default_value_t = 42)]
    seed: u64,

    /// Simulated seconds per real second (60 = one simulated hour per minute).
    #[arg(long, env = "BESS_SIM_TIME_SCALE", default_value_t = 1.0)]
    time_scale: f64,

    /// Once listening, write {"addrs":[...],"units":N} to this file (atomically).
    #[arg(long, env = "BESS_SIM_READY_FILE")]
    ready_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let Command::Site(args) = Cli::parse().command;
    let config = SiteSimConfig {
        listen: args.listen,
        units: args.units,
        port_per_unit: args.port_per_unit,
        seed: args.seed,
        time_scale: args.time_scale,
    };
    let cancel = CancellationToken::new();
    let site = start_site(config, cancel.clone()).await?;

    for listener in &site.listeners {
        for unit in &listener.units {
            println!("bess-sim: unit {unit} on {}", listener.addr);
        }
    }
    if let Some(path) = &args.ready_file {
        write_ready_file(path, &site, args.units)
            .with_context(|| format!("cannot write ready file {}", path.display()))?;
    }

    wait_for_shutdown_signal().await?;
    tracing::info!("stopping");
    cancel.cancel();
    if tokio::time::timeout(Duration::from_secs(5), site.stopped())
        .await
        .is_err()
    {
        tracing::warn!("listeners did not stop within 5 s; exiting anyway");
    }
    Ok(())
}

/// Writes the ready file through a temporary file and a rename, so a reader
/// never sees it half written.
fn write_ready_file(path: &Path, site: &RunningSite, units: u8) -> anyhow::Result<()> {
    let addrs: Vec<String> = site.addrs.iter().map(|a| format!("\"{a}\"")).collect();
    let json = format!("{{\"addrs\":[{}],\"units\":{units}}}\n", addrs.join(","));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            res = tokio::signal::ctrl_c() => res?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
