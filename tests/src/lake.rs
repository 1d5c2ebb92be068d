//! Reading the history lake back for a test, and the database's samples to
//! compare it with. The lake is read by `tests/scripts/read_lake.py`, which
//! uses pyarrow (S3 and Hive partitions) and DuckDB (the query): engines
//! that share no code with the exporter.

use anyhow::{bail, Context as _};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// A sample's identity in the lake: (site, device, point, ts_ms).
pub type LakeKey = (String, String, String, i64);

/// What one sample holds besides its identity.
#[derive(Debug, Clone, PartialEq)]
pub struct LakeValue {
    pub value: Option<f64>,
    pub status: i16,
}

/// Every sample of the lake, by identity (a doubled sample has two entries).
#[derive(Debug, Default)]
pub struct LakeContents {
    pub samples: BTreeMap<LakeKey, Vec<LakeValue>>,
    pub rows: u64,
    pub files: u64,
    /// Rows whose partition (date, hour) is not the hour of their timestamp.
    pub misplaced: Vec<LakeKey>,
}

fn script() -> PathBuf {
    crate::workspace_root().join("tests/scripts/read_lake.py")
}

/// Read the samples table under `s3://<root>` (e.g. `lake/fleet/samples`)
/// from the S3 server at `endpoint`.
pub fn read_lake(endpoint: &str, root: &str) -> anyhow::Result<LakeContents> {
    let output = Command::new("python3")
        .arg(script())
        .args([endpoint, root])
        .output()
        .context("running python3 (install duckdb and pyarrow: deploy/local/test.sh does)")?;
    if !output.status.success() {
        bail!(
            "read_lake.py failed ({}); needs `python3 -m pip install duckdb pyarrow`:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8(output.stdout)?;
    let mut contents = LakeContents::default();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        if let Some(files) = v.get("files") {
            contents.files = files.as_u64().context("files")?;
            let rows = v["rows"].as_u64().context("rows")?;
            anyhow::ensure!(rows == contents.rows, "row count line disagrees");
            continue;
        }
        let f = v.as_array().context("row")?;
        let text = |i: usize| -> anyhow::Result<String> {
            Ok(f[i]
                .as_str()
                .with_context(|| format!("column {i}"))?
                .to_owned())
        };
        let key: LakeKey = (text(0)?, text(3)?, text(4)?, f[5].as_i64().context("ts")?);
        let (date, hour) = (text(1)?, f[2].as_i64().context("hour")?);
        let ts = time::OffsetDateTime::from_unix_timestamp(key.3.div_euclid(1000))?;
        let expected_date = format!(
            "{:04}-{:02}-{:02}",
            ts.year(),
            u8::from(ts.month()),
            ts.day()
        );
        if date != expected_date || hour != i64::from(ts.hour()) {
            contents.misplaced.push(key.clone());
        }
        contents.rows += 1;
        contents.samples.entry(key).or_default().push(LakeValue {
            value: f[6].as_f64(),
            status: f[8].as_i64().context("status")? as i16,
        });
    }
    Ok(contents)
}

/// Every sample stored in the database, keyed like the lake.
pub async fn load_database(
    db: &tokio_postgres::Client,
) -> anyhow::Result<BTreeMap<LakeKey, Vec<LakeValue>>> {
    let rows = db
        .query(
            "SELECT s.name, d.name, p.name, (extract(epoch FROM f.ts) * 1000)::int8, f.vals[i.i], coalesce(f.status[i.i], 0::int2)
             FROM frames f
             JOIN layouts l USING (layout_id)
             JOIN sites s ON s.site_id = l.site_id
             JOIN devices d ON d.device_id = l.device_id
             CROSS JOIN LATERAL generate_subscripts(l.point_ids, 1) AS i(i)
             JOIN points p ON p.point_id = l.point_ids[i.i]",
            &[],
        )
        .await?;
    let mut out: BTreeMap<LakeKey, Vec<LakeValue>> = BTreeMap::new();
    for r in &rows {
        out.entry((r.get(0), r.get(1), r.get(2), r.get(3)))
            .or_default()
            .push(LakeValue {
                value: r.get(4),
                status: r.get(5),
            });
    }
    Ok(out)
}

/// The verdict of comparing the lake with the database.
#[derive(Debug, Default)]
pub struct LakeComparison {
    pub stored: u64,
    pub in_lake: u64,
    pub missing: Vec<LakeKey>,
    pub doubled: Vec<LakeKey>,
    pub extra: Vec<LakeKey>,
    pub mismatched: Vec<LakeKey>,
}

impl LakeComparison {
    pub fn assert_exactly_once(&self) {
        assert!(
            self.missing.is_empty(),
            "{} stored samples missing from the lake, e.g. {:?}",
            self.missing.len(),
            self.missing.first()
        );
        assert!(
            self.doubled.is_empty(),
            "{} samples in the lake more often than in the database, e.g. {:?}",
            self.doubled.len(),
            self.doubled.first()
        );
        assert!(
            self.extra.is_empty(),
            "{} samples in the lake that the database does not hold, e.g. {:?}",
            self.extra.len(),
            self.extra.first()
        );
        assert!(
            self.mismatched.is_empty(),
            "{} samples with another value or status in the lake, e.g. {:?}",
            self.mismatched.len(),
            self.mismatched.first()
        );
        assert_eq!(self.stored, self.in_lake);
    }
}

/// Per (site, device, point, ts): the same number of samples with the same
/// value (bit for bit, both are float8) and status.
pub fn compare(stored: &BTreeMap<LakeKey, Vec<LakeValue>>, lake: &LakeContents) -> LakeComparison {
    let mut result = LakeComparison {
        stored: stored.values().map(|v| v.len() as u64).sum(),
        in_lake: lake.rows,
        ..LakeComparison::default()
    };
    for (key, want) in stored {
        match lake.samples.get(key) {
            None => result.missing.push(key.clone()),
            Some(got) if got.len() > want.len() => result.doubled.push(key.clone()),
            Some(got) if got.len() < want.len() => result.missing.push(key.clone()),
            Some(got) => {
                let mut got = got.clone();
                let mut want = want.clone();
                let order = |a: &LakeValue, b: &LakeValue| {
                    (a.status, a.value.map(f64::to_bits))
                        .cmp(&(b.status, b.value.map(f64::to_bits)))
                };
                got.sort_by(order);
                want.sort_by(order);
                if got != want {
                    result.mismatched.push(key.clone());
                }
            }
        }
    }
    for key in lake.samples.keys() {
        if !stored.contains_key(key) {
            result.extra.push(key.clone());
        }
    }
    result
}
