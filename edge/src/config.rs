//! The agent's TOML configuration: site, devices and their transports,
//! register maps, buffer, uplink (Kafka or MQTT), local mirror and clock
//! settings; parsing with file/line/field errors and validation that
//! collects every problem at once. Validation also plans every poll
//! group's read requests (`plan.rs`) and builds the catalog.

use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

use bess_protocol::{Catalog, DeviceInfo, GroupInfo, PointInfo, PointKind, SiteId};

use crate::plan::{self, ReadRequest, Slot};
use crate::register::{DataType, PointCodec, RegisterTable, WordOrder};

/// The most registers one Modbus read request may ask for.
pub const MAX_REGISTERS_PER_READ: u16 = 125;

/// A register map name that asks for SunSpec discovery instead.
pub const SUNSPEC_MAP: &str = "sunspec";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// This site's id: the Kafka message key and the name the cloud shows.
    pub site_id: Spanned<String>,
    #[serde(default)]
    pub buffer: BufferConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    pub kafka: Option<Spanned<KafkaConfig>>,
    pub mqtt_uplink: Option<Spanned<MqttUplinkConfig>>,
    pub mqtt_mirror: Option<MqttMirrorConfig>,
    #[serde(default)]
    pub status: StatusConfig,
    #[serde(default)]
    pub clock: ClockConfig,
    /// Register maps shared by several devices, by name.
    #[serde(default)]
    pub maps: BTreeMap<String, RegisterMap>,
    #[serde(default)]
    pub devices: Vec<Spanned<DeviceConfig>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// SQLite file holding sealed batches until Kafka acknowledges them.
    #[serde(default = "default_buffer_path")]
    pub path: PathBuf,
    /// Disk cap on sealed batches ("2GiB", "500MB", or bytes). When it is
    /// reached the oldest measurements are dropped first, status and alarm
    /// frames last, and every dropped sample is reported in a gap record.
    /// `"none"` disables the cap.
    #[serde(default = "default_buffer_max_size")]
    pub max_size: ByteSize,
    /// Send order while a backlog drains: "live-first" (batches sealed in
    /// the last `live_window` go first, so dashboards stay live, then the
    /// backlog oldest first at full resolution) or "oldest-first".
    #[serde(default)]
    pub drain: DrainConfig,
    #[serde(default = "default_live_window", with = "humantime_serde")]
    pub live_window: Duration,
    /// Before dropping anything at the disk cap, thin the backlog's fast
    /// measurement groups (poll interval under `downsample_bucket`) to the
    /// frames holding each bucket's minimum, maximum and last values:
    /// "min-max-last" (default) or "off". Thinned samples are reported in
    /// gap records (reason "downsampled").
    #[serde(default)]
    pub downsample: DownsampleConfig,
    #[serde(default = "default_downsample_bucket", with = "humantime_serde")]
    pub downsample_bucket: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DownsampleConfig {
    #[default]
    MinMaxLast,
    Off,
}

const fn default_downsample_bucket() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrainConfig {
    #[default]
    LiveFirst,
    OldestFirst,
}

const fn default_live_window() -> Duration {
    Duration::from_secs(10)
}

impl BufferConfig {
    /// The bucket to thin the backlog by, if thinning is on.
    pub fn downsampling(&self) -> Option<Duration> {
        (self.downsample == DownsampleConfig::MinMaxLast && !self.downsample_bucket.is_zero())
            .then_some(self.downsample_bucket)
    }

    pub fn drain_order(&self) -> crate::uplink::DrainOrder {
        match self.drain {
            DrainConfig::LiveFirst => crate::uplink::DrainOrder::LiveFirst {
                window: self.live_window,
            },
            DrainConfig::OldestFirst => crate::uplink::DrainOrder::OldestFirst,
        }
    }
}

fn default_buffer_path() -> PathBuf {
    PathBuf::from("bess-edge-buffer.sqlite")
}

const fn default_buffer_max_size() -> ByteSize {
    ByteSize(Some(2 * 1024 * 1024 * 1024))
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            path: default_buffer_path(),
            max_size: default_buffer_max_size(),
            drain: DrainConfig::default(),
            live_window: default_live_window(),
            downsample: DownsampleConfig::default(),
            downsample_bucket: default_downsample_bucket(),
        }
    }
}

/// A size in bytes, written as a number or as "512MiB", "2GB", "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub Option<u64>);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("none") {
            return Ok(ByteSize(None));
        }
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size like \"512MiB\""))?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" => 1 << 10,
            "mb" => 1_000_000,
            "mib" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} (use B, kB, KiB, MB, MiB, GB, GiB)"
                ))
            }
        };
        number
            .checked_mul(factor)
            .map(|b| ByteSize(Some(b)))
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bytes(n) => Ok(ByteSize(Some(n))),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Seal a batch when it holds this many frames...
    #[serde(default = "default_max_frames")]
    pub max_frames: NonZeroU32,
    /// ...or when its oldest frame is this old.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// Resend the catalog at least this often, so a consumer that lost it
    /// recovers without a restart of the agent.
    #[serde(default = "default_catalog_every", with = "humantime_serde")]
    pub catalog_every: Duration,
}

