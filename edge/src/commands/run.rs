//! `bess-edge run`: the agent itself, on a multi-threaded runtime, with
//! logs to stderr (`RUST_LOG`, default `info`), the Prometheus recorder
//! installed, and Ctrl-C or SIGTERM turned into the agent's cancellation.

use anyhow::Context as _;
use std::path::Path;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

use bess_edge::agent::{self, RunOptions};
use bess_edge::config::ValidConfig;

use super::report;

/// Run the agent with the config at `config` until stopped.
pub fn run(config: &Path, options: RunOptions) -> ExitCode {
    init_tracing();
    let valid = match ValidConfig::load(config) {
        Ok(valid) => valid,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(warning) = bess_edge::signing::permission_warning("config", config) {
        tracing::warn!("{warning}");
    }
    report(run_agent(valid, options))
}

fn run_agent(config: ValidConfig, options: RunOptions) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing metrics recorder")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(shutdown_signal(cancel.clone()));
        agent::run(config, options, metrics, cancel).await
    })
}

async fn shutdown_signal(cancel: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
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
