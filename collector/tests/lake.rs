//! The history lake exporter against a real database (both backends) and a
//! real S3 API server (moto): the lake holds every stored sample exactly
//! once, checked with the `parquet` crate and with pyarrow + DuckDB; late
//! rows rewrite their hour whole; a crash between upload and settle is
//! retried into the same bytes; two exporters share the work; an hour whose
//! rows retention dropped is not overwritten.

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int16Type, TimestampMillisecondType};
use arrow_array::Array;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio_util::sync::CancellationToken;

use bess_collector::lake::{pending, ExportSettings, Exporter, Lake, LakeLocation, SliceKey};
use bess_collector::lake::{ExportTotals, SliceOutcome};
use bess_collector::message::IngestMessage;
use bess_collector::writer::SampleWriter;
use bess_protocol::*;
use bess_tests::lake::{compare, load_database, read_lake};
use bess_tests::{S3Store, Scratch, TestDatabase};
use support::Backend;

/// 2023-11-14T22:13:20Z
const T0: i64 = 1_700_000_000_000;
const HOUR_MS: i64 = 3_600_000;
const STEP_MS: i64 = 10_000;
const BUCKET: &str = "lake";

fn catalog() -> Catalog {
    Catalog {
        devices: vec![
            DeviceInfo {
                name: "bms-1".into(),
                model: "test".into(),
            },
            DeviceInfo {
                name: "pcs-1".into(),
                model: "test".into(),
            },
        ],
        groups: vec![
            GroupInfo {
                device: 0,
                name: "fast".into(),
                interval_ms: STEP_MS as u32,
                points: vec![
                    PointInfo::new("soc", "%", PointKind::Analog, 0.01, 0.0),
                    PointInfo::new("power", "W", PointKind::Analog, 1.0, 0.0),
                ],
            },
            GroupInfo {
                device: 1,
                name: "state".into(),
                interval_ms: STEP_MS as u32,
                points: vec![PointInfo::new("mode", "", PointKind::Bitfield, 1.0, 0.0)],
            },
        ],
    }
}

/// `n` frames per group from `t0`, with missing values of several kinds.
fn frames_at(t0: i64, n: i64) -> Vec<Frame> {
    let mut out = Vec::new();
    for i in 0..n {
        let ts_ms = t0 + i * STEP_MS;
        let soc = match i % 41 {
            7 => Reading::Missing(MissingReason::Timeout),
            19 => Reading::Missing(MissingReason::Exception(2)),
            _ => Reading::Int(5000 + (i * 7) % 300),
        };
        out.push(Frame {
            group: GroupIndex(0),
            ts_ms,
            values: vec![soc, Reading::Float(((i * 37) % 1000) as f64 - 500.25)],
        });
        out.push(Frame {
            group: GroupIndex(1),
            ts_ms: ts_ms + 3,
            values: vec![Reading::Int(i % 4)],
        });
    }
    out
}

fn messages(site: &str, frames: &[Frame], first_seq: u64) -> Vec<IngestMessage> {
    let catalog = catalog();
    frames
        .chunks(50)
        .enumerate()
        .map(|(i, chunk)| {
            let batch = Batch {
                site: SiteId::new(site).unwrap(),
                seq: BatchSeq(first_seq + i as u64),
                catalog_hash: catalog.hash(),
                catalog: Some(catalog.clone()),
                frames: chunk.to_vec(),
                gaps: vec![],
            };
            IngestMessage {
                topic: "t".into(),
                partition: 0,
                offset: (first_seq + i as u64) as i64,
                key: None,
                payload: batch.encode(Codec::Zstd).unwrap(),
                received_ms: 0,
            }
        })
        .collect()
}

/// A database, a writer, a bucket on a fresh S3 server.
struct Fixture {
    database: TestDatabase,
    pool: deadpool_postgres::Pool,
    writer: SampleWriter,
    s3: S3Store,
    location: LakeLocation,
    _scratch: Scratch,
}

impl Fixture {
    async fn new(backend: Backend, test: &str) -> Self {
        let scratch = Scratch::new(test);
        let s3 = S3Store::start(&scratch.dir).await.unwrap();
        s3.create_bucket(BUCKET).await.unwrap();
        let database = backend.database(test).await;
        let (pool, storage) = backend.prepare(&database, 4).await;
        let writer = SampleWriter::new(pool.clone(), storage);
        let location =
            LakeLocation::parse(&format!("s3://{BUCKET}/fleet"), Some(s3.endpoint.clone()))
                .unwrap();
        Fixture {
            database,
            pool,
            writer,
            s3,
            location,
            _scratch: scratch,
        }
    }