const fn default_max_frames() -> NonZeroU32 {
    NonZeroU32::new(1000).expect("non-zero")
}
const fn default_max_age() -> Duration {
    Duration::from_secs(1)
}
const fn default_catalog_every() -> Duration {
    Duration::from_secs(3600)
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_frames: default_max_frames(),
            max_age: default_max_age(),
            catalog_every: default_catalog_every(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list (`bootstrap.servers`).
    pub brokers: String,
    #[serde(default = "default_topic")]
    pub topic: String,
    /// How long one delivery may take before it is retried from the buffer.
    #[serde(default = "default_delivery_timeout", with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Extra librdkafka properties (e.g. `security.protocol`, `sasl.*` for MSK).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

pub fn default_topic() -> String {
    "bess.telemetry".into()
}
const fn default_delivery_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The MQTT uplink: the same batch bytes as the Kafka uplink, QoS 1, on a
/// persistent session.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttUplinkConfig {
    pub host: String,
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// Client id; the broker keeps the session (and unacknowledged
    /// messages) under this name. Default: `bess-edge-{site}`.
    pub client_id: Option<String>,
    /// Topic; `{site}` is replaced by the site id.
    #[serde(default = "default_uplink_topic")]
    pub topic: String,
    pub username: Option<String>,
    pub password: Option<String>,
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Batches published and not yet acknowledged at once.
    #[serde(default = "default_mqtt_inflight")]
    pub inflight: u16,
}

const fn default_mqtt_port() -> u16 {
    1883
}
fn default_uplink_topic() -> String {
    "bess/{site}/batches".into()
}
const fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
const fn default_mqtt_inflight() -> u16 {
    16
}

/// Latest values as JSON to the site's own broker, for a local HMI.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttMirrorConfig {
    pub host: String,
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    pub client_id: Option<String>,
    /// Topic prefix; `{site}` is replaced by the site id. Points go to
    /// `{prefix}/{device}/{point}` (retained), whole frames to
    /// `{prefix}/{device}/{group}` when `per_frame = true`.
    #[serde(default = "default_mirror_prefix")]
    pub prefix: String,
    #[serde(default)]
    pub per_frame: bool,
    pub username: Option<String>,
    pub password: Option<String>,
}

fn default_mirror_prefix() -> String {
    "bess/{site}".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// Address of the status server (`/health`, `/metrics`, `/status`).
    #[serde(default = "default_status_listen")]
    pub listen: SocketAddr,
}

fn default_status_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9100))
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            listen: default_status_listen(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// A jump of the wall clock against the monotonic clock larger than
    /// this is reported as a clock step.
    #[serde(default = "default_step_threshold", with = "humantime_serde")]
    pub step_threshold: Duration,
    /// Hold frames until the system clock is synchronised
    /// (`timedatectl show -p NTPSynchronized`), then re-date them.
    #[serde(default)]
    pub require_ntp_sync: bool,
    /// Give up waiting for synchronisation after this long and send the
    /// held frames with the local clock's times.
    #[serde(default = "default_ntp_wait", with = "humantime_serde")]
    pub ntp_wait_max: Duration,
}

const fn default_step_threshold() -> Duration {
    Duration::from_secs(2)
}
const fn default_ntp_wait() -> Duration {
    Duration::from_secs(600)
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            step_threshold: default_step_threshold(),
            require_ntp_sync: false,
            ntp_wait_max: default_ntp_wait(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterMap {
    #[serde(default)]
    pub model: String,
    /// Byte/word order of every point that names none.
    #[serde(default)]
    pub order: WordOrder,
    /// Unused registers a read may span to join two points (default 16).
    pub max_gap: Option<u16>,
    /// Treat each type's usual "not implemented" marker (0xFFFF, 0x8000,
    /// 0xFFFFFFFF, 0x80000000, ...) as a missing value.
    #[serde(default)]
    pub not_implemented_defaults: bool,
    pub groups: Vec<Spanned<GroupConfig>>,
}

/// How a device is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// Modbus TCP (MBAP header).
    #[default]
    Tcp,
    /// RTU frames (with CRC) over a TCP socket: serial device servers.
    RtuOverTcp,
    /// RTU over a serial port (RS-485, RS-232).
    Rtu,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub name: String,
    #[serde(default)]
    pub transport: TransportKind,
    /// Host name or IP address of the Modbus TCP device or gateway.
    pub host: Option<String>,
    #[serde(default = "default_modbus_port")]
    pub port: u16,
    /// Serial port for `transport = "rtu"`, e.g. `/dev/ttyUSB0`.
    pub serial: Option<String>,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Modbus unit id (slave id).
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// Each request's timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of a request that timed out or lost its connection.
    #[serde(default = "default_retries")]
    pub retries: u8,
    /// Quiet time between two requests on this device's connection or bus
    /// (for devices or buses shared with another master).
    #[serde(default, with = "humantime_serde")]
    pub pause: Duration,
    /// Start the device's groups this far apart instead of all at once.
    #[serde(default, with = "humantime_serde")]
    pub stagger: Duration,
    /// Close the TCP connection after each poll (for devices that accept
    /// only one client, shared with an EMS or SCADA).
    #[serde(default)]
    pub release_after_cycle: bool,
    /// Override the map's `max_gap`.
    pub max_gap: Option<u16>,
    /// Name of an entry in `[maps]`, or "sunspec"; or give `groups` inline.
    pub map: Option<Spanned<String>>,
    /// Discover the register map from the device's SunSpec models.
    #[serde(default)]
    pub sunspec: bool,
    /// Where the SunSpec "SunS" marker is (default: try 40000, 0, 50000).
    pub sunspec_base: Option<u16>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub groups: Vec<Spanned<GroupConfig>>,
}

const fn default_modbus_port() -> u16 {
    502
}
const fn default_unit() -> u8 {
    1
}
const fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
const fn default_retries() -> u8 {
    1
}
const fn default_baud() -> u32 {
    9600
}
const fn default_data_bits() -> u8 {
    8
}
const fn default_stop_bits() -> u8 {
    1
}
const fn default_max_gap() -> u16 {
    16
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub name: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default)]
    pub table: RegisterTable,
    pub points: Vec<Spanned<PointConfig>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    pub name: String,
    /// First register's address (0-based, as on the wire).
    pub address: u16,
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// Byte/word order; default: the map's.
    pub order: Option<WordOrder>,
    /// For `type = "bool"` in a register table: the bit (0 = least significant).
    pub bit: Option<u8>,
    /// For `type = "string"`: length in registers.
    pub length: Option<u16>,
    #[serde(default = "default_scale")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    /// A register (same table, read in the same cycle) holding a SunSpec
    /// scale factor: the value is multiplied by 10^sf.
    pub scale_register: Option<u16>,
    /// Raw values meaning "not implemented" (bit patterns, e.g. 0xFFFF; -1
    /// is all ones); they become missing values.
    pub not_implemented: Option<Vec<i64>>,
    /// Names of the bits of a status or alarm word: `{ 0 = "running" }`.
    #[serde(default)]
    pub flags: BTreeMap<String, String>,
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub kind: Option<KindConfig>,
}

