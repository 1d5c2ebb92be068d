//! The first two steps of a write: decoding a chunk of messages
//! ([`decode_chunk`], CPU only) and preparing it
//! ([`SampleWriter::resolve`] catalogs, then `encode`: shape checks and
//! binary COPY rows, with the frames rules and derived points read), into
//! the [`PreparedChunk`] that `commit` writes.

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bess_protocol::Batch;

use super::{SampleWriter, WriteError};
use crate::catalog::Layouts;
use crate::copy::FrameCopyEncoder;
use crate::dead_letter::{RejectClass, Rejection};
use crate::message::IngestMessage;
use crate::polled::PolledFrame;
use crate::site_keys::check::{self, Verdict};
use crate::site_keys::{store as key_store, EnrolledKey, SiteKeys};
use crate::storage;

/// Frame timestamps outside 1970..10000 are refused (PostgreSQL could store
/// more, but no edge clock is that wrong on purpose).
const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Messages and what decoding (and the signature check) made of each.
pub struct DecodedChunk {
    pub messages: Vec<IngestMessage>,
    pub(super) batches: Vec<Result<Batch, Rejection>>,
    /// Batches whose site or key was not in memory: `resolve` looks them
    /// up before it stores or refuses them.
    pub(super) look_up: Vec<usize>,
}

impl DecodedChunk {
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// Decode every message of a chunk and check its signature against the
/// keys in memory. CPU only: run it on the blocking pool.
pub fn decode_chunk(messages: Vec<IngestMessage>, keys: &SiteKeys) -> DecodedChunk {
    let mut batches: Vec<Result<Batch, Rejection>> = messages
        .iter()
        .enumerate()
        .map(|(index, m)| {
            Batch::decode(&m.payload).map_err(|e| Rejection {
                message: index,
                class: RejectClass::of_decode_error(&e),
                reason: format!("undecodable: {e}"),
            })
        })
        .collect();
    let payloads: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_slice()).collect();
    let decoded: Vec<Option<&Batch>> = batches.iter().map(|b| b.as_ref().ok()).collect();
    let verdicts = check::check_chunk(keys, &payloads, &decoded);
    let mut look_up = Vec::new();
    for (index, verdict) in verdicts.into_iter().enumerate() {
        match verdict {
            Some(Verdict::Rejected(class, reason)) => {
                batches[index] = Err(Rejection {
                    message: index,
                    class,
                    reason,
                })
            }
            Some(Verdict::LookUp) => look_up.push(index),
            Some(Verdict::Unsigned) => {
                metrics::counter!("bess_collector_unsigned_batches_accepted_total").increment(1)
            }
            Some(Verdict::Verified) | None => {}
        }
    }
    DecodedChunk {
        messages,
        batches,
        look_up,
    }
}

/// A gap record ready to insert.
#[derive(Debug, Clone)]
pub(super) struct GapRow {
    /// `None` for a gap of the whole site (device index 65535 on the wire).
    pub(super) device_id: Option<i32>,
    pub(super) first_ts_ms: i64,
    pub(super) last_ts_ms: i64,
    pub(super) samples: i64,
    pub(super) reason: &'static str,
}

/// One valid batch, encoded.
#[derive(Debug, Clone)]
pub struct PreparedBatch {
    pub site_id: i32,
    /// The edge catalog version its frames follow (for derived points).
    pub catalog_hash: u64,
    pub seq: i64,
    pub message: usize,
    pub frames: u64,
    pub samples: u64,
    /// Binary COPY tuples of its frames (no header/trailer).
    pub(super) rows: Bytes,
    pub(super) newest_ts_ms: Option<i64>,
    pub(super) days: BTreeSet<i64>,
    pub(super) minutes: BTreeSet<i64>,
    /// UTC hours (epoch ms) of its frames, for `lake_pending`.
    pub(super) hours: BTreeSet<i64>,
    pub(super) gaps: Vec<GapRow>,
    pub(super) live: Vec<PolledFrame>,
}

/// A chunk ready for [`SampleWriter::commit`]; a failed commit can be retried
/// with the same value.
pub struct PreparedChunk {
    pub messages: Vec<IngestMessage>,
    pub batches: Vec<PreparedBatch>,
    pub rejected: Vec<Rejection>,
    /// `commit` returns the new frames in [`WriteOutcome::live`].
    pub(super) hand_back_frames: bool,
}

/// A batch's site and catalog, or why it is set aside.
type Resolved = Vec<Result<(i32, Layouts), Rejection>>;

