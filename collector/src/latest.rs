//! `LatestCache`: the newest value of every point in memory. The API's
//! `GET /api/v1/sites/{site}/latest`, the alerts and the live snapshots
//! read it instead of querying the database per request.
//!
//! [`LatestCache`] is fed by the live lane (the hub's broadcast of every
//! site's frames, read by every instance) and seeded at start from the
//! database with the newest frame of every layout. Newest timestamp wins,
//! so seeding and streaming may overlap in any order. If the feeder lags
//! behind the broadcast it re-seeds from the database.
//!
//! Every instance reads every site's live frames. A site this instance has
//! not received a live frame of for [`STREAM_FRESH`] (the site is quiet,
//! its edge sends no live lane, or the live topic is unreachable) is read
//! from the database instead, at most once per [`DB_REFRESH`], and merged
//! in; a site the stream feeds is merged with the database at most once per
//! [`STREAM_FRESH`], for the points whose live frames have not come yet.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use bess_protocol::{MissingReason, Reading};

use crate::live::{LiveMessage, PolledFrame};
use crate::time::{rfc3339, timestamp};

/// A site fed by this instance's stream within this long is served from memory alone.
pub const STREAM_FRESH: Duration = Duration::from_secs(30);
/// Otherwise the database is asked at most this often per site.
pub const DB_REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum LatestError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// The newest value of one point.
#[derive(Debug, Clone)]
struct Latest {
    value: Option<f64>,
    unit: Arc<str>,
    reason: Option<MissingReason>,
    ts: OffsetDateTime,
}

#[derive(Default)]
struct SiteLatest {
    /// Device → point name → newest value (names shared with the catalog).
    devices: BTreeMap<Arc<str>, BTreeMap<Arc<str>, Latest>>,
    stream_fed_at: Option<Instant>,
    db_read_at: Option<Instant>,
}

/// One point as `/latest` and the live snapshot show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LatestPoint {
    /// `SITE/DEVICE/POINT`.
    pub point: String,
    pub device: String,
    pub name: String,
    /// Engineering value; `null` when the reading is missing.
    pub value: Option<f64>,
    pub unit: String,
    /// good, stale or comm-loss.
    #[schema(value_type = String, example = "good")]
    pub quality: &'static str,
    /// Why the value is missing.
    pub reason: Option<String>,
    /// When the value was polled (RFC 3339).
    #[schema(format = DateTime)]
    pub ts: String,
}

#[derive(Default)]
pub struct LatestCache {
    sites: RwLock<HashMap<String, SiteLatest>>,
}

impl LatestCache {
    /// Merge one polled frame.
    pub fn apply_frame(&self, frame: &PolledFrame) {
        let ts = timestamp(frame.ts_ms);
        let mut sites = self.sites.write().expect("latest cache lock");
        if !sites.contains_key(&*frame.site) {
            sites.insert(frame.site.to_string(), SiteLatest::default());
        }
        let site = sites.get_mut(&*frame.site).expect("just inserted");
        site.stream_fed_at = Some(Instant::now());
        let points = site.device(&frame.layout().device);
        for (point, value, reading) in frame.values() {
            merge(
                points,
                &point.name,
                Latest {
                    value,
                    unit: point.unit.clone(),
                    reason: match reading {
                        Reading::Missing(reason) => Some(*reason),
                        _ => None,
                    },
                    ts,
                },
            );
        }
    }

    /// The site's points, sorted by device and name; `None` if the site was never seen.
    pub fn site(&self, site: &str) -> Option<Vec<LatestPoint>> {
        let sites = self.sites.read().expect("latest cache lock");
        sites.get(site).map(|s| points_of(site, s))
    }

    /// Sites in the cache.
    pub fn site_names(&self) -> Vec<String> {
        self.sites
            .read()
            .expect("latest cache lock")
            .keys()
            .cloned()
            .collect()
    }

    fn needs_database(&self, site: &str) -> bool {
        let sites = self.sites.read().expect("latest cache lock");
        match sites.get(site) {
            None => true,
            Some(s) => {
                let fed = s.stream_fed_at.is_some_and(|t| t.elapsed() < STREAM_FRESH);
                // A site the stream feeds is still read now and then: points
                // of groups whose live frames have not come yet (slow groups,
                // an instance that joined late) are in the database.
                let read_within = if fed { STREAM_FRESH } else { DB_REFRESH };
                s.db_read_at.is_none_or(|t| t.elapsed() >= read_within)
            }
        }
    }

