//! A device's transport settings, checked and turned into the `LinkPlan`
//! the poller uses: a TCP or RTU-over-TCP device needs a host and no serial
//! port, a serial device a port, sane line settings and no host, and an RTU
//! device a unit id other than the broadcast id 0.

use bess_config_report::Problems;

use super::devices::{DeviceConfig, TransportKind};
use crate::site_plan::{Endpoint, LinkPlan, SerialSettings};

/// The device's link, or `None` after adding its problems.
pub(super) fn link_of(
    device: &DeviceConfig,
    field: &str,
    span: std::ops::Range<usize>,
    problems: &mut Problems<'_>,
) -> Option<LinkPlan> {
    let before = problems.len();
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
    let endpoint = endpoint.filter(|_| problems.len() == before)?;
    Some(LinkPlan {
        endpoint,
        unit: device.unit,
        timeout: device.timeout,
        retries: device.retries,
        pause: device.pause,
        release_after_cycle: device.release_after_cycle,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::fixtures::device_problems;

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
}
