//! One poll group and its points: what to read, in which requests, and
//! where each point's registers sit in the answers.
//!
//! Invariant: every point's registers (and its scale-factor register, if
//! any) lie inside one of its group's requests, and its `Slot` says which
//! and where. `plan_points` is the one place a `GroupPlan` is built (from a
//! register map or from SunSpec discovery) and guarantees it, so the poller
//! can slice an answer by `Slot` without searching.

use std::time::Duration;

use bess_protocol::PointKind;

use super::requests::{self, PlanError, ReadRequest, Slot};
use crate::register::{PointCodec, RegisterTable};

/// One poll group: one frame per interval, read by one or more requests.
#[derive(Debug, Clone)]
pub struct GroupPlan {
    /// Index of this group in the catalog.
    pub catalog_index: u16,
    pub name: String,
    pub interval: Duration,
    pub table: RegisterTable,
    pub requests: Vec<ReadRequest>,
    /// Fewest requests possible if every gap could be read.
    pub min_requests: usize,
    pub points: Vec<PointPlan>,
}

/// One point: how to decode it and where its registers are in the answers.
#[derive(Debug, Clone)]
pub struct PointPlan {
    pub name: String,
    pub unit: String,
    pub kind: PointKind,
    pub scale: f64,
    pub offset: f64,
    pub address: u16,
    pub codec: PointCodec,
    pub slot: Slot,
    /// Scale-factor register and where it is, when the point has one.
    pub scale_factor: Option<(u16, Slot)>,
    pub flags: Vec<(u8, String)>,
}

impl PointPlan {
    /// Strings are decoded for display but not sent.
    pub fn is_sent(&self) -> bool {
        self.codec.data_type.is_sent()
    }
}

/// A point before its slot is known: what a register map or SunSpec
/// discovery says about it.
#[derive(Debug, Clone)]
pub struct PointSpec {
    pub name: String,
    pub unit: String,
    pub kind: PointKind,
    pub scale: f64,
    pub offset: f64,
    pub address: u16,
    pub codec: PointCodec,
    pub scale_register: Option<u16>,
    pub flags: Vec<(u8, String)>,
}

/// Plan the requests of one group of points.
pub fn plan_points(
    catalog_index: u16,
    name: &str,
    interval: Duration,
    table: RegisterTable,
    specs: Vec<PointSpec>,
    max_gap: u16,
) -> Result<GroupPlan, PlanError> {
    let mut spans: Vec<(u16, u16)> = specs
        .iter()
        .map(|p| (p.address, p.codec.width(table)))
        .collect();
    spans.extend(
        specs
            .iter()
            .filter_map(|p| p.scale_register.map(|a| (a, 1))),
    );
    let requests = requests::coalesce(table, &spans, max_gap)?;
    let min_requests = requests::minimum_requests(table, &spans);
    let points = specs
        .into_iter()
        .map(|p| {
            let slot = requests::locate(&requests, p.address, p.codec.width(table))
                .expect("every span is covered");
            let scale_factor = p
                .scale_register
                .map(|a| (a, requests::locate(&requests, a, 1).expect("covered")));
            PointPlan {
                name: p.name,
                unit: p.unit,
                kind: p.kind,
                scale: p.scale,
                offset: p.offset,
                address: p.address,
                codec: p.codec,
                slot,
                scale_factor,
                flags: p.flags,
            }
        })
        .collect();
    Ok(GroupPlan {
        catalog_index,
        name: name.to_owned(),
        interval,
        table,
        requests,
        min_requests,
        points,
    })
}
