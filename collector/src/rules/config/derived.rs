//! `[[derived]]` tables: derived points, read into
//! [`Definition`](crate::derived::Definition)s.

use std::collections::HashSet;
use std::time::Duration;

use bess_config_report::Problems;

use super::table::Table;
use crate::derived::{expr, Definition, DEFAULT_DEVICE};

const FIELDS: &[&str] = &[
    "name",
    "device",
    "unit",
    "site",
    "for_each",
    "expression",
    "every",
];

const HOUR_MS: u128 = 3_600_000;

/// The placeholder a `for_each` definition's names carry.
const DEVICE_PLACEHOLDER: &str = "{device}";

/// One derived point, or `None` after adding its problems. `outputs` are
/// the (site pattern, device, point)s declared so far.
pub(super) fn read_derived<'t>(
    table: &Table<'t>,
    outputs: &mut HashSet<(String, &'t str, &'t str)>,
    problems: &mut Problems<'_>,
) -> Option<Definition> {
    table.refuse_unknown_fields(FIELDS, &[], None, problems);
    let name = table.required("name", problems, Table::string);
    let device = match table.value("device") {
        None => Some(DEFAULT_DEVICE),
        Some(_) => table.string("device", problems),
    };
    for (key, value) in [("name", name), ("device", device)] {
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '{' | '}');
        if let Some(value) = value {
            if value.is_empty() || value.len() > 100 || !value.chars().all(allowed) {
                table.problem(
                    key,
                    "must be 1 to 100 of the characters A-Z a-z 0-9 _ . - (and {device} with for_each)",
                    problems,
                );
            }
        }
    }
    let unit = table.string("unit", problems).unwrap_or_default();
    let site = table.pattern("site", problems);
    let for_each = match table.value("for_each") {
        None => Some(None),
        Some(_) => table.pattern("for_each", problems).map(Some),
    };
    if let (Some(name), Some(device), Some(for_each)) = (name, device, &for_each) {
        let templated = name.contains(DEVICE_PLACEHOLDER) || device.contains(DEVICE_PLACEHOLDER);
        match (for_each.is_some(), templated) {
            (true, false) => table.problem(
                "name",
                "with for_each, the name (or device) must contain {device}, so each device's point has its own name",
                problems,
            ),
            (false, true) => table.problem(
                "name",
                "{device} stands for the device of for_each, and there is none: add for_each or remove it",
                problems,
            ),
            (false, false)
                if !outputs.insert((
                    site.as_ref().map_or_else(String::new, |s| s.0.clone()),
                    device,
                    name,
                )) =>
            {
                table.problem(
                    "name",
                    format!("duplicate derived point {device}/{name} for the same sites"),
                    problems,
                )
            }
            _ => {}
        }
    }
    let source = table.required("expression", problems, Table::string);
    let expression = source.and_then(|text| match expr::parse(text) {
        Ok(expression) => Some(expression),
        Err(e) => {
            table.problem("expression", e.to_string(), problems);
            None
        }
    });
    let every = match table.value("every") {
        None => Some(Duration::from_secs(1)),
        Some(_) => table.positive_duration("every", problems),
    };
    // Buckets never straddle an hour, so a derived frame lands in the same
    // hour (and day partition) as the readings it comes from.
    let every = every.filter(|every| {
        let divides = HOUR_MS % every.as_millis() == 0;
        if !divides {
            table.problem(
                "every",
                "must divide an hour evenly (e.g. 1s, 5s, 10s, 30s, 1m, 5m, 15m, 1h)",
                problems,
            );
        }
        divides
    });
    Some(Definition {
        point: name?.to_owned(),
        device: device?.to_owned(),
        unit: unit.to_owned(),
        site: site?,
        for_each: for_each?,
        source: source?.to_owned(),
        expression: expression?,
        every: every?,
    })
}