impl SampleWriter {
    /// The verdicts on the batches whose keys were not in memory, by index:
    /// their sites' keys fresh from the database, pinned first where the
    /// policy says so.
    async fn look_up_keys(
        &self,
        decoded: &DecodedChunk,
        client: &mut Option<deadpool_postgres::Object>,
    ) -> Result<BTreeMap<usize, Verdict>, WriteError> {
        let mut verdicts = BTreeMap::new();
        let mut fresh: BTreeMap<String, Vec<EnrolledKey>> = BTreeMap::new();
        for &index in &decoded.look_up {
            let Ok(batch) = &decoded.batches[index] else {
                continue;
            };
            let payload = &decoded.messages[index].payload;
            let site = batch.site.as_str();
            if !fresh.contains_key(site) {
                let c = connection(&self.pool, client).await?;
                let mut keys = key_store::list(&*c, Some(site)).await?;
                if keys.is_empty() && self.site_keys.policy.pin_first_key {
                    if let Some(key) = check::carried_public_key(payload) {
                        if key_store::pin_first(c, site, &key).await? {
                            metrics::counter!("bess_collector_site_keys_pinned_total").increment(1);
                            tracing::warn!(site, key_id = %bess_protocol::KeyId::of(&key), "pinned the site's key on first use");
                        }
                        keys = key_store::list(&*c, Some(site)).await?;
                    }
                }
                fresh.insert(site.to_owned(), keys.iter().map(EnrolledKey::of).collect());
            }
            verdicts.insert(index, check::judge_looked_up(payload, batch, &fresh[site]));
        }
        Ok(verdicts)
    }

    pub(super) async fn resolve(&self, decoded: &DecodedChunk) -> Result<Resolved, WriteError> {
        let mut client: Option<deadpool_postgres::Object> = None;
        let mut out = Vec::with_capacity(decoded.len());
        let looked_up = self.look_up_keys(decoded, &mut client).await?;
        for (index, batch) in decoded.batches.iter().enumerate() {
            let batch = match batch {
                Ok(batch) => batch,
                Err(rejection) => {
                    out.push(Err(rejection.clone()));
                    continue;
                }
            };
            match looked_up.get(&index) {
                Some(Verdict::Rejected(class, reason)) => {
                    out.push(Err(Rejection {
                        message: index,
                        class: *class,
                        reason: reason.clone(),
                    }));
                    continue;
                }
                Some(Verdict::Unsigned) => {
                    metrics::counter!("bess_collector_unsigned_batches_accepted_total").increment(1)
                }
                _ => {}
            }
            let reject = |class, reason| {
                Err(Rejection {
                    message: index,
                    class,
                    reason,
                })
            };
            let site_id = match self.catalogs.cached_site(batch.site.as_str()) {
                Some(id) => id,
                None => {
                    let c = connection(&self.pool, &mut client).await?;
                    self.catalogs.site_id(&*c, batch.site.as_str()).await?
                }
            };
            let layouts = match self.catalogs.cached(site_id, batch.catalog_hash) {
                Some(layouts) => layouts,
                None => match &batch.catalog {
                    Some(catalog) => {
                        let actual = catalog.hash();
                        if actual != batch.catalog_hash {
                            out.push(reject(
                                RejectClass::CatalogMismatch,
                                format!(
                                    "catalog hash {} does not match its catalog ({actual})",
                                    batch.catalog_hash
                                ),
                            ));
                            continue;
                        }
                        if let Some(group) = catalog
                            .groups
                            .iter()
                            .find(|g| usize::from(g.device) >= catalog.devices.len())
                        {
                            out.push(reject(
                                RejectClass::BadFrame,
                                format!(
                                    "catalog group {:?} names device {} of {}",
                                    group.name,
                                    group.device,
                                    catalog.devices.len()
                                ),
                            ));
                            continue;
                        }
                        let c = connection(&self.pool, &mut client).await?;
                        self.catalogs
                            .register(c, site_id, batch.catalog_hash, catalog)
                            .await?
                    }
                    None => {
                        let c = connection(&self.pool, &mut client).await?;
                        match self.catalogs.lookup(c, site_id, batch.catalog_hash).await? {
                            Some(layouts) => layouts,
                            None => {
                                out.push(reject(
                                    RejectClass::UnknownCatalog,
                                    format!(
                                        "unknown catalog {} for site {}",
                                        batch.catalog_hash, batch.site
                                    ),
                                ));
                                continue;
                            }
                        }
                    }
                },
            };
            if let Err(reason) = check_shape(batch, &layouts) {
                out.push(reject(RejectClass::BadFrame, reason));
                continue;
            }
            if let Some(rules) = &self.rules {
                let c = connection(&self.pool, &mut client).await?;
                rules
                    .prepare_derived(
                        &self.catalogs,
                        c,
                        site_id,
                        batch.site.as_str(),
                        batch.catalog_hash.0,
                        &layouts,
                    )
                    .await?;
            }
            out.push(Ok((site_id, layouts)));
        }
        Ok(out)
    }
}

