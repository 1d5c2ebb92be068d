//! The agent's TOML configuration: site, devices, register maps, buffer and
//! uplink settings; parsing with file/line/field errors and validation that
//! collects every problem at once.

use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

use bess_protocol::{Catalog, DeviceInfo, GroupInfo, PointInfo, PointKind, SiteId};

use crate::register::{DataType, RegisterTable};

/// The most registers one Modbus read request may ask for.
pub const MAX_REGISTERS_PER_READ: u16 = 125;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// This site's id: the Kafka message key and the name the cloud shows.
    pub site_id: Spanned<String>,
    #[serde(default)]
    pub buffer: BufferConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub status: StatusConfig,
    /// Register maps shared by several devices, by name.
    #[serde(default)]
    pub maps: BTreeMap<String, RegisterMap>,
    pub devices: Vec<Spanned<DeviceConfig>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// SQLite file holding sealed batches until Kafka acknowledges them.
    #[serde(default = "default_buffer_path")]
    pub path: PathBuf,
}

fn default_buffer_path() -> PathBuf {
    PathBuf::from("bess-edge-buffer.sqlite")
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self { path: default_buffer_path() }
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
        Self { max_frames: default_max_frames(), max_age: default_max_age(), catalog_every: default_catalog_every() }
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
        Self { listen: default_status_listen() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterMap {
    #[serde(default)]
    pub model: String,
    pub groups: Vec<Spanned<GroupConfig>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub name: String,
    /// Host name or IP address of the Modbus TCP device or gateway.
    pub host: String,
    #[serde(default = "default_modbus_port")]
    pub port: u16,
    /// Modbus unit id (slave id).
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// Each request's timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Name of an entry in `[maps]`; or give `groups` inline.
    pub map: Option<Spanned<String>>,
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
    #[serde(default = "default_scale")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
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
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", render_problems(path, problems))]
    Invalid { path: PathBuf, problems: Vec<ConfigProblem> },
}

fn render_problems(path: &Path, problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}:{}:{}: {}: {}", path.display(), p.line, p.column, p.field, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A device with its register map resolved and checked.
#[derive(Debug, Clone)]
pub struct DevicePlan {
    pub name: String,
    pub model: String,
    pub host: String,
    pub port: u16,
    pub unit: u8,
    pub timeout: Duration,
    pub groups: Vec<GroupPlan>,
}

/// One poll group: one read request covering all its points.
#[derive(Debug, Clone)]
pub struct GroupPlan {
    /// Index of this group in the catalog.
    pub catalog_index: u16,
    pub name: String,
    pub interval: Duration,
    pub table: RegisterTable,
    pub start: u16,
    pub count: u16,
    pub points: Vec<PointConfig>,
}

/// The checked configuration the agent runs with.
#[derive(Debug)]
pub struct ValidConfig {
    pub site: SiteId,
    pub buffer: BufferConfig,
    pub batch: BatchConfig,
    pub kafka: KafkaConfig,
    pub status: StatusConfig,
    pub devices: Vec<DevicePlan>,
    pub catalog: Catalog,
}

impl ValidConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|problems| ConfigError::Invalid { path: path.to_owned(), problems })
    }

    pub fn parse(text: &str) -> Result<Self, Vec<ConfigProblem>> {
        let lines = LineIndex::new(text);
        let raw: EdgeConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| lines.locate(s.start));
            let field = field_of_toml_error(&e)
                .or_else(|| key_before(text, line, column))
                .unwrap_or_else(|| "config".to_owned());
            vec![ConfigProblem { line, column, field, message: e.message().trim().to_owned() }]
        })?;
        raw.validate(&lines)
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
    let before = line_text.get(..column.saturating_sub(1)).unwrap_or(line_text);
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
    fn add(&mut self, span: std::ops::Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        let (line, column) = self.lines.locate(span.start);
        self.found.push(ConfigProblem { line, column, field: field.into(), message: message.into() });
    }
}

