//! A device as the agent polls it: its name and model, how to reach it,
//! and its poll groups; or, for a SunSpec device, where to discover them at
//! start-up.

use std::time::Duration;

use super::{GroupPlan, LinkPlan};

/// A device with its register map resolved and checked.
#[derive(Debug, Clone)]
pub struct DevicePlan {
    pub name: String,
    pub model: String,
    pub link: LinkPlan,
    pub stagger: Duration,
    pub max_gap: u16,
    /// `Some` when the groups come from SunSpec discovery at start-up.
    pub sunspec: Option<SunspecPlan>,
    pub groups: Vec<GroupPlan>,
}

#[derive(Debug, Clone, Copy)]
pub struct SunspecPlan {
    pub base: Option<u16>,
}

impl DevicePlan {
    /// Human description of where the device is, for logs and `check`.
    pub fn address(&self) -> String {
        format!("{} unit {}", self.link.endpoint, self.link.unit)
    }
}
