//! The `bess-edge` command line: `run` the agent, and the technician's
//! tools `init`, `check`, `read`, `scan` and `status`.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use bess_edge::agent::{self, RunOptions};
use bess_edge::config::{UplinkConfig, ValidConfig};
use bess_edge::link::{links_for, ModbusLink, RequestOutcome};
use bess_edge::poller::read_group;
use bess_edge::register::{set_flags, DataType, Decoded, PointCodec, RegisterTable, WordOrder};
use bess_edge::site_plan::{Endpoint, LinkPlan, Parity, ReadRequest, SerialSettings};
use bess_edge::sunspec;
use bess_protocol::{engineering_value, Reading};

const EXAMPLE_CONFIG: &str = include_str!("../bess-edge.example.toml");

#[derive(Parser)]
#[command(
    name = "bess-edge",
    version,
    about = "BESS edge agent: polls battery controllers over Modbus (TCP, RTU, RTU over TCP), buffers readings on disk and forwards them to Kafka or MQTT",
    after_help = "Getting started on a site PC:\n  bess-edge init > /etc/bess/edge.toml     # write a commented example\n  bess-edge scan --host 192.168.1.50       # which unit ids answer? SunSpec?\n  bess-edge read --host 192.168.1.50 --unit 1 --address 0 --count 10\n  bess-edge check --config /etc/bess/edge.toml\n  bess-edge run --config /etc/bess/edge.toml\n  bess-edge status                         # ask the running agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
}

/// Where a device is, for `read` and `scan`.
#[derive(Args, Clone)]
struct TargetArgs {
    /// Modbus TCP device or gateway.
    #[arg(long, conflicts_with = "serial")]
    host: Option<String>,
    #[arg(long, default_value_t = 502)]
    port: u16,
    /// Speak RTU over the TCP connection (serial device servers).
    #[arg(long, requires = "host")]
    rtu_over_tcp: bool,
    /// Serial port for Modbus RTU, e.g. /dev/ttyUSB0.
    #[arg(long)]
    serial: Option<String>,
    #[arg(long, default_value_t = 9600)]
    baud: u32,
    /// none, even or odd.
    #[arg(long, default_value = "none", value_parser = parse_parity)]
    parity: Parity,
    #[arg(long, default_value_t = 8)]
    data_bits: u8,
    #[arg(long, default_value_t = 1)]
    stop_bits: u8,
    /// Timeout of each request.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Args)]
struct ReadArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Read every group of this device from --config.
    #[arg(long, requires = "device")]
    config: Option<PathBuf>,
    #[arg(long, requires = "config")]
    device: Option<String>,
    #[arg(long, default_value_t = 1)]
    unit: u8,
    /// holding, input, coils or discrete.
    #[arg(long, default_value = "holding", value_parser = parse_table)]
    table: RegisterTable,
    #[arg(long, default_value_t = 0)]
    address: u16,
    /// Registers (or bits) to read.
    #[arg(long, default_value_t = 1)]
    count: u16,
    /// u16, i16, u32, i32, u64, i64, f32, f64, bool or string.
    #[arg(long = "type", default_value = "u16", value_parser = parse_type)]
    data_type: DataType,
    /// abcd, cdab, badc or dcba.
    #[arg(long, default_value = "abcd", value_parser = parse_order)]
    order: WordOrder,
}

