//! `CatalogRegistry`: registers the sites, devices, points and poll-group
//! layouts an edge announces in its catalog, and maps a batch's
//! (site, catalog hash) to those layouts. Cached in memory; the database is
//! the source of truth, so any instance can resolve any catalog.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_postgres::GenericClient;

use bess_protocol::{Catalog, CatalogHash, GroupInfo};

#[derive(Debug, Clone)]
pub struct PointMeta {
    pub point_id: i32,
    /// Shared with every live frame and cached value of the point.
    pub name: Arc<str>,
    pub unit: Arc<str>,
    pub scale: f64,
    pub offset: f64,
    /// A bitfield's named flags: (bit, name).
    pub flags: Arc<[(u8, Arc<str>)]>,
}

impl PointMeta {
    pub fn engineering(&self, raw: f64) -> f64 {
        bess_protocol::engineering_value(raw, self.scale, self.offset)
    }
}

/// One poll group of one catalog version as stored in `layouts`.
#[derive(Debug, Clone)]
pub struct Layout {
    pub layout_id: i32,
    pub device_id: i32,
    pub device: Arc<str>,
    pub interval_ms: u32,
    pub group: Arc<str>,
    pub points: Vec<PointMeta>,
}

/// One catalog version as registered: its layouts, indexed by the frame's
/// group index, and its devices' ids, indexed like the catalog's devices
/// (gap records name devices by that index).
#[derive(Debug, Clone)]
pub struct CatalogLayouts {
    pub groups: Vec<Layout>,
    pub device_ids: Vec<i32>,
}

impl std::ops::Deref for CatalogLayouts {
    type Target = [Layout];
    fn deref(&self) -> &[Layout] {
        &self.groups
    }
}

pub type Layouts = Arc<CatalogLayouts>;

#[derive(Default)]
pub struct CatalogRegistry {
    sites: Mutex<HashMap<String, i32>>,
    layouts: Mutex<HashMap<(i32, CatalogHash), Layouts>>,
}

impl CatalogRegistry {
    /// The site's id, registering the site on first sight.
    pub async fn site_id(
        &self,
        client: &impl GenericClient,
        name: &str,
    ) -> Result<i32, tokio_postgres::Error> {
        if let Some(&id) = self.sites.lock().expect("lock").get(name) {
            return Ok(id);
        }
        let row = client
            .query_one(
                "INSERT INTO sites (name) VALUES ($1)
                 ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING site_id",
                &[&name],
            )
            .await?;
        let id: i32 = row.get(0);
        self.sites.lock().expect("lock").insert(name.to_owned(), id);
        Ok(id)
    }

    /// Store a catalog and its devices, points and layouts (idempotent).
    pub async fn register(
        &self,
        client: &mut tokio_postgres::Client,
        site_id: i32,
        hash: CatalogHash,
        catalog: &Catalog,
    ) -> Result<Layouts, tokio_postgres::Error> {
        if let Some(layouts) = self.cached(site_id, hash) {
            return Ok(layouts);
        }
        if let Some(layouts) = registered(client, site_id, hash, catalog).await? {
            return Ok(self.remember(site_id, hash, layouts));
        }
        let tx = client.transaction().await?;
        let body = serde_json::to_value(catalog).expect("a catalog always serializes");
        tx.execute(
            "INSERT INTO catalogs (site_id, catalog_hash, body) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&site_id, &(hash.0 as i64), &body],
        )
        .await?;
        let mut device_ids = Vec::with_capacity(catalog.devices.len());
        for device in &catalog.devices {
            let row = tx
                .query_one(
                    "INSERT INTO devices (site_id, name, model) VALUES ($1, $2, $3)
                     ON CONFLICT (site_id, name) DO UPDATE SET model = EXCLUDED.model RETURNING device_id",
                    &[&site_id, &device.name, &device.model],
                )
                .await?;
            device_ids.push(row.get::<_, i32>(0));
        }
        let mut layouts = Vec::with_capacity(catalog.groups.len());
        for (index, group) in catalog.groups.iter().enumerate() {
            let device_id = device_ids[usize::from(group.device)];
            let mut point_ids = Vec::with_capacity(group.points.len());
            for point in &group.points {
                let row = tx
                    .query_one(
                        "INSERT INTO points (device_id, name, unit, kind) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (device_id, name) DO UPDATE SET unit = EXCLUDED.unit, kind = EXCLUDED.kind
                         RETURNING point_id",
                        &[&device_id, &point.name, &point.unit, &point.kind.as_str()],
                    )
                    .await?;
                point_ids.push(row.get::<_, i32>(0));
            }
            let row = tx
                .query_one(
                    "INSERT INTO layouts (site_id, catalog_hash, group_index, device_id, group_name, interval_ms, point_ids)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (site_id, catalog_hash, group_index) DO UPDATE SET point_ids = EXCLUDED.point_ids
                     RETURNING layout_id",
                    &[
                        &site_id,
                        &(hash.0 as i64),
                        &(index as i32),
                        &device_id,
                        &group.name,
                        &(group.interval_ms.min(i32::MAX as u32) as i32),
                        &point_ids,
                    ],
                )
                .await?;
            layouts.push(layout_of(catalog, group, row.get(0), device_id, &point_ids));
        }
        tx.commit().await?;
        Ok(self.remember(
            site_id,
            hash,
            CatalogLayouts {
                groups: layouts,
                device_ids,
            },
        ))
    }

