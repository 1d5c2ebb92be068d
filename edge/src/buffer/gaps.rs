//! Pending gap records: samples the cloud will never receive, waiting in the
//! `pending_gaps` table to travel in the next sealed batch.
//!
//! Invariants: a record is queued in the same transaction that removes its
//! samples from the buffer, and leaves the table in the same transaction
//! that seals it into a batch, so every dropped sample is reported exactly
//! once. Records of the same device and reason merge while they wait.

use std::collections::BTreeMap;

use rusqlite::{params, Transaction};

use bess_protocol::{Catalog, Frame, Gap, GapReason};

/// Add a frame that will not reach the cloud to its device's gap record.
pub(super) fn count_into_gap(
    per_device: &mut BTreeMap<u16, Gap>,
    catalog: Option<&Catalog>,
    frame: &Frame,
    reason: GapReason,
) {
    let device = catalog
        .and_then(|c| c.groups.get(usize::from(frame.group.0)))
        .map_or(Gap::WHOLE_SITE, |g| g.device);
    let gap = per_device.entry(device).or_insert(Gap {
        device,
        first_ts_ms: frame.ts_ms,
        last_ts_ms: frame.ts_ms,
        samples: 0,
        reason,
    });
    gap.first_ts_ms = gap.first_ts_ms.min(frame.ts_ms);
    gap.last_ts_ms = gap.last_ts_ms.max(frame.ts_ms);
    gap.samples += frame.values.len() as u64;
}

/// Queue a gap record for the next sealed batch, merged into a pending one
/// of the same device and reason (ranges widen, counts add up), so a long
/// outage leaves one pending record per device, not one per dropped batch.
pub(super) fn queue_gap(tx: &Transaction<'_>, gap: &Gap) -> rusqlite::Result<()> {
    let merged = tx.execute(
        "UPDATE pending_gaps SET first_ts_ms = min(first_ts_ms, ?3), last_ts_ms = max(last_ts_ms, ?4), samples = samples + ?5
         WHERE device = ?1 AND reason = ?2",
        params![gap.device, gap_reason_code(gap.reason), gap.first_ts_ms, gap.last_ts_ms, gap.samples as i64],
    )?;
    if merged == 0 {
        tx.execute(
            "INSERT INTO pending_gaps (device, first_ts_ms, last_ts_ms, samples, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![gap.device, gap.first_ts_ms, gap.last_ts_ms, gap.samples as i64, gap_reason_code(gap.reason)],
        )?;
    }
    Ok(())
}

/// Take every pending record, in the order queued, for the batch being
/// sealed in `tx`.
pub(super) fn take_pending(tx: &Transaction<'_>) -> rusqlite::Result<Vec<Gap>> {
    let gaps = {
        let mut stmt = tx.prepare_cached(
            "SELECT device, first_ts_ms, last_ts_ms, samples, reason FROM pending_gaps ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Gap {
                device: r.get::<_, i64>(0)? as u16,
                first_ts_ms: r.get(1)?,
                last_ts_ms: r.get(2)?,
                samples: r.get::<_, i64>(3)? as u64,
                reason: gap_reason(r.get(4)?),
            })
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    tx.execute("DELETE FROM pending_gaps", [])?;
    Ok(gaps)
}

/// The number a gap reason is kept as in `pending_gaps` (the wire code).
pub(super) fn gap_reason_code(reason: GapReason) -> i64 {
    i64::from(reason.code())
}

/// The gap reason kept as `code`; a code no reason has (a newer agent's
/// buffer opened by an older one) reads as a disk-cap drop.
fn gap_reason(code: i64) -> GapReason {
    u8::try_from(code)
        .ok()
        .and_then(GapReason::from_code)
        .unwrap_or(GapReason::DiskCap)
}