async fn connection<'a>(
    pool: &deadpool_postgres::Pool,
    slot: &'a mut Option<deadpool_postgres::Object>,
) -> Result<&'a mut tokio_postgres::Client, WriteError> {
    if slot.is_none() {
        *slot = Some(pool.get().await?);
    }
    Ok(slot.as_mut().expect("just set"))
}

/// Frames and gaps must fit the catalog the batch names.
fn check_shape(batch: &Batch, layouts: &Layouts) -> Result<(), String> {
    for frame in &batch.frames {
        let Some(layout) = layouts.get(usize::from(frame.group.0)) else {
            return Err(format!(
                "frame names group {} but the catalog has {}",
                frame.group.0,
                layouts.len()
            ));
        };
        if layout.points.len() != frame.values.len() {
            return Err(format!(
                "frame of group {:?} has {} values, the catalog {}",
                layout.group,
                frame.values.len(),
                layout.points.len()
            ));
        }
        if !(0..=MAX_TS_MS).contains(&frame.ts_ms) {
            return Err(format!(
                "frame timestamp {} ms is out of range",
                frame.ts_ms
            ));
        }
    }
    for gap in &batch.gaps {
        if !gap.is_whole_site() && usize::from(gap.device) >= layouts.device_ids.len() {
            return Err(format!(
                "gap names device {} but the catalog has {}",
                gap.device,
                layouts.device_ids.len()
            ));
        }
        if !(0..=MAX_TS_MS).contains(&gap.first_ts_ms) || !(0..=MAX_TS_MS).contains(&gap.last_ts_ms)
        {
            return Err("gap timestamp out of range".into());
        }
    }
    Ok(())
}

/// Encode the accepted batches (blocking pool).
pub(super) fn encode(decoded: DecodedChunk, resolved: Resolved, live: bool) -> PreparedChunk {
    let DecodedChunk {
        messages, batches, ..
    } = decoded;
    let mut prepared = Vec::with_capacity(batches.len());
    let mut rejected = Vec::new();
    for ((index, batch), resolution) in batches.into_iter().enumerate().zip(resolved) {
        let (batch, (site_id, layouts)) = match (batch, resolution) {
            (Ok(batch), Ok(resolution)) => (batch, resolution),
            (_, Err(rejection)) => {
                rejected.push(rejection);
                continue;
            }
            (Err(rejection), _) => {
                rejected.push(rejection);
                continue;
            }
        };
        let mut encoder = FrameCopyEncoder {
            buf: Vec::with_capacity(batch.sample_count() * 14 + batch.frames.len() * 48),
        };
        let mut out = PreparedBatch {
            site_id,
            catalog_hash: batch.catalog_hash.0,
            seq: batch.seq.0 as i64,
            message: index,
            frames: batch.frames.len() as u64,
            samples: batch.sample_count() as u64,
            rows: Bytes::new(),
            newest_ts_ms: batch.frames.iter().map(|f| f.ts_ms).max(),
            days: BTreeSet::new(),
            minutes: BTreeSet::new(),
            hours: BTreeSet::new(),
            gaps: Vec::new(),
            live: Vec::new(),
        };
        let site: Option<Arc<str>> = live.then(|| batch.site.as_str().into());
        for frame in &batch.frames {
            let group = usize::from(frame.group.0);
            let layout = &layouts[group];
            encoder.frame(layout.layout_id, frame.ts_ms, &layout.points, &frame.values);
            out.days.insert(storage::day_of(frame.ts_ms));
            out.minutes.insert(storage::minute_of(frame.ts_ms));
            out.hours.insert(storage::hour_of(frame.ts_ms));
            if let Some(site) = &site {
                out.live.push(PolledFrame {
                    site: site.clone(),
                    layouts: layouts.clone(),
                    group,
                    ts_ms: frame.ts_ms,
                    received_ms: messages[index].received_ms,
                    readings: frame.values.clone(),
                });
            }
        }
        out.rows = Bytes::from(encoder.buf);
        out.gaps = batch
            .gaps
            .iter()
            .map(|g| GapRow {
                device_id: (!g.is_whole_site()).then(|| layouts.device_ids[usize::from(g.device)]),
                first_ts_ms: g.first_ts_ms,
                last_ts_ms: g.last_ts_ms,
                samples: g.samples.min(i64::MAX as u64) as i64,
                reason: g.reason.as_str(),
            })
            .collect();
        prepared.push(out);
    }
    PreparedChunk {
        messages,
        batches: prepared,
        rejected,
        hand_back_frames: false,
    }
}
