//! The disk cap: when sealed batches outgrow `buffer.max_size`, room is
//! made oldest first, measurements before events.
//!
//! The order: first (if configured) the backlog's fast measurement groups
//! are thinned to min/max/last per bucket; then whole batches without
//! status/alarm groups go, then the measurement frames of mixed batches, and
//! only then event frames.
//!
//! Invariants:
//! - Every dropped or thinned sample is counted into a gap record queued in
//!   the same transaction that removes it, so the cloud knows exactly what
//!   is missing (`Dropped::samples` equals the samples those records add).
//! - Batches the uplink has in flight are never touched.
//! - A kept frame stays in the batch, and under the sequence number, it was
//!   sealed in: a batch that may already have been delivered never
//!   reappears with other content under another number.
//! - A batch that carries a catalog is kept (emptied of frames) until it is
//!   delivered; gap records a dropped batch carried are queued again.
//! - Making room always returns: a batch that cannot shrink further is no
//!   longer a candidate.

use std::collections::{BTreeMap, HashSet};

use rusqlite::{params, OptionalExtension};

use bess_protocol::{Batch, Catalog, CatalogHash, Gap, GapReason};

use super::content::{content_of, event_groups, BatchContent};
use super::gaps::{count_into_gap, queue_gap};
use super::{BufferError, SqliteBuffer};

/// What making room under the disk cap did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub batches_removed: u64,
    pub batches_trimmed: u64,
    /// All samples removed from the buffer (each one reported in a gap record).
    pub samples: u64,
    /// Of those, the ones removed by thinning the backlog.
    pub downsampled: u64,
}

impl SqliteBuffer {
    /// Downsample the backlog (min/max/last per `bucket`) before dropping
    /// anything under the disk cap; `None` turns it off.
    pub fn set_downsampling(&mut self, bucket: Option<std::time::Duration>) {
        self.downsample_bucket_ms = bucket.map(|b| (b.as_millis() as i64).max(1));
    }

    /// Remember a catalog so dropped batches can be reported per device.
    pub fn remember_catalog(&mut self, catalog: &Catalog) -> Result<(), BufferError> {
        // The canonical bytes: a catalog stored before flag names existed
        // reads back the same.
        let body = catalog.to_bytes();
        self.conn.execute(
            "INSERT OR IGNORE INTO catalogs (hash, body) VALUES (?1, ?2)",
            params![catalog.hash().0 as i64, body],
        )?;
        Ok(())
    }

    /// Make room until the sealed batches fit in `cap_bytes`, in the order
    /// the module doc gives, recording a gap for every dropped sample.
    pub fn make_room(&mut self, cap_bytes: u64) -> Result<Dropped, BufferError> {
        let mut dropped = Dropped::default();
        let mut total = self.payload_bytes()?;
        if let Some(bucket_ms) = self.downsample_bucket_ms {
            while total > cap_bytes {
                let Some(saved) = self.downsample_oldest(bucket_ms, &mut dropped)? else {
                    break;
                };
                total = total.saturating_sub(saved);
            }
        }
        // Candidates oldest first, by content class; in-flight batches are skipped.
        for class in [
            BatchContent::Measurements,
            BatchContent::Mixed,
            BatchContent::Events,
        ] {
            while total > cap_bytes {
                let Some((seq, payload)) = self.oldest_droppable(class)? else {
                    break;
                };
                let before = payload.len() as u64;
                let after = self.drop_from_batch(seq, &payload, class, &mut dropped)?;
                total = total - before + after;
            }
        }
        Ok(dropped)
    }

