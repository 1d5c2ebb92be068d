//! `bess-edge scan`: find the unit ids that answer on a connection or bus,
//! probe each for SunSpec models, and show every candidate decoding of
//! unknown registers under each byte/word order.
//!
//! A gateway's "no such device" exceptions (0x0A, 0x0B) do not count as an
//! answer; any other exception does, since only a device sends one.

use std::time::Duration;

use bess_edge::link::{ModbusLink, RequestOutcome};
use bess_edge::register::{DataType, PointCodec, RegisterTable, WordOrder};
use bess_edge::site_plan::ReadRequest;
use bess_edge::sunspec;

use super::cli::ScanArgs;
use super::read::show;

pub async fn scan(args: ScanArgs) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_unit_ids_is_shown_as_a_range() {
        assert_eq!(describe_units(&[1, 2, 3]), "1-3");
        assert_eq!(describe_units(&[1, 3, 4]), "1,3,4");
        assert_eq!(describe_units(&[]), "");
    }
}
