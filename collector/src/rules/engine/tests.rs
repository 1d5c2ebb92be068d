use std::sync::Arc;
use std::time::Duration;

use bess_protocol::{MissingReason, Reading};

use super::*;
use crate::catalog::{CatalogLayouts, Layout, PointMeta};
use crate::polled::PolledFrame;
use crate::rules::model::{Pattern, Rule, Severity, Target};

fn layout(device: &str, points: &[&str]) -> Layout {
    Layout {
        layout_id: 7,
        device_id: 1,
        device: device.into(),
        interval_ms: 1000,
        group: "fast".into(),
        points: points
            .iter()
            .enumerate()
            .map(|(i, name)| PointMeta {
                point_id: i as i32 + 1,
                name: (*name).into(),
                unit: "".into(),
                scale: 1.0,
                offset: 0.0,
                flags: Default::default(),
            })
            .collect(),
    }
}

/// Evaluate one frame of `layout` taken at `ts` that arrived at `received`.
fn eval(
    engine: &mut RuleEngine,
    site_id: i32,
    site: &str,
    layout: &Layout,
    (ts, received): (i64, i64),
    readings: &[Reading],
    out: &mut Vec<Change>,
) {
    let frame = PolledFrame {
        site: site.into(),
        layouts: Arc::new(CatalogLayouts {
            groups: vec![layout.clone()],
            device_ids: vec![layout.device_id],
        }),
        group: 0,
        ts_ms: ts,
        received_ms: received,
        readings: readings.to_vec(),
    };
    engine.evaluate(site_id, &frame, out);
}

fn rule(name: &str, device: &str, point: &str, condition: Condition) -> Rule {
    Rule {
        name: name.into(),
        severity: Severity::Warning,
        summary: String::new(),
        target: Target {
            site: Pattern::any(),
            device: Pattern(device.into()),
            point: Pattern(point.into()),
        },
        condition,
        receivers: Vec::new(),
        notify_past: false,
    }
}

fn engine(rules: Vec<Rule>) -> RuleEngine {
    let mut engine = RuleEngine::new(Arc::new(RuleSet {
        rules,
        receivers: Vec::new(),
        derived: Vec::new(),
    }));
    engine.load_site(1, Vec::new());
    engine
}

/// Feed one value per second (timestamps 1000, 2000, ...), arriving at once;
/// the transitions with the timestamp of the frame that caused them.
fn feed(engine: &mut RuleEngine, layout: &Layout, frames: &[Vec<Reading>]) -> Vec<(i64, Change)> {
    let mut out = Vec::new();
    for (i, readings) in frames.iter().enumerate() {
        let ts = (i as i64 + 1) * 1000;
        let mut changes = Vec::new();
        eval(
            engine,
            1,
            "site-1",
            layout,
            (ts, ts + 500),
            readings,
            &mut changes,
        );
        out.extend(changes.into_iter().map(|c| (ts, c)));
    }
    out
}

fn values(vs: &[f64]) -> Vec<Vec<Reading>> {
    vs.iter().map(|v| vec![Reading::Float(*v)]).collect()
}

fn overtemp(hold_s: u64) -> Rule {
    rule(
        "overtemp",
        "bms",
        "cell_temp_max",
        Condition::Threshold {
            bound: Bound::Above(45.0),
            hysteresis: 2.0,
            hold: Duration::from_secs(hold_s),
        },
    )
}

#[test]
fn a_threshold_fires_once_after_its_hold_and_resolves_past_the_hysteresis() {
    let layout = layout("bms", &["cell_temp_max"]);
    let mut engine = engine(vec![overtemp(2)]);
    // 44, 46 (pending at 2 s), 47, 48 (held 2 s at 4 s: fires from 2 s),
    // 44 (inside the hysteresis band: still firing), 43 (clears at 6 s).
    let changes = feed(
        &mut engine,
        &layout,
        &values(&[44.0, 46.0, 47.0, 48.0, 44.0, 43.0, 42.0]),
    );
    let transitions: Vec<(i64, &Transition)> =
        changes.iter().map(|(ts, c)| (*ts, &c.transition)).collect();
    assert_eq!(
        transitions,
        vec![
            (
                2000,
                &Transition::Pending {
                    since_ms: 2000,
                    peak: Some(46.0)
                }
            ),
            (
                4000,
                &Transition::Fired {
                    start_ms: 2000,
                    peak: Some(48.0),
                    late: false
                }
            ),
            (
                6000,
                &Transition::Resolved {
                    end_ms: 6000,
                    peak: Some(48.0),
                    late: false
                }
            ),
        ]
    );
    assert_eq!(&*changes[0].1.target, "bms/cell_temp_max");
}