const fn default_scale() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KindConfig {
    Analog,
    Counter,
    Bitfield,
    Flag,
}

impl From<KindConfig> for PointKind {
    fn from(kind: KindConfig) -> Self {
        match kind {
            KindConfig::Analog => PointKind::Analog,
            KindConfig::Counter => PointKind::Counter,
            KindConfig::Bitfield => PointKind::Bitfield,
            KindConfig::Flag => PointKind::Flag,
        }
    }
}

/// One problem in a config file, located by line and column.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

/// Why a config could not be loaded. `Display` names the file, the line and
/// the field of every problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<ConfigProblem>,
    },
}

fn render_problems(path: &Path, problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| {
            format!(
                "{}:{}:{}: {}: {}",
                path.display(),
                p.line,
                p.column,
                p.field,
                p.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Serial line settings of an RTU bus.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SerialSettings {
    pub path: String,
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
}

/// One connection or bus. Devices with equal endpoints share it, one
/// request at a time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
    RtuOverTcp { host: String, port: u16 },
    Rtu(SerialSettings),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Endpoint::RtuOverTcp { host, port } => write!(f, "rtu+tcp://{host}:{port}"),
            Endpoint::Rtu(s) => {
                let parity = match s.parity {
                    Parity::None => 'N',
                    Parity::Even => 'E',
                    Parity::Odd => 'O',
                };
                write!(
                    f,
                    "rtu:{} {} {}{}{}",
                    s.path, s.baud, s.data_bits, parity, s.stop_bits
                )
            }
        }
    }
}

/// How the poller talks to one device.
#[derive(Debug, Clone)]
pub struct LinkPlan {
    pub endpoint: Endpoint,
    pub unit: u8,
    pub timeout: Duration,
    pub retries: u8,
    pub pause: Duration,
    pub release_after_cycle: bool,
}

/// A device with its register map resolved and checked.
#[derive(Debug, Clone)]
pub struct DevicePlan {
    pub name: String,
    pub model: String,
    pub link: LinkPlan,
    pub stagger: Duration,
    pub max_gap: u16,
    /// `Some` when the groups come from SunSpec discovery at start-up.
    pub sunspec: Option<SunspecPlan>,
    pub groups: Vec<GroupPlan>,
}

#[derive(Debug, Clone, Copy)]
pub struct SunspecPlan {
    pub base: Option<u16>,
}

impl DevicePlan {
    /// Human description of where the device is, for logs and `check`.
    pub fn address(&self) -> String {
        format!("{} unit {}", self.link.endpoint, self.link.unit)
    }
}

/// One poll group: one frame per interval, read by one or more requests.
#[derive(Debug, Clone)]
pub struct GroupPlan {
    /// Index of this group in the catalog.
    pub catalog_index: u16,
    pub name: String,
    pub interval: Duration,
    pub table: RegisterTable,
    pub requests: Vec<ReadRequest>,
    /// Fewest requests possible if every gap could be read.
    pub min_requests: usize,
    pub points: Vec<PointPlan>,
}

/// One point: how to decode it and where its registers are in the answers.
#[derive(Debug, Clone)]
pub struct PointPlan {
    pub name: String,
    pub unit: String,
    pub kind: PointKind,
    pub scale: f64,
    pub offset: f64,
    pub address: u16,
    pub codec: PointCodec,
    pub slot: Slot,
    /// Scale-factor register and where it is, when the point has one.
    pub scale_factor: Option<(u16, Slot)>,
    pub flags: Vec<(u8, String)>,
}

impl PointPlan {
    /// Strings are decoded for display but not sent.
    pub fn is_sent(&self) -> bool {
        self.codec.data_type.is_sent()
    }
}

/// A point before its slot is known: what a register map or SunSpec
/// discovery says about it.
#[derive(Debug, Clone)]
pub struct PointSpec {
    pub name: String,
    pub unit: String,
    pub kind: PointKind,
    pub scale: f64,
    pub offset: f64,
    pub address: u16,
    pub codec: PointCodec,
    pub scale_register: Option<u16>,
    pub flags: Vec<(u8, String)>,
}

/// Plan the requests of one group of points.
pub fn plan_points(
    catalog_index: u16,
    name: &str,
    interval: Duration,
    table: RegisterTable,
    specs: Vec<PointSpec>,
    max_gap: u16,
) -> Result<GroupPlan, plan::PlanError> {
    let mut spans: Vec<(u16, u16)> = specs
        .iter()
        .map(|p| (p.address, p.codec.width(table)))
        .collect();
    spans.extend(
        specs
            .iter()
            .filter_map(|p| p.scale_register.map(|a| (a, 1))),
    );
    let requests = plan::coalesce(table, &spans, max_gap)?;
    let min_requests = plan::minimum_requests(table, &spans);
    let points = specs
        .into_iter()
        .map(|p| {
            let slot = plan::locate(&requests, p.address, p.codec.width(table))
                .expect("every span is covered");
            let scale_factor = p
                .scale_register
                .map(|a| (a, plan::locate(&requests, a, 1).expect("covered")));
            PointPlan {
                name: p.name,
                unit: p.unit,
                kind: p.kind,
                scale: p.scale,
                offset: p.offset,
                address: p.address,
                codec: p.codec,
                slot,
                scale_factor,
                flags: p.flags,
            }
        })
        .collect();
    Ok(GroupPlan {
        catalog_index,
        name: name.to_owned(),
        interval,
        table,
        requests,
        min_requests,
        points,
    })
}