    fn remember(&self, site_id: i32, hash: CatalogHash, layouts: CatalogLayouts) -> Layouts {
        let layouts = Arc::new(layouts);
        self.layouts
            .lock()
            .expect("lock")
            .insert((site_id, hash), layouts.clone());
        layouts
    }

    /// Layouts of a catalog seen before, by this or another instance.
    pub async fn lookup(
        &self,
        client: &mut tokio_postgres::Client,
        site_id: i32,
        hash: CatalogHash,
    ) -> Result<Option<Layouts>, tokio_postgres::Error> {
        if let Some(layouts) = self.cached(site_id, hash) {
            return Ok(Some(layouts));
        }
        let row = client
            .query_opt(
                "SELECT body FROM catalogs WHERE site_id = $1 AND catalog_hash = $2",
                &[&site_id, &(hash.0 as i64)],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let body: serde_json::Value = row.get(0);
        match serde_json::from_value::<Catalog>(body) {
            Ok(catalog) => self
                .register(client, site_id, hash, &catalog)
                .await
                .map(Some),
            Err(e) => {
                tracing::error!(site_id, %hash, "stored catalog is unreadable: {e}");
                Ok(None)
            }
        }
    }

    /// The site's id if this instance has seen it.
    pub fn cached_site(&self, name: &str) -> Option<i32> {
        self.sites.lock().expect("lock").get(name).copied()
    }

    /// The layouts of a catalog this instance has registered or looked up.
    pub fn cached(&self, site_id: i32, hash: CatalogHash) -> Option<Layouts> {
        self.layouts
            .lock()
            .expect("lock")
            .get(&(site_id, hash))
            .cloned()
    }
}

/// The layouts of a catalog registered before (by any instance), read back
/// in two queries instead of upserting every device, point and layout
/// again: what a restarted collector does for every site. `None` when the
/// catalog is not (completely) registered yet.
async fn registered(
    client: &impl GenericClient,
    site_id: i32,
    hash: CatalogHash,
    catalog: &Catalog,
) -> Result<Option<CatalogLayouts>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT group_index, layout_id, device_id, point_ids FROM layouts
             WHERE site_id = $1 AND catalog_hash = $2 ORDER BY group_index",
            &[&site_id, &(hash.0 as i64)],
        )
        .await?;
    if rows.len() != catalog.groups.len() {
        return Ok(None);
    }
    let names: Vec<&str> = catalog.devices.iter().map(|d| d.name.as_str()).collect();
    let device_rows = client
        .query(
            "SELECT name, device_id FROM devices WHERE site_id = $1 AND name = ANY($2)",
            &[&site_id, &names],
        )
        .await?;
    let by_name: HashMap<String, i32> = device_rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let Some(device_ids) = names
        .iter()
        .map(|n| by_name.get(*n).copied())
        .collect::<Option<Vec<i32>>>()
    else {
        return Ok(None);
    };
    let mut groups = Vec::with_capacity(rows.len());
    for (index, (group, row)) in catalog.groups.iter().zip(&rows).enumerate() {
        let group_index: i32 = row.get(0);
        let device_id: i32 = row.get(2);
        let point_ids: Vec<i32> = row.get(3);
        let Some(&expected_device) = device_ids.get(usize::from(group.device)) else {
            return Ok(None);
        };
        if group_index != index as i32
            || device_id != expected_device
            || point_ids.len() != group.points.len()
        {
            return Ok(None);
        }
        groups.push(layout_of(catalog, group, row.get(1), device_id, &point_ids));
    }
    Ok(Some(CatalogLayouts { groups, device_ids }))
}

/// One poll group of a catalog as a [`Layout`], given the ids it was registered under.
fn layout_of(
    catalog: &Catalog,
    group: &GroupInfo,
    layout_id: i32,
    device_id: i32,
    point_ids: &[i32],
) -> Layout {
    Layout {
        layout_id,
        device_id,
        device: catalog.devices[usize::from(group.device)]
            .name
            .as_str()
            .into(),
        interval_ms: group.interval_ms,
        group: group.name.as_str().into(),
        points: group
            .points
            .iter()
            .zip(point_ids)
            .map(|(point, &point_id)| PointMeta {
                point_id,
                name: point.name.as_str().into(),
                unit: point.unit.as_str().into(),
                scale: point.scale,
                offset: point.offset,
                flags: point
                    .flags
                    .iter()
                    .map(|f| (f.bit, Arc::from(f.name.as_str())))
                    .collect(),
            })
            .collect(),
    }
}
