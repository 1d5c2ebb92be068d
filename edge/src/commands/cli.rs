//! The clap definitions of every command: names, arguments, `env`
//! overrides and the `--help` texts with examples a technician can copy,
//! and how `read` and `scan` turn `--host`/`--serial` into a `LinkPlan`.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bess_edge::register::{DataType, RegisterTable, WordOrder};
use bess_edge::site_plan::{Endpoint, LinkPlan, Parity, SerialSettings};

#[derive(Parser)]
#[command(
    name = "bess-edge",
    version,
    about = "BESS edge agent: polls battery controllers over Modbus (TCP, RTU, RTU over TCP), buffers readings on disk and forwards them to Kafka or MQTT",
    after_help = "Getting started on a site PC:\n  bess-edge init > /etc/bess/edge.toml     # write a commented example\n  bess-edge scan --host 192.168.1.50       # which unit ids answer? SunSpec?\n  bess-edge read --host 192.168.1.50 --unit 1 --address 0 --count 10\n  bess-edge check --config /etc/bess/edge.toml\n  bess-edge run --config /etc/bess/edge.toml\n  bess-edge status                         # ask the running agent"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Poll the configured devices and forward their readings until stopped (Ctrl-C or SIGTERM).
    #[command(
        after_help = "Example:\n  bess-edge run --config /etc/bess/edge.toml\n\nOn SIGTERM the agent stops polling, seals what it read and gives the uplink\n--shutdown-grace to send it; anything unsent stays in the buffer for the next start."
    )]
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
    /// Validate a configuration file, print the poll plan, then try every device and the uplink.
    #[command(
        after_help = "Examples:\n  bess-edge check --config /etc/bess/edge.toml\n  bess-edge check --config /etc/bess/edge.toml --offline   # only validate and plan\n\nErrors name file, line and field. The plan shows each group's read requests\nagainst the fewest possible. Exit status: 2 for an invalid file; with --strict\nalso 1 when a device or the uplink does not answer."
    )]
    Check {
        #[arg(long, short, env = "BESS_EDGE_CONFIG")]
        config: PathBuf,
        /// Only validate and print the plan; do not contact devices or the uplink.
        #[arg(long)]
        offline: bool,
        /// Exit 1 when a device or the uplink does not answer.
        #[arg(long)]
        strict: bool,
    },
    /// Read registers once and print them decoded, like mbpoll.
    #[command(
        after_help = "Examples:\n  bess-edge read --host 192.168.1.50 --unit 1 --table holding --address 0 --count 10\n  bess-edge read --host 192.168.1.50 --address 100 --count 4 --type f32 --order cdab\n  bess-edge read --serial /dev/ttyUSB0 --baud 19200 --parity even --unit 3 --address 0 --count 2\n  bess-edge read --config /etc/bess/edge.toml --device bms-1     # every point of a device"
    )]
    Read(ReadArgs),
    /// Find responding unit ids and SunSpec models; show candidate decodings of unknown registers.
    #[command(
        after_help = "Examples:\n  bess-edge scan --host 192.168.1.50                  # unit ids 1-247\n  bess-edge scan --host 192.168.1.50 --units 1-10\n  bess-edge scan --serial /dev/ttyUSB0 --baud 9600 --units 1-32\n  bess-edge scan --host 192.168.1.50 --units 1 --address 100 --count 4\n      # every 2- and 4-register value from 100 under ABCD, CDAB, BADC and DCBA"
    )]
    Scan(ScanArgs),
    /// Ask a running agent for its status and print it as tables.
    #[command(
        after_help = "Examples:\n  bess-edge status\n  bess-edge status --url http://10.0.0.5:9100\n  bess-edge status --json"
    )]
    Status {
        /// The agent's status server.
        #[arg(
            long,
            default_value = "http://127.0.0.1:9100",
            env = "BESS_EDGE_STATUS_URL"
        )]
        url: String,
        /// Print the raw JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Print a commented example configuration to stdout.
    #[command(after_help = "Example:\n  bess-edge init > /etc/bess/edge.toml")]
    Init,
    /// Show this site's signing key (creating it, owner-only, if there is none yet) and how to enroll it.
    #[command(
        after_help = "Example:\n  bess-edge key --config /etc/bess/edge.toml\n\nPrints the public key and its id, and the `bess-collector site enroll` line for\nthe cloud side. The private key stays in [signing] key_file and never leaves the site."
    )]
    Key {
        #[arg(long, short, env = "BESS_EDGE_CONFIG")]
        config: PathBuf,
    },
}