/// The catalog of a set of devices; numbers every group in order.
pub fn build_catalog(devices: &mut [DevicePlan]) -> Catalog {
    let mut catalog = Catalog {
        devices: Vec::new(),
        groups: Vec::new(),
    };
    for (d, device) in devices.iter_mut().enumerate() {
        catalog.devices.push(DeviceInfo {
            name: device.name.clone(),
            model: device.model.clone(),
        });
        for group in &mut device.groups {
            group.catalog_index = catalog.groups.len() as u16;
            catalog.groups.push(GroupInfo {
                device: d as u16,
                name: group.name.clone(),
                interval_ms: u32::try_from(group.interval.as_millis()).unwrap_or(u32::MAX),
                points: group
                    .points
                    .iter()
                    .filter(|p| p.is_sent())
                    .map(|p| PointInfo {
                        name: p.name.clone(),
                        unit: p.unit.clone(),
                        kind: p.kind,
                        scale: p.scale,
                        offset: p.offset,
                    })
                    .collect(),
            });
        }
    }
    catalog
}

/// Which uplink carries the batches.
#[derive(Debug)]
pub enum UplinkConfig {
    Kafka(KafkaConfig),
    Mqtt(MqttUplinkConfig),
}

/// The checked configuration the agent runs with.
#[derive(Debug)]
pub struct ValidConfig {
    pub site: SiteId,
    pub buffer: BufferConfig,
    pub batch: BatchConfig,
    pub uplink: UplinkConfig,
    pub mqtt_mirror: Option<MqttMirrorConfig>,
    pub status: StatusConfig,
    pub clock: ClockConfig,
    pub devices: Vec<DevicePlan>,
    pub catalog: Catalog,
}

impl ValidConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }

    pub fn parse(text: &str) -> Result<Self, Vec<ConfigProblem>> {
        let lines = LineIndex::new(text);
        let raw: EdgeConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| lines.locate(s.start));
            let field = field_of_toml_error(&e)
                .or_else(|| key_before(text, line, column))
                .unwrap_or_else(|| "config".to_owned());
            vec![ConfigProblem {
                line,
                column,
                field,
                message: e.message().trim().to_owned(),
            }]
        })?;
        raw.validate(&lines)
    }

    /// The Kafka settings, if Kafka is the uplink.
    pub fn kafka(&self) -> Option<&KafkaConfig> {
        match &self.uplink {
            UplinkConfig::Kafka(k) => Some(k),
            UplinkConfig::Mqtt(_) => None,
        }
    }

    /// Rebuild the catalog after SunSpec discovery filled in groups.
    pub fn rebuild_catalog(&mut self) {
        self.catalog = build_catalog(&mut self.devices);
    }
}

/// Best effort at naming the field of a serde error: "unknown field `x`",
/// "missing field `x`" and "invalid type ... for key `x`" all carry it.
fn field_of_toml_error(error: &toml::de::Error) -> Option<String> {
    let message = error.message();
    for marker in ["field `", "key `"] {
        if let Some(start) = message.find(marker) {
            let rest = &message[start + marker.len()..];
            if let Some(end) = rest.find('`') {
                return Some(rest[..end].to_owned());
            }
        }
    }
    None
}

/// The key just before an error's column (`key = value`, also inside an
/// inline table), for errors that point at a value.
fn key_before(text: &str, line: usize, column: usize) -> Option<String> {
    let line_text = text.lines().nth(line.checked_sub(1)?)?;
    let before = line_text
        .get(..column.saturating_sub(1))
        .unwrap_or(line_text);
    let before = before.trim_end().strip_suffix('=')?.trim_end();
    let key: String = before
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"'))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let key = key.trim_matches('"');
    (!key.is_empty()).then(|| key.to_owned())
}

/// Maps byte offsets to 1-based line and column numbers.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { starts }
    }

    fn locate(&self, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|&s| s <= offset);
        (line, offset - self.starts[line - 1] + 1)
    }
}

struct Problems<'a> {
    lines: &'a LineIndex,
    found: Vec<ConfigProblem>,
}

impl Problems<'_> {
    fn add(
        &mut self,
        span: std::ops::Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = self.lines.locate(span.start);
        self.found.push(ConfigProblem {
            line,
            column,
            field: field.into(),
            message: message.into(),
        });
    }
}