#[test]
fn a_pending_threshold_that_clears_before_its_hold_never_fires() {
    let layout = layout("bms", &["cell_temp_max"]);
    let mut engine = engine(vec![overtemp(30)]);
    let changes = feed(&mut engine, &layout, &values(&[46.0, 47.0, 42.0, 46.0]));
    let transitions: Vec<&Transition> = changes.iter().map(|(_, c)| &c.transition).collect();
    assert_eq!(
        transitions,
        vec![
            &Transition::Pending {
                since_ms: 1000,
                peak: Some(46.0)
            },
            &Transition::PendingCleared,
            &Transition::Pending {
                since_ms: 4000,
                peak: Some(46.0)
            },
        ]
    );
}

#[test]
fn below_and_outside_bands_track_the_worst_value() {
    let layout = layout("bms", &["soc"]);
    let mut engine = engine(vec![
        rule(
            "low",
            "*",
            "soc",
            Condition::Threshold {
                bound: Bound::Below(10.0),
                hysteresis: 1.0,
                hold: Duration::ZERO,
            },
        ),
        rule(
            "band",
            "*",
            "soc",
            Condition::Threshold {
                bound: Bound::Outside {
                    low: 5.0,
                    high: 95.0,
                },
                hysteresis: 0.0,
                hold: Duration::ZERO,
            },
        ),
    ]);
    let changes = feed(&mut engine, &layout, &values(&[9.0, 4.0, 10.5, 11.0]));
    let by_rule = |r: usize| -> Vec<Transition> {
        changes
            .iter()
            .filter(|(_, c)| c.rule == r)
            .map(|(_, c)| c.transition.clone())
            .collect()
    };
    assert_eq!(
        by_rule(0),
        vec![
            Transition::Fired {
                start_ms: 1000,
                peak: Some(9.0),
                late: false
            },
            Transition::Resolved {
                end_ms: 4000,
                peak: Some(4.0),
                late: false
            },
        ]
    );
    assert_eq!(
        by_rule(1),
        vec![
            Transition::Fired {
                start_ms: 2000,
                peak: Some(4.0),
                late: false
            },
            Transition::Resolved {
                end_ms: 3000,
                peak: Some(4.0),
                late: false
            },
        ]
    );
}

#[test]
fn missing_readings_keep_a_threshold_where_it_is_and_drive_a_stale_rule() {
    let layout = layout("bms", &["cell_temp_max"]);
    let mut engine = engine(vec![
        overtemp(0),
        rule(
            "comm",
            "*",
            "*",
            Condition::Stale {
                after: Duration::from_secs(2),
            },
        ),
    ]);
    let lost = Reading::Missing(MissingReason::Timeout);
    let frames = vec![
        vec![Reading::Float(50.0)],
        vec![lost],
        vec![lost],
        vec![lost],
        vec![Reading::Float(40.0)],
    ];
    let changes = feed(&mut engine, &layout, &frames);
    let got: Vec<(usize, i64, Transition)> = changes
        .iter()
        .map(|(ts, c)| (c.rule, *ts, c.transition.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                0,
                1000,
                Transition::Fired {
                    start_ms: 1000,
                    peak: Some(50.0),
                    late: false
                }
            ),
            (
                1,
                2000,
                Transition::Pending {
                    since_ms: 2000,
                    peak: None
                }
            ),
            (
                1,
                4000,
                Transition::Fired {
                    start_ms: 2000,
                    peak: None,
                    late: false
                }
            ),
            (
                0,
                5000,
                Transition::Resolved {
                    end_ms: 5000,
                    peak: Some(50.0),
                    late: false
                }
            ),
            (
                1,
                5000,
                Transition::Resolved {
                    end_ms: 5000,
                    peak: None,
                    late: false
                }
            ),
        ]
    );
}

