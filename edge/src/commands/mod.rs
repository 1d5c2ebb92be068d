//! The commands of the `bess-edge` binary, one module each, with the clap
//! definitions of all of them in `cli`. These are the binary's own modules,
//! not the library's: they print for a technician at a terminal and report
//! failures with `anyhow`, while everything they drive (config, site plan,
//! links, poller, agent) lives in the library.
//!
//! Exit status: 0 on success, 1 when a command fails, 2 for a config file
//! that cannot be loaded (`check`, `run`).

pub mod check;
pub mod cli;
pub mod key;
mod plan_report;
pub mod read;
pub mod run;
pub mod scan;
pub mod status;

use std::process::ExitCode;

/// Exit status 1, after printing the error chain, when a command failed.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bess-edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Run a command's future on a single-threaded runtime.
pub fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}