impl EdgeConfig {
    fn validate(self, lines: &LineIndex) -> Result<ValidConfig, Vec<ConfigProblem>> {
        let mut problems = Problems {
            lines,
            found: Vec::new(),
        };
        let site = match SiteId::new(self.site_id.get_ref().clone()) {
            Ok(site) => Some(site),
            Err(e) => {
                problems.add(self.site_id.span(), "site_id", e.to_string());
                None
            }
        };
        let uplink = match (self.kafka, self.mqtt_uplink) {
            (Some(kafka), None) => {
                if kafka.get_ref().brokers.trim().is_empty() {
                    problems.add(
                        kafka.span(),
                        "kafka.brokers",
                        "must name at least one broker",
                    );
                }
                Some(UplinkConfig::Kafka(kafka.into_inner()))
            }
            (None, Some(mqtt)) => {
                let m = mqtt.get_ref();
                if m.host.trim().is_empty() {
                    problems.add(mqtt.span(), "mqtt_uplink.host", "must not be empty");
                }
                if m.inflight == 0 {
                    problems.add(mqtt.span(), "mqtt_uplink.inflight", "must be at least 1");
                }
                if m.keep_alive < Duration::from_secs(1) {
                    problems.add(mqtt.span(), "mqtt_uplink.keep_alive", "must be at least 1s");
                }
                if m.topic.is_empty() || m.topic.contains(['#', '+']) {
                    problems.add(
                        mqtt.span(),
                        "mqtt_uplink.topic",
                        "must be a topic name without wildcards",
                    );
                }
                Some(UplinkConfig::Mqtt(mqtt.into_inner()))
            }
            (Some(_), Some(mqtt)) => {
                problems.add(
                    mqtt.span(),
                    "mqtt_uplink",
                    "configure exactly one uplink: [kafka] or [mqtt_uplink], not both",
                );
                None
            }
            (None, None) => {
                problems.add(
                    0..0,
                    "kafka",
                    "no uplink: add a [kafka] or an [mqtt_uplink] table",
                );
                None
            }
        };
        if self.devices.is_empty() {
            problems.add(
                0..0,
                "devices",
                "no devices configured: add at least one [[devices]] table",
            );
        }

        let mut names = HashSet::new();
        let mut devices = Vec::new();
        for (d, spanned) in self.devices.iter().enumerate() {
            let span = spanned.span();
            let device = spanned.get_ref();
            let field = format!("devices[{d}]");
            if !names.insert(device.name.clone()) {
                problems.add(
                    span.clone(),
                    format!("{field}.name"),
                    format!("duplicate device name {:?}", device.name),
                );
            }
            if device.name.is_empty() || device.name.contains(['/', '+', '#']) {
                problems.add(
                    span.clone(),
                    format!("{field}.name"),
                    "must not be empty or contain '/', '+' or '#'",
                );
            }
            if device.timeout.is_zero() {
                problems.add(
                    span.clone(),
                    format!("{field}.timeout"),
                    "must be greater than zero",
                );
            }
            let Some(link) = link_of(device, &field, span.clone(), &mut problems) else {
                continue;
            };
            let sunspec_map = device
                .map
                .as_ref()
                .is_some_and(|m| m.get_ref() == SUNSPEC_MAP);
            if device.sunspec || sunspec_map {
                if !device.groups.is_empty() || (device.map.is_some() && !sunspec_map) {
                    problems.add(
                        span.clone(),
                        format!("{field}.sunspec"),
                        "a SunSpec device takes its map from the device: remove `map` and `groups`",
                    );
                    continue;
                }
                devices.push(DevicePlan {
                    name: device.name.clone(),
                    model: device.model.clone().unwrap_or_else(|| "sunspec".into()),
                    link,
                    stagger: device.stagger,
                    max_gap: device.max_gap.unwrap_or(default_max_gap()),
                    sunspec: Some(SunspecPlan {
                        base: device.sunspec_base,
                    }),
                    groups: Vec::new(),
                });
                continue;
            }
            let (groups, model, map) = match (&device.map, device.groups.is_empty()) {
                (Some(map), true) => match self.maps.get(map.get_ref()) {
                    Some(m) => (&m.groups, m.model.clone(), Some(m)),
                    None => {
                        let known = self.maps.keys().cloned().collect::<Vec<_>>().join(", ");
                        problems.add(
                            map.span(),
                            format!("{field}.map"),
                            format!(
                                "no register map named {:?} (known: {known}, {SUNSPEC_MAP})",
                                map.get_ref()
                            ),
                        );
                        continue;
                    }
                },
                (None, false) => (&device.groups, String::new(), None),
                (Some(map), false) => {
                    problems.add(
                        map.span(),
                        format!("{field}.map"),
                        "give either `map` or inline `groups`, not both",
                    );
                    continue;
                }
                (None, true) => {
                    problems.add(
                        span.clone(),
                        field.clone(),
                        "needs a register `map`, inline `groups` or `sunspec = true`",
                    );
                    continue;
                }
            };
            let defaults = MapDefaults {
                order: map.map_or(WordOrder::Abcd, |m| m.order),
                markers: map.is_some_and(|m| m.not_implemented_defaults),
                max_gap: device
                    .max_gap
                    .or(map.and_then(|m| m.max_gap))
                    .unwrap_or(default_max_gap()),
            };
            let mut group_plans = Vec::new();
            let mut group_names = HashSet::new();
            for (g, group) in groups.iter().enumerate() {
                let gfield = format!("{field}.groups[{g}]");
                if !group_names.insert(group.get_ref().name.clone()) {
                    problems.add(
                        group.span(),
                        format!("{gfield}.name"),
                        format!("duplicate group name {:?}", group.get_ref().name),
                    );
                }
                if let Some(plan) = plan_group(group, &gfield, &defaults, &mut problems) {
                    group_plans.push(plan);
                }
            }
            devices.push(DevicePlan {
                name: device.name.clone(),
                model: device.model.clone().unwrap_or(model),
                link,
                stagger: device.stagger,
                max_gap: defaults.max_gap,
                sunspec: None,
                groups: group_plans,
            });
        }
        match (site, uplink, problems.found.is_empty()) {
            (Some(site), Some(uplink), true) => {
                let catalog = build_catalog(&mut devices);
                Ok(ValidConfig {
                    site,
                    buffer: self.buffer,
                    batch: self.batch,
                    uplink,
                    mqtt_mirror: self.mqtt_mirror,
                    status: self.status,
                    clock: self.clock,
                    devices,
                    catalog,
                })
            }
            _ => Err(problems.found),
        }
    }
}

