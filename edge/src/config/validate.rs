//! The checks serde cannot make, and the site plan they build.
//!
//! `EdgeConfig::validate` walks the whole file once: the site id, exactly
//! one uplink (with its TLS files, `tls`), at least one device, unique
//! device names, and for each device its transport (`transport`), its choice of register map, inline
//! groups or SunSpec, and each group's points (`group`). It never stops at
//! the first problem: every problem is collected with its field and the
//! line of its table, and only a file with none becomes a `ValidConfig`,
//! with its devices planned and the catalog built.

use std::collections::HashSet;
use std::time::Duration;

use bess_config_report::{LineIndex, Problems};
use bess_protocol::SiteId;

use super::devices::{default_max_gap, SUNSPEC_MAP};
use super::group::{plan_group, MapDefaults};
use super::transport::link_of;
use super::{ConfigProblem, EdgeConfig, UplinkConfig, ValidConfig};
use crate::register::WordOrder;
use crate::site_plan::{build_catalog, DevicePlan, SunspecPlan};

impl EdgeConfig {
    pub(super) fn validate(self, lines: &LineIndex) -> Result<ValidConfig, Vec<ConfigProblem>> {
        let mut problems = Problems::new(lines);
        let site = match SiteId::new(self.site_id.get_ref().clone()) {
            Ok(site) => Some(site),
            Err(e) => {
                problems.add(self.site_id.span(), "site_id", e.to_string());
                None
            }
        };
        let uplink = match (self.kafka, self.mqtt_uplink) {
            (Some(kafka), None) => {
                if kafka.get_ref().live_topic == kafka.get_ref().topic {
                    problems.add(
                        kafka.span(),
                        "kafka.live_topic",
                        "must differ from `topic`: live messages are not batches",
                    );
                }
                if kafka.get_ref().brokers.trim().is_empty() {
                    problems.add(
                        kafka.span(),
                        "kafka.brokers",
                        "must name at least one broker",
                    );
                }
                if let Some(tls) = &kafka.get_ref().tls {
                    tls.check("kafka.tls", &mut problems);
                    for key in kafka.get_ref().properties.keys() {
                        if key == "security.protocol" || key.starts_with("ssl.") {
                            problems.add(
                                kafka.span(),
                                format!("kafka.properties.{key}"),
                                "[kafka.tls] sets the TLS properties: remove this one",
                            );
                        }
                    }
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
                for (field, topic) in [
                    ("mqtt_uplink.topic", &m.topic),
                    ("mqtt_uplink.live_topic", &m.live_topic),
                ] {
                    if topic.is_empty() || topic.contains(['#', '+']) {
                        problems.add(mqtt.span(), field, "must be a topic name without wildcards");
                    }
                }
                if m.live_topic == m.topic {
                    problems.add(
                        mqtt.span(),
                        "mqtt_uplink.live_topic",
                        "must differ from `topic`: live messages are not batches",
                    );
                }
                if let Some(tls) = &m.tls {
                    tls.check("mqtt_uplink.tls", &mut problems);
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
        match (site, uplink, problems.is_empty()) {
            (Some(site), Some(uplink), true) => {
                let catalog = build_catalog(&mut devices);
                Ok(ValidConfig {
                    site,
                    buffer: self.buffer,
                    signing: self.signing,
                    batch: self.batch,
                    uplink,
                    live: self.live,
                    mqtt_mirror: self.mqtt_mirror,
                    status: self.status,
                    clock: self.clock,
                    devices,
                    catalog,
                })
            }
            _ => Err(problems.into_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixtures::EXAMPLE;

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
    fn exactly_one_uplink_is_configured() {
        let both = EXAMPLE.replacen("[status]", "[mqtt_uplink]\nhost = \"h\"\n\n[status]", 1);
        let problems = ValidConfig::parse(&both).unwrap_err();
        assert_eq!(problems[0].field, "mqtt_uplink", "{problems:?}");
        let kafka = EXAMPLE.find("[kafka]\n").unwrap();
        let end_line = "delivery_timeout = \"30s\"\n";
        let kafka_end = kafka + EXAMPLE[kafka..].find(end_line).unwrap() + end_line.len();
        let mqtt_only = format!(
            "{}[mqtt_uplink]\nhost = \"h\"\n{}",
            &EXAMPLE[..kafka],
            &EXAMPLE[kafka_end..]
        );
        let config = ValidConfig::parse(&mqtt_only).unwrap_or_else(|p| panic!("{p:?}"));
        assert!(
            matches!(&config.uplink, UplinkConfig::Mqtt(m) if m.topic == "bess/{site}/batches" && m.live_topic == "bess/{site}/live")
        );
    }

    #[test]
    fn the_live_lane_is_on_by_default_and_its_topic_must_differ_from_the_batches() {
        let config = ValidConfig::parse(EXAMPLE).unwrap_or_else(|p| panic!("{p:?}"));
        assert!(config.live.enabled);
        assert_eq!(config.batch.max_age, Duration::from_secs(15));
        let same = EXAMPLE.replacen(
            "live_topic = \"bess.live\"",
            "live_topic = \"bess.telemetry\"",
            1,
        );
        let problems = ValidConfig::parse(&same).unwrap_err();
        assert_eq!(problems[0].field, "kafka.live_topic", "{problems:?}");
        let typo = EXAMPLE.replacen("linger = \"5ms\"", "lingr = \"5ms\"", 1);
        let problems = ValidConfig::parse(&typo).unwrap_err();
        assert!(problems[0].message.contains("lingr"), "{problems:?}");
    }
}
