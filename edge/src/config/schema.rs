//! The serde schema of the agent-wide tables: the top level
//! (`EdgeConfig`) and its `[buffer]`, `[signing]`, `[batch]`, `[kafka]`, `[mqtt_uplink]`,
//! `[mqtt_mirror]`, `[status]` and `[clock]` sections (the uplinks' `tls`
//! tables are in `tls`).
//!
//! Every table denies unknown fields, so a misspelt key is an error with its
//! line rather than a setting silently ignored; every default is a named
//! function beside its table, a `const fn` where the type allows. Rules the
//! types cannot state (exactly one uplink, a non-empty broker list, an MQTT
//! topic without wildcards) are checked in `validate`, not here.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

use super::devices::{DeviceConfig, RegisterMap};
use super::size::ByteSize;
use super::tls::TlsConfig;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// This site's id: the Kafka message key and the name the cloud shows.
    pub site_id: Spanned<String>,
    #[serde(default)]
    pub buffer: BufferConfig,
    #[serde(default)]
    pub signing: SigningConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    pub kafka: Option<Spanned<KafkaConfig>>,
    pub mqtt_uplink: Option<Spanned<MqttUplinkConfig>>,
    #[serde(default)]
    pub live: LiveConfig,
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

/// The site's signing key (see `crate::signing`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// PKCS#8 PEM file of the site's Ed25519 key; created, owner-only, on
    /// the first start.
    #[serde(default = "default_key_file")]
    pub key_file: PathBuf,
    /// `false`: send unsigned (version 1) batches, for collectors that do
    /// not check signatures yet.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for SigningConfig {
    fn default() -> Self {
        Self {
            key_file: default_key_file(),
            enabled: true,
        }
    }
}

fn default_key_file() -> PathBuf {
    PathBuf::from("bess-edge-site.key")
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
/// Batches are the stored history (the live lane carries what is shown
/// now): 15 s compresses to about a byte a sample.
const fn default_max_age() -> Duration {
    Duration::from_secs(15)
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
    /// Topic of the live lane (see `[live]`): the newest frames, unbuffered.
    #[serde(default = "default_live_topic")]
    pub live_topic: String,
    /// Extra librdkafka properties (e.g. `sasl.*` for MSK). With `[kafka.tls]`
    /// the TLS keys (`security.protocol`, `ssl.*`) come from that table.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// TLS to the brokers (`security.protocol = SSL`, or `SASL_SSL` when
    /// `properties` set `sasl.*`), with the broker's certificate verified.
    pub tls: Option<TlsConfig>,
}

pub fn default_live_topic() -> String {
    "bess.live".into()
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
    /// Topic of the live lane (QoS 0, see `[live]`); `{site}` is replaced by the site id.
    #[serde(default = "default_mqtt_live_topic")]
    pub live_topic: String,
    /// TLS to the broker (usually port 8883), with the broker's
    /// certificate verified; the live lane's session uses it too.
    pub tls: Option<TlsConfig>,
}

fn default_mqtt_live_topic() -> String {
    "bess/{site}/live".into()
}

/// The live lane: every frame, the moment it is read, to the uplink's live
/// topic, beside (never instead of) the buffered batches. Nothing of it is
/// written to disk; a frame older than `max_age` is history, not live, and
/// is not sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Frames read within this long of the first go in one message.
    #[serde(default = "default_live_linger", with = "humantime_serde")]
    pub linger: Duration,
    /// Each poll group goes whole (not as a change) at least this often, so
    /// a reader that joins late shows it within this long (a collector
    /// instance reads `--live-replay` back when it starts, which should be
    /// longer).
    #[serde(default = "default_keyframe_every", with = "humantime_serde")]
    pub keyframe_every: Duration,
    /// Frames older than this when their message would leave are dropped.
    #[serde(default = "default_live_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

const fn yes() -> bool {
    true
}
const fn default_live_linger() -> Duration {
    Duration::from_millis(5)
}
const fn default_keyframe_every() -> Duration {
    Duration::from_millis(bess_protocol::DEFAULT_KEYFRAME_EVERY_MS as u64)
}
const fn default_live_max_age() -> Duration {
    Duration::from_secs(5)
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            linger: default_live_linger(),
            keyframe_every: default_keyframe_every(),
            max_age: default_live_max_age(),
        }
    }
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
