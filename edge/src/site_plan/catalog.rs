//! The catalog: the site's devices, groups and points as the cloud sees
//! them. Group numbers are positions in the catalog, so `build_catalog`
//! also writes each group's `catalog_index`; strings are shown locally but
//! never sent, so they are left out. The names of a status word's bits
//! (`flags` in the config) go with their point, so the cloud can name a
//! flag in an alert rule; a catalog with them travels behind envelope flag
//! bit 2 (protocol SPEC sections 4.1 and 10).

use bess_protocol::{Catalog, DeviceInfo, FlagName, GroupInfo, PointInfo};

use super::DevicePlan;

/// The catalog of a set of devices; numbers every group in order.
pub fn build_catalog(devices: &mut [DevicePlan]) -> Catalog {
    let mut catalog = Catalog {
        devices: Vec::new(),
        groups: Vec::new(),
    };
    for (d, device) in devices.iter_mut().enumerate() {
        catalog.devices.push(DeviceInfo {
            name: device.name.clone(),
            model: device.model.clone(),
        });
        for group in &mut device.groups {
            group.catalog_index = catalog.groups.len() as u16;
            catalog.groups.push(GroupInfo {
                device: d as u16,
                name: group.name.clone(),
                interval_ms: u32::try_from(group.interval.as_millis()).unwrap_or(u32::MAX),
                points: group
                    .points
                    .iter()
                    .filter(|p| p.is_sent())
                    .map(|p| PointInfo {
                        name: p.name.clone(),
                        unit: p.unit.clone(),
                        kind: p.kind,
                        scale: p.scale,
                        offset: p.offset,
                        flags: p
                            .flags
                            .iter()
                            .map(|(bit, name)| FlagName::new(*bit, name))
                            .collect(),
                    })
                    .collect(),
            });
        }
    }
    catalog
}