struct MapDefaults {
    order: WordOrder,
    markers: bool,
    max_gap: u16,
}

fn link_of(
    device: &DeviceConfig,
    field: &str,
    span: std::ops::Range<usize>,
    problems: &mut Problems<'_>,
) -> Option<LinkPlan> {
    let before = problems.found.len();
    let endpoint = match device.transport {
        TransportKind::Tcp | TransportKind::RtuOverTcp => {
            if device.serial.is_some() {
                problems.add(
                    span.clone(),
                    format!("{field}.serial"),
                    "only for transport = \"rtu\"",
                );
            }
            match &device.host {
                Some(host) if !host.trim().is_empty() => {
                    let (host, port) = (host.clone(), device.port);
                    if device.transport == TransportKind::Tcp {
                        Some(Endpoint::Tcp { host, port })
                    } else {
                        Some(Endpoint::RtuOverTcp { host, port })
                    }
                }
                _ => {
                    problems.add(
                        span.clone(),
                        format!("{field}.host"),
                        "needs the device's or gateway's `host`",
                    );
                    None
                }
            }
        }
        TransportKind::Rtu => {
            if device.host.is_some() {
                problems.add(
                    span.clone(),
                    format!("{field}.host"),
                    "a serial device has no `host`; give `serial`",
                );
            }
            if !(5..=8).contains(&device.data_bits) {
                problems.add(
                    span.clone(),
                    format!("{field}.data_bits"),
                    "must be 5, 6, 7 or 8",
                );
            }
            if !(1..=2).contains(&device.stop_bits) {
                problems.add(span.clone(), format!("{field}.stop_bits"), "must be 1 or 2");
            }
            if device.baud == 0 {
                problems.add(
                    span.clone(),
                    format!("{field}.baud"),
                    "must be greater than zero",
                );
            }
            match &device.serial {
                Some(path) if !path.is_empty() => Some(Endpoint::Rtu(SerialSettings {
                    path: path.clone(),
                    baud: device.baud,
                    parity: device.parity,
                    data_bits: device.data_bits,
                    stop_bits: device.stop_bits,
                })),
                _ => {
                    problems.add(
                        span.clone(),
                        format!("{field}.serial"),
                        "needs the serial port, e.g. serial = \"/dev/ttyUSB0\"",
                    );
                    None
                }
            }
        }
    };
    if device.transport != TransportKind::Tcp && device.unit == 0 {
        problems.add(
            span,
            format!("{field}.unit"),
            "unit 0 is broadcast on RTU: give the device's own id (1-247)",
        );
    }
    let endpoint = endpoint.filter(|_| problems.found.len() == before)?;
    Some(LinkPlan {
        endpoint,
        unit: device.unit,
        timeout: device.timeout,
        retries: device.retries,
        pause: device.pause,
        release_after_cycle: device.release_after_cycle,
    })
}

