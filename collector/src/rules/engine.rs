//! `RuleEngine`: evaluates the rules on committed frames, in event time,
//! and says what changed ([`Transition`]s). No I/O: the writer loads each
//! site's persisted state into it (`store.rs`), asks it to evaluate the
//! frames of the batches its transaction writes, and persists the
//! transitions in that same transaction.
//!
//! Per (rule, target) the engine keeps a phase:
//!
//! ```text
//!   ok ──holds──► pending ──held for `hold`──► firing ──clears──► ok
//!    ▲              │ clears                     (episode: start = when it
//!    └──────────────┘                             began holding, end = the
//!                                                 reading that cleared it)
//! ```
//!
//! "Holds" and "clears" differ by the hysteresis: a reading between the
//! two keeps the phase. Every target sees its readings in timestamp order.
//! A reading older than the newest one evaluated for its target is a
//! backlog draining behind newer batches (the edge sends its newest
//! batches first after an outage): it goes through the target's
//! *backfill* timeline, in its own timestamp order, whose whole episodes
//! are recorded closed and late, and whose episode still holding where an
//! episode of the live timeline is open moves that episode's start back.
//! A reading not newer than the last one of its timeline is skipped
//! (counted). Offline rules are timer-driven (`offline.rs`) and never
//! reach this module.
//!
//! Which frames' points a rule covers is worked out once per catalog
//! layout ([`Binding`]s, cached by layout id), so a frame costs one
//! lookup plus one step per bound point.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bess_protocol::{Quality, Reading};

use super::model::{Bound, Condition, RuleSet};
use crate::catalog::Layout;
use crate::polled::PolledFrame;

/// A reading is *late* when it reached the collector this long after it was
/// taken: a backlog after an outage, not the stream (stored batches are
/// sealed every 15 s by default).
pub const LATE_AFTER_MS: i64 = 120_000;

/// What changed for one (rule, target).
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The condition began holding at `since_ms`; it fires once it has held
    /// for the rule's hold duration.
    Pending { since_ms: i64, peak: Option<f64> },
    /// A pending condition cleared before it fired.
    PendingCleared,
    /// An episode began at `start_ms` (event time).
    Fired {
        start_ms: i64,
        peak: Option<f64>,
        late: bool,
    },
    /// The open episode ended at `end_ms` (event time).
    Resolved {
        end_ms: i64,
        peak: Option<f64>,
        late: bool,
    },
    /// A backlog held a whole episode, older than the target's newest
    /// reading: recorded closed, late.
    Backfilled {
        start_ms: i64,
        end_ms: i64,
        peak: Option<f64>,
        late: bool,
    },
    /// A backlog shows that the open episode began earlier, at `start_ms`.
    Extended { start_ms: i64, late: bool },
}

/// One transition of one (rule, target) of one site.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub site_id: i32,
    /// Index into the engine's rule set.
    pub rule: usize,
    /// `DEVICE/POINT` (threshold, rate of change, stale) or `DEVICE`
    /// (deviation).
    pub target: Arc<str>,
    pub transition: Transition,
}

/// A (rule, target)'s phase as persisted (`rule_state`, open episodes).
#[derive(Debug, Clone, PartialEq)]
pub enum PersistedPhase {
    Pending { since_ms: i64, peak: Option<f64> },
    Firing { since_ms: i64, peak: Option<f64> },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Ok,
    Pending { since_ms: i64 },
    Firing { since_ms: i64 },
}

#[derive(Debug, Clone)]
struct TargetState {
    phase: Phase,
    peak: Option<f64>,
    last_ts_ms: i64,
    /// Rate of change only: the window's (timestamp, value)s.
    window: VecDeque<(i64, f64)>,
    /// Readings older than `last_ts_ms` (a backlog behind newer batches),
    /// evaluated on their own timeline.
    backfill: Option<Box<TargetState>>,
    /// Backfill only: its episode was merged into the live one.
    merged: bool,
}

impl TargetState {
    fn new() -> Self {
        Self {
            phase: Phase::Ok,
            peak: None,
            last_ts_ms: i64::MIN,
            window: VecDeque::new(),
            backfill: None,
            merged: false,
        }
    }
}

