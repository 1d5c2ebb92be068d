//! The `bess-edge` command line: `run` the agent, and the technician's
//! tools `init`, `key`, `check`, `read`, `scan` and `status`. This file only
//! dispatches; the arguments are in `commands::cli` and each command in its
//! own module under `commands`.

mod commands;

use clap::Parser;
use std::process::ExitCode;

use bess_edge::agent::RunOptions;
use commands::cli::{Cli, Command};
use commands::{block_on, check, key, read, report, run, scan, status};

const EXAMPLE_CONFIG: &str = include_str!("../bess-edge.example.toml");

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Init => {
            print!("{EXAMPLE_CONFIG}");
            ExitCode::SUCCESS
        }
        Command::Key { config } => key::key(&config),
        Command::Check {
            config,
            offline,
            strict,
        } => check::check(&config, offline, strict),
        Command::Read(args) => report(block_on(read::read(args))),
        Command::Scan(args) => report(block_on(scan::scan(args))),
        Command::Status { url, json } => report(block_on(status::status(&url, json))),
        Command::Run {
            config,
            status_listen,
            record,
            shutdown_grace,
        } => run::run(
            &config,
            RunOptions {
                record,
                status_listen,
                shutdown_grace,
            },
        ),
    }
}
