//! Reading series back from the real database, each body on plain
//! PostgreSQL and on TimescaleDB: raw samples and rollups of a point whose
//! catalog changed mid-range (two layouts, the point at another slot in
//! each), several points in one read, and the limit.

#[macro_use]
mod support;

use std::collections::BTreeMap;

use bess_collector::message::IngestMessage;
use bess_collector::series;
use bess_collector::series::Resolution;
use bess_collector::time::timestamp;
use bess_collector::writer::SampleWriter;
use bess_protocol::*;
use bess_tests::TestDatabase;
use support::Backend;

/// 2023-11-14T22:13:20Z
const T0: i64 = 1_700_000_000_000;
const STEP_MS: i64 = 1_000;
/// Frames written with each catalog version: 50 minutes of 1 s frames each.
const FRAMES_PER_VERSION: i64 = 3_000;

/// Version 1 has `soc, power`; version 2 puts `volts` first, so `soc` moves
/// to slot 2 and gets a new layout.
fn catalog(version: u8) -> Catalog {
    let mut points = vec![
        PointInfo::new("soc", "%", PointKind::Analog, 0.01, 0.0),
        PointInfo::new("power", "kW", PointKind::Analog, 1.0, 0.0),
    ];
    if version == 2 {
        points.insert(0, PointInfo::new("volts", "V", PointKind::Analog, 0.1, 0.0));
    }
    Catalog {
        devices: vec![DeviceInfo {
            name: "bms-1".into(),
            model: "test".into(),
        }],
        groups: vec![GroupInfo {
            device: 0,
            name: "fast".into(),
            interval_ms: STEP_MS as u32,
            points,
        }],
    }
}

/// The value of `soc` at frame `i` (missing every 101st frame).
fn soc(i: i64) -> Reading {
    if i % 101 == 7 {
        Reading::Missing(MissingReason::Timeout)
    } else {
        Reading::Int(5_000 + (i * 7) % 400)
    }
}

fn soc_value(i: i64) -> Option<f64> {
    match soc(i) {
        Reading::Int(raw) => Some(raw as f64 / 100.0),
        _ => None,
    }
}

fn power_reading(i: i64) -> Reading {
    Reading::Float(((i * 37) % 1_000) as f64 - 500.5)
}

fn batches() -> Vec<Batch> {
    let mut out = Vec::new();
    let mut seq = 0;
    for version in [1u8, 2] {
        let catalog = catalog(version);
        let first = (i64::from(version) - 1) * FRAMES_PER_VERSION;
        let frames: Vec<Frame> = (first..first + FRAMES_PER_VERSION)
            .map(|i| {
                let mut values = vec![soc(i), power_reading(i)];
                if version == 2 {
                    values.insert(0, Reading::Int(500));
                }
                Frame {
                    group: GroupIndex(0),
                    ts_ms: T0 + i * STEP_MS,
                    values,
                }
            })
            .collect();
        for (n, chunk) in frames.chunks(250).enumerate() {
            seq += 1;
            out.push(Batch {
                site: SiteId::new("site-s").unwrap(),
                seq: BatchSeq(seq),
                catalog_hash: catalog.hash(),
                catalog: (n == 0).then(|| catalog.clone()),
                frames: chunk.to_vec(),
                gaps: vec![],
            });
        }
    }
    out
}

struct Stored {
    database: TestDatabase,
    soc: i32,
    power: i32,
}

async fn stored(backend: Backend, test: &str) -> Stored {
    let database = backend.database(test).await;
    let (pool, storage) = backend.prepare(&database, 2).await;
    let writer = SampleWriter::new(pool.clone(), storage);
    let messages: Vec<IngestMessage> = batches()
        .iter()
        .enumerate()
        .map(|(i, b)| IngestMessage {
            topic: "t".into(),
            partition: 0,
            offset: i as i64,
            key: None,
            payload: b.encode(Codec::Zstd).unwrap(),
            received_ms: 0,
        })
        .collect();
    writer.write(&messages).await.unwrap();
    backend.refresh_rollups(&pool).await;
    let client = database.client().await.unwrap();
    let id = |name: &'static str| {
        let client = &client;
        async move {
            client
                .query_one("SELECT point_id FROM points WHERE name = $1", &[&name])
                .await
                .unwrap()
                .get::<_, i32>(0)
        }
    };
    let (soc, power) = (id("soc").await, id("power").await);
    Stored {
        database,
        soc,
        power,
    }
}

const ALL: i64 = 2 * FRAMES_PER_VERSION;