    /// Thin the oldest run of not-yet-thinned batches (same catalog, about
    /// two buckets of data) to min/max/last per bucket for fast measurement
    /// groups. Returns the bytes saved, or `None` when nothing is left to thin.
    fn downsample_oldest(
        &mut self,
        bucket_ms: i64,
        dropped: &mut Dropped,
    ) -> Result<Option<u64>, BufferError> {
        let signer = self.signer.clone();
        let mut run: Vec<(u64, Batch, usize)> = Vec::new();
        {
            let mut stmt = self.conn.prepare_cached(
                "SELECT seq, payload FROM batches WHERE downsampled = 0 AND content IN (?1, ?2) ORDER BY seq LIMIT 4096",
            )?;
            let mut rows = stmt.query(params![
                BatchContent::Measurements as i64,
                BatchContent::Mixed as i64
            ])?;
            while let Some(row) = rows.next()? {
                let seq = row.get::<_, i64>(0)? as u64;
                if self.in_flight.contains(&seq) {
                    if run.is_empty() {
                        continue;
                    }
                    break;
                }
                let payload: Vec<u8> = row.get(1)?;
                let batch = Batch::decode(&payload)
                    .map_err(|source| BufferError::Decode { seq, source })?;
                if run
                    .first()
                    .is_some_and(|(_, first, _)| first.catalog_hash != batch.catalog_hash)
                {
                    break;
                }
                run.push((seq, batch, payload.len()));
                let span = {
                    let ts = run
                        .iter()
                        .flat_map(|(_, b, _)| b.frames.iter().map(|f| f.ts_ms));
                    let (lo, hi) =
                        ts.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
                    hi.saturating_sub(lo)
                };
                if span >= bucket_ms * 2 {
                    break;
                }
            }
        }
        if run.is_empty() {
            return Ok(None);
        }
        let catalog = self.catalog(run[0].1.catalog_hash)?;
        let events = catalog.as_ref().map(event_groups).unwrap_or_default();
        let fast = |group: u16| {
            catalog
                .as_ref()
                .and_then(|c| c.groups.get(usize::from(group)))
                .is_some_and(|g| i64::from(g.interval_ms) < bucket_ms)
        };
        // Choose what to keep over the whole run, but leave every kept frame
        // in the batch (and under the sequence number) it was sealed in, so a
        // batch that was already delivered can never reappear with other content.
        let mut by_group: BTreeMap<u16, Vec<(usize, usize)>> = BTreeMap::new();
        for (b, (_, batch, _)) in run.iter().enumerate() {
            for (f, frame) in batch.frames.iter().enumerate() {
                if !events.contains(&frame.group.0) && fast(frame.group.0) {
                    by_group.entry(frame.group.0).or_default().push((b, f));
                }
            }
        }
        let mut thinned: HashSet<(usize, usize)> = HashSet::new();
        for members in by_group.values() {
            let frames: Vec<&bess_protocol::Frame> =
                members.iter().map(|&(b, f)| &run[b].1.frames[f]).collect();
            let kept = frames_to_keep(&frames, bucket_ms);
            thinned.extend(
                members
                    .iter()
                    .enumerate()
                    .filter(|(n, _)| !kept.contains(n))
                    .map(|(_, &bf)| bf),
            );
        }
        let mut per_device: BTreeMap<u16, Gap> = BTreeMap::new();
        let mut saved = 0u64;
        let tx = self.conn.transaction()?;
        for (b, (seq, mut batch, old_len)) in run.into_iter().enumerate() {
            let before = batch.frames.len();
            let mut index = 0;
            batch.frames.retain(|frame| {
                let keep = !thinned.contains(&(b, index));
                index += 1;
                if !keep {
                    count_into_gap(
                        &mut per_device,
                        catalog.as_ref(),
                        frame,
                        GapReason::Downsampled,
                    );
                }
                keep
            });
            if batch.frames.len() == before {
                tx.execute(
                    "UPDATE batches SET downsampled = 1 WHERE seq = ?1",
                    params![seq as i64],
                )?;
            } else if batch.frames.is_empty() && batch.gaps.is_empty() && batch.catalog.is_none() {
                tx.execute("DELETE FROM batches WHERE seq = ?1", params![seq as i64])?;
                dropped.batches_removed += 1;
                saved += old_len as u64;
            } else {
                let bytes = super::encode_for_uplink(&batch, signer.as_deref())?;
                let samples: usize = batch.frames.iter().map(|f| f.values.len()).sum();
                tx.execute(
                    "UPDATE batches SET payload = ?2, frames = ?3, samples = ?4, content = ?5, downsampled = 1 WHERE seq = ?1",
                    params![seq as i64, bytes, batch.frames.len() as i64, samples as i64, content_of(&batch.frames, &events) as i64],
                )?;
                dropped.batches_trimmed += 1;
                saved += (old_len as u64).saturating_sub(bytes.len() as u64);
            }
        }
        for gap in per_device.values() {
            queue_gap(&tx, gap)?;
            dropped.samples += gap.samples;
            dropped.downsampled += gap.samples;
        }
        tx.commit()?;
        Ok(Some(saved))
    }

