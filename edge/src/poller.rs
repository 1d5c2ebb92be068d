//! `ModbusPoller`: one task per device. It reads each poll group on its
//! interval — one or more requests, as planned — over the device's
//! `ModbusLink` and turns every answer, or the lack of one, into a frame.
//! A failed request marks exactly its own points missing: a Modbus
//! exception as stale, a timeout or a broken connection as comm-loss. The
//! next cycle goes on either way.

use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use bess_protocol::{Frame, GroupIndex, MissingReason, Quality, Reading};

use crate::clock::FrameClock;
use crate::link::{ModbusLink, RequestOutcome};
use crate::register::{apply_scale_factor, DataType, Decoded, PointCodec};
use crate::site_plan::{DevicePlan, GroupPlan, LinkPlan};
use crate::status::{AgentStatus, PollOutcome, Totals};

pub struct ModbusPoller {
    device: DevicePlan,
    device_index: usize,
    link: Arc<ModbusLink>,
    frames: mpsc::Sender<Frame>,
    status: Arc<AgentStatus>,
    clock: FrameClock,
}

/// One group read once: every request's outcome and every point's value.
#[derive(Debug, Clone)]
pub struct GroupReading {
    pub outcomes: Vec<RequestOutcome>,
    /// In the group's point order, strings included.
    pub values: Vec<Decoded>,
}

impl GroupReading {
    /// The frame values: every point that can be sent, in catalog order.
    pub fn frame_values(&self, group: &GroupPlan) -> Vec<Reading> {
        group
            .points
            .iter()
            .zip(&self.values)
            .filter(|(p, _)| p.is_sent())
            .map(|(_, v)| v.reading())
            .collect()
    }

    /// Good if every request was answered, else the worst reason.
    pub fn outcome(&self) -> PollOutcome {
        let reasons = self.outcomes.iter().filter_map(|o| match o {
            RequestOutcome::Missing(reason) => Some(*reason),
            RequestOutcome::Words(_) => None,
        });
        match reasons.max_by_key(|r| r.quality() == Quality::CommLoss) {
            None => PollOutcome::Good,
            Some(reason) => PollOutcome::Failed(reason),
        }
    }
}

impl ModbusPoller {
    /// A poller with a connection of its own.
    pub fn new(
        device: DevicePlan,
        device_index: usize,
        frames: mpsc::Sender<Frame>,
        status: Arc<AgentStatus>,
    ) -> Self {
        let link = ModbusLink::new(device.link.endpoint.clone(), device.link.pause);
        Self::with_link(device, device_index, link, frames, status)
    }

    /// A poller sharing `link` with the other devices behind it.
    pub fn with_link(
        device: DevicePlan,
        device_index: usize,
        link: Arc<ModbusLink>,
        frames: mpsc::Sender<Frame>,
        status: Arc<AgentStatus>,
    ) -> Self {
        let clock = FrameClock::new(device.groups.len());
        Self {
            device,
            device_index,
            link,
            frames,
            status,
            clock,
        }
    }

    /// Poll until cancelled. Cycles never overlap: a group that falls
    /// behind skips the missed ticks rather than bursting.
    pub async fn run(mut self, cancel: CancellationToken) {
        let start = Instant::now();
        let stagger = self.device.stagger;
        let mut due: Vec<Instant> = (0..self.device.groups.len())
            .map(|g| start + stagger * g as u32)
            .collect();
        loop {
            let Some((group, &at)) = due.iter().enumerate().min_by_key(|(_, at)| **at) else {
                return;
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(at) => {}
            }
            let frame = self.poll_group(group).await;
            let interval = self.device.groups[group].interval;
            let mut next = at + interval;
            let now = Instant::now();
            if next <= now {
                let behind = now.duration_since(next).as_nanos() / interval.as_nanos() + 1;
                next += interval * behind as u32;
            }
            due[group] = next;
            if self.frames.send(frame).await.is_err() {
                break;
            }
        }
        self.link.release().await;
    }

    async fn poll_group(&mut self, group_at: usize) -> Frame {
        let group = &self.device.groups[group_at];
        let reading = read_group(&self.link, &self.device.link, group).await;
        if self.device.link.release_after_cycle {
            self.link.release().await;
        }
        let ts_ms = self.clock.stamp_with(group_at, &self.status.clock);
        let values = reading.frame_values(group);
        let outcome = reading.outcome();
        if let PollOutcome::Failed(reason) = &outcome {
            tracing::debug!(device = %self.device.name, group = %group.name, reason = %reason.describe(), "poll failed");
        }
        self.status.record_poll(self.device_index, ts_ms, outcome);
        metrics::counter!("bess_edge_samples_read_total").increment(values.len() as u64);
        Totals::add(&self.status.totals.samples_read, values.len() as u64);
        Frame {
            group: GroupIndex(group.catalog_index),
            ts_ms,
            values,
        }
    }
}

/// Read a group's requests one after the other and decode its points.
pub async fn read_group(link: &ModbusLink, plan: &LinkPlan, group: &GroupPlan) -> GroupReading {
    let mut outcomes = Vec::with_capacity(group.requests.len());
    for request in &group.requests {
        outcomes.push(
            link.read(plan.unit, *request, plan.timeout, plan.retries)
                .await,
        );
    }
    let values = decode_group(group, &outcomes);
    GroupReading { outcomes, values }
}

/// Each point's value from the requests' outcomes: a point whose request
/// (or whose scale-factor register's request) failed carries that reason.
pub fn decode_group(group: &GroupPlan, outcomes: &[RequestOutcome]) -> Vec<Decoded> {
    let words_at = |slot: crate::site_plan::Slot, width: u16| -> Result<&[u16], MissingReason> {
        match &outcomes[slot.request] {
            RequestOutcome::Words(words) => {
                Ok(&words[slot.offset..slot.offset + usize::from(width)])
            }
            RequestOutcome::Missing(reason) => Err(*reason),
        }
    };
    group
        .points
        .iter()
        .map(|p| {
            let value = match words_at(p.slot, p.codec.width(group.table)) {
                Ok(words) => p.codec.decode(words),
                Err(reason) => return Decoded::Value(Reading::Missing(reason)),
            };
            match (value, p.scale_factor) {
                (Decoded::Value(v), Some((_, slot))) => {
                    let sf = match words_at(slot, 1) {
                        Ok(words) => PointCodec::new(DataType::I16)
                            .with_default_marker()
                            .decode(words)
                            .reading(),
                        Err(reason) => Reading::Missing(reason),
                    };
                    Decoded::Value(apply_scale_factor(v, sf))
                }
                (value, _) => value,
            }
        })
        .collect()
}
