//! `check`'s first part: the poll plan of a valid config as a technician
//! reads it: the uplink, each device with its address, and each group with
//! its interval, points and read requests against the fewest possible.

use std::path::Path;

use bess_edge::config::{UplinkConfig, ValidConfig};

/// Print the poll plan of `valid`, loaded from `path`.
pub fn print_plan(path: &Path, valid: &ValidConfig) {
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
    println!("  signing: {}", signing_line(&valid.signing));
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

/// What `check` says of the signing key (never creating one).
fn signing_line(signing: &bess_edge::config::SigningConfig) -> String {
    use bess_edge::signing::{load, SigningKeyError};
    if !signing.enabled {
        return "off: batches go unsigned ([signing] enabled = false)".into();
    }
    let path = signing.key_file.display();
    match load(&signing.key_file) {
        Ok(signer) => format!("key {} in {path}", signer.key_id()),
        Err(SigningKeyError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            format!(
                "no key yet at {path}: `bess-edge key --config FILE` or the first run creates it"
            )
        }
        Err(e) => format!("PROBLEM: {e}"),
    }
}
