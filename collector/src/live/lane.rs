//! `LiveLane`: every instance reads the whole live topic, so any instance
//! serves any site's live frames and `/latest`, whoever owns the site's
//! partition of the telemetry topic.
//!
//! The consumer is not in a group and commits nothing: it is assigned every
//! partition of the live topic `replay` back from now (so each site's
//! latest whole frames, sent at least every `live.keyframe_every`, are read
//! again and every site shows at once; older messages are history, served
//! from the database), and takes up partitions added later the same way. Each site's messages go through that site's
//! [`LiveDecoder`]; a decoded frame is matched to its layouts (from the
//! catalog the storage lane registered: cached, or read from the database at
//! most once a second per unknown catalog) and published to the
//! [`LiveHub`]. A frame not newer than the last one published for its
//! layout is dropped, so each group's frames leave in timestamp order.
//!
//! Nothing here touches the stored history: a live message is never
//! written, and its loss costs only what a dashboard shows until the next.

use deadpool_postgres::Pool;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use bess_protocol::{CatalogHash, LiveDecoder, LiveUpdate};

use super::{LiveHub, LiveMessage, PolledFrame};
use crate::catalog::{CatalogRegistry, Layouts};
use crate::derived::engine::DerivedEngine;
use crate::derived::plan::PlanSource;
use crate::ingest::KafkaSettings;

/// How often the topic's partition count is checked.
const PARTITION_CHECK: Duration = Duration::from_secs(30);
/// An unknown catalog is looked up again after this long.
const CATALOG_RETRY: Duration = Duration::from_secs(1);

/// librdkafka settings of the live reader: no group membership, no
/// commits, fetches answered as soon as a byte is there.
pub fn live_consumer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers);
    for (key, value) in &settings.properties {
        config.set(key, value);
    }
    config
        // Required by the client; never joined (partitions are assigned).
        .set("group.id", format!("{}-live", settings.group))
        .set("client.id", "bess-collector-live")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "latest")
        .set("fetch.wait.max.ms", "10")
        .set("fetch.min.bytes", "1")
        .set("fetch.error.backoff.ms", "50")
        .set("queued.max.messages.kbytes", "16384")
        .set("enable.partition.eof", "false");
    config
}

/// One site's reading state.
struct SiteLane {
    name: Arc<str>,
    decoder: LiveDecoder,
    /// Newest timestamp published per layout.
    newest: HashMap<i32, i64>,
}

pub struct LiveLane {
    consumer: StreamConsumer,
    /// Derived points computed from the live frames, as the stored lane
    /// computes them from the committed ones (`None`: none declared).
    derived: Option<LiveDerived>,
    topic: String,
    hub: LiveHub,
    catalogs: Arc<CatalogRegistry>,
    pool: Pool,
    sites: HashMap<Box<str>, SiteLane>,
    /// Catalogs not found, and when they were last looked for.
    unknown: HashMap<(Arc<str>, CatalogHash), Instant>,
    partitions: i32,
    replay: Duration,
}