    fn oldest_droppable(&self, class: BatchContent) -> Result<Option<(u64, Vec<u8>)>, BufferError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, payload FROM batches WHERE content = ?1 ORDER BY seq")?;
        let mut rows = stmt.query(params![class as i64])?;
        while let Some(row) = rows.next()? {
            let seq = row.get::<_, i64>(0)? as u64;
            if !self.in_flight.contains(&seq) {
                return Ok(Some((seq, row.get(1)?)));
            }
        }
        Ok(None)
    }

    /// Drop a whole batch (measurements, events) or its measurement frames
    /// (mixed). Returns the batch's new payload size (0 when removed).
    fn drop_from_batch(
        &mut self,
        seq: u64,
        payload: &[u8],
        class: BatchContent,
        dropped: &mut Dropped,
    ) -> Result<u64, BufferError> {
        let signer = self.signer.clone();
        let mut batch =
            Batch::decode(payload).map_err(|source| BufferError::Decode { seq, source })?;
        let catalog = self.catalog(batch.catalog_hash)?;
        let event_groups = catalog.as_ref().map(event_groups).unwrap_or_default();
        let (keep, lose): (Vec<_>, Vec<_>) = match class {
            BatchContent::Mixed => batch
                .frames
                .drain(..)
                .partition(|f| event_groups.contains(&f.group.0)),
            _ => (Vec::new(), std::mem::take(&mut batch.frames)),
        };
        // One gap per device over the dropped frames.
        let mut per_device: BTreeMap<u16, Gap> = BTreeMap::new();
        for frame in &lose {
            count_into_gap(&mut per_device, catalog.as_ref(), frame, GapReason::DiskCap);
        }
        let tx = self.conn.transaction()?;
        for gap in per_device.values() {
            queue_gap(&tx, gap)?;
            dropped.samples += gap.samples;
        }
        // Gap records this batch carried travel on in the next sealed batch.
        if keep.is_empty() {
            for gap in batch.gaps.drain(..) {
                queue_gap(&tx, &gap)?;
            }
        }
        // A catalog must still reach the cloud: keep the batch (and its
        // number) while it carries one; it then holds no frames and is never
        // chosen again.
        let must_keep = !keep.is_empty() || batch.catalog.is_some();
        let new_size = if must_keep {
            let content = if keep.is_empty() {
                BatchContent::Carrier
            } else {
                BatchContent::Events
            };
            batch.frames = keep;
            let bytes = super::encode_for_uplink(&batch, signer.as_deref())?;
            let samples: usize = batch.frames.iter().map(|f| f.values.len()).sum();
            tx.execute(
                "UPDATE batches SET payload = ?2, frames = ?3, samples = ?4, content = ?5 WHERE seq = ?1",
                params![seq as i64, bytes, batch.frames.len() as i64, samples as i64, content as i64],
            )?;
            dropped.batches_trimmed += 1;
            bytes.len() as u64
        } else {
            tx.execute("DELETE FROM batches WHERE seq = ?1", params![seq as i64])?;
            dropped.batches_removed += 1;
            0
        };
        tx.commit()?;
        Ok(new_size)
    }

    fn catalog(&self, hash: CatalogHash) -> Result<Option<Catalog>, BufferError> {
        let body: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT body FROM catalogs WHERE hash = ?1",
                params![hash.0 as i64],
                |r| r.get(0),
            )
            .optional()?;
        Ok(body.and_then(|b| Catalog::from_bytes(&b).ok()))
    }
}