/// What one reading (or one frame's spread) says about a condition.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Signal {
    /// The condition holds; the value to track as the peak, if any.
    Holds(Option<f64>),
    /// The condition clearly does not hold.
    Clears,
    /// Inside the hysteresis band, or nothing to judge: the phase stays.
    Keeps,
}

/// Which points of a layout a rule covers.
#[derive(Debug, Clone)]
enum Binding {
    /// One point (threshold, rate of change, stale).
    Point {
        rule: usize,
        index: usize,
        target: Arc<str>,
    },
    /// One named bit of a bitfield point (flag).
    Bit {
        rule: usize,
        index: usize,
        bit: u8,
        target: Arc<str>,
    },
    /// The matched points of the layout's device (deviation).
    Spread {
        rule: usize,
        indices: Vec<usize>,
        target: Arc<str>,
    },
}

/// The rules' state for every site this instance evaluates.
pub struct RuleEngine {
    rules: Arc<RuleSet>,
    /// Which rules can cover a site: by its literal name, or by a glob.
    by_site: SiteIndex,
    bindings: HashMap<i32, Arc<[Binding]>>,
    sites: HashMap<i32, HashMap<(usize, Arc<str>), TargetState>>,
    out_of_order: u64,
}

impl RuleEngine {
    pub fn new(rules: Arc<RuleSet>) -> Self {
        Self {
            by_site: SiteIndex::new(&rules),
            rules,
            bindings: HashMap::new(),
            sites: HashMap::new(),
            out_of_order: 0,
        }
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Whether any rule evaluates frames (offline rules do not).
    pub fn evaluates_frames(&self) -> bool {
        self.rules
            .rules
            .iter()
            .any(|r| !matches!(r.condition, Condition::Offline { .. }))
    }

    /// A new rule set: every cached state is dropped (the writer reloads
    /// each site's persisted state before its next frame).
    pub fn replace_rules(&mut self, rules: Arc<RuleSet>) {
        self.by_site = SiteIndex::new(&rules);
        self.rules = rules;
        self.bindings.clear();
        self.sites.clear();
    }

    /// Whether the site's persisted state must be loaded before its frames
    /// are evaluated.
    pub fn needs_load(&self, site_id: i32) -> bool {
        !self.sites.contains_key(&site_id)
    }

    /// Seed a site from its persisted state: `(rule name, target, phase)`.
    /// Rules no longer in the set are ignored.
    pub fn load_site(&mut self, site_id: i32, persisted: Vec<(String, String, PersistedPhase)>) {
        let mut targets = HashMap::new();
        for (rule_name, target, phase) in persisted {
            let Some(rule) = self.rules.rules.iter().position(|r| r.name == rule_name) else {
                continue;
            };
            let mut state = TargetState::new();
            (state.phase, state.peak) = match phase {
                PersistedPhase::Pending { since_ms, peak } => (Phase::Pending { since_ms }, peak),
                PersistedPhase::Firing { since_ms, peak } => (Phase::Firing { since_ms }, peak),
            };
            targets.insert((rule, Arc::from(target)), state);
        }
        self.sites.insert(site_id, targets);
    }

    /// Drop sites' state (after a failed transaction, or when another
    /// instance may have moved it on).
    pub fn forget_sites(&mut self, site_ids: impl IntoIterator<Item = i32>) {
        for id in site_ids {
            self.sites.remove(&id);
        }
    }

    pub fn forget_all(&mut self) {
        self.sites.clear();
    }

    /// Readings skipped so far for being older than their target's last.
    pub fn out_of_order(&self) -> u64 {
        self.out_of_order
    }

    /// Evaluate one committed frame of a site (loaded with
    /// [`load_site`](Self::load_site) first), appending what changed.
    pub fn evaluate(&mut self, site_id: i32, frame: &PolledFrame, out: &mut Vec<Change>) {
        let layout = frame.layout();
        let (ts_ms, readings) = (frame.ts_ms, &frame.readings[..]);
        let bindings = match self.bindings.get(&layout.layout_id) {
            Some(b) => b.clone(),
            None => {
                let candidates = self.by_site.candidates(&frame.site);
                let b: Arc<[Binding]> = bind(&self.rules, candidates, &frame.site, layout).into();
                self.bindings.insert(layout.layout_id, b.clone());
                b
            }
        };
        if bindings.is_empty() {
            return;
        }
        let late = frame.received_ms - ts_ms > LATE_AFTER_MS;
        let targets = self.sites.entry(site_id).or_default();
        for binding in bindings.iter() {
            let (rule_index, target) = match binding {
                Binding::Point { rule, target, .. }
                | Binding::Bit { rule, target, .. }
                | Binding::Spread { rule, target, .. } => (*rule, target),
            };
            let rule = &self.rules.rules[rule_index];
            let state = targets
                .entry((rule_index, target.clone()))
                .or_insert_with(TargetState::new);
            // A reading older than its target's newest is a backlog that
            // drains behind newer batches (the edge sends its live window
            // first): it runs through the target's own backfill timeline.
            if ts_ms == state.last_ts_ms {
                self.out_of_order += 1;
                continue;
            }
            let backfilling = ts_ms < state.last_ts_ms;
            let live_phase = state.phase;
            let state = if backfilling {
                let backfill = state
                    .backfill
                    .get_or_insert_with(|| Box::new(TargetState::new()));
                if ts_ms <= backfill.last_ts_ms {
                    self.out_of_order += 1;
                    continue;
                }
                backfill
            } else {
                state
            };
            state.last_ts_ms = ts_ms;
            let (signal, hold_ms) = match (binding, &rule.condition) {
                (
                    Binding::Point { index, .. },
                    Condition::Threshold {
                        bound,
                        hysteresis,
                        hold,
                    },
                ) => (
                    threshold_signal(
                        *bound,
                        *hysteresis,
                        readings[*index].raw_value(layout, *index),
                    ),
                    hold.as_millis() as i64,
                ),
                (Binding::Point { index, .. }, Condition::Stale { after }) => (
                    match readings[*index].quality() {
                        Quality::Good => Signal::Clears,
                        _ => Signal::Holds(None),
                    },
                    after.as_millis() as i64,
                ),
                (Binding::Point { index, .. }, Condition::RateOfChange { max_change, window }) => (
                    rate_signal(
                        &mut state.window,
                        ts_ms,
                        readings[*index].raw_value(layout, *index),
                        *max_change,
                        window.as_millis() as i64,
                    ),
                    0,
                ),
                (
                    Binding::Spread { indices, .. },
                    Condition::Deviation {
                        max_spread,
                        hysteresis,
                        hold,
                    },
                ) => (
                    spread_signal(layout, readings, indices, *max_spread, *hysteresis),
                    hold.as_millis() as i64,
                ),
                (Binding::Bit { index, bit, .. }, Condition::Flag { hold, .. }) => (
                    match readings[*index].raw() {
                        Some(raw) if (raw as i64 >> bit) & 1 == 1 => Signal::Holds(None),
                        Some(_) => Signal::Clears,
                        None => Signal::Keeps,
                    },
                    hold.as_millis() as i64,
                ),
                _ => continue,
            };
            let before = state.phase;
            let transition = step(state, signal, ts_ms, hold_ms, late, &rule.condition);
            let transition = if backfilling {
                backfilled(before, state, live_phase, transition)
            } else {
                transition
            };
            if let Some(transition) = transition {
                out.push(Change {
                    site_id,
                    rule: rule_index,
                    target: target.clone(),
                    transition,
                });
            }
        }
    }
}

/// What a step of a target's backfill timeline means for its episodes: an
/// episode the backlog holds whole is recorded whole ([`Transition::Backfilled`]);
/// one still holding where the backlog meets an episode open in the live
/// timeline is that episode, begun earlier ([`Transition::Extended`]).
/// Pending phases of the backfill stay in memory.
fn backfilled(
    before: Phase,
    backfill: &mut TargetState,
    live: Phase,
    transition: Option<Transition>,
) -> Option<Transition> {
    match (before, transition, live) {
        // Merged into the live episode: its end is the live episode's.
        (Phase::Firing { .. }, Some(Transition::Resolved { .. }), _) if backfill.merged => {
            backfill.merged = false;
            None
        }
        (Phase::Firing { since_ms }, Some(Transition::Resolved { end_ms, peak, late }), _) => {
            Some(Transition::Backfilled {
                start_ms: since_ms,
                end_ms,
                peak,
                late,
            })
        }
        (_, Some(Transition::Fired { start_ms, late, .. }), Phase::Firing { .. }) => {
            backfill.merged = true;
            Some(Transition::Extended { start_ms, late })
        }
        _ => None,
    }
}

/// The engineering value of a reading, if it has one.
trait RawValue {
    fn raw_value(&self, layout: &Layout, index: usize) -> Option<f64>;
}

impl RawValue for Reading {
    fn raw_value(&self, layout: &Layout, index: usize) -> Option<f64> {
        self.raw().map(|raw| layout.points[index].engineering(raw))
    }
}

/// Move one target's phase on by one signal.
fn step(
    state: &mut TargetState,
    signal: Signal,
    ts_ms: i64,
    hold_ms: i64,
    late: bool,
    condition: &Condition,
) -> Option<Transition> {
    let higher_is_worse = !matches!(
        condition,
        Condition::Threshold {
            bound: Bound::Below(_),
            ..
        }
    );
    let track = |peak: &mut Option<f64>, value: Option<f64>| {
        if let Some(v) = value {
            *peak = Some(match *peak {
                None => v,
                Some(p) if higher_is_worse => p.max(v),
                Some(p) => p.min(v),
            });
        }
    };
    match (state.phase, signal) {
        (Phase::Ok, Signal::Holds(value)) => {
            state.peak = None;
            track(&mut state.peak, value);
            if hold_ms == 0 {
                state.phase = Phase::Firing { since_ms: ts_ms };
                Some(Transition::Fired {
                    start_ms: ts_ms,
                    peak: state.peak,
                    late,
                })
            } else {
                state.phase = Phase::Pending { since_ms: ts_ms };
                Some(Transition::Pending {
                    since_ms: ts_ms,
                    peak: state.peak,
                })
            }
        }
        (Phase::Pending { since_ms }, Signal::Holds(_) | Signal::Keeps) => {
            if let Signal::Holds(value) = signal {
                track(&mut state.peak, value);
            }
            (ts_ms - since_ms >= hold_ms).then(|| {
                state.phase = Phase::Firing { since_ms };
                Transition::Fired {
                    start_ms: since_ms,
                    peak: state.peak,
                    late,
                }
            })
        }
        (Phase::Pending { .. }, Signal::Clears) => {
            state.phase = Phase::Ok;
            state.peak = None;
            Some(Transition::PendingCleared)
        }
        (Phase::Firing { .. }, Signal::Holds(value)) => {
            track(&mut state.peak, value);
            None
        }
        (Phase::Firing { .. }, Signal::Clears) => {
            state.phase = Phase::Ok;
            let peak = state.peak.take();
            Some(Transition::Resolved {
                end_ms: ts_ms,
                peak,
                late,
            })
        }
        (Phase::Ok, Signal::Clears | Signal::Keeps) | (Phase::Firing { .. }, Signal::Keeps) => None,
    }
}

fn threshold_signal(bound: Bound, hysteresis: f64, value: Option<f64>) -> Signal {
    let Some(v) = value else {
        return Signal::Keeps;
    };
    let (holds, clears) = match bound {
        Bound::Above(limit) => (v > limit, v <= limit - hysteresis),
        Bound::Below(limit) => (v < limit, v >= limit + hysteresis),
        Bound::Outside { low, high } => (
            v < low || v > high,
            v >= low + hysteresis && v <= high - hysteresis,
        ),
    };
    if holds {
        Signal::Holds(Some(v))
    } else if clears {
        Signal::Clears
    } else {
        Signal::Keeps
    }
}

/// max − min of the window's values after adding this one.
fn rate_signal(
    window: &mut VecDeque<(i64, f64)>,
    ts_ms: i64,
    value: Option<f64>,
    max_change: f64,
    window_ms: i64,
) -> Signal {
    let Some(v) = value else {
        return Signal::Keeps;
    };
    window.push_back((ts_ms, v));
    while window
        .front()
        .is_some_and(|(first, _)| ts_ms - *first > window_ms)
    {
        window.pop_front();
    }
    let (min, max) = window
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, x)| {
            (lo.min(*x), hi.max(*x))
        });
    let change = max - min;
    if change > max_change {
        Signal::Holds(Some(change))
    } else {
        Signal::Clears
    }
}