on_both_backends!(raw_samples_follow_a_point_across_a_catalog_change_in_timestamp_order);
async fn raw_samples_follow_a_point_across_a_catalog_change_in_timestamp_order(backend: Backend) {
    let stored = stored(backend, "series_raw").await;
    let client = stored.database.client().await.unwrap();
    let (from, to) = (timestamp(T0), timestamp(T0 + ALL * STEP_MS));
    let read = series::raw(&client, &[stored.soc, stored.power], from, to, 100_000)
        .await
        .unwrap();
    assert_eq!(read.len(), 2);
    let (soc, power) = (&read[0], &read[1]);
    assert_eq!(
        soc.len() as i64,
        ALL,
        "every frame of both catalog versions"
    );
    for i in 0..ALL {
        let at = i as usize;
        assert_eq!(soc.ts_ms[at], T0 + i * STEP_MS);
        assert_eq!(soc.value[at], soc_value(i), "soc at frame {i}");
        let missing = soc_value(i).is_none();
        assert_eq!(
            soc.status[at].is_some_and(|s| s != 0),
            missing,
            "status at frame {i}"
        );
        let Reading::Float(p) = power_reading(i) else {
            unreachable!()
        };
        assert_eq!(power.value[at], Some(p), "power at frame {i}");
    }

    // The limit cuts the merged series, not each layout's part.
    let cut = series::raw(&client, &[stored.soc], from, to, 3_500)
        .await
        .unwrap();
    assert_eq!(cut[0].len(), 3_500);
    assert_eq!(cut[0].ts_ms[3_499], T0 + 3_499 * STEP_MS);

    // A range inside the second version only, and an empty one.
    let late = series::raw(
        &client,
        &[stored.soc],
        timestamp(T0 + 4_000 * STEP_MS),
        timestamp(T0 + 4_010 * STEP_MS),
        100,
    )
    .await
    .unwrap();
    assert_eq!(late[0].len(), 10);
    let none = series::raw(&client, &[stored.soc], to, to, 100)
        .await
        .unwrap();
    assert!(none[0].is_empty());
}

on_both_backends!(rollups_of_a_bucket_two_catalog_versions_share_count_every_value_once);
async fn rollups_of_a_bucket_two_catalog_versions_share_count_every_value_once(backend: Backend) {
    let stored = stored(backend, "series_rollups").await;
    let client = stored.database.client().await.unwrap();
    let (from, to) = (timestamp(T0 - 3_600_000), timestamp(T0 + 86_400_000));

    // Expected per-minute figures of soc, computed from what was written.
    let mut expected: BTreeMap<i64, (f64, f64, f64, i64, f64)> = BTreeMap::new();
    for i in 0..ALL {
        let Some(v) = soc_value(i) else { continue };
        let ts = T0 + i * STEP_MS;
        let e = expected.entry(ts.div_euclid(60_000) * 60_000).or_insert((
            f64::MAX,
            f64::MIN,
            0.0,
            0,
            0.0,
        ));
        e.0 = e.0.min(v);
        e.1 = e.1.max(v);
        e.2 += v;
        e.3 += 1;
        e.4 = v;
    }
    let minutes = series::rollups(
        &client,
        &[stored.soc],
        Resolution::Minute,
        from,
        to,
        100_000,
    )
    .await
    .unwrap()
    .remove(0);
    assert_eq!(minutes.len(), expected.len());
    for (i, (bucket, (min, max, sum, count, last))) in expected.iter().enumerate() {
        assert_eq!(minutes.bucket_ms[i], *bucket);
        assert_eq!(minutes.min[i], *min, "min of {bucket}");
        assert_eq!(minutes.max[i], *max, "max of {bucket}");
        assert_eq!(minutes.count[i], *count, "count of {bucket}");
        assert!(
            (minutes.avg[i] - sum / *count as f64).abs() < 1e-9,
            "avg of {bucket}"
        );
        assert_eq!(minutes.last[i], *last, "last of {bucket}");
    }
    // The catalog changed mid-minute (frame 3000 is at 23:03:20):
    // that minute holds values of both layouts, counted once each.
    let switch = (T0 + FRAMES_PER_VERSION * STEP_MS).div_euclid(60_000) * 60_000;
    assert!(expected.contains_key(&switch));

    let hours = series::rollups(
        &client,
        &[stored.soc, stored.power],
        Resolution::Hour,
        from,
        to,
        100_000,
    )
    .await
    .unwrap();
    assert_eq!(hours.len(), 2);
    assert_eq!(
        hours[0].count.iter().sum::<i64>(),
        expected.values().map(|e| e.3).sum::<i64>(),
        "every present soc value counted once in the hours"
    );
    assert_eq!(
        hours[1].count.iter().sum::<i64>(),
        ALL,
        "power is never missing"
    );

    let cut = series::rollups(&client, &[stored.soc], Resolution::Minute, from, to, 5)
        .await
        .unwrap();
    assert_eq!(cut[0].len(), 5);
}
