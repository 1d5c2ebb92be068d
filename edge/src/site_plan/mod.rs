//! The site plan: what the agent polls and how, as the runtime sees it.
//! Devices with their endpoints and link settings, poll groups with their
//! read requests, points with their codecs and slots, and the catalog that
//! numbers them for the cloud.
//!
//! The config module builds a plan from a checked file; at start-up the
//! agent fills in each SunSpec device's groups from discovery and renumbers
//! the catalog (`build_catalog`). From then on the poller, the links and
//! the technician's tools only read it. Nothing here knows the config
//! file's schema: the technician's `read` and `scan` build a `LinkPlan`
//! from command-line arguments alone.

mod catalog;
mod device;
mod endpoint;
mod group;
mod requests;

pub use catalog::build_catalog;
pub use device::{DevicePlan, SunspecPlan};
pub use endpoint::{Endpoint, LinkPlan, Parity, SerialSettings};
pub use group::{plan_points, GroupPlan, PointPlan, PointSpec};
pub use requests::{
    coalesce, locate, minimum_requests, PlanError, ReadRequest, Slot, MAX_REGISTERS_PER_READ,
};
