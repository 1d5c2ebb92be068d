//! `bess-sim` command line: parses flags and a config file, starts a site,
//! a fleet, an RTU device, the load generator or the benchmark, announces
//! where things listen (stdout and an optional ready file) and runs until
//! Ctrl-C or SIGTERM.

use std::{
    io::IsTerminal as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use bess_sim::{
    bench,
    config::SimFile,
    fleet::{start_fleet, FleetConfig},
    load::{self, LoadConfig},
    rtu::RtuPort,
    start_site, Profile, SiteSimConfig, STEP,
};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "bess-sim",
    version,
    about = "Simulated BESS battery controllers (Modbus TCP/RTU), scripted faults, fleets and Kafka load",
    long_about = "Simulated BESS battery controllers for testing without hardware.\n\n\
        Each unit is an LFP battery pack: SoC by coulomb counting, voltage from an OCV curve \
        and resistance, per-cell voltages and module temperatures, a thermal model against \
        ambient, SoH fade, and status/alarm words that follow. By default it charges to 90 % \
        SoC, rests, discharges to 15 % and repeats; a config file can give a day schedule and \
        a timeline of faults. Units serve the \"bess-controller v1\" map or a SunSpec device \
        (see simulators/REGISTERS.md and docs/testers-guide.md). The same seed always gives \
        the same batteries."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a site of simulated battery controllers over Modbus TCP.
    #[command(after_help = "\
Examples:
  # three units behind one gateway on port 5020, unit ids 1..=3
  bess-sim site

  # one port per unit (5020 = unit 1, 5021 = unit 2, ...), an hour per minute
  bess-sim site --units 4 --port-per-unit --time-scale 60

  # a SunSpec device at base 40000
  bess-sim site --profile sunspec

  # schedule and faults from a file (see docs/testers-guide.md)
  bess-sim site --config sim.toml

  # free ports, for tests: wait for the ready file, then read the addresses
  bess-sim site --listen 127.0.0.1:0 --ready-file /tmp/sim.json

Fault starts and ends are logged at WARN with target bess_sim::fault.
Logs go to stderr; set RUST_LOG=debug for per-connection logs.")]
    Site(SiteArgs),
    /// Serve many sites x units in one process.
    #[command(after_help = "\
Examples:
  # 50 sites of 4 units on ports 6000..6049
  bess-sim fleet --sites 50 --units 4 --base-port 6000

  # 10 sites on free ports, addresses in a ready file
  bess-sim fleet --sites 10 --base-port 0 --ready-file /tmp/fleet.json

Every site shares the --config file's schedule and faults; site i is named
site-NNN and has its own seed derived from --seed.")]
    Fleet(FleetArgs),
    /// Serve Modbus RTU on a pseudo-terminal linked at --pty-link.
    #[command(after_help = "\
Examples:
  bess-sim rtu --pty-link /tmp/bess-sim-rtu --units 2
  # then open /tmp/bess-sim-rtu as a serial port (any baud rate, 8N1)

The same units are also served over Modbus TCP on --listen.")]
    Rtu(RtuArgs),
    /// Write synthetic telemetry batches straight to a Kafka topic.
    #[command(after_help = "\
Examples:
  bess-sim load --brokers 127.0.0.1:9092 --sites 100 --rate 50000 --duration 60s
  bess-sim load --brokers b-1.msk:9096 --kafka-property security.protocol=SASL_SSL ...

Prints progress every --progress and a final summary line:
  bess-sim load: N batches, S samples, B bytes in T s (R samples/s, target X)")]
    Load(LoadArgs),
    /// Measure the CPU cost per simulated device at 1 Hz.
    #[command(after_help = "\
Example (use a release build for the real figure):
  cargo run --release -p bess-sim -- bench --devices 2000 --seconds 30")]
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct UnitArgs {
    /// TOML file with [site], [schedule] and [[fault]] sections; flags override it.
    #[arg(long, env = "BESS_SIM_CONFIG")]
    config: Option<PathBuf>,

    /// Number of simulated units per site, Modbus unit ids 1..=N [default: 3]
    #[arg(long, env = "BESS_SIM_UNITS", value_parser = clap::value_parser!(u8).range(1..=247))]
    units: Option<u8>,

    /// Seed for the batteries' sizes, starting state and noise [default: 42]
    #[arg(long, env = "BESS_SIM_SEED")]
    seed: Option<u64>,

    /// Simulated seconds per real second (60 = an hour per minute) [default: 1]
    #[arg(long, env = "BESS_SIM_TIME_SCALE")]
    time_scale: Option<f64>,

    /// Register map: bess-controller or sunspec [default: bess-controller]
    #[arg(long, env = "BESS_SIM_PROFILE")]
    profile: Option<Profile>,

    /// SunSpec base address: 0, 40000 or 50000 [default: 40000]
    #[arg(long, env = "BESS_SIM_SUNSPEC_BASE")]
    sunspec_base: Option<u16>,

    /// Write the bound addresses here (atomically) once listening.
    #[arg(long, env = "BESS_SIM_READY_FILE")]
    ready_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct SiteArgs {
    /// Address to listen on; port 0 picks a free port. With --port-per-unit
    /// this is unit 1's address and unit k gets the port + k - 1. [default: 127.0.0.1:5020]
    #[arg(long, env = "BESS_SIM_LISTEN")]
    listen: Option<SocketAddr>,

    /// Give each unit its own TCP port instead of sharing one listener.
    #[arg(long, env = "BESS_SIM_PORT_PER_UNIT")]
    port_per_unit: bool,

    #[command(flatten)]
    units: UnitArgs,
}

#[derive(Debug, clap::Args)]
struct FleetArgs {
    /// Number of sites.
    #[arg(long, env = "BESS_SIM_SITES", default_value_t = 10)]
    sites: u16,

    /// Port of site 1; site i gets base + i - 1 (0 = free ports).
    #[arg(long, env = "BESS_SIM_BASE_PORT", default_value_t = 6000)]
    base_port: u16,

    /// Address to listen on.
    #[arg(long, env = "BESS_SIM_HOST", default_value = "127.0.0.1")]
    host: IpAddr,

    /// One port per unit (site i, unit k on base + (i-1) * units + k - 1).
    #[arg(long, env = "BESS_SIM_PORT_PER_UNIT")]
    port_per_unit: bool,

    /// Real time between model updates; 1 s keeps a big fleet cheap.
    #[arg(long, env = "BESS_SIM_TICK", default_value = "1s", value_parser = humantime::parse_duration)]
    tick: Duration,

    #[command(flatten)]
    units: UnitArgs,
}

#[derive(Debug, clap::Args)]
struct RtuArgs {
    /// Where to symlink the serial device clients open.
    #[arg(long, env = "BESS_SIM_PTY_LINK", default_value = "/tmp/bess-sim-rtu")]
    pty_link: PathBuf,

    /// Also serve the units over Modbus TCP here (port 0 = free port).
    #[arg(long, env = "BESS_SIM_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    #[command(flatten)]
    units: UnitArgs,
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "BESS_KAFKA_BROKERS")]
    brokers: String,

    /// Topic to write to.
    #[arg(long, env = "BESS_KAFKA_TOPIC", default_value = "bess.telemetry")]
    topic: String,

    /// Live topic: each batch's frames also go here as live messages, as an
    /// edge's live lane sends them (empty: no live lane).
    #[arg(long, env = "BESS_LIVE_TOPIC", default_value = "bess.live")]
    live_topic: String,

    /// Number of synthetic sites (ids load-site-001, ...).
    #[arg(long, env = "BESS_LOAD_SITES", default_value_t = 10)]
    sites: u16,

    /// Devices per site.
    #[arg(long, env = "BESS_LOAD_UNITS", default_value_t = 3)]
    units: u8,

    /// Target samples per second over all sites (15 samples per frame).
    #[arg(long, env = "BESS_LOAD_RATE", default_value_t = 10_000)]
    rate: u64,

    /// How long to send.
    #[arg(long, env = "BESS_LOAD_DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,

    /// One batch per site per interval.
    #[arg(long, env = "BESS_LOAD_BATCH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    batch_interval: Duration,

    /// How often to print progress.
    #[arg(long, env = "BESS_LOAD_PROGRESS", default_value = "5s", value_parser = humantime::parse_duration)]
    progress: Duration,

    /// Seed for the synthetic batteries.
    #[arg(long, env = "BESS_SIM_SEED", default_value_t = 42)]
    seed: u64,

    /// Extra librdkafka property KEY=VALUE (repeatable), e.g. security settings.
    #[arg(long = "kafka-property", value_parser = parse_property)]
    kafka_properties: Vec<(String, String)>,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Devices to step.
    #[arg(long, default_value_t = 1000)]
    devices: usize,

    /// Simulated seconds per device.
    #[arg(long, default_value_t = 20)]
    seconds: u32,

    /// Register map to encode: bess-controller or sunspec.
    #[arg(long, default_value = "bess-controller")]
    profile: Profile,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

/// Merges a config file (if any) and flags into a site config.
fn site_config(
    args: &UnitArgs,
    listen: Option<SocketAddr>,
    port_per_unit: bool,
) -> anyhow::Result<SiteSimConfig> {
    let file = match &args.config {
        Some(path) => SimFile::load(path)?,
        None => SimFile::default(),
    };
    let defaults = SiteSimConfig::default();
    let mut profile = args.profile.or(file.profile).unwrap_or_default();
    if let Some(base) = args.sunspec_base {
        anyhow::ensure!(
            bess_sim::sunspec::BASE_ADDRESSES.contains(&base),
            "--sunspec-base must be 0, 40000 or 50000"
        );
        if let Profile::SunSpec { base: b } = &mut profile {
            *b = base;
        }
    }
    Ok(SiteSimConfig {
        listen: listen.or(file.site.listen).unwrap_or(defaults.listen),
        units: args.units.or(file.site.units).unwrap_or(defaults.units),
        port_per_unit: port_per_unit || file.site.port_per_unit.unwrap_or(false),
        seed: args.seed.or(file.site.seed).unwrap_or(defaults.seed),
        time_scale: args
            .time_scale
            .or(file.site.time_scale)
            .unwrap_or(defaults.time_scale),
        name: file.site.name.unwrap_or(defaults.name),
        profile,
        schedule: file.schedule,
        faults: file.faults,
        tick: STEP,
    })
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

    match Cli::parse().command {
        Command::Site(args) => run_site(args).await,
        Command::Fleet(args) => run_fleet(args).await,
        Command::Rtu(args) => run_rtu(args).await,
        Command::Load(args) => run_load(args).await,
        Command::Bench(args) => {
            run_bench(&args);
            Ok(())
        }
    }
}

async fn run_site(args: SiteArgs) -> anyhow::Result<()> {
    let config = site_config(&args.units, args.listen, args.port_per_unit)?;
    let units = config.units;
    let cancel = CancellationToken::new();
    let site = start_site(config, cancel.clone()).await?;
    for listener in &site.listeners {
        for unit in &listener.units {
            println!("bess-sim: unit {unit} on {}", listener.addr);
        }
    }
    if let Some(path) = &args.units.ready_file {
        let addrs: Vec<String> = site.addrs.iter().map(|a| format!("\"{a}\"")).collect();
        write_ready_file(
            path,
            &format!("{{\"addrs\":[{}],\"units\":{units}}}\n", addrs.join(",")),
        )?;
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

async fn run_fleet(args: FleetArgs) -> anyhow::Result<()> {
    let mut site = site_config(&args.units, None, args.port_per_unit)?;
    site.tick = args.tick;
    let units = site.units;
    let cancel = CancellationToken::new();
    let fleet = start_fleet(
        FleetConfig {
            sites: args.sites,
            site,
            host: args.host,
            base_port: args.base_port,
        },
        cancel.clone(),
    )
    .await?;
    let mut entries = Vec::new();
    for (name, site) in &fleet.sites {
        for listener in &site.listeners {
            for unit in &listener.units {
                println!("bess-sim: {name} unit {unit} on {}", listener.addr);
            }
        }
        let addrs: Vec<String> = site.addrs.iter().map(|a| format!("\"{a}\"")).collect();
        entries.push(format!(
            "{{\"site\":\"{name}\",\"addrs\":[{}],\"units\":{units}}}",
            addrs.join(",")
        ));
    }
    tracing::info!(
        sites = fleet.sites.len(),
        devices = fleet.sites.len() * usize::from(units),
        "fleet running"
    );
    if let Some(path) = &args.units.ready_file {
        write_ready_file(path, &format!("{{\"sites\":[{}]}}\n", entries.join(",")))?;
    }
    wait_for_shutdown_signal().await?;
    tracing::info!("stopping");
    cancel.cancel();
    if tokio::time::timeout(Duration::from_secs(10), fleet.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("the fleet did not stop within 10 s; exiting anyway");
    }
    Ok(())
}

async fn run_rtu(args: RtuArgs) -> anyhow::Result<()> {
    let config = site_config(&args.units, Some(args.listen), false)?;
    let units = config.units;
    let cancel = CancellationToken::new();
    let site = start_site(config, cancel.clone()).await?;
    let port = RtuPort::open(&args.pty_link)?;
    println!(
        "bess-sim: rtu {} -> {} units 1..={units}",
        port.link.display(),
        port.device.display()
    );
    for unit in 1..=units {
        println!("bess-sim: unit {unit} on {}", site.addrs[0]);
    }
    if let Some(path) = &args.units.ready_file {
        let json = format!(
            "{{\"pty\":\"{}\",\"device\":\"{}\",\"addrs\":[\"{}\"],\"units\":{units}}}\n",
            port.link.display(),
            port.device.display(),
            site.addrs[0]
        );
        write_ready_file(path, &json)?;
    }
    let link = port.link.clone();
    let serving = tokio::spawn(port.serve(site.service(), site.transport_faults(), cancel.clone()));
    wait_for_shutdown_signal().await?;
    tracing::info!("stopping");
    cancel.cancel();
    serving.await??;
    let _ = std::fs::remove_file(&link);
    site.shutdown().await;
    Ok(())
}

async fn run_load(args: LoadArgs) -> anyhow::Result<()> {
    let config = LoadConfig {
        brokers: args.brokers,
        topic: args.topic,
        live_topic: Some(args.live_topic).filter(|t| !t.trim().is_empty()),
        sites: args.sites,
        units: args.units,
        rate: args.rate,
        duration: args.duration,
        batch_interval: args.batch_interval,
        seed: args.seed,
        kafka_properties: args.kafka_properties,
        progress_every: args.progress,
    };
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        if wait_for_shutdown_signal().await.is_ok() {
            stop.cancel();
        }
    });
    let summary = load::run(&config, cancel).await?;
    println!(
        "bess-sim load: {} batches, {} samples, {} bytes in {:.1} s ({:.0} samples/s, target {}){}",
        summary.batches,
        summary.samples,
        summary.bytes,
        summary.elapsed.as_secs_f64(),
        summary.samples_per_s(),
        config.rate,
        if summary.failed > 0 {
            format!(", {} failed", summary.failed)
        } else {
            String::new()
        }
    );
    anyhow::ensure!(
        summary.failed == 0,
        "{} batches were not delivered",
        summary.failed
    );
    Ok(())
}

fn run_bench(args: &BenchArgs) {
    let report = bench::run(args.devices, args.seconds, args.profile);
    println!(
        "bess-sim bench: {} devices x {} simulated s ({}) in {:.2} s: {:.1} us per device-second, \
         about {:.0} devices at 1 Hz per core{}",
        report.devices,
        report.simulated_seconds,
        report.profile,
        report.elapsed.as_secs_f64(),
        report.per_device_second.as_secs_f64() * 1e6,
        report.devices_per_core,
        if cfg!(debug_assertions) {
            " (debug build: use --release for the real figure)"
        } else {
            ""
        }
    );
}

/// Writes a ready file through a temporary file and a rename, so a reader
/// never sees it half written.
fn write_ready_file(path: &Path, json: &str) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write ready file {}", path.display()))
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