fn spread_signal(
    layout: &Layout,
    readings: &[Reading],
    indices: &[usize],
    max_spread: f64,
    hysteresis: f64,
) -> Signal {
    let mut values = indices
        .iter()
        .filter_map(|&i| readings[i].raw_value(layout, i));
    let Some(first) = values.next() else {
        return Signal::Keeps;
    };
    let (mut min, mut max, mut count) = (first, first, 1);
    for v in values {
        min = min.min(v);
        max = max.max(v);
        count += 1;
    }
    if count < 2 {
        return Signal::Keeps;
    }
    let spread = max - min;
    if spread > max_spread {
        Signal::Holds(Some(spread))
    } else if spread <= max_spread - hysteresis {
        Signal::Clears
    } else {
        Signal::Keeps
    }
}

/// Rules by the sites they name: a fleet of thousands of site-specific
/// rules binds each layout against its own site's rules only.
struct SiteIndex {
    literal: HashMap<String, Vec<usize>>,
    globs: Vec<usize>,
}

impl SiteIndex {
    fn new(rules: &RuleSet) -> Self {
        let mut index = Self {
            literal: HashMap::new(),
            globs: Vec::new(),
        };
        for (i, rule) in rules.rules.iter().enumerate() {
            let site = &rule.target.site.0;
            if site.contains(['*', '?']) {
                index.globs.push(i);
            } else {
                index.literal.entry(site.clone()).or_default().push(i);
            }
        }
        index
    }