fn plan_group(
    spanned: &Spanned<GroupConfig>,
    field: &str,
    defaults: &MapDefaults,
    problems: &mut Problems<'_>,
) -> Option<GroupPlan> {
    let group = spanned.get_ref();
    let before = problems.found.len();
    if group.interval.is_zero() {
        problems.add(
            spanned.span(),
            format!("{field}.interval"),
            "must be greater than zero",
        );
    }
    if group.points.is_empty() {
        problems.add(
            spanned.span(),
            format!("{field}.points"),
            "a group needs at least one point",
        );
        return None;
    }
    let mut names = HashSet::new();
    let mut specs = Vec::new();
    for (p, point) in group.points.iter().enumerate() {
        let pf = format!("{field}.points[{p}]");
        let pc = point.get_ref();
        let span = point.span();
        if !names.insert(pc.name.clone()) {
            problems.add(
                span.clone(),
                format!("{pf}.name"),
                format!("duplicate point name {:?} in group", pc.name),
            );
        }
        if pc.name.is_empty() || pc.name.contains(['/', '+', '#']) {
            problems.add(
                span.clone(),
                format!("{pf}.name"),
                "must not be empty or contain '/', '+' or '#'",
            );
        }
        if !pc.scale.is_finite() || pc.scale == 0.0 {
            problems.add(
                span.clone(),
                format!("{pf}.scale"),
                "must be a finite, non-zero number",
            );
        }
        if !pc.offset.is_finite() {
            problems.add(
                span.clone(),
                format!("{pf}.offset"),
                "must be a finite number",
            );
        }
        if !group.table.holds(pc.data_type) {
            problems.add(
                span.clone(),
                format!("{pf}.type"),
                format!(
                    "{} cannot be read from {} (use a register table)",
                    pc.data_type, group.table
                ),
            );
        }
        match (pc.data_type, pc.bit) {
            (DataType::Bool, Some(_)) if group.table.is_bits() => {
                problems.add(
                    span.clone(),
                    format!("{pf}.bit"),
                    format!("{} are single bits already: remove `bit`", group.table),
                );
            }
            (DataType::Bool, None) if !group.table.is_bits() => {
                problems.add(
                    span.clone(),
                    format!("{pf}.bit"),
                    "a bool in a register needs `bit = 0..15`",
                );
            }
            (DataType::Bool, Some(bit)) if bit > 15 => {
                problems.add(span.clone(), format!("{pf}.bit"), "must be 0..15");
            }
            (DataType::Bool, _) => {}
            (_, Some(_)) => problems.add(
                span.clone(),
                format!("{pf}.bit"),
                "only for type = \"bool\" (name a word's bits with `flags`)",
            ),
            (_, None) => {}
        }
        let length = match (pc.data_type, pc.length) {
            (DataType::String, Some(n)) if (1..=MAX_REGISTERS_PER_READ).contains(&n) => n,
            (DataType::String, _) => {
                problems.add(
                    span.clone(),
                    format!("{pf}.length"),
                    "a string needs `length` = 1..125 registers",
                );
                1
            }
            (_, Some(_)) => {
                problems.add(
                    span.clone(),
                    format!("{pf}.length"),
                    "only for type = \"string\"",
                );
                0
            }
            (_, None) => 0,
        };
        if pc.scale_register.is_some()
            && !matches!(pc.data_type, DataType::String | DataType::Bool)
            && group.table.is_bits()
        {
            problems.add(
                span.clone(),
                format!("{pf}.scale_register"),
                "needs a register table",
            );
        }
        if pc.scale_register.is_some() && matches!(pc.data_type, DataType::String | DataType::Bool)
        {
            problems.add(
                span.clone(),
                format!("{pf}.scale_register"),
                format!("a {} has no scale", pc.data_type),
            );
        }
        let mut flags = Vec::new();
        for (bit, name) in &pc.flags {
            match bit.parse::<u8>() {
                Ok(b) if u16::from(b) < 16 * pc.data_type.width(RegisterTable::Holding, 1) => {
                    flags.push((b, name.clone()))
                }
                _ => problems.add(
                    span.clone(),
                    format!("{pf}.flags.{bit}"),
                    "flag keys are bit numbers inside the value (0 = least significant)",
                ),
            }
        }
        flags.sort();
        let mut codec =
            PointCodec::new(pc.data_type).with_order(pc.order.unwrap_or(defaults.order));
        codec.bit = pc.bit;
        codec.length = length;
        if defaults.markers {
            codec = codec.with_default_marker();
        }
        if let Some(markers) = &pc.not_implemented {
            let bits = 16 * u32::from(pc.data_type.width(RegisterTable::Holding, 1));
            let mask = if bits >= 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            codec.markers = markers.iter().map(|&m| (m as u64) & mask).collect();
        }
        let kind = pc.kind.map_or_else(
            || {
                if pc.flags.is_empty() {
                    pc.data_type.default_kind()
                } else {
                    PointKind::Bitfield
                }
            },
            PointKind::from,
        );
        specs.push(PointSpec {
            name: pc.name.clone(),
            unit: pc.unit.clone(),
            kind,
            scale: pc.scale,
            offset: pc.offset,
            address: pc.address,
            codec,
            scale_register: pc.scale_register,
            flags,
        });
    }
    if !specs.iter().any(|s| s.codec.data_type.is_sent()) {
        problems.add(
            spanned.span(),
            format!("{field}.points"),
            "strings are shown by `read` but never sent: a group needs at least one number",
        );
    }
    if problems.found.len() != before {
        return None;
    }
    match plan_points(
        0,
        &group.name,
        group.interval,
        group.table,
        specs,
        defaults.max_gap,
    ) {
        Ok(plan) => Some(plan),
        Err(e) => {
            problems.add(spanned.span(), field.to_owned(), e.to_string());
            None
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.line, self.column, self.field, self.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = include_str!("../bess-edge.example.toml");

    #[test]
    fn example_config_is_valid() {
        let config = ValidConfig::parse(EXAMPLE).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(config.site.as_str(), "site-001");
        assert_eq!(config.devices.len(), 3);
        assert!(config.catalog.point_count() > 10);
        assert_eq!(config.devices[0].groups[0].requests[0].start, 0);
    }

    #[test]
    fn unknown_key_names_line_and_field() {
        let text = EXAMPLE.replacen(
            "site_id = \"site-001\"",
            "site_id = \"site-001\"\nsite_name = \"x\"",
            1,
        );
        let problems = ValidConfig::parse(&text).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "site_name");
        let expected_line = text
            .lines()
            .position(|l| l.starts_with("site_name"))
            .unwrap()
            + 1;
        assert_eq!(problems[0].line, expected_line, "{problems:?}");
    }

    #[test]
    fn wrong_type_names_line_and_field() {
        let text = EXAMPLE.replacen("port = 5020", "port = \"5020\"", 1);
        let problems = ValidConfig::parse(&text).unwrap_err();
        let expected_line = text
            .lines()
            .position(|l| l.contains("port = \"5020\""))
            .unwrap()
            + 1;
        assert_eq!(problems[0].line, expected_line, "{problems:?}");
        assert_eq!(problems[0].field, "port", "{problems:?}");
        assert!(problems[0].message.contains("u16"), "{problems:?}");
    }

    #[test]
    fn wrong_type_inside_an_inline_table_names_that_key() {
        let text = EXAMPLE.replacen("address = 7,", "address = \"7\",", 1);
        let problems = ValidConfig::parse(&text).unwrap_err();
        assert_eq!(problems[0].field, "address", "{problems:?}");
    }

    #[test]
    fn missing_field_is_named() {
        let text = EXAMPLE.replacen("site_id = \"site-001\"", "", 1);
        let problems = ValidConfig::parse(&text).unwrap_err();
        assert_eq!(problems[0].field, "site_id", "{problems:?}");
    }

    #[test]
    fn validation_collects_every_problem_with_its_line() {
        let text = EXAMPLE
            .replacen("site_id = \"site-001\"", "site_id = \"bad site\"", 1)
            .replacen("map = \"bess-controller-v1\"", "map = \"nope\"", 1);
        let problems = ValidConfig::parse(&text).unwrap_err();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert!(fields.contains(&"site_id"), "{problems:?}");
        assert!(fields.contains(&"devices[0].map"), "{problems:?}");
        let map_line = text
            .lines()
            .position(|l| l.contains("map = \"nope\""))
            .unwrap()
            + 1;
        assert!(problems.iter().any(|p| p.line == map_line), "{problems:?}");
    }

    #[test]
    fn a_group_wider_than_one_read_is_planned_as_several_requests() {
        let text = EXAMPLE.replacen("address = 17", "address = 200", 1);
        let config = ValidConfig::parse(&text).unwrap_or_else(|p| panic!("{p:?}"));
        let fast = &config.devices[0].groups[0];
        assert_eq!(fast.requests.len(), 2, "{:?}", fast.requests);
        assert_eq!(fast.min_requests, 2);
        let heartbeat = fast.points.iter().find(|p| p.name == "heartbeat").unwrap();
        assert_eq!((heartbeat.slot.request, heartbeat.slot.offset), (1, 0));
    }

    #[test]
    fn sizes_take_units_or_none() {
        assert_eq!(ByteSize::parse("512MiB"), Ok(ByteSize(Some(512 << 20))));
        assert_eq!(ByteSize::parse("2GB"), Ok(ByteSize(Some(2_000_000_000))));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(Some(4096))));
        assert_eq!(ByteSize::parse("none"), Ok(ByteSize(None)));
        assert!(ByteSize::parse("12 parsecs").is_err());
    }

    #[test]
    fn error_display_names_the_file() {
        let err = ConfigError::Invalid {
            path: "/etc/bess/edge.toml".into(),
            problems: vec![ConfigProblem {
                line: 3,
                column: 1,
                field: "site_id".into(),
                message: "bad".into(),
            }],
        };
        assert_eq!(err.to_string(), "/etc/bess/edge.toml:3:1: site_id: bad");
    }

    fn device_problems(device: &str) -> Vec<ConfigProblem> {
        let text = format!(
            "site_id = \"s\"\n[kafka]\nbrokers = \"b:9092\"\n[[devices]]\nname = \"d\"\n{device}\n"
        );
        ValidConfig::parse(&text).err().unwrap_or_default()
    }

    #[test]
    fn transports_need_their_own_settings() {
        let problems = device_problems("transport = \"rtu\"\nbaud = 19200\nsunspec = true");
        assert!(
            problems.iter().any(|p| p.field == "devices[0].serial"),
            "{problems:?}"
        );
        let problems = device_problems("transport = \"rtu\"\nserial = \"/dev/ttyUSB0\"\nhost = \"x\"\nstop_bits = 3\nsunspec = true");
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert!(
            fields.contains(&"devices[0].host") && fields.contains(&"devices[0].stop_bits"),
            "{problems:?}"
        );
        assert_eq!(
            device_problems(
                "transport = \"rtu-over-tcp\"\nhost = \"gw\"\nport = 4001\nsunspec = true"
            ),
            vec![]
        );
        let problems = device_problems("sunspec = true");
        assert_eq!(problems[0].field, "devices[0].host", "{problems:?}");
        assert_eq!(
            problems[0].line, 4,
            "the line of the [[devices]] table: {problems:?}"
        );
    }

    #[test]
    fn exactly_one_uplink_is_configured() {
        let both = EXAMPLE.replacen("[status]", "[mqtt_uplink]\nhost = \"h\"\n\n[status]", 1);
        let problems = ValidConfig::parse(&both).unwrap_err();
        assert_eq!(problems[0].field, "mqtt_uplink", "{problems:?}");
        let mqtt_only = EXAMPLE
            .replacen("[kafka]\nbrokers = \"127.0.0.1:9092\"\ntopic = \"bess.telemetry\"\ndelivery_timeout = \"30s\"", "[mqtt_uplink]\nhost = \"h\"", 1);
        let config = ValidConfig::parse(&mqtt_only).unwrap_or_else(|p| panic!("{p:?}"));
        assert!(
            matches!(&config.uplink, UplinkConfig::Mqtt(m) if m.topic == "bess/{site}/batches")
        );
    }

    #[test]
    fn point_options_are_checked_against_the_type() {
        let group = |points: &str| {
            device_problems(&format!(
                "host = \"h\"\n[[devices.groups]]\nname = \"g\"\ninterval = \"1s\"\npoints = [{points}]"
            ))
        };
        let problems = group("{ name = \"a\", address = 0, type = \"bool\" }");
        assert_eq!(
            problems[0].field, "devices[0].groups[0].points[0].bit",
            "{problems:?}"
        );
        let problems = group("{ name = \"a\", address = 0, type = \"string\" }");
        assert!(
            problems.iter().any(|p| p.field.ends_with(".length")),
            "{problems:?}"
        );
        let problems = group("{ name = \"a\", address = 0, type = \"u16\", bit = 3 }");
        assert!(
            problems.iter().any(|p| p.field.ends_with(".bit")),
            "{problems:?}"
        );
        let problems =
            group("{ name = \"a\", address = 0, type = \"u16\", flags = { x = \"y\" } }");
        assert!(
            problems.iter().any(|p| p.field.ends_with(".flags.x")),
            "{problems:?}"
        );
        let problems = group("{ name = \"a\", address = 0, type = \"u16\", order = \"xyzw\" }");
        assert_eq!(problems[0].field, "order", "{problems:?}");
        assert!(group("{ name = \"a\", address = 0, type = \"i16\", order = \"badc\", scale_register = 5, not_implemented = [-1] }").is_empty());
    }

    #[test]
    fn configured_markers_are_masked_to_the_value_width() {
        let text = EXAMPLE.replacen(
            "address = 17, type = \"u16\"",
            "address = 17, type = \"u16\", not_implemented = [-1]",
            1,
        );
        let config = ValidConfig::parse(&text).unwrap_or_else(|p| panic!("{p:?}"));
        let heartbeat = config.devices[0].groups[0]
            .points
            .iter()
            .find(|p| p.name == "heartbeat")
            .unwrap();
        assert_eq!(heartbeat.codec.markers, vec![0xFFFF]);
    }
}