/// Indices of the frames to keep when thinning one measurement group to, per
/// bucket, the frames holding each point's minimum and maximum and the last
/// frame. Frames with a missing value are kept (the hole stays visible).
fn frames_to_keep(frames: &[&bess_protocol::Frame], bucket_ms: i64) -> HashSet<usize> {
    let mut keep = HashSet::new();
    let mut buckets: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, frame) in frames.iter().enumerate() {
        buckets
            .entry(frame.ts_ms.div_euclid(bucket_ms))
            .or_default()
            .push(i);
    }
    for members in buckets.values() {
        keep.insert(
            *members
                .iter()
                .max_by_key(|&&i| frames[i].ts_ms)
                .expect("non-empty bucket"),
        );
        let slots = frames[members[0]].values.len();
        for slot in 0..slots {
            let values = members
                .iter()
                .filter_map(|&i| frames[i].values.get(slot)?.raw().map(|v| (i, v)));
            let mut min: Option<(usize, f64)> = None;
            let mut max: Option<(usize, f64)> = None;
            for (i, v) in values {
                if min.is_none_or(|(_, m)| v < m) {
                    min = Some((i, v));
                }
                if max.is_none_or(|(_, m)| v > m) {
                    max = Some((i, v));
                }
            }
            keep.extend(min.map(|(i, _)| i));
            keep.extend(max.map(|(i, _)| i));
        }
        for &i in members {
            if frames[i].values.iter().any(|r| r.raw().is_none()) {
                keep.insert(i);
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::fixtures::{catalog, decode_all, frames, seal_frames};
    use crate::buffer::SealSummary;
    use bess_protocol::{BatchSeq, Frame, GroupIndex, Reading, SiteId};

    #[test]
    fn a_remembered_catalog_reads_back_with_its_flag_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 1).unwrap();
        let plain = catalog();
        let mut named = catalog();
        named.groups[1].points[0].flags = vec![
            bess_protocol::FlagName::new(0, "overvoltage"),
            bess_protocol::FlagName::new(3, "fire"),
        ];
        for catalog in [&plain, &named] {
            buffer.remember_catalog(catalog).unwrap();
            assert_eq!(
                buffer.catalog(catalog.hash()).unwrap().as_ref(),
                Some(catalog)
            );
        }
        // Stored as its canonical bytes: for a catalog without flag names,
        // the bytes that rows written before flag names existed hold.
        let stored: Vec<u8> = buffer
            .conn
            .query_row(
                "SELECT body FROM catalogs WHERE hash = ?1",
                params![plain.hash().0 as i64],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, plain.to_bytes());
    }

    #[test]
    fn the_disk_cap_drops_measurements_oldest_first_and_reports_every_sample() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 1).unwrap();
        let catalog = catalog();
        buffer.remember_catalog(&catalog).unwrap();
        let mut total_samples = 0u64;
        for i in 0..40 {
            let groups: &[u16] = if i % 2 == 0 { &[0, 0] } else { &[0, 1] };
            let f = frames(groups, 1_000_000 + i * 10);
            total_samples += f.iter().map(|f| f.values.len() as u64).sum::<u64>();
            seal_frames(&mut buffer, &catalog, f);
        }
        let cap = buffer.payload_bytes().unwrap() / 2;
        let dropped = buffer.make_room(cap).unwrap();
        assert!(buffer.payload_bytes().unwrap() <= cap);
        assert!(dropped.samples > 0);

        // What is left plus what the gap records report is everything sealed.
        let pending: Vec<Gap> = {
            let mut stmt = buffer
                .conn
                .prepare("SELECT device, samples FROM pending_gaps")
                .unwrap();
            stmt.query_map([], |r| {
                Ok(Gap {
                    device: r.get::<_, i64>(0)? as u16,
                    first_ts_ms: 0,
                    last_ts_ms: 0,
                    samples: r.get::<_, i64>(1)? as u64,
                    reason: GapReason::DiskCap,
                })
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        let reported: u64 = pending.iter().map(|g| g.samples).sum();
        assert_eq!(reported, dropped.samples);
        let left: u64 = decode_all(&buffer)
            .iter()
            .map(|b| b.sample_count() as u64)
            .sum();
        assert_eq!(left + reported, total_samples);
        // Alarm frames (device 1) were not touched: measurements went first.
        assert!(pending.iter().all(|g| g.device == 0), "{pending:?}");
        let alarm_frames: usize = decode_all(&buffer)
            .iter()
            .flat_map(|b| &b.frames)
            .filter(|f| f.group.0 == 1)
            .count();
        assert_eq!(alarm_frames, 20);
    }

    #[test]
    fn with_a_key_every_sealed_and_every_rewritten_batch_is_signed() {
        use bess_protocol::signature::{signed_part, verify};
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 1).unwrap();
        let signer = bess_protocol::SiteSigner::from_seed([3; 32]);
        buffer.set_signer(Some(signer.clone()));
        let catalog = catalog();
        buffer.remember_catalog(&catalog).unwrap();
        for i in 0..40 {
            seal_frames(&mut buffer, &catalog, frames(&[0, 1], 1_000_000 + i * 10));
        }
        let cap = buffer.payload_bytes().unwrap() / 2;
        assert!(buffer.make_room(cap).unwrap().samples > 0);
        let payloads: Vec<Vec<u8>> = {
            let mut stmt = buffer.conn.prepare("SELECT payload FROM batches").unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert!(!payloads.is_empty());
        for payload in &payloads {
            let header = bess_protocol::Header::parse(payload).unwrap();
            let part = signed_part(payload, &header).expect("signed");
            verify(&part, &signer.public_key()).unwrap();
        }
    }

    #[test]
    fn gap_records_travel_in_the_next_sealed_batch_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 1).unwrap();
        let catalog = catalog();
        buffer.remember_catalog(&catalog).unwrap();
        for i in 0..4 {
            seal_frames(&mut buffer, &catalog, frames(&[0], 1_000 + i));
        }
        let dropped = buffer.make_room(1).unwrap();
        assert_eq!(dropped.batches_removed, 4);
        let next = seal_frames(&mut buffer, &catalog, frames(&[1], 2_000));
        let after = seal_frames(&mut buffer, &catalog, frames(&[1], 3_000));
        let batches = decode_all(&buffer);
        let carrier = batches.iter().find(|b| b.seq == next).unwrap();
        assert_eq!(carrier.gaps.iter().map(|g| g.samples).sum::<u64>(), 8);
        assert!(batches
            .iter()
            .find(|b| b.seq == after)
            .unwrap()
            .gaps
            .is_empty());
        assert_eq!(buffer.stats().unwrap().pending_gaps, 0);
    }

    #[test]
    fn batches_in_flight_are_never_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 1).unwrap();
        let catalog = catalog();
        buffer.remember_catalog(&catalog).unwrap();
        let first = seal_frames(&mut buffer, &catalog, frames(&[0], 1));
        seal_frames(&mut buffer, &catalog, frames(&[0], 2));
        let taken = buffer.take_for_sending(None, 1).unwrap();
        assert!(
            buffer
                .take_for_sending(None, 1)
                .unwrap()
                .iter()
                .all(|b| b.seq != first),
            "never handed out twice"
        );
        buffer.settle(&[BatchSeq(first.0 + 1)]);
        assert_eq!(taken[0].seq, first);
        buffer.make_room(0).unwrap();
        assert_eq!(
            buffer
                .oldest(None, 10)
                .unwrap()
                .iter()
                .map(|b| b.seq)
                .collect::<Vec<_>>(),
            vec![first]
        );
        buffer.settle(&[first]);
        buffer.make_room(0).unwrap();
        assert!(buffer.oldest(None, 10).unwrap().is_empty());
    }

    #[test]
    fn downsampling_keeps_min_max_and_last_per_bucket_and_reports_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 1).unwrap();
        buffer.set_downsampling(Some(std::time::Duration::from_secs(60)));
        let catalog = catalog();
        buffer.remember_catalog(&catalog).unwrap();
        // Two minutes of a 1 s measurement group, one batch per second.
        let mut sealed = 0u64;
        for t in 0..120i64 {
            let value = if t == 17 {
                9_000
            } else if t == 42 {
                -9_000
            } else {
                t % 7
            };
            let frame = Frame {
                group: GroupIndex(0),
                ts_ms: 60_000 * 1000 + t * 1000,
                values: vec![Reading::Int(value), Reading::Int(t)],
            };
            sealed += 2;
            seal_frames(&mut buffer, &catalog, vec![frame]);
        }
        let before = buffer.payload_bytes().unwrap();
        let dropped = buffer.make_room(before / 2).unwrap();
        assert!(dropped.downsampled > 0);
        assert_eq!(
            dropped.samples, dropped.downsampled,
            "thinning alone made room: nothing dropped outright"
        );
        let left: Vec<Frame> = decode_all(&buffer)
            .into_iter()
            .flat_map(|b| b.frames)
            .collect();
        let kept_samples: u64 = left.iter().map(|f| f.values.len() as u64).sum();
        assert_eq!(
            kept_samples + dropped.samples,
            sealed,
            "every sample kept or reported"
        );
        // The extremes survive, and each minute's last frame.
        let has = |v: i64| left.iter().any(|f| f.values[0] == Reading::Int(v));
        assert!(has(9_000) && has(-9_000), "min and max kept");
        let ts: HashSet<i64> = left.iter().map(|f| f.ts_ms).collect();
        assert!(
            ts.contains(&(60_000 * 1000 + 59 * 1000)),
            "first minute's last frame kept"
        );
        assert!(
            ts.contains(&(60_000 * 1000 + 119 * 1000)),
            "second minute's last frame kept"
        );
        assert!(
            left.len() <= 2 * 5,
            "at most min, max per point and the last frame per minute: {}",
            left.len()
        );
        let gaps: i64 = buffer
            .conn
            .query_row(
                "SELECT count(*) FROM pending_gaps WHERE reason = 2",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(gaps > 0);
    }

    #[test]
    fn a_full_buffer_never_spins_on_batches_it_must_keep_and_passes_their_gaps_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = SqliteBuffer::open(&dir.path().join("b.sqlite"), 1).unwrap();
        let catalog = catalog();
        buffer.remember_catalog(&catalog).unwrap();
        // A batch with the catalog, then batches that each carry gap records.
        let hash = catalog.hash();
        let with_catalog = catalog.clone();
        buffer
            .seal_with_content(
                SealSummary::default(),
                BatchContent::Events,
                move |seq, gaps| {
                    Batch {
                        site: SiteId::new("s").unwrap(),
                        seq,
                        catalog_hash: hash,
                        catalog: Some(with_catalog),
                        frames: frames(&[1], 1),
                        gaps,
                    }
                    .encode(bess_protocol::Codec::Zstd)
                },
            )
            .unwrap();
        for round in 0..5 {
            seal_frames(&mut buffer, &catalog, frames(&[0, 1], 100 + round * 10));
            buffer.make_room(0).unwrap(); // must return, every round
        }
        let left = decode_all(&buffer);
        assert_eq!(left.len(), 1, "only the catalog carrier is left: {left:?}");
        assert!(left[0].catalog.is_some() && left[0].frames.is_empty() && left[0].gaps.is_empty());
        // Every dropped sample is still reported, in one merged record per device.
        let pending: Vec<(i64, i64)> = buffer
            .conn
            .prepare("SELECT device, samples FROM pending_gaps ORDER BY device")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(pending, vec![(0, 5 * 2), (1, 1 + 5)]);
    }
}
