//! `bess-api-bench`: benchmarks of the collector's API, run by hand in
//! release mode. Each subcommand starts its own stack (Tansu on a free
//! port, a fresh PostgreSQL database, the collector and the load generator,
//! all from the target directory this binary is in), prints progress and
//! ends with a table.
//!
//! - `lanes`: the whole path with real edges at default settings, 1 and 3
//!   collector instances: read → client latency, frames missing or doubled
//!   per client, bytes per sample on the stored and the live lane, CPU and
//!   memory of collectors and edges.
//! - `live`: WebSocket fan-out of `/api/v1/live` to many clients, each on
//!   one site: delivery latency, frames lost or duplicated, collector CPU
//!   and memory.
//! - `latest`: `GET /api/v1/sites/{site}/latest` at fixed request rates
//!   (open loop, latency from the scheduled send) against the maximum
//!   throughput measured by wrk.
//! - `series`: `GET /api/v1/series` with the database warm, on plain
//!   PostgreSQL and on TimescaleDB: raw, 1-minute and 1-hour answers, each
//!   body format, one point and a whole poll group.

mod lanes;
mod latest;
mod live;
mod measure;
mod series;
mod stack;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bess-api-bench",
    about = "Benchmarks of the collector's API: WebSocket fan-out, /latest at fixed rates, /series latency",
    after_help = "Build and run in release mode (the benchmark starts the release binaries next to it):\n  cargo build --release --bins\n  target/release/bess-api-bench lanes\n  target/release/bess-api-bench live\n  target/release/bess-api-bench latest --rates 1000,3000\n  target/release/bess-api-bench series --days 7\n\nNeeds Tansu (deploy/tools/install-tansu.sh, or BESS_TANSU_BIN), PostgreSQL\n(BESS_TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres)\nand, for the `latest` ceiling, wrk. Set BESS_KEEP_TEST_FILES=1 to keep the logs."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole path, real edges, default settings: latency from the poll to the client, both lanes' bytes.
    Lanes(lanes::LanesArgs),
    /// WebSocket fan-out: clients on /api/v1/live, one site each, one frame per site per second.
    Live(live::LiveArgs),
    /// GET /latest at fixed rates (open loop) and wrk's ceiling (closed loop).
    Latest(latest::LatestArgs),
    /// GET /series latency on plain PostgreSQL and TimescaleDB, database warm.
    Series(series::SeriesArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let open_files = measure::raise_open_files_limit()?;
    println!("open files limit: {open_files}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Lanes(args) => lanes::run(args).await,
            Command::Live(args) => live::run(args).await,
            Command::Latest(args) => latest::run(args).await,
            Command::Series(args) => series::run(args).await,
        }
    })
}
