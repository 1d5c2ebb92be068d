//! `SitePlan`: the derived points of one site's catalog version — each
//! definition expanded (once, or per matched device), its references
//! resolved to the (poll group, point) slots that feed it, and the catalog
//! of derived devices their frames are stored under (one poll group per
//! derived point, so each is stored as soon as its inputs are in).
//!
//! A definition that does not apply to the site (a referenced point it
//! does not have, an aggregate that matches nothing) is left out of the
//! plan, and said so in `skipped`.

use std::ops::Range;
use std::sync::Arc;

use bess_protocol::{Catalog, DeviceInfo, GroupInfo, PointInfo, PointKind};

use super::expr::{Aggregate, Expr};
use super::Definition;
use crate::catalog::{CatalogLayouts, Layouts};
use crate::pattern::Pattern;

/// One derived point of one site.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Its poll group in the plan's catalog.
    pub group: usize,
    pub expression: Arc<Expr>,
    /// Every (group, point index) of the site's catalog that feeds it.
    pub slots: Vec<(usize, usize)>,
    /// The slots of each reference of the expression, in order.
    pub references: Vec<Range<usize>>,
    /// Every slot is in this one poll group: evaluated per frame, at the
    /// frame's own timestamp.
    pub one_group: Option<usize>,
    pub every_ms: i64,
}

/// The derived points of one site's catalog version.
#[derive(Debug, Clone)]
pub struct SitePlan {
    pub instances: Vec<Instance>,
    /// The derived devices and their points, registered like an edge's.
    pub catalog: Catalog,
    /// Why definitions were left out: `(definition point, reason)`.
    pub skipped: Vec<(String, String)>,
}

impl SitePlan {
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }
}

/// A site catalog version's plan with its registered derived layouts.
pub type DerivedPlan = (Arc<SitePlan>, Layouts);

/// Where plans are made (the stored lane, which registers their catalogs)
/// for others that only read them (the live lane).
pub trait PlanSource: Send + Sync {
    fn plan_of(&self, site_id: i32, catalog_hash: u64) -> Option<DerivedPlan>;
    /// Whether any derived point is declared at all.
    fn declares_any(&self) -> bool;
}

pub fn plan(definitions: &[Definition], site: &str, layouts: &CatalogLayouts) -> SitePlan {
    let mut plan = SitePlan {
        instances: Vec::new(),
        catalog: Catalog {
            devices: Vec::new(),
            groups: Vec::new(),
        },
        skipped: Vec::new(),
    };
    for definition in definitions.iter().filter(|d| d.site.matches(site)) {
        let devices: Vec<Option<&str>> = match &definition.for_each {
            None => vec![None],
            Some(pattern) => {
                let mut names: Vec<&str> = layouts
                    .iter()
                    .map(|l| &*l.device)
                    .filter(|d| pattern.matches(d))
                    .collect();
                names.sort_unstable();
                names.dedup();
                names.into_iter().map(Some).collect()
            }
        };
        for this in devices {
            let name = |template: &str| match this {
                Some(device) => template.replace("{device}", device),
                None => template.to_owned(),
            };
            let (device, point) = (name(&definition.device), name(&definition.point));
            let taken = plan.catalog.groups.iter().any(|g| {
                g.name == point && plan.catalog.devices[usize::from(g.device)].name == device
            });
            if taken {
                plan.skipped.push((
                    format!("{device}/{point}"),
                    "an earlier definition already makes this point for this site".into(),
                ));
                continue;
            }
            match resolve(&definition.expression, this, layouts) {
                Ok((slots, references)) => {
                    let device_index =
                        match plan.catalog.devices.iter().position(|d| d.name == device) {
                            Some(i) => i,
                            None => {
                                plan.catalog.devices.push(DeviceInfo {
                                    name: device.clone(),
                                    model: super::DERIVED_MODEL.into(),
                                });
                                plan.catalog.devices.len() - 1
                            }
                        };
                    let every_ms = definition.every.as_millis().max(1) as i64;
                    let first_group = slots.first().map(|s| s.0);
                    let one_group = first_group.filter(|g| slots.iter().all(|s| s.0 == *g));
                    let interval_ms = match one_group {
                        Some(g) => layouts[g].interval_ms,
                        None => every_ms.min(u32::MAX as i64) as u32,
                    };
                    plan.catalog.groups.push(GroupInfo {
                        device: device_index as u16,
                        name: point.clone(),
                        interval_ms,
                        points: vec![PointInfo::new(
                            &point,
                            &definition.unit,
                            PointKind::Analog,
                            1.0,
                            0.0,
                        )],
                    });
                    plan.instances.push(Instance {
                        group: plan.catalog.groups.len() - 1,
                        expression: Arc::new(definition.expression.clone()),
                        slots,
                        references,
                        one_group,
                        every_ms,
                    });
                }
                Err(reason) => plan.skipped.push((format!("{device}/{point}"), reason)),
            }
        }
    }
    plan
}

type Resolved = (Vec<(usize, usize)>, Vec<Range<usize>>);

fn resolve(expr: &Expr, this: Option<&str>, layouts: &CatalogLayouts) -> Result<Resolved, String> {
    let mut slots = Vec::new();
    let mut references = Vec::new();
    for (aggregate, device, point) in expr.references() {
        let start = slots.len();
        let device = match (device, this) {
            (Some(d), _) => d,
            (None, Some(this)) => this,
            (None, None) => {
                return Err(format!(
                    "{point:?} names no device (write DEVICE/{point}, or use for_each)"
                ))
            }
        };
        match aggregate {
            None => {
                let found = layouts.iter().enumerate().find_map(|(g, layout)| {
                    (&*layout.device == device)
                        .then(|| layout.points.iter().position(|p| &*p.name == point))
                        .flatten()
                        .map(|i| (g, i))
                });
                match found {
                    Some(slot) => slots.push(slot),
                    None => return Err(format!("the site has no point {device}/{point}")),
                }
            }
            Some(function) => {
                let (devices, points) = (Pattern(device.into()), Pattern(point.into()));
                for (g, layout) in layouts.iter().enumerate() {
                    if !devices.matches(&layout.device) {
                        continue;
                    }
                    for (i, p) in layout.points.iter().enumerate() {
                        if points.matches(&p.name) {
                            slots.push((g, i));
                        }
                    }
                }
                if slots.len() == start && function != Aggregate::Count {
                    return Err(format!("no point of the site matches {device}/{point}"));
                }
            }
        }
        references.push(start..slots.len());
    }
    Ok((slots, references))
}
