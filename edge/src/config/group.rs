//! A poll group's points, checked against their types and planned into
//! read requests: names unique in the group, scale and offset finite, the
//! type readable from the group's table, `bit`, `length`, `flags` and
//! `scale_register` only where the type has them, and at least one point
//! that is sent. A group with no problem is handed to
//! `site_plan::plan_points`; a group that cannot be read in requests the
//! protocol allows is a problem of the group.

use std::collections::HashSet;
use toml::Spanned;

use bess_config_report::Problems;
use bess_protocol::PointKind;

use super::devices::GroupConfig;
use crate::register::{DataType, PointCodec, RegisterTable, WordOrder};
use crate::site_plan::{plan_points, GroupPlan, PointSpec, MAX_REGISTERS_PER_READ};

/// What a device's register map (or the device itself) sets for all its
/// points.
pub(super) struct MapDefaults {
    pub(super) order: WordOrder,
    pub(super) markers: bool,
    pub(super) max_gap: u16,
}

/// The group's plan, or `None` after adding its problems.
pub(super) fn plan_group(
    spanned: &Spanned<GroupConfig>,
    field: &str,
    defaults: &MapDefaults,
    problems: &mut Problems<'_>,
) -> Option<GroupPlan> {
    let group = spanned.get_ref();
    let before = problems.len();
    if group.interval.is_zero() {
        problems.add(
            spanned.span(),
            format!("{field}.interval"),
            "must be greater than zero",
        );
    }
    if group.points.is_empty() {
        problems.add(
            spanned.span(),
            format!("{field}.points"),
            "a group needs at least one point",
        );
        return None;
    }
    let mut names = HashSet::new();
    let mut specs = Vec::new();
    for (p, point) in group.points.iter().enumerate() {
        let pf = format!("{field}.points[{p}]");
        let pc = point.get_ref();
        let span = point.span();
        if !names.insert(pc.name.clone()) {
            problems.add(
                span.clone(),
                format!("{pf}.name"),
                format!("duplicate point name {:?} in group", pc.name),
            );
        }
        if pc.name.is_empty() || pc.name.contains(['/', '+', '#']) {
            problems.add(
                span.clone(),
                format!("{pf}.name"),
                "must not be empty or contain '/', '+' or '#'",
            );
        }
        if !pc.scale.is_finite() || pc.scale == 0.0 {
            problems.add(
                span.clone(),
                format!("{pf}.scale"),
                "must be a finite, non-zero number",
            );
        }
        if !pc.offset.is_finite() {
            problems.add(
                span.clone(),
                format!("{pf}.offset"),
                "must be a finite number",
            );
        }
        if !group.table.holds(pc.data_type) {
            problems.add(
                span.clone(),
                format!("{pf}.type"),
                format!(
                    "{} cannot be read from {} (use a register table)",
                    pc.data_type, group.table
                ),
            );
        }
        match (pc.data_type, pc.bit) {
            (DataType::Bool, Some(_)) if group.table.is_bits() => {
                problems.add(
                    span.clone(),
                    format!("{pf}.bit"),
                    format!("{} are single bits already: remove `bit`", group.table),
                );
            }
            (DataType::Bool, None) if !group.table.is_bits() => {
                problems.add(
                    span.clone(),
                    format!("{pf}.bit"),
                    "a bool in a register needs `bit = 0..15`",
                );
            }
            (DataType::Bool, Some(bit)) if bit > 15 => {
                problems.add(span.clone(), format!("{pf}.bit"), "must be 0..15");
            }
            (DataType::Bool, _) => {}
            (_, Some(_)) => problems.add(
                span.clone(),
                format!("{pf}.bit"),
                "only for type = \"bool\" (name a word's bits with `flags`)",
            ),
            (_, None) => {}
        }
        let length = match (pc.data_type, pc.length) {
            (DataType::String, Some(n)) if (1..=MAX_REGISTERS_PER_READ).contains(&n) => n,
            (DataType::String, _) => {
                problems.add(
                    span.clone(),
                    format!("{pf}.length"),
                    "a string needs `length` = 1..125 registers",
                );
                1
            }
            (_, Some(_)) => {
                problems.add(
                    span.clone(),
                    format!("{pf}.length"),
                    "only for type = \"string\"",
                );
                0
            }
            (_, None) => 0,
        };
        if pc.scale_register.is_some()
            && !matches!(pc.data_type, DataType::String | DataType::Bool)
            && group.table.is_bits()
        {
            problems.add(
                span.clone(),
                format!("{pf}.scale_register"),
                "needs a register table",
            );
        }
        if pc.scale_register.is_some() && matches!(pc.data_type, DataType::String | DataType::Bool)
        {
            problems.add(
                span.clone(),
                format!("{pf}.scale_register"),
                format!("a {} has no scale", pc.data_type),
            );
        }
        // The cloud names a flag by point and flag name, and the catalog
        // carries each bit once (protocol SPEC section 4.1).
        let mut flags: Vec<(u8, String)> = Vec::new();
        for (bit, name) in &pc.flags {
            let field = format!("{pf}.flags.{bit}");
            match bit.parse::<u8>() {
                Ok(b) if u16::from(b) < 16 * pc.data_type.width(RegisterTable::Holding, 1) => {
                    if name.is_empty() {
                        problems.add(span.clone(), field, "a flag needs a name");
                    } else if flags.iter().any(|(other, _)| *other == b) {
                        problems.add(span.clone(), field, format!("bit {b} is named twice"));
                    } else if flags.iter().any(|(_, other)| other == name) {
                        problems.add(
                            span.clone(),
                            field,
                            format!("{name:?} names two bits of this point"),
                        );
                    } else {
                        flags.push((b, name.clone()));
                    }
                }
                _ => problems.add(
                    span.clone(),
                    field,
                    "flag keys are bit numbers inside the value (0 = least significant)",
                ),
            }
        }
        flags.sort();
        let mut codec =
            PointCodec::new(pc.data_type).with_order(pc.order.unwrap_or(defaults.order));
        codec.bit = pc.bit;
        codec.length = length;
        if defaults.markers {
            codec = codec.with_default_marker();
        }
        if let Some(markers) = &pc.not_implemented {
            let bits = 16 * u32::from(pc.data_type.width(RegisterTable::Holding, 1));
            let mask = if bits >= 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            codec.markers = markers.iter().map(|&m| (m as u64) & mask).collect();
        }
        let kind = pc.kind.map_or_else(
            || {
                if pc.flags.is_empty() {
                    pc.data_type.default_kind()
                } else {
                    PointKind::Bitfield
                }
            },
            PointKind::from,
        );
        specs.push(PointSpec {
            name: pc.name.clone(),
            unit: pc.unit.clone(),
            kind,
            scale: pc.scale,
            offset: pc.offset,
            address: pc.address,
            codec,
            scale_register: pc.scale_register,
            flags,
        });
    }
    if !specs.iter().any(|s| s.codec.data_type.is_sent()) {
        problems.add(
            spanned.span(),
            format!("{field}.points"),
            "strings are shown by `read` but never sent: a group needs at least one number",
        );
    }
    if problems.len() != before {
        return None;
    }
    match plan_points(
        0,
        &group.name,
        group.interval,
        group.table,
        specs,
        defaults.max_gap,
    ) {
        Ok(plan) => Some(plan),
        Err(e) => {
            problems.add(spanned.span(), field.to_owned(), e.to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::fixtures::{device_problems, EXAMPLE};
    use crate::config::ValidConfig;

    #[test]
    fn a_group_wider_than_one_read_is_planned_as_several_requests() {
        let text = EXAMPLE.replacen("address = 17", "address = 200", 1);
        let config = ValidConfig::parse(&text).unwrap_or_else(|p| panic!("{p:?}"));
        let fast = &config.devices[0].groups[0];
        assert_eq!(fast.requests.len(), 2, "{:?}", fast.requests);
        assert_eq!(fast.min_requests, 2);
        let heartbeat = fast.points.iter().find(|p| p.name == "heartbeat").unwrap();
        assert_eq!((heartbeat.slot.request, heartbeat.slot.offset), (1, 0));
    }
    #[test]
    fn point_options_are_checked_against_the_type() {
        let group = |points: &str| {
            device_problems(&format!(
                "host = \"h\"\n[[devices.groups]]\nname = \"g\"\ninterval = \"1s\"\npoints = [{points}]"
            ))
        };
        let problems = group("{ name = \"a\", address = 0, type = \"bool\" }");
        assert_eq!(
            problems[0].field, "devices[0].groups[0].points[0].bit",
            "{problems:?}"
        );
        let problems = group("{ name = \"a\", address = 0, type = \"string\" }");
        assert!(
            problems.iter().any(|p| p.field.ends_with(".length")),
            "{problems:?}"
        );
        let problems = group("{ name = \"a\", address = 0, type = \"u16\", bit = 3 }");
        assert!(
            problems.iter().any(|p| p.field.ends_with(".bit")),
            "{problems:?}"
        );
        let problems =
            group("{ name = \"a\", address = 0, type = \"u16\", flags = { x = \"y\" } }");
        assert!(
            problems.iter().any(|p| p.field.ends_with(".flags.x")),
            "{problems:?}"
        );
        for flags in [
            "{ 0 = \"x\", 00 = \"y\" }",
            "{ 0 = \"x\", 1 = \"x\" }",
            "{ 0 = \"\" }",
        ] {
            let problems = group(&format!(
                "{{ name = \"a\", address = 0, type = \"u16\", flags = {flags} }}"
            ));
            assert!(
                problems.iter().any(|p| p.field.contains(".flags.")),
                "{flags}: {problems:?}"
            );
        }
        let problems = group("{ name = \"a\", address = 0, type = \"u16\", order = \"xyzw\" }");
        assert_eq!(problems[0].field, "order", "{problems:?}");
        assert!(group("{ name = \"a\", address = 0, type = \"i16\", order = \"badc\", scale_register = 5, not_implemented = [-1] }").is_empty());
    }
    #[test]
    fn configured_markers_are_masked_to_the_value_width() {
        let text = EXAMPLE.replacen(
            "address = 17, type = \"u16\"",
            "address = 17, type = \"u16\", not_implemented = [-1]",
            1,
        );
        let config = ValidConfig::parse(&text).unwrap_or_else(|p| panic!("{p:?}"));
        let heartbeat = config.devices[0].groups[0]
            .points
            .iter()
            .find(|p| p.name == "heartbeat")
            .unwrap();
        assert_eq!(heartbeat.codec.markers, vec![0xFFFF]);
    }
}