#[derive(Args)]
struct ScanArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Unit ids to try: "1-247", "1,2,10-12".
    #[arg(long, default_value = "1-247", value_parser = parse_units)]
    units: UnitList,
    /// Show candidate decodings from this register on.
    #[arg(long)]
    address: Option<u16>,
    #[arg(long, default_value_t = 4, requires = "address")]
    count: u16,
    #[arg(long, default_value = "holding", value_parser = parse_table)]
    table: RegisterTable,
    /// Skip the SunSpec probe.
    #[arg(long)]
    no_sunspec: bool,
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
struct UnitList(Vec<u8>);

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
    fn link(&self, unit: u8) -> anyhow::Result<LinkPlan> {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Init => {
            print!("{EXAMPLE_CONFIG}");
            ExitCode::SUCCESS
        }
        Command::Check {
            config,
            offline,
            strict,
        } => {
            let valid = match ValidConfig::load(&config) {
                Ok(valid) => valid,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            print_plan(&config, &valid);
            if offline {
                return ExitCode::SUCCESS;
            }
            match block_on(check_online(&valid)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) if strict => ExitCode::FAILURE,
                Ok(false) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bess-edge: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Read(args) => report(block_on(read(args))),
        Command::Scan(args) => report(block_on(scan(args))),
        Command::Status { url, json } => report(block_on(status(&url, json))),
        Command::Run {
            config,
            status_listen,
            record,
            shutdown_grace,
        } => {
            init_tracing();
            let valid = match ValidConfig::load(&config) {
                Ok(valid) => valid,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            report(run(
                valid,
                RunOptions {
                    record,
                    status_listen,
                    shutdown_grace,
                },
            ))
        }
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bess-edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn print_plan(path: &std::path::Path, valid: &ValidConfig) {
    let uplink = match &valid.uplink {
        UplinkConfig::Kafka(k) => format!("Kafka {} topic {}", k.brokers, k.topic),
        UplinkConfig::Mqtt(m) => format!(
            "MQTT {}:{} topic {}",
            m.host,
            m.port,
            m.topic.replace("{site}", valid.site.as_str())
        ),
    };
    println!(
        "{}: OK — site {}, {} devices, {} points, uplink {uplink}",
        path.display(),
        valid.site,
        valid.devices.len(),
        valid.catalog.point_count()
    );
    let (mut requests, mut minimum) = (0, 0);
    for device in &valid.devices {
        println!("  {} ({}):", device.name, device.address());
        if device.sunspec.is_some() {
            println!(
                "    SunSpec: register map discovered at start-up (try it with `bess-edge scan`)"
            );
        }
        for group in &device.groups {
            requests += group.requests.len();
            minimum += group.min_requests;
            let plural = if group.requests.len() == 1 {
                "request"
            } else {
                "requests"
            };
            println!(
                "    {:<12} every {:>6}  {} points in {} {plural} (minimum {}): {}",
                group.name,
                humantime::format_duration(group.interval).to_string(),
                group.points.len(),
                group.requests.len(),
                group.min_requests,
                group
                    .requests
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for point in group.points.iter().filter(|p| !p.flags.is_empty()) {
                let flags: Vec<String> = point
                    .flags
                    .iter()
                    .map(|(b, n)| format!("{b}={n}"))
                    .collect();
                println!("      {} flags: {}", point.name, flags.join(" "));
            }
            for point in group.points.iter().filter(|p| !p.is_sent()) {
                println!(
                    "      {} is a string: shown by `read`, not sent",
                    point.name
                );
            }
        }
    }
    println!("  {requests} read requests per round of all groups (minimum possible {minimum})");
}

/// Try every device once and the uplink; true when everything answered.
async fn check_online(valid: &ValidConfig) -> anyhow::Result<bool> {
    let mut all_ok = true;
    println!("Trying devices:");
    let links = links_for(&valid.devices);
    for (device, link) in valid.devices.iter().zip(&links) {
        if let Some(s) = device.sunspec {
            match sunspec::discover(link, &device.link, s.base).await {
                Ok(found) => {
                    let groups = found.groups(Duration::from_secs(1));
                    let models: Vec<String> = found
                        .models
                        .iter()
                        .map(|m| format!("{} {}", m.id, m.name()))
                        .collect();
                    println!(
                        "  {:<12} OK     SunSpec at {}: {} — models {}; {} groups",
                        device.name,
                        found.base,
                        found.describe(),
                        models.join(", "),
                        groups.len()
                    );
                }
                Err(e) => {
                    all_ok = false;
                    println!("  {:<12} FAIL   {e}", device.name);
                }
            }
            continue;
        }
        let mut answered = 0;
        let mut total = 0;
        let mut problems = Vec::new();
        let started = std::time::Instant::now();
        for group in &device.groups {
            let reading = read_group(link, &device.link, group).await;
            for (request, outcome) in group.requests.iter().zip(&reading.outcomes) {
                total += 1;
                match outcome {
                    RequestOutcome::Words(_) => answered += 1,
                    RequestOutcome::Missing(reason) => {
                        problems.push(format!("{}: {request}: {}", group.name, reason.describe()))
                    }
                }
            }
        }
        link.release().await;
        let verdict = if problems.is_empty() { "OK" } else { "FAIL" };
        all_ok &= problems.is_empty();
        println!(
            "  {:<12} {verdict:<6} {answered}/{total} requests answered in {} ms",
            device.name,
            started.elapsed().as_millis()
        );
        for problem in problems.iter().take(5) {
            println!("               {problem}");
        }
        if let Some(error) = link.last_error().await {
            println!("               last connection error: {error}");
        }
    }
    println!("Trying the uplink:");
    let uplink = match &valid.uplink {
        UplinkConfig::Kafka(kafka) => check_kafka(kafka).await,
        UplinkConfig::Mqtt(mqtt) => check_mqtt(mqtt, valid.site.as_str()).await,
    };
    match uplink {
        Ok(what) => println!("  OK     {what}"),
        Err(e) => {
            all_ok = false;
            println!("  FAIL   {e:#}");
        }
    }
    Ok(all_ok)
}

async fn check_kafka(kafka: &bess_edge::config::KafkaConfig) -> anyhow::Result<String> {
    use rdkafka::producer::{BaseProducer, Producer};
    let mut config = bess_edge::uplink::producer_config(kafka);
    config.set("socket.timeout.ms", "3000");
    let producer: BaseProducer = config.create().context("creating Kafka client")?;
    let topic = kafka.topic.clone();
    tokio::task::spawn_blocking(move || {
        let metadata = producer
            .client()
            .fetch_metadata(Some(&topic), Duration::from_secs(3))
            .context("Kafka metadata fetch (3 s)")?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        Ok(format!(
            "Kafka: {} brokers, topic {topic} with {partitions} partitions",
            metadata.brokers().len()
        ))
    })
    .await?
}

async fn check_mqtt(
    mqtt: &bess_edge::config::MqttUplinkConfig,
    site: &str,
) -> anyhow::Result<String> {
    let id = format!("bess-edge-check-{site}-{}", std::process::id());
    let credentials = mqtt
        .username
        .as_deref()
        .map(|u| (u, mqtt.password.as_deref().unwrap_or("")));
    let options =
        bess_edge::mqtt::mqtt_options(&id, &mqtt.host, mqtt.port, mqtt.keep_alive, credentials)?;
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    let result = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(anyhow::anyhow!("{e}")),
            }
        }
    })
    .await;
    let _ = client.try_disconnect();
    match result {
        Ok(Ok(())) => Ok(format!(
            "MQTT broker {}:{} accepted a connection",
            mqtt.host, mqtt.port
        )),
        Ok(Err(e)) => Err(e.context(format!("MQTT broker {}:{}", mqtt.host, mqtt.port))),
        Err(_) => anyhow::bail!(
            "MQTT broker {}:{}: no answer within 3 s",
            mqtt.host,
            mqtt.port
        ),
    }
}

async fn read(args: ReadArgs) -> anyhow::Result<()> {
    if let (Some(path), Some(name)) = (&args.config, &args.device) {
        return read_device(path, name).await;
    }
    let plan = args.target.link(args.unit)?;
    let link = ModbusLink::new(plan.endpoint.clone(), Duration::ZERO);
    let mut codec = PointCodec::new(args.data_type).with_order(args.order);
    if args.data_type == DataType::String {
        codec.length = args.count;
    }
    let width = codec.width(args.table);
    let count = args.count.max(width);
    let request = ReadRequest {
        table: args.table,
        start: args.address,
        count,
    };
    println!("{request} from {} unit {}", plan.endpoint, plan.unit);
    let started = std::time::Instant::now();
    let words = match link.read(plan.unit, request, plan.timeout, 0).await {
        RequestOutcome::Words(words) => words,
        RequestOutcome::Missing(reason) => {
            let hint = link
                .last_error()
                .await
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            anyhow::bail!("no value: {}{hint}", reason.describe());
        }
    };
    println!("answered in {} ms", started.elapsed().as_millis());
    println!(
        "{:>7}  {:<24}  {} {}",
        "address", "registers", args.data_type, args.order
    );
    let step = usize::from(width.max(1));
    let mut at = 0;
    while at + step <= words.len() {
        let chunk = &words[at..at + step];
        let hex = chunk
            .iter()
            .map(|w| format!("{w:04X}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "{:>7}  {hex:<24}  {}",
            usize::from(args.address) + at,
            show(&codec.decode(chunk))
        );
        at += step;
    }
    Ok(())
}

fn show(decoded: &Decoded) -> String {
    match decoded {
        Decoded::Text(text) => format!("{text:?}"),
        Decoded::Value(Reading::Int(v)) => v.to_string(),
        Decoded::Value(Reading::Float(v)) if *v == 0.0 || (1e-4..1e12).contains(&v.abs()) => {
            format!("{v}")
        }
        Decoded::Value(Reading::Float(v)) => format!("{v:.6e}"),
        Decoded::Value(Reading::Missing(reason)) => format!("— ({})", reason.describe()),
    }
}

async fn read_device(path: &std::path::Path, name: &str) -> anyhow::Result<()> {
    let config = ValidConfig::load(path)?;
    let Some(device) = config.devices.iter().find(|d| d.name == name) else {
        let known: Vec<&str> = config.devices.iter().map(|d| d.name.as_str()).collect();
        anyhow::bail!(
            "no device {name:?} in {} (known: {})",
            path.display(),
            known.join(", ")
        );
    };
    let mut device = device.clone();
    let link = ModbusLink::new(device.link.endpoint.clone(), device.link.pause);
    if let Some(s) = device.sunspec {
        let found = sunspec::discover(&link, &device.link, s.base).await?;
        println!("SunSpec at {}: {}", found.base, found.describe());
        device.groups = found.groups(Duration::from_secs(1));
    }
    println!("{} ({})", device.name, device.address());
    for group in &device.groups {
        let reading = read_group(&link, &device.link, group).await;
        println!(
            "\n[{}] {}",
            group.name,
            group
                .requests
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "{:<20} {:>7} {:<10} {:<20} {:>14} {:<6} {:<9} flags",
            "point", "address", "type", "registers", "value", "unit", "quality"
        );
        for (point, value) in group.points.iter().zip(&reading.values) {
            let width = point.codec.width(group.table);
            let hex = match &reading.outcomes[point.slot.request] {
                RequestOutcome::Words(words) => words
                    [point.slot.offset..point.slot.offset + usize::from(width)]
                    .iter()
                    .map(|w| format!("{w:04X}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                RequestOutcome::Missing(_) => "-".into(),
            };
            let (shown, quality, flags) = match value {
                Decoded::Text(text) => (format!("{text:?}"), "shown".to_owned(), String::new()),
                Decoded::Value(reading) => {
                    let shown = match reading.raw() {
                        Some(raw) => {
                            format!("{}", engineering_value(raw, point.scale, point.offset))
                        }
                        None => "—".into(),
                    };
                    let quality = match reading {
                        Reading::Missing(reason) => {
                            format!("{} ({})", reading.quality().as_str(), reason.describe())
                        }
                        _ => reading.quality().as_str().to_owned(),
                    };
                    let flags = match reading {
                        Reading::Int(word) if !point.flags.is_empty() => {
                            set_flags(*word as u64, &point.flags).join(",")
                        }
                        _ => String::new(),
                    };
                    (shown, quality, flags)
                }
            };
            let ty = format!("{} {}", point.codec.data_type, point.codec.order).to_lowercase();
            println!(
                "{:<20} {:>7} {:<10} {:<20} {:>14} {:<6} {:<9} {flags}",
                point.name, point.address, ty, hex, shown, point.unit, quality
            );
        }
    }
    link.release().await;
    Ok(())
}

async fn scan(args: ScanArgs) -> anyhow::Result<()> {
    let template = args.target.link(1)?;
    let link = ModbusLink::new(template.endpoint.clone(), Duration::ZERO);
    println!(
        "scanning {} unit ids {}",
        template.endpoint,
        describe_units(&args.units.0)
    );
    let mut found = Vec::new();
    for &unit in &args.units.0 {
        let request = ReadRequest {
            table: args.table,
            start: args.address.unwrap_or(0),
            count: 1,
        };
        let outcome = link.read(unit, request, template.timeout, 0).await;
        let answer = match outcome {
            RequestOutcome::Words(_) => Some("answers".to_owned()),
            // A gateway saying "no such device" is not the device answering.
            RequestOutcome::Missing(bess_protocol::MissingReason::Exception(
                code @ (0x0A | 0x0B),
            )) => {
                tracing::debug!(unit, code, "gateway reports no device");
                None
            }
            RequestOutcome::Missing(bess_protocol::MissingReason::Exception(code)) => {
                Some(format!(
                    "answers (exception {code:#04x} for register {})",
                    request.start
                ))
            }
            RequestOutcome::Missing(_) => None,
        };
        if let Some(answer) = answer {
            println!("  unit {unit:>3}: {answer}");
            found.push(unit);
            if !args.no_sunspec {
                let mut plan = template.clone();
                plan.unit = unit;
                match sunspec::discover(&link, &plan, None).await {
                    Ok(d) => {
                        println!("            SunSpec at {}: {}", d.base, d.describe());
                        for m in &d.models {
                            println!(
                                "              model {:>4} {:<22} at {:>5}, {} registers",
                                m.id,
                                m.name(),
                                m.address,
                                m.length
                            );
                        }
                    }
                    Err(e) => println!("            no SunSpec ({e})"),
                }
            }
        }
    }
    if found.is_empty() {
        let hint = link
            .last_error()
            .await
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        println!("no unit answered{hint}");
        return Ok(());
    }
    println!(
        "{} of {} unit ids answer: {}",
        found.len(),
        args.units.0.len(),
        describe_units(&found)
    );
    if let Some(address) = args.address {
        for &unit in &found {
            candidates(
                &link,
                unit,
                args.table,
                address,
                args.count,
                template.timeout,
            )
            .await?;
        }
    }
    link.release().await;
    Ok(())
}

fn describe_units(units: &[u8]) -> String {
    match (units.first(), units.last()) {
        (Some(a), Some(b)) if units.len() == usize::from(b - a) + 1 => format!("{a}-{b}"),
        _ => units
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// Every reading of `count` registers from `address` as 16-, 32- and 64-bit
/// values under each byte/word order, and as text.
async fn candidates(
    link: &ModbusLink,
    unit: u8,
    table: RegisterTable,
    address: u16,
    count: u16,
    timeout: Duration,
) -> anyhow::Result<()> {
    let count = count.clamp(1, 125);
    let request = ReadRequest {
        table,
        start: address,
        count,
    };
    let words = match link.read(unit, request, timeout, 0).await {
        RequestOutcome::Words(words) => words,
        RequestOutcome::Missing(reason) => {
            println!("\nunit {unit}: {request}: {}", reason.describe());
            return Ok(());
        }
    };
    println!("\nunit {unit}: {request}");
    println!("  {:>7} {:<6} {:>8} {:>8}", "address", "hex", "u16", "i16");
    for (i, w) in words.iter().enumerate() {
        println!(
            "  {:>7} {w:04X}   {:>8} {:>8}",
            usize::from(address) + i,
            w,
            *w as i16
        );
    }
    println!(
        "  candidate decodings (order: i32 / u32 / f32; then i64 / f64 where 4 registers fit):"
    );
    for i in 0..words.len().saturating_sub(1) {
        println!("  from {}:", usize::from(address) + i);
        for order in WordOrder::ALL {
            let chunk = &words[i..i + 2];
            let value = |t: DataType| show(&PointCodec::new(t).with_order(order).decode(chunk));
            let mut line = format!(
                "    {order}  {:>12} / {:>11} / {:>14}",
                value(DataType::I32),
                value(DataType::U32),
                value(DataType::F32)
            );
            if i + 4 <= words.len() {
                let chunk = &words[i..i + 4];
                let value = |t: DataType| show(&PointCodec::new(t).with_order(order).decode(chunk));
                line.push_str(&format!(
                    "   | {:>20} / {}",
                    value(DataType::I64),
                    value(DataType::F64)
                ));
            }
            println!("{line}");
        }
    }
    let mut text = PointCodec::new(DataType::String);
    text.length = count;
    println!(
        "  as text: {}   byte-swapped: {}",
        show(&text.decode(&words)),
        show(&text.with_order(WordOrder::Badc).decode(&words))
    );
    Ok(())
}

async fn status(url: &str, json: bool) -> anyhow::Result<()> {
    let url = format!("{}/status", url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let body: serde_json::Value = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("asking {url}: is `bess-edge run` running there? (see `systemctl status bess-edge`)"))?
        .error_for_status()?
        .json()
        .await
        .with_context(|| format!("reading {url}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let now = bess_edge::clock::now_ms();
    let ago = |v: &serde_json::Value| match v.as_i64() {
        Some(ms) => format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(((now - ms).max(0) / 1000) as u64))
        ),
        None => "never".into(),
    };
    println!("site {}", body["site"].as_str().unwrap_or("?"));
    println!(
        "\n{:<16} {:<8} {:>14} {:>14} {:>8} {:>7}  last error",
        "device", "health", "last poll", "last good", "polls", "errors"
    );
    for d in body["devices"].as_array().into_iter().flatten() {
        let health = if d["online"].as_bool() == Some(true) {
            "online"
        } else {
            "OFFLINE"
        };
        println!(
            "{:<16} {:<8} {:>14} {:>14} {:>8} {:>7}  {}",
            d["name"].as_str().unwrap_or("?"),
            health,
            ago(&d["last_poll_ms"]),
            ago(&d["last_good_ms"]),
            d["polls"].as_u64().unwrap_or(0),
            d["errors"].as_u64().unwrap_or(0),
            d["last_error"].as_str().unwrap_or("-")
        );
    }
    let buffer = &body["buffer"];
    let uplink = &body["uplink"];
    println!("\nbuffer");
    println!("  batches waiting     {}", buffer["batches"]);
    println!("  bytes waiting       {}", buffer["bytes"]);
    println!(
        "  oldest unsent batch {} (sealed {})",
        buffer["oldest_seq"]
            .as_u64()
            .map_or("-".into(), |s| s.to_string()),
        ago(&buffer["oldest_sealed_at_ms"])
    );
    println!("uplink");
    println!("  connected           {}", uplink["connected"]);
    println!(
        "  last acknowledged   {} ({})",
        uplink["last_acked_seq"]
            .as_u64()
            .map_or("-".into(), |s| s.to_string()),
        ago(&uplink["last_acked_at_ms"])
    );
    println!(
        "  last error          {}",
        uplink["last_error"].as_str().unwrap_or("-")
    );
    let clock = &body["clock"];
    println!("clock");
    println!("  trusted             {}", clock["trusted"]);
    println!("  steps detected      {}", clock["steps"]);
    if let Some(step) = clock["last_step_ms"].as_i64() {
        println!(
            "  last step           {step} ms ({})",
            ago(&clock["last_step_at_ms"])
        );
    }
    let totals = &body["totals"];
    println!(
        "totals: read {} samples, sealed {} in {} batches, {} batches acknowledged",
        totals["samples_read"],
        totals["samples_sealed"],
        totals["batches_sealed"],
        totals["batches_acked"]
    );
    Ok(())
}

fn run(config: ValidConfig, options: RunOptions) -> anyhow::Result<()> {
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