    /// An exporter with its own pool (as a separate instance would have).
    fn exporter(&self) -> Exporter {
        let pool = bess_collector::service::pool(&self.database.url(), 3).unwrap();
        Exporter::new(
            pool,
            open_lake(&self.location),
            ExportSettings {
                // The test's hours ended long ago; their marks are fresh.
                grace: Duration::ZERO,
                jobs: 2,
                ..ExportSettings::default()
            },
        )
    }

    async fn write(&self, site: &str, frames: &[Frame], first_seq: u64) {
        let outcome = self
            .writer
            .write(&messages(site, frames, first_seq))
            .await
            .unwrap();
        assert_eq!(outcome.messages_rejected, 0);
    }

    async fn site_id(&self, site: &str) -> i32 {
        let client = self.pool.get().await.unwrap();
        client
            .query_one("SELECT site_id FROM sites WHERE name = $1", &[&site])
            .await
            .unwrap()
            .get(0)
    }

    async fn pending(&self) -> i64 {
        let client = self.pool.get().await.unwrap();
        pending::pending_count(&**client).await.unwrap()
    }

    /// The lake, read with pyarrow + DuckDB, equals the database.
    async fn assert_lake_equals_database(&self) -> u64 {
        let client = self.database.client().await.unwrap();
        let stored = load_database(&client).await.unwrap();
        let root = format!("{BUCKET}/fleet/samples");
        let lake = read_lake(&self.s3.endpoint, &root).unwrap();
        assert!(
            lake.misplaced.is_empty(),
            "rows outside their partition: {:?}",
            lake.misplaced.first()
        );
        compare(&stored, &lake).assert_exactly_once();
        lake.rows
    }
}

/// The bucket, with the test server's credentials (`S3Store::env`).
fn open_lake(location: &LakeLocation) -> Lake {
    Lake::open_with_key(location.clone(), "test", "test", "us-east-1").unwrap()
}

async fn export_all(exporter: &Exporter) -> ExportTotals {
    exporter
        .export_pending(&CancellationToken::new())
        .await
        .unwrap()
}

/// Decode one object with the `parquet` crate: (device, point, ts, value, status) rows.
type Decoded = Vec<(String, String, i64, Option<f64>, i16)>;

fn decode(body: Bytes) -> Decoded {
    let reader = ParquetRecordBatchReaderBuilder::try_new(body)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        let (device, point) = (text("device"), text("point"));
        let ts = batch
            .column_by_name("ts")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let value = batch
            .column_by_name("value")
            .unwrap()
            .as_primitive::<Float64Type>();
        let status = batch
            .column_by_name("status")
            .unwrap()
            .as_primitive::<Int16Type>();
        for i in 0..batch.num_rows() {
            out.push((
                device.value(i).to_owned(),
                point.value(i).to_owned(),
                ts.value(i),
                (!value.is_null(i)).then(|| value.value(i)),
                status.value(i),
            ));
        }
    }
    out
}

/// Three hours of two sites, exported: one object per site-hour, each
/// sample once, read back by the `parquet` crate and by pyarrow + DuckDB.
async fn every_stored_sample_is_in_the_lake_once(backend: Backend) {
    let f = Fixture::new(backend, "lake_every_sample").await;
    // 1 000 frames per group at 10 s from 22:13:20: hours 22, 23 and 00 of the next day.
    let frames = frames_at(T0, 1_000);
    f.write("site-a", &frames, 1).await;
    f.write("site-b", &frames, 1).await;
    assert_eq!(f.pending().await, 6);

    let totals = export_all(&f.exporter()).await;
    assert_eq!(totals.objects, 6);
    assert_eq!(totals.rows, 2 * 3 * 1_000);
    assert_eq!(f.pending().await, 0);

    // The parquet crate: rows of one object are in (device, point, ts) order.
    let lake = open_lake(&f.location);
    let key = f.location.samples_key("site-a", T0 / HOUR_MS * HOUR_MS);
    assert!(
        key.ends_with("site=site-a/date=2023-11-14/hour=22/part-0.parquet"),
        "{key}"
    );
    let rows = decode(lake.get(&key).await.unwrap());
    let in_hour = frames
        .iter()
        .filter(|fr| fr.ts_ms / HOUR_MS == T0 / HOUR_MS)
        .map(|fr| fr.values.len())
        .sum::<usize>();
    assert_eq!(rows.len(), in_hour);
    let mut sorted = rows.clone();
    sorted.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
    assert_eq!(rows, sorted);
    let missing = rows.iter().filter(|r| r.3.is_none()).count();
    assert!(missing > 0 && rows.iter().all(|r| r.3.is_none() == (r.4 != 0)));
    assert!(
        rows.iter().any(|r| r.4 == 0x102),
        "a Modbus exception keeps its code"
    );

    assert_eq!(f.assert_lake_equals_database().await, 6_000);
}
on_both_backends!(every_stored_sample_is_in_the_lake_once);

