//! Counting samples end to end: what the edge sealed (its `--record` audit
//! trail) against what the database holds, per device, point and timestamp.

use anyhow::Context as _;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// A sample's identity: (device, point, ts_ms).
pub type SampleKey = (String, String, i64);

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub value: Option<f64>,
    pub quality: String,
}

/// Everything the edge recorded as sealed.
#[derive(Debug, Default)]
pub struct Recorded {
    pub samples: HashMap<SampleKey, (u64, Sample)>,
    pub seqs: HashSet<i64>,
    pub count: u64,
}

/// Read one or more `--record` files (one per edge run).
pub fn load_record(paths: &[&Path]) -> anyhow::Result<Recorded> {
    let mut recorded = Recorded::default();
    for path in paths {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in text.lines() {
            // A kill -9 can cut the last line short; it belongs to a batch
            // that is then judged by the database alone.
            let Ok(frame) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let seq = frame["seq"].as_u64().context("seq")?;
            recorded.seqs.insert(seq as i64);
            let device = frame["device"].as_str().context("device")?.to_owned();
            let ts_ms = frame["ts_ms"].as_i64().context("ts")?;
            for value in frame["values"].as_array().context("values")? {
                recorded.count += 1;
                let key = (
                    device.clone(),
                    value["point"].as_str().context("point")?.to_owned(),
                    ts_ms,
                );
                let sample = Sample {
                    value: value["value"].as_f64(),
                    quality: value["quality"].as_str().context("quality")?.to_owned(),
                };
                anyhow::ensure!(
                    recorded
                        .samples
                        .insert(key.clone(), (seq, sample))
                        .is_none(),
                    "the edge recorded {key:?} twice"
                );
            }
        }
    }
    Ok(recorded)
}

/// Every stored sample with the batch sequence it came in.
#[derive(Debug, Default)]
pub struct Stored {
    pub samples: HashMap<SampleKey, Vec<Sample>>,
    pub rows: u64,
}

/// The model of the devices the collector stores derived points under.
pub const DERIVED_MODEL: &str = "derived";

/// Every stored sample of the edges' devices (derived points are the
/// collector's own, see [`load_derived`]).
pub async fn load_stored(db: &tokio_postgres::Client) -> anyhow::Result<Stored> {
    load_samples(db, false).await
}

/// Every stored sample of derived points.
pub async fn load_derived(db: &tokio_postgres::Client) -> anyhow::Result<Stored> {
    load_samples(db, true).await
}

async fn load_samples(db: &tokio_postgres::Client, derived: bool) -> anyhow::Result<Stored> {
    let rows = db
        .query(
            "SELECT d.name, p.name, (extract(epoch FROM f.ts) * 1000)::int8, f.vals[s.i], coalesce(f.status[s.i], 0::int2)
             FROM frames f
             JOIN layouts l USING (layout_id)
             JOIN devices d ON d.device_id = l.device_id
             CROSS JOIN LATERAL generate_subscripts(l.point_ids, 1) AS s(i)
             JOIN points p ON p.point_id = l.point_ids[s.i]
             WHERE (d.model = $1) = $2",
            &[&DERIVED_MODEL, &derived],
        )
        .await?;
    let mut stored = Stored {
        rows: rows.len() as u64,
        ..Stored::default()
    };
    for r in &rows {
        let status: i16 = r.get(4);
        let quality =
            quality_of_status(status).with_context(|| format!("unknown status code {status}"))?;
        stored
            .samples
            .entry((r.get(0), r.get(1), r.get(2)))
            .or_default()
            .push(Sample {
                value: r.get(3),
                quality: quality.into(),
            });
    }
    Ok(stored)
}

pub fn quality_of_status(status: i16) -> Option<&'static str> {
    match status {
        0 => Some("good"),
        1 | 0x100..=0x1ff => Some("stale"),
        2 | 3 => Some("comm-loss"),
        _ => None,
    }
}

/// The verdict of a count.
#[derive(Debug)]
pub struct Reconciliation {
    pub recorded: u64,
    pub stored: u64,
    pub lost: Vec<SampleKey>,
    pub doubled: Vec<SampleKey>,
    /// Stored samples the record does not know: allowed only from batches a
    /// kill -9 kept out of the record (sealed, then killed before the record
    /// line was written).
    pub unrecorded: Vec<SampleKey>,
    pub mismatched: Vec<SampleKey>,
}

impl Reconciliation {
    pub fn assert_exactly_once(&self, max_unrecorded_batches: usize, unrecorded_batches: usize) {
        assert!(
            self.doubled.is_empty(),
            "{} samples stored more than once, e.g. {:?}",
            self.doubled.len(),
            self.doubled.first()
        );
        assert!(
            self.lost.is_empty(),
            "{} samples lost, e.g. {:?}",
            self.lost.len(),
            self.lost.first()
        );
        assert!(
            self.mismatched.is_empty(),
            "{} samples stored with another value, e.g. {:?}",
            self.mismatched.len(),
            self.mismatched.first()
        );
        assert!(
            unrecorded_batches <= max_unrecorded_batches,
            "{} stored samples in {unrecorded_batches} batches the edge never recorded, e.g. {:?}",
            self.unrecorded.len(),
            self.unrecorded.first()
        );
    }
}

pub fn reconcile(recorded: &Recorded, stored: &Stored) -> Reconciliation {
    let mut result = Reconciliation {
        recorded: recorded.count,
        stored: stored.rows,
        lost: Vec::new(),
        doubled: Vec::new(),
        unrecorded: Vec::new(),
        mismatched: Vec::new(),
    };
    for (key, (_, sample)) in &recorded.samples {
        match stored.samples.get(key) {
            None => result.lost.push(key.clone()),
            Some(got) => {
                let same = got[0].quality == sample.quality
                    && match (got[0].value, sample.value) {
                        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                        (a, b) => a == b,
                    };
                if !same {
                    result.mismatched.push(key.clone());
                }
            }
        }
    }
    for (key, samples) in &stored.samples {
        if samples.len() > 1 {
            result.doubled.push(key.clone());
        }
        if !recorded.samples.contains_key(key) {
            result.unrecorded.push(key.clone());
        }
    }
    result
}

/// Ledger sequences of batches that are stored but absent from the record.
pub async fn unrecorded_batches(
    db: &tokio_postgres::Client,
    recorded: &Recorded,
) -> anyhow::Result<Vec<i64>> {
    let ledger: Vec<i64> = db
        .query("SELECT seq FROM batch_ledger ORDER BY seq", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(ledger
        .into_iter()
        .filter(|s| !recorded.seqs.contains(s))
        .collect())
}
