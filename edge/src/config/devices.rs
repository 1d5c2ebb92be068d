//! The serde schema of the `[[devices]]` and `[maps]` tables: how a device
//! is reached (`TransportKind`, host or serial line), its request settings,
//! and its register map as groups of points with their types, byte orders,
//! scales and flag names.
//!
//! As in `schema`, unknown keys are refused and defaults are `const fn`s.
//! A device names a shared map, gives its groups inline, or asks for
//! SunSpec discovery; which of these is allowed together, and whether each
//! point's options suit its type, is checked in `validate`, `transport` and
//! `group`.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use toml::Spanned;

use bess_protocol::PointKind;

use crate::register::{DataType, RegisterTable, WordOrder};
use crate::site_plan::Parity;

/// A register map name that asks for SunSpec discovery instead.
pub const SUNSPEC_MAP: &str = "sunspec";

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
pub(super) const fn default_max_gap() -> u16 {
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
