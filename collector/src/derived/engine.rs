//! `DerivedEngine`: evaluates each site's plan on its committed frames.
//!
//! A derived point whose inputs are all in one poll group is computed per
//! frame, at that frame's timestamp. Otherwise its inputs (different
//! devices, polled at different instants) are aligned to buckets of
//! `every`: each slot keeps the latest good value it got in the bucket, and
//! the point is computed — at the bucket's start — as soon as every slot
//! has one. A bucket that a newer one replaces before it was complete
//! yields nothing (an input was missing: "evaluated where its inputs
//! exist"). A backlog that drains behind newer batches (the edge sends its
//! newest batches first after an outage) fills buckets of its own, older
//! than where the live timeline began, in its own order; a frame older
//! than its timeline's open bucket, or a backlog frame of a bucket the
//! live timeline already had, is skipped (counted).
//!
//! Open buckets live in memory. They are emitted by the transaction that
//! commits the frame completing them, so a redelivered batch (skipped by
//! the ledger) never emits twice; a bucket whose inputs straddle an
//! instance hand-over is not completed on the new instance (one bucket
//! missing, never a double).

use std::collections::HashMap;

use bess_protocol::Reading;

use super::plan::{Instance, SitePlan};
use crate::catalog::Layouts;
use crate::polled::PolledFrame;

#[derive(Debug, Clone)]
struct Bucket {
    start_ms: i64,
    values: Vec<Option<f64>>,
    filled: usize,
    emitted: bool,
}

/// One derived point's open buckets: the live timeline's, and a backlog's
/// draining behind it (older than the first live bucket).
#[derive(Debug, Clone, Default)]
struct Timelines {
    live: Option<Bucket>,
    /// Where the live timeline began: a backlog bucket must be older, or it
    /// could be one the live timeline already had (emitted, or dropped
    /// incomplete).
    first_live_ms: Option<i64>,
    backfill: Option<Bucket>,
}

/// A site's plan with the derived catalog's layouts, and its open buckets.
struct SiteState {
    plan: std::sync::Arc<SitePlan>,
    derived: Layouts,
    buckets: Vec<Timelines>,
    /// For each group and point of the edge catalog (indexed as the
    /// catalog is): which (instance, slot)s it feeds.
    feeds: Vec<Vec<Vec<(usize, usize)>>>,
}

/// Derived points of every site this instance writes.
#[derive(Default)]
pub struct DerivedEngine {
    sites: HashMap<(i32, u64), SiteState>,
    skipped_late: u64,
}

impl DerivedEngine {
    /// Whether the site's catalog version has its plan here.
    pub fn has_plan(&self, site_id: i32, catalog: u64) -> bool {
        self.sites.contains_key(&(site_id, catalog))
    }

    /// Install a site's plan (its derived catalog registered as `derived`).
    pub fn install(
        &mut self,
        site_id: i32,
        catalog: u64,
        plan: std::sync::Arc<SitePlan>,
        derived: Layouts,
    ) {
        let mut feeds: Vec<Vec<Vec<(usize, usize)>>> = Vec::new();
        for (i, instance) in plan.instances.iter().enumerate() {
            for (s, &(group, point)) in instance.slots.iter().enumerate() {
                if feeds.len() <= group {
                    feeds.resize_with(group + 1, Vec::new);
                }
                if feeds[group].len() <= point {
                    feeds[group].resize_with(point + 1, Vec::new);
                }
                feeds[group][point].push((i, s));
            }
        }
        let buckets = vec![Timelines::default(); plan.instances.len()];
        self.sites.insert(
            (site_id, catalog),
            SiteState {
                plan,
                derived,
                buckets,
                feeds,
            },
        );
    }

    /// Drop open buckets and plans (every plan is rebuilt on demand).
    pub fn clear(&mut self) {
        self.sites.clear();
    }