impl EdgeConfig {
    fn validate(self, lines: &LineIndex) -> Result<ValidConfig, Vec<ConfigProblem>> {
        let mut problems = Problems { lines, found: Vec::new() };
        let site = match SiteId::new(self.site_id.get_ref().clone()) {
            Ok(site) => Some(site),
            Err(e) => {
                problems.add(self.site_id.span(), "site_id", e.to_string());
                None
            }
        };
        if self.kafka.brokers.trim().is_empty() {
            problems.add(0..0, "kafka.brokers", "must name at least one broker");
        }
        if self.devices.is_empty() {
            problems.add(0..0, "devices", "no devices configured: add at least one [[devices]] table");
        }

        let mut names = HashSet::new();
        let mut devices = Vec::new();
        let mut catalog = Catalog { devices: Vec::new(), groups: Vec::new() };
        for (d, spanned) in self.devices.iter().enumerate() {
            let span = spanned.span();
            let device = spanned.get_ref();
            let field = format!("devices[{d}]");
            if !names.insert(device.name.clone()) {
                problems.add(span.clone(), format!("{field}.name"), format!("duplicate device name {:?}", device.name));
            }
            if device.name.is_empty() {
                problems.add(span.clone(), format!("{field}.name"), "must not be empty");
            }
            if device.timeout.is_zero() {
                problems.add(span.clone(), format!("{field}.timeout"), "must be greater than zero");
            }
            let (groups, model) = match (&device.map, device.groups.is_empty()) {
                (Some(map), true) => match self.maps.get(map.get_ref()) {
                    Some(m) => (&m.groups, m.model.clone()),
                    None => {
                        let known = self.maps.keys().cloned().collect::<Vec<_>>().join(", ");
                        problems.add(
                            map.span(),
                            format!("{field}.map"),
                            format!("no register map named {:?} (known: {known})", map.get_ref()),
                        );
                        continue;
                    }
                },
                (None, false) => (&device.groups, String::new()),
                (Some(map), false) => {
                    problems.add(map.span(), format!("{field}.map"), "give either `map` or inline `groups`, not both");
                    continue;
                }
                (None, true) => {
                    problems.add(span.clone(), field.clone(), "needs a register `map` or inline `groups`");
                    continue;
                }
            };
            let device_index = catalog.devices.len() as u16;
            let mut group_plans = Vec::new();
            for (g, group) in groups.iter().enumerate() {
                let gfield = format!("{field}.groups[{g}]");
                if let Some(plan) = plan_group(group, &gfield, catalog.groups.len() as u16, &mut problems) {
                    catalog.groups.push(GroupInfo {
                        device: device_index,
                        name: plan.name.clone(),
                        interval_ms: u32::try_from(plan.interval.as_millis()).unwrap_or(u32::MAX),
                        points: plan
                            .points
                            .iter()
                            .map(|p| PointInfo {
                                name: p.name.clone(),
                                unit: p.unit.clone(),
                                kind: p.kind.map_or_else(|| p.data_type.default_kind(), PointKind::from),
                                scale: p.scale,
                                offset: p.offset,
                            })
                            .collect(),
                    });
                    group_plans.push(plan);
                }
            }
            let model = device.model.clone().unwrap_or(model);
            catalog.devices.push(DeviceInfo { name: device.name.clone(), model: model.clone() });
            devices.push(DevicePlan {
                name: device.name.clone(),
                model,
                host: device.host.clone(),
                port: device.port,
                unit: device.unit,
                timeout: device.timeout,
                groups: group_plans,
            });
        }
        match (site, problems.found.is_empty()) {
            (Some(site), true) => Ok(ValidConfig {
                site,
                buffer: self.buffer,
                batch: self.batch,
                kafka: self.kafka,
                status: self.status,
                devices,
                catalog,
            }),
            _ => Err(problems.found),
        }
    }
}

