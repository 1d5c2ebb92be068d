//! The `bess-edge` command line.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use bess_edge::agent::{self, RunOptions};
use bess_edge::config::ValidConfig;

const EXAMPLE_CONFIG: &str = include_str!("../bess-edge.example.toml");

#[derive(Parser)]
#[command(
    name = "bess-edge",
    version,
    about = "BESS edge agent: polls battery controllers over Modbus, buffers readings on disk and forwards them to Kafka",
    after_help = "Getting started on a site PC:\n  bess-edge init > /etc/bess/edge.toml     # write a commented example\n  bess-edge check --config /etc/bess/edge.toml\n  bess-edge run --config /etc/bess/edge.toml\n\nStatus while running: curl http://127.0.0.1:9100/status"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Poll the configured devices and forward their readings until stopped (Ctrl-C or SIGTERM).
    #[command(after_help = "Example:\n  bess-edge run --config /etc/bess/edge.toml\n\nOn SIGTERM the agent stops polling, seals what it read and gives the uplink\n--shutdown-grace to send it; anything unsent stays in the buffer for the next start.")]
    Run {
        /// Configuration file (TOML).
        #[arg(long, short, env = "BESS_EDGE_CONFIG")]
        config: PathBuf,
        /// Override the status server address from the config (use 127.0.0.1:0 for any free port).
        #[arg(long, env = "BESS_EDGE_STATUS_LISTEN")]
        status_listen: Option<SocketAddr>,
        /// Append every sealed frame to this file as JSON lines (an audit trail of what was read).
        #[arg(long, env = "BESS_EDGE_RECORD")]
        record: Option<PathBuf>,
        /// How long to keep sending buffered batches after a stop signal.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, env = "BESS_EDGE_SHUTDOWN_GRACE")]
        shutdown_grace: Duration,
    },
    /// Validate a configuration file and print the poll plan; exits non-zero on any problem.
    Check {
        #[arg(long, short, env = "BESS_EDGE_CONFIG")]
        config: PathBuf,
    },
    /// Print a commented example configuration to stdout.
    Init,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Init => {
            print!("{EXAMPLE_CONFIG}");
            ExitCode::SUCCESS
        }
        Command::Check { config } => match ValidConfig::load(&config) {
            Ok(valid) => {
                println!("{}: OK — site {}, {} devices, {} points", config.display(), valid.site, valid.devices.len(), valid.catalog.point_count());
                for device in &valid.devices {
                    println!("  {} ({}:{} unit {}):", device.name, device.host, device.port, device.unit);
                    for group in &device.groups {
                        println!(
                            "    {:<12} every {:>6}  {} {}..{} ({} points, 1 request)",
                            group.name,
                            humantime::format_duration(group.interval).to_string(),
                            group.table,
                            group.start,
                            u32::from(group.start) + u32::from(group.count) - 1,
                            group.points.len()
                        );
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config, status_listen, record, shutdown_grace } => {
            init_tracing();
            let valid = match ValidConfig::load(&config) {
                Ok(valid) => valid,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            match run(valid, RunOptions { record, status_listen, shutdown_grace }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bess-edge: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(config: ValidConfig, options: RunOptions) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing metrics recorder")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(shutdown_signal(cancel.clone()));
        agent::run(config, options, metrics, cancel).await
    })
}

async fn shutdown_signal(cancel: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stop signal received");
    cancel.cancel();
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