/// Where a device is, for `read` and `scan`.
#[derive(Args, Clone)]
pub struct TargetArgs {
    /// Modbus TCP device or gateway.
    #[arg(long, conflicts_with = "serial")]
    pub host: Option<String>,
    #[arg(long, default_value_t = 502)]
    pub port: u16,
    /// Speak RTU over the TCP connection (serial device servers).
    #[arg(long, requires = "host")]
    pub rtu_over_tcp: bool,
    /// Serial port for Modbus RTU, e.g. /dev/ttyUSB0.
    #[arg(long)]
    pub serial: Option<String>,
    #[arg(long, default_value_t = 9600)]
    pub baud: u32,
    /// none, even or odd.
    #[arg(long, default_value = "none", value_parser = parse_parity)]
    pub parity: Parity,
    #[arg(long, default_value_t = 8)]
    pub data_bits: u8,
    #[arg(long, default_value_t = 1)]
    pub stop_bits: u8,
    /// Timeout of each request.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Read every group of this device from --config.
    #[arg(long, requires = "device")]
    pub config: Option<PathBuf>,
    #[arg(long, requires = "config")]
    pub device: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub unit: u8,
    /// holding, input, coils or discrete.
    #[arg(long, default_value = "holding", value_parser = parse_table)]
    pub table: RegisterTable,
    #[arg(long, default_value_t = 0)]
    pub address: u16,
    /// Registers (or bits) to read.
    #[arg(long, default_value_t = 1)]
    pub count: u16,
    /// u16, i16, u32, i32, u64, i64, f32, f64, bool or string.
    #[arg(long = "type", default_value = "u16", value_parser = parse_type)]
    pub data_type: DataType,
    /// abcd, cdab, badc or dcba.
    #[arg(long, default_value = "abcd", value_parser = parse_order)]
    pub order: WordOrder,
}

#[derive(Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Unit ids to try: "1-247", "1,2,10-12".
    #[arg(long, default_value = "1-247", value_parser = parse_units)]
    pub units: UnitList,
    /// Show candidate decodings from this register on.
    #[arg(long)]
    pub address: Option<u16>,
    #[arg(long, default_value_t = 4, requires = "address")]
    pub count: u16,
    #[arg(long, default_value = "holding", value_parser = parse_table)]
    pub table: RegisterTable,
    /// Skip the SunSpec probe.
    #[arg(long)]
    pub no_sunspec: bool,
}

fn parse_parity(text: &str) -> Result<Parity, String> {
    match text.to_ascii_lowercase().as_str() {
        "none" | "n" => Ok(Parity::None),
        "even" | "e" => Ok(Parity::Even),
        "odd" | "o" => Ok(Parity::Odd),
        _ => Err("expected none, even or odd".into()),
    }
}
fn parse_table(text: &str) -> Result<RegisterTable, String> {
    RegisterTable::parse_cli(text)
        .ok_or_else(|| "expected holding, input, coils or discrete".into())
}
fn parse_type(text: &str) -> Result<DataType, String> {
    DataType::parse_cli(text)
        .ok_or_else(|| "expected u16, i16, u32, i32, u64, i64, f32, f64, bool or string".into())
}
fn parse_order(text: &str) -> Result<WordOrder, String> {
    WordOrder::parse_cli(text).ok_or_else(|| "expected abcd, cdab, badc or dcba".into())
}
/// Unit ids from `--units`.
#[derive(Clone)]
pub struct UnitList(pub Vec<u8>);

fn parse_units(text: &str) -> Result<UnitList, String> {
    let mut units = Vec::new();
    for part in text.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u8 = a.trim().parse().map_err(|_| format!("bad unit id {a:?}"))?;
        let b: u8 = b.trim().parse().map_err(|_| format!("bad unit id {b:?}"))?;
        if a > b || b > 247 {
            return Err(format!("bad range {part:?}: unit ids are 0-247"));
        }
        units.extend(a..=b);
    }
    Ok(UnitList(units))
}

impl TargetArgs {
    pub fn link(&self, unit: u8) -> anyhow::Result<LinkPlan> {
        let endpoint = match (&self.host, &self.serial) {
            (Some(host), None) if self.rtu_over_tcp => Endpoint::RtuOverTcp {
                host: host.clone(),
                port: self.port,
            },
            (Some(host), None) => Endpoint::Tcp {
                host: host.clone(),
                port: self.port,
            },
            (None, Some(path)) => Endpoint::Rtu(SerialSettings {
                path: path.clone(),
                baud: self.baud,
                parity: self.parity,
                data_bits: self.data_bits,
                stop_bits: self.stop_bits,
            }),
            _ => anyhow::bail!(
                "say where the device is: --host H [--port P] or --serial /dev/ttyUSB0"
            ),
        };
        Ok(LinkPlan {
            endpoint,
            unit,
            timeout: self.timeout,
            retries: 0,
            pause: Duration::ZERO,
            release_after_cycle: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unit_ids_are_given_as_lists_and_ranges() {
        assert_eq!(parse_units("1,3-5").unwrap().0, vec![1, 3, 4, 5]);
        assert_eq!(parse_units("7").unwrap().0, vec![7]);
        assert!(parse_units("5-3").is_err());
        assert!(parse_units("1-248").is_err());
        assert!(parse_units("x").is_err());
    }

    #[test]
    fn a_target_is_a_host_or_a_serial_port() {
        let cli = Cli::try_parse_from([
            "bess-edge",
            "read",
            "--serial",
            "/dev/ttyUSB0",
            "--parity",
            "e",
        ])
        .unwrap();
        let Command::Read(args) = cli.command else {
            panic!("not read");
        };
        let link = args.target.link(args.unit).unwrap();
        assert_eq!(link.endpoint.to_string(), "rtu:/dev/ttyUSB0 9600 8E1");
        let cli = Cli::try_parse_from(["bess-edge", "scan"]).unwrap();
        let Command::Scan(args) = cli.command else {
            panic!("not scan");
        };
        assert!(args.target.link(1).is_err());
    }
}