impl LiveLane {
    pub fn new(
        settings: &KafkaSettings,
        topic: &str,
        replay: Duration,
        hub: LiveHub,
        catalogs: Arc<CatalogRegistry>,
        pool: Pool,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            consumer: live_consumer_config(settings).create()?,
            derived: None,
            topic: topic.to_owned(),
            hub,
            catalogs,
            pool,
            sites: HashMap::new(),
            unknown: HashMap::new(),
            partitions: 0,
            replay,
        })
    }

    /// Also publish the derived points of these rules' plans.
    pub fn with_derived(mut self, plans: Arc<dyn PlanSource>) -> Self {
        self.derived = Some(LiveDerived {
            plans,
            engine: DerivedEngine::default(),
        });
        self
    }

    /// Read until cancelled.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut check = tokio::time::interval(PARTITION_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if self.partitions == 0 {
                // Not assigned yet: look again soon rather than in 30 s.
                check.reset_after(Duration::from_secs(2));
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = check.tick() => self.assign_new_partitions().await,
                received = self.consumer.recv(), if self.partitions > 0 => match received {
                    Ok(message) => {
                        let received_ms = crate::time::unix_ms_now();
                        let key = message.key().and_then(|k| std::str::from_utf8(k).ok()).map(str::to_owned);
                        let payload = message.payload().unwrap_or_default().to_vec();
                        drop(message);
                        self.take(key, &payload, received_ms).await;
                    }
                    Err(e) => {
                        tracing::warn!("live topic: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
    }

    /// Assign the partitions this reader does not read yet, at their end.
    async fn assign_new_partitions(&mut self) {
        let consumer = &self.consumer;
        let topic = self.topic.clone();
        let count = tokio::task::block_in_place(|| {
            consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .map(|metadata| {
                    metadata
                        .topics()
                        .iter()
                        .find(|t| t.name() == topic && t.error().is_none())
                        .map_or(0, |t| t.partitions().len() as i32)
                })
        });
        let count = match count {
            Ok(count) => count,
            Err(e) => {
                tracing::warn!(topic = %self.topic, "live topic metadata: {e}");
                return;
            }
        };
        if count <= self.partitions {
            if count == 0 {
                tracing::debug!(topic = %self.topic, "live topic has no partitions yet");
            }
            return;
        }
        let since_ms = crate::time::unix_ms_now() - self.replay.as_millis() as i64;
        let start = if self.replay.is_zero() {
            Offset::End
        } else {
            Offset::Offset(since_ms)
        };
        let mut list = TopicPartitionList::new();
        for partition in self.partitions..count {
            if let Err(e) = list.add_partition_offset(&self.topic, partition, start) {
                tracing::warn!("live topic partition {partition}: {e}");
                return;
            }
        }
        if !self.replay.is_zero() {
            list = self.replay_offsets(list);
        }
        match self.consumer.incremental_assign(&list) {
            Ok(()) => {
                tracing::info!(topic = %self.topic, partitions = count, replay = ?self.replay, "reading the live topic");
                self.partitions = count;
            }
            Err(e) => tracing::warn!(topic = %self.topic, "assigning the live topic: {e}"),
        }
    }

    /// Where to start each partition: its first message at or after the
    /// timestamps in `list`, or its end where none is that new or the
    /// broker cannot say.
    fn replay_offsets(&self, list: TopicPartitionList) -> TopicPartitionList {
        let consumer = &self.consumer;
        let found = tokio::task::block_in_place(|| {
            consumer.offsets_for_times(list.clone(), Duration::from_secs(5))
        });
        let mut starts = TopicPartitionList::new();
        for element in list.elements() {
            let offset = match &found {
                Ok(found) => found
                    .find_partition(&self.topic, element.partition())
                    .filter(|e| e.error().is_ok())
                    .map_or(Offset::End, |e| match e.offset() {
                        offset @ Offset::Offset(_) => offset,
                        _ => Offset::End,
                    }),
                Err(e) => {
                    tracing::warn!(topic = %self.topic, "live topic offsets for the replay: {e}; starting at the end");
                    Offset::End
                }
            };
            let _ = starts.add_partition_offset(&self.topic, element.partition(), offset);
        }
        starts
    }

    async fn take(&mut self, key: Option<String>, payload: &[u8], received_ms: i64) {
        let Some(site) = key.filter(|k| bess_protocol::SiteId::new(k.as_str()).is_ok()) else {
            reject("bad_key");
            return;
        };
        metrics::counter!("bess_collector_live_messages_total").increment(1);
        let lane = self
            .sites
            .entry(site.as_str().into())
            .or_insert_with(|| SiteLane {
                name: site.as_str().into(),
                decoder: LiveDecoder::new(),
                newest: HashMap::new(),
            });
        let update = match lane.decoder.decode(payload) {
            Ok(update) => update,
            Err(e) => {
                tracing::debug!(site, "live message set aside: {e}");
                reject("undecodable");
                return;
            }
        };
        if update.skipped > 0 {
            metrics::counter!("bess_collector_live_frames_waiting_total")
                .increment(update.skipped as u64);
        }
        if update.frames.is_empty() {
            return;
        }
        let name = lane.name.clone();
        let Some(layouts) = self.layouts(&name, update.catalog_hash).await else {
            metrics::counter!("bess_collector_live_frames_unknown_catalog_total")
                .increment(update.frames.len() as u64);
            return;
        };
        let lane = self.sites.get_mut(site.as_str()).expect("inserted above");
        let catalog = update.catalog_hash.0;
        let keep = self
            .derived
            .as_ref()
            .is_some_and(|d| d.plans.declares_any());
        let published = publish(&self.hub, lane, &layouts, update, received_ms, keep);
        if let (Some(derived), Some(site_id)) =
            (&mut self.derived, self.catalogs.cached_site(&name))
        {
            let lane = self.sites.get_mut(site.as_str()).expect("inserted above");
            derived.publish(&self.hub, lane, site_id, catalog, &published);
        }
    }

    /// The layouts of a site's catalog, if the storage lane registered it.
    async fn layouts(&mut self, site: &Arc<str>, hash: CatalogHash) -> Option<Layouts> {
        if let Some(layouts) = self
            .catalogs
            .cached_site(site)
            .and_then(|id| self.catalogs.cached(id, hash))
        {
            return Some(layouts);
        }
        let key = (site.clone(), hash);
        if self
            .unknown
            .get(&key)
            .is_some_and(|at| at.elapsed() < CATALOG_RETRY)
        {
            return None;
        }
        match self.look_up(site, hash).await {
            Ok(Some(layouts)) => {
                self.unknown.remove(&key);
                Some(layouts)
            }
            Ok(None) => {
                self.unknown.insert(key, Instant::now());
                None
            }
            Err(e) => {
                tracing::warn!(%site, %hash, "looking up a live frame's catalog: {e:#}");
                self.unknown.insert(key, Instant::now());
                None
            }
        }
    }

    async fn look_up(&self, site: &str, hash: CatalogHash) -> anyhow::Result<Option<Layouts>> {
        let mut client = self.pool.get().await?;
        let Some(row) = client
            .query_opt("SELECT site_id FROM sites WHERE name = $1", &[&site])
            .await?
        else {
            return Ok(None);
        };
        let site_id: i32 = row.get(0);
        Ok(self.catalogs.lookup(&mut client, site_id, hash).await?)
    }
}

/// Publish a message's frames; with `keep`, hand the published ones back.
fn publish(
    hub: &LiveHub,
    lane: &mut SiteLane,
    layouts: &Layouts,
    update: LiveUpdate,
    received_ms: i64,
    keep: bool,
) -> Vec<PolledFrame> {
    let mut published = Vec::new();
    for frame in update.frames {
        let group = usize::from(frame.group.0);
        let Some(layout) = layouts.get(group) else {
            reject("unknown_group");
            continue;
        };
        if layout.points.len() != frame.values.len() {
            reject("wrong_width");
            continue;
        }
        let newest = lane.newest.entry(layout.layout_id).or_insert(i64::MIN);
        if frame.ts_ms <= *newest {
            metrics::counter!("bess_collector_live_frames_out_of_order_total").increment(1);
            continue;
        }
        *newest = frame.ts_ms;
        metrics::counter!("bess_collector_live_frames_total").increment(1);
        let polled = PolledFrame {
            site: lane.name.clone(),
            layouts: layouts.clone(),
            group,
            ts_ms: frame.ts_ms,
            received_ms,
            readings: frame.values,
        };
        if keep {
            published.push(polled.clone());
        }
        hub.publish(LiveMessage::new(polled));
    }
    published
}

/// The live lane's own derived-point state (the stored lane has another:
/// each evaluates the frames it sees, and both see the same frames).
struct LiveDerived {
    plans: Arc<dyn PlanSource>,
    engine: DerivedEngine,
}

impl LiveDerived {
    /// Publish the derived frames `frames` complete. A plan is taken from
    /// the stored lane once it has made it (it registers the derived
    /// catalog first).
    fn publish(
        &mut self,
        hub: &LiveHub,
        lane: &mut SiteLane,
        site_id: i32,
        catalog: u64,
        frames: &[PolledFrame],
    ) {
        if !self.engine.has_plan(site_id, catalog) {
            let Some((plan, layouts)) = self.plans.plan_of(site_id, catalog) else {
                return;
            };
            self.engine.install(site_id, catalog, plan, layouts);
        }
        let mut derived = Vec::new();
        for frame in frames {
            self.engine.evaluate(site_id, catalog, frame, &mut derived);
        }
        for frame in derived {
            let newest = lane
                .newest
                .entry(frame.layout().layout_id)
                .or_insert(i64::MIN);
            if frame.ts_ms <= *newest {
                continue;
            }
            *newest = frame.ts_ms;
            hub.publish(LiveMessage::new(frame));
        }
    }
}

fn reject(reason: &'static str) {
    metrics::counter!("bess_collector_live_rejected_total", "reason" => reason).increment(1);
}