/// A backlog arriving after its hour was exported: the hour is marked again
/// and its object rewritten with the old and the new rows, none twice.
async fn late_rows_rewrite_their_hour(backend: Backend) {
    let f = Fixture::new(backend, "lake_late_rows").await;
    // Two hours (the second frame of each pair is the late half).
    let frames = frames_at(T0 - T0 % HOUR_MS, 720);
    let (early, late): (Vec<Frame>, Vec<Frame>) = frames
        .into_iter()
        .partition(|fr| (fr.ts_ms / STEP_MS) % 2 == 0);
    f.write("site-a", &early, 1).await;
    let exporter = f.exporter();
    assert_eq!(export_all(&exporter).await.objects, 2);
    f.assert_lake_equals_database().await;

    // The late half, in new batches (an edge's backlog after an outage).
    f.write("site-a", &late, 1_000).await;
    assert_eq!(f.pending().await, 2, "both hours marked again");
    let totals = export_all(&exporter).await;
    assert_eq!(totals.objects, 2);
    assert_eq!(totals.rows, (early.len() + late.len()) as u64 * 3 / 2);
    assert_eq!(f.assert_lake_equals_database().await, totals.rows);

    let client = f.pool.get().await.unwrap();
    let writes: Vec<i32> = client
        .query("SELECT writes FROM lake_exports ORDER BY hour", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(writes, vec![2, 2]);
}
on_both_backends!(late_rows_rewrite_their_hour);

/// An exporter that dies after its PUT and before the database heard of it:
/// the mark stays, and the retry writes the same key with the same bytes.
async fn a_crash_after_upload_is_retried_into_the_same_object(backend: Backend) {
    let f = Fixture::new(backend, "lake_crash_after_upload").await;
    f.write("site-a", &frames_at(T0 - T0 % HOUR_MS, 300), 1)
        .await;
    let key = SliceKey {
        site_id: f.site_id("site-a").await,
        hour_ms: T0 - T0 % HOUR_MS,
    };
    let exporter = f.exporter();
    let (object, first) = exporter
        .upload_without_settling(key)
        .await
        .unwrap()
        .expect("something to upload");
    assert_eq!(f.pending().await, 1, "the mark survives the crash");

    let retried = f.exporter();
    assert_eq!(export_all(&retried).await.objects, 1);
    assert_eq!(f.pending().await, 0);
    let second = open_lake(&f.location).get(&object).await.unwrap();
    assert_eq!(first, second, "the retry wrote identical bytes");
    f.assert_lake_equals_database().await;
}
on_both_backends!(a_crash_after_upload_is_retried_into_the_same_object);

/// A batch committed between the exporter's read and its settle bumps the
/// generation: the settle keeps the mark, and the next pass exports it.
async fn a_batch_committed_during_an_export_keeps_the_mark(backend: Backend) {
    let f = Fixture::new(backend, "lake_concurrent_batch").await;
    let hour = T0 - T0 % HOUR_MS;
    let frames = frames_at(hour, 200);
    f.write("site-a", &frames[..200], 1).await;
    let key = SliceKey {
        site_id: f.site_id("site-a").await,
        hour_ms: hour,
    };
    let mut client = f.database.client().await.unwrap();
    let tx = client.transaction().await.unwrap();
    assert!(pending::try_claim(&tx, key).await.unwrap());
    let generation = pending::generation(&tx, key).await.unwrap().unwrap();
    let read = pending::read_rows(&tx, key).await.unwrap();
    // Meanwhile the writer commits the rest of the hour.
    f.write("site-a", &frames[200..], 100).await;
    assert!(!pending::settle(&tx, key, generation, None).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(f.pending().await, 1);
    assert!(read.len() < frames.len() * 3 / 2);

    let totals = export_all(&f.exporter()).await;
    assert_eq!(totals.rows, (frames.len() * 3 / 2) as u64);
    assert_eq!(f.pending().await, 0);
    f.assert_lake_equals_database().await;
}
on_both_backends!(a_batch_committed_during_an_export_keeps_the_mark);

/// Two exporters at once over many site-hours (and racing for the same one):
/// every site-hour is written, every sample once.
async fn two_exporters_share_the_work(backend: Backend) {
    let f = Fixture::new(backend, "lake_two_exporters").await;
    let frames = frames_at(T0 - T0 % HOUR_MS, 1_080);
    let sites = ["site-a", "site-b", "site-c", "site-d"];
    for site in sites {
        f.write(site, &frames, 1).await;
    }
    assert_eq!(f.pending().await, 12);
    // The same site-hour claimed twice at once: one exports, the other steps aside.
    let key = SliceKey {
        site_id: f.site_id("site-a").await,
        hour_ms: T0 - T0 % HOUR_MS,
    };
    let (one, two) = (f.exporter(), f.exporter());
    let (a, b) = tokio::join!(one.export_slice(key), two.export_slice(key));
    let outcomes = [a.unwrap(), b.unwrap()];
    let written = outcomes
        .iter()
        .filter(|o| matches!(o, SliceOutcome::Written { .. }))
        .count();
    assert_eq!(written, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(
        o,
        SliceOutcome::Written { cleared: true, .. } | SliceOutcome::Busy | SliceOutcome::NotPending
    )));

    let (a, b) = tokio::join!(export_all(&one), export_all(&two));
    assert_eq!(a.objects + b.objects, 11, "{a:?} {b:?}");
    assert_eq!(f.pending().await, 0);
    assert_eq!(
        f.assert_lake_equals_database().await,
        (sites.len() * frames.len() * 3 / 2) as u64
    );
}
on_both_backends!(two_exporters_share_the_work);

/// Retention dropped an exported hour's rows; a late batch marks the hour
/// again. The exporter must not replace the lake's full object with the
/// few rows left: it refuses and keeps the object.
async fn an_hour_thinned_by_retention_is_not_overwritten(backend: Backend) {
    let f = Fixture::new(backend, "lake_retention_guard").await;
    let hour = T0 - T0 % HOUR_MS;
    let frames = frames_at(hour, 300);
    f.write("site-a", &frames, 1).await;
    let exporter = f.exporter();
    assert_eq!(export_all(&exporter).await.rows, 900);
    let object = f.location.samples_key("site-a", hour);
    let lake = open_lake(&f.location);
    let before = lake.get(&object).await.unwrap();

    let client = f.database.client().await.unwrap();
    client
        .execute(
            "DELETE FROM frames WHERE ts < $1",
            &[&bess_collector::time::timestamp(hour + 40 * 60_000)],
        )
        .await
        .unwrap();
    f.write("site-a", &frames_at(hour + 59 * 60_000 + 1, 1), 500)
        .await;
    assert_eq!(f.pending().await, 1);
    let totals = export_all(&exporter).await;
    assert_eq!((totals.objects, totals.refused), (0, 1));
    assert_eq!(f.pending().await, 0);
    assert_eq!(
        lake.get(&object).await.unwrap(),
        before,
        "the object is kept"
    );
}
on_both_backends!(an_hour_thinned_by_retention_is_not_overwritten);

/// History written before the exporter existed: `mark_all_stored` marks
/// every stored site-hour, and one pass exports them.
async fn backfill_marks_every_stored_hour(backend: Backend) {
    let f = Fixture::new(backend, "lake_backfill").await;
    f.write("site-a", &frames_at(T0, 1_000), 1).await;
    f.write("site-b", &frames_at(T0 + 86_400_000, 100), 1).await;
    let client = f.pool.get().await.unwrap();
    // As if the writer had never marked them (a database from before the lake).
    client
        .execute("DELETE FROM lake_pending", &[])
        .await
        .unwrap();
    let marked = pending::mark_all_stored(&**client).await.unwrap();
    assert_eq!(marked, 4);
    // Marked just now: with a grace period they wait until it has passed.
    let waiting = pending::eligible(&**client, Duration::from_secs(300), false, 100)
        .await
        .unwrap();
    assert!(waiting.is_empty(), "{waiting:?}");
    let hours: BTreeSet<i64> = pending::eligible(&**client, Duration::ZERO, false, 100)
        .await
        .unwrap()
        .iter()
        .map(|k| k.hour_ms)
        .collect();
    assert_eq!(hours.len(), 4);
    assert_eq!(export_all(&f.exporter()).await.objects, 4);
    assert_eq!(f.assert_lake_equals_database().await, 3_300);
}
on_both_backends!(backfill_marks_every_stored_hour);