#[test]
fn a_rate_of_change_fires_on_a_jump_within_its_window_only() {
    let layout = layout("bms", &["soc"]);
    let mut engine = engine(vec![rule(
        "jump",
        "*",
        "soc",
        Condition::RateOfChange {
            max_change: 10.0,
            window: Duration::from_secs(2),
        },
    )]);
    // A slow climb of 5 a second never changes 10 within 2 s...
    // then a jump of 20 does, and clears once it has left the window.
    let changes = feed(
        &mut engine,
        &layout,
        &values(&[50.0, 55.0, 60.0, 65.0, 85.0, 86.0, 87.0, 88.0]),
    );
    let got: Vec<(i64, Transition)> = changes
        .iter()
        .map(|(ts, c)| (*ts, c.transition.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            // 60 → 85 within the 2 s before 5 s.
            (
                5000,
                Transition::Fired {
                    start_ms: 5000,
                    peak: Some(25.0),
                    late: false
                }
            ),
            (
                7000,
                Transition::Resolved {
                    end_ms: 7000,
                    peak: Some(25.0),
                    late: false
                }
            ),
        ]
    );
}

#[test]
fn a_deviation_compares_the_matched_points_of_one_frame() {
    let layout = layout(
        "rack-1",
        &["cell_voltage_1", "cell_voltage_2", "cell_voltage_3", "soc"],
    );
    let mut engine = engine(vec![rule(
        "spread",
        "rack-*",
        "cell_voltage_*",
        Condition::Deviation {
            max_spread: 0.05,
            hysteresis: 0.01,
            hold: Duration::ZERO,
        },
    )]);
    let frame = |a: f64, b: f64, c: f64| {
        vec![
            Reading::Float(a),
            Reading::Float(b),
            Reading::Float(c),
            Reading::Float(99.0),
        ]
    };
    let frames = vec![
        frame(3.30, 3.31, 3.32),
        frame(3.30, 3.31, 3.40),  // spread 0.10: fires
        frame(3.30, 3.31, 3.345), // 0.045: inside the hysteresis band
        frame(3.30, 3.31, 3.33),  // 0.03: clears
    ];
    let changes = feed(&mut engine, &layout, &frames);
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(&*changes[0].1.target, "rack-1");
    assert!(matches!(
        changes[0].1.transition,
        Transition::Fired { start_ms: 2000, .. }
    ));
    assert!(matches!(
        changes[1].1.transition,
        Transition::Resolved { end_ms: 4000, .. }
    ));
}

#[test]
fn a_reading_at_the_timestamp_of_the_last_is_skipped_and_an_older_one_backfills() {
    let layout = layout("bms", &["cell_temp_max"]);
    let mut engine = engine(vec![overtemp(0)]);
    // 5 s cool; 5 s again (a duplicate: skipped); 3 s and 4 s hot, older:
    // the backfill timeline fires, and 4 s once more is a duplicate there.
    let got = at(
        &mut engine,
        &layout,
        &[(5, 40.0), (5, 50.0), (3, 50.0), (4, 40.0), (4, 50.0)],
    );
    assert_eq!(
        got,
        vec![Transition::Backfilled {
            start_ms: 3000,
            end_ms: 4000,
            peak: Some(50.0),
            late: false
        }]
    );
    assert_eq!(engine.out_of_order(), 2);
}

#[test]
fn a_backlog_is_marked_late_and_a_loaded_firing_state_is_not_fired_again() {
    let layout = layout("bms", &["cell_temp_max"]);
    let mut engine = engine(vec![overtemp(0)]);
    engine.load_site(
        1,
        vec![(
            "overtemp".into(),
            "bms/cell_temp_max".into(),
            PersistedPhase::Firing {
                since_ms: 500,
                peak: Some(46.0),
            },
        )],
    );
    let mut out = Vec::new();
    let arrival = 2000 + LATE_AFTER_MS + 1;
    eval(
        &mut engine,
        1,
        "s",
        &layout,
        (1000, arrival),
        &[Reading::Float(50.0)],
        &mut out,
    );
    eval(
        &mut engine,
        1,
        "s",
        &layout,
        (2000, arrival),
        &[Reading::Float(40.0)],
        &mut out,
    );
    assert_eq!(
        out.iter().map(|c| c.transition.clone()).collect::<Vec<_>>(),
        vec![Transition::Resolved {
            end_ms: 2000,
            peak: Some(50.0),
            late: true
        }]
    );
}