    pub fn forget_sites(&mut self, site_ids: &[i32]) {
        self.sites.retain(|(site, _), _| !site_ids.contains(site));
    }

    /// Frames skipped for being older than their point's open bucket.
    pub fn skipped_late(&self) -> u64 {
        self.skipped_late
    }

    /// Evaluate one committed frame of a site whose catalog version is
    /// `catalog`; derived frames come out in `out`.
    pub fn evaluate(
        &mut self,
        site_id: i32,
        catalog: u64,
        frame: &PolledFrame,
        out: &mut Vec<PolledFrame>,
    ) {
        let Some(state) = self.sites.get_mut(&(site_id, catalog)) else {
            return;
        };
        // Which instances this frame feeds, with the bucket it falls in.
        let Some(group_feeds) = state.feeds.get(frame.group) else {
            return;
        };
        let mut touched: Vec<(usize, bool)> = Vec::new();
        for (index, reading) in frame.readings.iter().enumerate() {
            let Some(feeds) = group_feeds.get(index).filter(|f| !f.is_empty()) else {
                continue;
            };
            let value = reading
                .raw()
                .map(|raw| frame.layout().points[index].engineering(raw));
            for &(instance_index, slot) in feeds {
                let instance = &state.plan.instances[instance_index];
                let start_ms = bucket_start(instance, frame.ts_ms);
                let timelines = &mut state.buckets[instance_index];
                let backfill = timelines
                    .live
                    .as_ref()
                    .is_some_and(|b| start_ms < b.start_ms);
                if backfill
                    && timelines
                        .first_live_ms
                        .is_some_and(|first| start_ms >= first)
                {
                    self.skipped_late += 1;
                    continue;
                }
                let bucket = if backfill {
                    &mut timelines.backfill
                } else {
                    timelines.first_live_ms.get_or_insert(start_ms);
                    &mut timelines.live
                };
                match bucket {
                    Some(b) if b.start_ms == start_ms => {}
                    Some(b) if b.start_ms > start_ms => {
                        self.skipped_late += 1;
                        continue;
                    }
                    _ => {
                        *bucket = Some(Bucket {
                            start_ms,
                            values: vec![None; instance.slots.len()],
                            filled: 0,
                            emitted: false,
                        })
                    }
                }
                let b = bucket.as_mut().expect("set above");
                if let (Some(v), None) = (value, b.values[slot]) {
                    b.filled += 1;
                    b.values[slot] = Some(v);
                } else if let Some(v) = value {
                    b.values[slot] = Some(v);
                }
                if !touched.contains(&(instance_index, backfill)) {
                    touched.push((instance_index, backfill));
                }
            }
        }
        for (instance_index, backfill) in touched {
            let instance = &state.plan.instances[instance_index];
            let timelines = &mut state.buckets[instance_index];
            let bucket = if backfill {
                timelines.backfill.as_mut()
            } else {
                timelines.live.as_mut()
            };
            let Some(bucket) = bucket else {
                continue;
            };
            if bucket.emitted || bucket.filled < instance.slots.len() {
                continue;
            }
            bucket.emitted = true;
            let inputs: Vec<Vec<f64>> = instance
                .references
                .iter()
                .map(|r| bucket.values[r.clone()].iter().flatten().copied().collect())
                .collect();
            let reading = match instance.expression.evaluate(&inputs) {
                Some(v) => Reading::Float(v),
                None => continue,
            };
            out.push(PolledFrame {
                site: frame.site.clone(),
                layouts: state.derived.clone(),
                group: instance.group,
                ts_ms: bucket.start_ms,
                received_ms: frame.received_ms,
                readings: vec![reading],
            });
        }
    }
}

fn bucket_start(instance: &Instance, ts_ms: i64) -> i64 {
    if instance.one_group.is_some() {
        ts_ms
    } else {
        ts_ms.div_euclid(instance.every_ms) * instance.every_ms
    }
}

#[cfg(test)]
mod tests;