    /// The site's latest values, reading the database first when this
    /// instance's stream does not cover the site. `None`: no such site.
    pub async fn fetch(
        &self,
        pool: &deadpool_postgres::Pool,
        site: &str,
    ) -> Result<Option<Vec<LatestPoint>>, LatestError> {
        if self.needs_database(site) {
            let client = pool.get().await?;
            match read_site(&client, site).await? {
                None => return Ok(None),
                Some(rows) => {
                    let mut sites = self.sites.write().expect("latest cache lock");
                    let entry = sites.entry(site.to_owned()).or_default();
                    entry.db_read_at = Some(Instant::now());
                    for (key, latest) in rows {
                        merge(entry.device(&key.0), &key.1, latest);
                    }
                }
            }
        }
        Ok(self.site(site))
    }

    /// Load the newest frame of every layout of every site.
    pub async fn seed(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<usize, tokio_postgres::Error> {
        let rows = client.query(&newest_sql("TRUE"), &[]).await?;
        let mut sites = self.sites.write().expect("latest cache lock");
        let now = Instant::now();
        for r in &rows {
            let (site, key, latest) = row(r);
            let entry = sites.entry(site).or_default();
            entry.db_read_at = Some(now);
            merge(entry.device(&key.0), &key.1, latest);
        }
        Ok(rows.len())
    }
}

/// (device, point name), shared with the catalog's names.
type PointKey = (Arc<str>, Arc<str>);

impl SiteLatest {
    /// The points of one device, added on first sight.
    fn device(&mut self, device: &Arc<str>) -> &mut BTreeMap<Arc<str>, Latest> {
        if !self.devices.contains_key(&**device) {
            self.devices.insert(device.clone(), BTreeMap::new());
        }
        self.devices.get_mut(&**device).expect("just added")
    }
}

/// Keep the newer of the stored and the offered value of one point.
fn merge(points: &mut BTreeMap<Arc<str>, Latest>, point: &Arc<str>, latest: Latest) {
    match points.get_mut(&**point) {
        Some(old) if old.ts >= latest.ts => {}
        Some(old) => *old = latest,
        None => {
            points.insert(point.clone(), latest);
        }
    }
}

fn points_of(site: &str, s: &SiteLatest) -> Vec<LatestPoint> {
    s.devices
        .iter()
        .flat_map(|(device, points)| {
            points.iter().map(move |(name, l)| LatestPoint {
                point: format!("{site}/{device}/{name}"),
                device: device.to_string(),
                name: name.to_string(),
                value: l.value,
                unit: l.unit.to_string(),
                quality: l.reason.map_or("good", |r| r.quality().as_str()),
                reason: l.reason.map(MissingReason::describe),
                ts: rfc3339(l.ts),
            })
        })
        .collect()
}

/// Newest frame per layout, one row per point: site, device, point, unit, ts, value, status.
fn newest_sql(filter: &str) -> String {
    format!(
        "SELECT s.name, d.name, p.name, p.unit, f.ts, f.vals[slot.i], f.status[slot.i]
         FROM layouts l
         JOIN sites s ON s.site_id = l.site_id
         JOIN devices d ON d.device_id = l.device_id
         CROSS JOIN LATERAL (
             SELECT ts, vals, status FROM frames WHERE layout_id = l.layout_id ORDER BY ts DESC LIMIT 1
         ) f
         CROSS JOIN LATERAL generate_subscripts(l.point_ids, 1) AS slot(i)
         JOIN points p ON p.point_id = l.point_ids[slot.i]
         WHERE {filter}"
    )
}

fn row(r: &tokio_postgres::Row) -> (String, PointKey, Latest) {
    let status: Option<i16> = r.get(6);
    let reason = status
        .filter(|s| *s != 0)
        .and_then(|s| MissingReason::from_code(s as u16));
    (
        r.get(0),
        (r.get::<_, &str>(1).into(), r.get::<_, &str>(2).into()),
        Latest {
            value: r.get(5),
            unit: r.get::<_, &str>(3).into(),
            reason,
            ts: r.get(4),
        },
    )
}

type SiteRows = Vec<(PointKey, Latest)>;

/// One site's newest values from the database; `None` if there is no such site.
async fn read_site(
    client: &tokio_postgres::Client,
    site: &str,
) -> Result<Option<SiteRows>, tokio_postgres::Error> {
    if client
        .query_opt("SELECT 1 FROM sites WHERE name = $1", &[&site])
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let rows = client.query(&newest_sql("s.name = $1"), &[&site]).await?;
    Ok(Some(
        rows.iter()
            .map(|r| {
                let (_, key, latest) = row(r);
                (key, latest)
            })
            .collect(),
    ))
}

/// Keep the cache current: subscribe first, then seed, then apply every
/// live frame until cancelled. Lagging re-seeds from the database.
pub async fn feed(
    cache: Arc<LatestCache>,
    mut frames: broadcast::Receiver<LiveMessage>,
    pool: deadpool_postgres::Pool,
    cancel: CancellationToken,
) {
    reseed(&cache, &pool).await;
    loop {
        tokio::select! {
            received = frames.recv() => match received {
                Ok(message) => cache.apply_frame(&message.frame),
                Err(RecvError::Lagged(missed)) => {
                    metrics::counter!("bess_collector_latest_cache_lagged_total").increment(missed);
                    tracing::warn!(missed, "latest-value cache fell behind; re-reading from the database");
                    reseed(&cache, &pool).await;
                }
                Err(RecvError::Closed) => return,
            },
            () = cancel.cancelled() => return,
        }
    }
}

async fn reseed(cache: &LatestCache, pool: &deadpool_postgres::Pool) {
    let result = async {
        let client = pool.get().await.map_err(|e| e.to_string())?;
        cache.seed(&client).await.map_err(|e| e.to_string())
    }
    .await;
    match result {
        Ok(rows) => tracing::debug!(rows, "latest-value cache seeded"),
        // Sites are then read from the database on first request.
        Err(e) => tracing::warn!("could not seed the latest-value cache: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::committed;

    fn frame(ts_ms: i64, soc: Option<f64>) -> PolledFrame {
        let reading = match soc {
            Some(soc) => Reading::Float(soc * 2.0),
            None => Reading::Missing(MissingReason::Timeout),
        };
        committed("s", ts_ms, &[("soc", "%", reading)])
    }

    #[test]
    fn the_newest_frame_wins_whatever_the_arrival_order() {
        let cache = LatestCache::default();
        cache.apply_frame(&frame(2_000, Some(50.0)));
        cache.apply_frame(&frame(1_000, Some(40.0)));
        let points = cache.site("s").unwrap();
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].value, Some(50.0));
        assert_eq!(points[0].point, "s/bms-1/soc");
    }

    #[test]
    fn a_missing_value_keeps_its_quality_and_reason() {
        let cache = LatestCache::default();
        cache.apply_frame(&frame(1_000, Some(40.0)));
        cache.apply_frame(&frame(2_000, None));
        let p = &cache.site("s").unwrap()[0];
        assert_eq!(p.value, None);
        assert_eq!(p.quality, "comm-loss");
        assert!(p.reason.is_some());
    }

    #[test]
    fn a_site_fed_by_the_stream_is_read_from_the_database_once_then_rarely() {
        let cache = LatestCache::default();
        assert!(cache.needs_database("s"));
        cache.apply_frame(&frame(1_000, Some(1.0)));
        assert!(
            cache.needs_database("s"),
            "points the stream has not shown yet are in the database"
        );
        cache
            .sites
            .write()
            .unwrap()
            .get_mut("s")
            .unwrap()
            .db_read_at = Some(Instant::now());
        assert!(!cache.needs_database("s"));
    }

    #[test]
    fn a_cached_value_shares_the_catalogs_names() {
        let cache = LatestCache::default();
        let frame = frame(1_000, Some(1.0));
        cache.apply_frame(&frame);
        let sites = cache.sites.read().unwrap();
        let (device, points) = sites["s"].devices.iter().next().unwrap();
        let (name, latest) = points.iter().next().unwrap();
        assert!(Arc::ptr_eq(device, &frame.layout().device));
        assert!(Arc::ptr_eq(name, &frame.layout().points[0].name));
        assert!(Arc::ptr_eq(&latest.unit, &frame.layout().points[0].unit));
    }
}