#[test]
fn rules_bind_by_site_device_and_point_patterns() {
    let mut engine = RuleEngine::new(Arc::new(RuleSet {
        rules: vec![Rule {
            target: Target {
                site: Pattern("north-*".into()),
                device: Pattern("bms".into()),
                point: Pattern("cell_temp_*".into()),
            },
            ..overtemp(0)
        }],
        receivers: Vec::new(),
        derived: Vec::new(),
    }));
    engine.load_site(1, Vec::new());
    engine.load_site(2, Vec::new());
    let bms = layout("bms", &["cell_temp_max", "cell_temp_min", "soc"]);
    let hot = [
        Reading::Float(50.0),
        Reading::Float(50.0),
        Reading::Float(50.0),
    ];
    let mut out = Vec::new();
    eval(
        &mut engine,
        1,
        "north-1",
        &bms,
        (1000, 1000),
        &hot,
        &mut out,
    );
    assert_eq!(out.len(), 2, "both cell_temp points, not soc: {out:?}");
    let mut other = bms.clone();
    other.layout_id = 8;
    out.clear();
    eval(
        &mut engine,
        2,
        "south-1",
        &other,
        (1000, 1000),
        &hot,
        &mut out,
    );
    assert!(out.is_empty(), "another site's name does not match");
}

#[test]
fn a_flag_rule_fires_on_the_named_bit_of_a_bitfield_only() {
    let mut status = layout("bms", &["status"]);
    status.points[0].flags = vec![(0, "running".into()), (4, "fault".into())].into();
    let mut engine = engine(vec![rule(
        "fault",
        "*",
        "*",
        Condition::Flag {
            flag: Pattern("fault".into()),
            hold: Duration::ZERO,
        },
    )]);
    // running (bit 0) alone, then fault (bit 4) with running, then running.
    let frames: Vec<Vec<Reading>> = [1, 17, 17, 1]
        .iter()
        .map(|v| vec![Reading::Int(*v)])
        .collect();
    let changes = feed(&mut engine, &status, &frames);
    let got: Vec<(String, Transition)> = changes
        .iter()
        .map(|(_, c)| (c.target.to_string(), c.transition.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "bms/status:fault".into(),
                Transition::Fired {
                    start_ms: 2000,
                    peak: None,
                    late: false
                }
            ),
            (
                "bms/status:fault".into(),
                Transition::Resolved {
                    end_ms: 4000,
                    peak: None,
                    late: false
                }
            ),
        ]
    );
}

/// Frames of one point at these seconds with these values, arriving now.
fn at(engine: &mut RuleEngine, layout: &Layout, frames: &[(i64, f64)]) -> Vec<Transition> {
    let mut out = Vec::new();
    for (s, v) in frames {
        eval(
            engine,
            1,
            "s",
            layout,
            (s * 1000, s * 1000),
            &[Reading::Float(*v)],
            &mut out,
        );
    }
    out.into_iter().map(|c| c.transition).collect()
}

#[test]
fn a_backlog_behind_newer_batches_records_its_whole_episodes() {
    let layout = layout("bms", &["cell_temp_max"]);
    let mut engine = engine(vec![overtemp(0)]);
    // The live window first (cool), then the backlog, oldest first, with an
    // episode from 12 s to 15 s inside it.
    let live: Vec<(i64, f64)> = (100..105).map(|s| (s, 30.0)).collect();
    assert!(at(&mut engine, &layout, &live).is_empty());
    let backlog: Vec<(i64, f64)> = (10..20)
        .map(|s| (s, if (12..15).contains(&s) { 50.0 } else { 30.0 }))
        .collect();
    assert_eq!(
        at(&mut engine, &layout, &backlog),
        vec![Transition::Backfilled {
            start_ms: 12_000,
            end_ms: 15_000,
            peak: Some(50.0),
            late: false
        }]
    );
    // The backlog again (the same seconds): nothing twice.
    assert!(at(&mut engine, &layout, &backlog).is_empty());
}

#[test]
fn a_backlog_that_still_holds_where_the_live_episode_began_moves_its_start_back() {
    let layout = layout("bms", &["cell_temp_max"]);
    let mut engine = engine(vec![overtemp(0)]);
    let live: Vec<(i64, f64)> = (100..103).map(|s| (s, 50.0)).collect();
    assert_eq!(
        at(&mut engine, &layout, &live),
        vec![Transition::Fired {
            start_ms: 100_000,
            peak: Some(50.0),
            late: false
        }]
    );
    let backlog: Vec<(i64, f64)> = (90..100)
        .map(|s| (s, if s >= 95 { 50.0 } else { 30.0 }))
        .collect();
    assert_eq!(
        at(&mut engine, &layout, &backlog),
        vec![Transition::Extended {
            start_ms: 95_000,
            late: false
        }]
    );
}
