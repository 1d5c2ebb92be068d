use std::sync::Arc;
use std::time::Duration;

use bess_protocol::{MissingReason, Reading};

use super::*;
use crate::catalog::{CatalogLayouts, Layout, PointMeta};
use crate::derived::plan::plan;
use crate::derived::{expr, Definition, DEFAULT_DEVICE};
use crate::pattern::Pattern;

fn layout(layout_id: i32, device: &str, points: &[&str]) -> Layout {
    Layout {
        layout_id,
        device_id: layout_id,
        device: device.into(),
        interval_ms: 1000,
        group: "fast".into(),
        points: points
            .iter()
            .enumerate()
            .map(|(i, name)| PointMeta {
                point_id: layout_id * 100 + i as i32,
                name: (*name).into(),
                unit: "".into(),
                scale: 1.0,
                offset: 0.0,
                flags: Default::default(),
            })
            .collect(),
    }
}

fn site() -> Layouts {
    let points = ["active_power", "cell_voltage_max", "cell_voltage_min"];
    Arc::new(CatalogLayouts {
        groups: vec![layout(1, "bms-1", &points), layout(2, "bms-2", &points)],
        device_ids: vec![1, 2],
    })
}

fn definition(point: &str, expression: &str, for_each: Option<&str>) -> Definition {
    Definition {
        point: point.into(),
        device: DEFAULT_DEVICE.into(),
        unit: "".into(),
        site: Pattern::any(),
        for_each: for_each.map(|p| Pattern(p.into())),
        source: expression.into(),
        expression: expr::parse(expression).unwrap(),
        every: Duration::from_secs(1),
    }
}

/// An engine with the plan of `definitions` installed for site 1; the
/// derived layouts get ids from 1000.
fn engine(definitions: &[Definition]) -> (DerivedEngine, Arc<SitePlan>) {
    let plan = Arc::new(plan(definitions, "site-1", &site()));
    let derived = Arc::new(CatalogLayouts {
        groups: plan
            .catalog
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                layout(
                    1000 + i as i32,
                    &plan.catalog.devices[usize::from(g.device)].name,
                    &[&g.name],
                )
            })
            .collect(),
        device_ids: vec![999; plan.catalog.devices.len()],
    });
    let mut engine = DerivedEngine::default();
    engine.install(1, 7, plan.clone(), derived);
    (engine, plan)
}

fn frame(group: usize, ts_ms: i64, readings: [Reading; 3]) -> PolledFrame {
    PolledFrame {
        site: "site-1".into(),
        layouts: site(),
        group,
        ts_ms,
        received_ms: ts_ms,
        readings: readings.to_vec(),
    }
}

fn f(v: f64) -> Reading {
    Reading::Float(v)
}

/// (derived point, timestamp, value) of every derived frame.
fn run(engine: &mut DerivedEngine, frames: &[PolledFrame]) -> Vec<(String, i64, f64)> {
    let mut out = Vec::new();
    for frame in frames {
        engine.evaluate(1, 7, frame, &mut out);
    }
    out.iter()
        .map(|d| {
            (
                d.layout().points[0].name.to_string(),
                d.ts_ms,
                d.readings[0].raw().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_site_sum_is_computed_once_per_bucket_when_every_device_has_reported() {
    let (mut engine, plan) =
        engine(&[definition("site_power", "sum(*/active_power) / 1000", None)]);
    assert_eq!(plan.instances.len(), 1);
    assert_eq!(plan.catalog.devices[0].name, "derived");
    let out = run(
        &mut engine,
        &[
            frame(0, 10_100, [f(1000.0), f(3.4), f(3.3)]),
            frame(1, 10_400, [f(2500.0), f(3.4), f(3.3)]),
            // The next second: bms-2 is silent, so no value for 11 s.
            frame(0, 11_100, [f(1200.0), f(3.4), f(3.3)]),
            frame(
                1,
                11_400,
                [Reading::Missing(MissingReason::Timeout), f(3.4), f(3.3)],
            ),
            frame(0, 12_100, [f(1000.0), f(3.4), f(3.3)]),
            frame(1, 12_900, [f(1000.0), f(3.4), f(3.3)]),
        ],
    );
    assert_eq!(
        out,
        vec![
            ("site_power".into(), 10_000, 3.5),
            ("site_power".into(), 12_000, 2.0)
        ]
    );
}

#[test]
fn a_per_device_expression_of_one_poll_group_keeps_the_frames_timestamps() {
    let (mut engine, plan) = engine(&[definition(
        "{device}.cell_spread",
        "cell_voltage_max - cell_voltage_min",
        Some("bms-*"),
    )]);
    assert_eq!(plan.instances.len(), 2);
    let out = run(
        &mut engine,
        &[
            frame(0, 10_100, [f(1.0), f(3.45), f(3.30)]),
            frame(1, 10_400, [f(1.0), f(3.40), f(3.38)]),
        ],
    );
    let rounded: Vec<(String, i64, i64)> = out
        .into_iter()
        .map(|(p, t, v)| (p, t, (v * 1000.0).round() as i64))
        .collect();
    assert_eq!(
        rounded,
        vec![
            ("bms-1.cell_spread".into(), 10_100, 150),
            ("bms-2.cell_spread".into(), 10_400, 20)
        ]
    );
}

#[test]
fn definitions_that_do_not_apply_to_a_site_are_left_out_with_the_reason() {
    let plan = plan(
        &[
            definition("a", "bms-9/active_power * 2", None),
            definition("b", "sum(*/no_such_point)", None),
            definition("c", "active_power", None),
        ],
        "site-1",
        &site(),
    );
    assert!(plan.is_empty());
    let reasons: Vec<&str> = plan.skipped.iter().map(|(_, r)| r.as_str()).collect();
    assert!(
        reasons[0].contains("no point bms-9/active_power"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("matches"), "{reasons:?}");
    assert!(reasons[2].contains("names no device"), "{reasons:?}");
}

#[test]
fn a_backlog_behind_newer_frames_gets_its_own_derived_values_once() {
    let (mut engine, _) = engine(&[definition("p", "sum(*/active_power)", None)]);
    let second = |s: i64, p1: f64, p2: f64| {
        vec![
            frame(0, s * 1000 + 100, [f(p1), f(0.0), f(0.0)]),
            frame(1, s * 1000 + 600, [f(p2), f(0.0), f(0.0)]),
        ]
    };
    // The live window (20 s, 21 s), then the backlog (10 s, 11 s), then a
    // backlog frame of the live timeline's first second: skipped.
    let mut frames = second(20, 1.0, 2.0);
    frames.extend(second(21, 1.0, 3.0));
    frames.extend(second(10, 5.0, 5.0));
    frames.extend(second(11, 6.0, 6.0));
    frames.push(frame(1, 20_900, [f(9.0), f(0.0), f(0.0)]));
    let out = run(&mut engine, &frames);
    assert_eq!(
        out,
        vec![
            ("p".into(), 20_000, 3.0),
            ("p".into(), 21_000, 4.0),
            ("p".into(), 10_000, 10.0),
            ("p".into(), 11_000, 12.0),
        ]
    );
    assert_eq!(engine.skipped_late(), 1);
}
