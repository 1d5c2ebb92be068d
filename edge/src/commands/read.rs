//! `bess-edge read`: read registers once and print them decoded, like
//! mbpoll; or, with `--config` and `--device`, read every group of a
//! configured device and show each point's registers, value, quality and
//! flags.

use std::path::Path;
use std::time::Duration;

use bess_edge::config::ValidConfig;
use bess_edge::link::{ModbusLink, RequestOutcome};
use bess_edge::poller::read_group;
use bess_edge::register::{set_flags, DataType, Decoded, PointCodec};
use bess_edge::site_plan::ReadRequest;
use bess_edge::sunspec;
use bess_protocol::{engineering_value, Reading};

use super::cli::ReadArgs;

pub async fn read(args: ReadArgs) -> anyhow::Result<()> {
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

/// A decoded value as a technician reads it: text quoted, small and large
/// floats in exponent form, a missing value with its reason.
pub fn show(decoded: &Decoded) -> String {
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

async fn read_device(path: &Path, name: &str) -> anyhow::Result<()> {
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