fn plan_group(
    spanned: &Spanned<GroupConfig>,
    field: &str,
    catalog_index: u16,
    problems: &mut Problems<'_>,
) -> Option<GroupPlan> {
    let group = spanned.get_ref();
    let before = problems.found.len();
    if group.interval.is_zero() {
        problems.add(spanned.span(), format!("{field}.interval"), "must be greater than zero");
    }
    if group.points.is_empty() {
        problems.add(spanned.span(), format!("{field}.points"), "a group needs at least one point");
        return None;
    }
    let mut names = HashSet::new();
    for (p, point) in group.points.iter().enumerate() {
        let pf = format!("{field}.points[{p}]");
        let pc = point.get_ref();
        if !names.insert(pc.name.clone()) {
            problems.add(point.span(), format!("{pf}.name"), format!("duplicate point name {:?} in group", pc.name));
        }
        if !pc.scale.is_finite() || pc.scale == 0.0 {
            problems.add(point.span(), format!("{pf}.scale"), "must be a finite, non-zero number");
        }
        if !group.table.holds(pc.data_type) {
            problems.add(
                point.span(),
                format!("{pf}.type"),
                format!("{} cannot be read from {} (use a register table)", pc.data_type, group.table),
            );
        }
        if u32::from(pc.address) + u32::from(pc.data_type.width(group.table)) > 0x1_0000 {
            problems.add(point.span(), format!("{pf}.address"), "runs past the end of the address space");
        }
    }
    let start = group.points.iter().map(|p| p.get_ref().address).min().unwrap_or(0);
    let end = group
        .points
        .iter()
        .map(|p| u32::from(p.get_ref().address) + u32::from(p.get_ref().data_type.width(group.table)))
        .max()
        .unwrap_or(0);
    let count = end.saturating_sub(u32::from(start));
    let limit = u32::from(group.table.max_per_read());
    if count > limit {
        problems.add(
            spanned.span(),
            field.to_owned(),
            format!("spans {count} {}s from address {start}; one read can take at most {limit}: split the group", group.table.unit_name()),
        );
    }
    (problems.found.len() == before).then(|| GroupPlan {
        catalog_index,
        name: group.name.clone(),
        interval: group.interval,
        table: group.table,
        start,
        count: count as u16,
        points: group.points.iter().map(|p| p.get_ref().clone()).collect(),
    })
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}: {}", self.line, self.column, self.field, self.message)
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
        assert_eq!(config.devices[0].groups[0].start, 0);
    }

    #[test]
    fn unknown_key_names_line_and_field() {
        let text = EXAMPLE.replacen("site_id = \"site-001\"", "site_id = \"site-001\"\nsite_name = \"x\"", 1);
        let problems = ValidConfig::parse(&text).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "site_name");
        let expected_line = text.lines().position(|l| l.starts_with("site_name")).unwrap() + 1;
        assert_eq!(problems[0].line, expected_line, "{problems:?}");
    }

    #[test]
    fn wrong_type_names_line_and_field() {
        let text = EXAMPLE.replacen("port = 5020", "port = \"5020\"", 1);
        let problems = ValidConfig::parse(&text).unwrap_err();
        let expected_line = text.lines().position(|l| l.contains("port = \"5020\"")).unwrap() + 1;
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
        let map_line = text.lines().position(|l| l.contains("map = \"nope\"")).unwrap() + 1;
        assert!(problems.iter().any(|p| p.line == map_line), "{problems:?}");
    }

    #[test]
    fn group_wider_than_one_read_is_refused() {
        let text = EXAMPLE.replacen("address = 17", "address = 200", 1);
        let problems = ValidConfig::parse(&text).unwrap_err();
        assert!(problems.iter().any(|p| p.message.contains("split the group")), "{problems:?}");
    }

    #[test]
    fn error_display_names_the_file() {
        let err = ConfigError::Invalid {
            path: "/etc/bess/edge.toml".into(),
            problems: vec![ConfigProblem { line: 3, column: 1, field: "site_id".into(), message: "bad".into() }],
        };
        assert_eq!(err.to_string(), "/etc/bess/edge.toml:3:1: site_id: bad");
    }
}
