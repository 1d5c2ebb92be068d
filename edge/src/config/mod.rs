//! The agent's configuration file: loading it, its serde schema, and the
//! checks that turn it into the `ValidConfig` the agent runs with.
//!
//! A file is read in two passes. serde parses the TOML into the schema
//! (`schema`, `devices`, `size`), refusing unknown keys and wrong types at
//! the first such error; `validate` then checks what types cannot say (one
//! uplink, unique names, transport settings, point options against their
//! types, requests within protocol limits, the uplink's TLS files
//! (`tls`)) and collects every problem at
//! once. Either way each problem names its line and field (located with
//! `bess_config_report`) and is shown as `file:line:column: field: message`
//! (`error`). Only a file with no problem becomes a `ValidConfig`, whose
//! devices are already a site plan (`crate::site_plan`): requests planned,
//! catalog built.

mod devices;
mod error;
#[cfg(test)]
mod fixtures;
mod group;
mod schema;
mod size;
mod tls;
mod transport;
mod validate;

use std::path::Path;

use bess_config_report::{problem_of_toml_error, LineIndex};
use bess_protocol::{Catalog, SiteId};

pub use devices::{
    DeviceConfig, GroupConfig, KindConfig, PointConfig, RegisterMap, TransportKind, SUNSPEC_MAP,
};
pub use error::{ConfigError, ConfigProblem};
pub use schema::{
    default_live_topic, default_topic, BatchConfig, BufferConfig, ClockConfig, DownsampleConfig,
    DrainConfig, EdgeConfig, KafkaConfig, LiveConfig, MqttMirrorConfig, MqttUplinkConfig,
    SigningConfig, StatusConfig,
};
pub use size::ByteSize;
pub use tls::{read_certificates, read_private_key, TlsConfig, TlsFileError};

use crate::site_plan::{build_catalog, DevicePlan};

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
    pub signing: SigningConfig,
    pub batch: BatchConfig,
    pub uplink: UplinkConfig,
    pub live: LiveConfig,
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
        let raw: EdgeConfig =
            toml::from_str(text).map_err(|e| vec![problem_of_toml_error(&e, text, &lines)])?;
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

#[cfg(test)]
mod tests {
    use super::fixtures::EXAMPLE;
    use super::*;

    #[test]
    fn example_config_is_valid() {
        let config = ValidConfig::parse(EXAMPLE).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(config.site.as_str(), "site-001");
        assert_eq!(config.devices.len(), 3);
        assert!(config.catalog.point_count() > 10);
        assert_eq!(config.devices[0].groups[0].requests[0].start, 0);
    }

    #[test]
    fn the_example_catalog_names_the_status_words_flags() {
        let config = ValidConfig::parse(EXAMPLE).unwrap_or_else(|p| panic!("{p:?}"));
        let point = |name: &str| {
            config
                .catalog
                .groups
                .iter()
                .flat_map(|g| &g.points)
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("the example has {name}"))
                .clone()
        };
        let status = point("status");
        assert_eq!(status.kind, bess_protocol::PointKind::Bitfield);
        assert_eq!(
            status.flags,
            [
                (0, "running"),
                (1, "charging"),
                (2, "discharging"),
                (3, "idle"),
                (4, "fault"),
            ]
            .map(|(bit, name)| bess_protocol::FlagName::new(bit, name))
        );
        assert_eq!(status.flag_bit("fault"), Some(4));
        assert!(point("soc").flags.is_empty());
        assert!(config.catalog.has_flag_names());
        assert_eq!(config.catalog.check_flag_names(), Ok(()));
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
}