    /// The rules that may cover `site`, in rule order.
    fn candidates(&self, site: &str) -> Vec<usize> {
        let mut out = self.literal.get(site).cloned().unwrap_or_default();
        out.extend(&self.globs);
        out.sort_unstable();
        out
    }
}

/// The rules (of `candidates`) that cover a layout's points, of one site.
fn bind(rules: &RuleSet, candidates: Vec<usize>, site: &str, layout: &Layout) -> Vec<Binding> {
    let mut out = Vec::new();
    for rule_index in candidates {
        let rule = &rules.rules[rule_index];
        if !rule.target.site.matches(site) || !rule.target.device.matches(&layout.device) {
            continue;
        }
        let matched = layout
            .points
            .iter()
            .enumerate()
            .filter(|(_, p)| rule.target.point.matches(&p.name))
            .map(|(i, _)| i);
        match &rule.condition {
            Condition::Offline { .. } => {}
            Condition::Flag { flag, .. } => {
                for index in matched {
                    let point = &layout.points[index];
                    for (bit, name) in point.flags.iter().filter(|(_, n)| flag.matches(n)) {
                        out.push(Binding::Bit {
                            rule: rule_index,
                            index,
                            bit: *bit,
                            target: format!("{}/{}:{name}", layout.device, point.name).into(),
                        });
                    }
                }
            }
            Condition::Deviation { .. } => {
                let indices: Vec<usize> = matched.collect();
                if indices.len() >= 2 {
                    out.push(Binding::Spread {
                        rule: rule_index,
                        indices,
                        target: Arc::from(&*layout.device),
                    });
                }
            }
            _ => out.extend(matched.map(|index| Binding::Point {
                rule: rule_index,
                index,
                target: format!("{}/{}", layout.device, layout.points[index].name).into(),
            })),
        }
    }
    out
}

#[cfg(test)]
mod tests;
