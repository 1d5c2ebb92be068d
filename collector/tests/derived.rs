//! Derived points through the writer, against a real database: stored
//! once per bucket where every input exists, never again for a redelivered
//! batch, as first-class points of a derived device that rules can watch.

mod support;

use bess_collector::message::IngestMessage;
use bess_protocol::*;
use bess_tests::TestDatabase;

const RULES: &str = r#"
[[derived]]
name = "power"
device = "site"
unit = "kW"
expression = "sum(*/active_power) / 1000"

[[derived]]
name = "{device}.spread"
for_each = "bms-*"
expression = "cell_voltage_max - cell_voltage_min"

[[rule]]
name = "site-overload"
device = "site"
point = "power"
kind = "threshold"
above = 5.0
"#;

fn catalog() -> Catalog {
    let group = |device: u16| GroupInfo {
        device,
        name: "fast".into(),
        interval_ms: 1000,
        points: vec![
            PointInfo::new("active_power", "W", PointKind::Analog, 1.0, 0.0),
            PointInfo::new("cell_voltage_max", "V", PointKind::Analog, 0.001, 0.0),
            PointInfo::new("cell_voltage_min", "V", PointKind::Analog, 0.001, 0.0),
        ],
    };
    Catalog {
        devices: vec![
            DeviceInfo {
                name: "bms-1".into(),
                model: "test".into(),
            },
            DeviceInfo {
                name: "bms-2".into(),
                model: "test".into(),
            },
        ],
        groups: vec![group(0), group(1)],
    }
}

/// One frame per device per second from `first_s`: bms-1 at +100 ms,
/// bms-2 at +600 ms, with these powers (W); `None` is a timeout.
fn message(seq: u64, first_s: i64, powers: &[(i64, Option<i64>)]) -> IngestMessage {
    let catalog = catalog();
    let mut frames = Vec::new();
    for (i, (p1, p2)) in powers.iter().enumerate() {
        let second = (first_s + i as i64) * 1000;
        frames.push(Frame {
            group: GroupIndex(0),
            ts_ms: second + 100,
            values: vec![Reading::Int(*p1), Reading::Int(3400), Reading::Int(3300)],
        });
        frames.push(Frame {
            group: GroupIndex(1),
            ts_ms: second + 600,
            values: vec![
                p2.map_or(Reading::Missing(MissingReason::Timeout), Reading::Int),
                Reading::Int(3350),
                Reading::Int(3340),
            ],
        });
    }
    let batch = Batch {
        site: SiteId::new("site-d").unwrap(),
        seq: BatchSeq(seq),
        catalog_hash: catalog.hash(),
        catalog: Some(catalog),
        frames,
        gaps: vec![],
    };
    IngestMessage {
        topic: "t".into(),
        partition: 0,
        offset: seq as i64,
        key: Some(b"site-d".to_vec()),
        payload: batch.encode(Codec::Zstd).unwrap(),
        received_ms: bess_collector::time::unix_ms_now(),
    }
}

/// (device, point, ts seconds, value) of every stored derived sample.
async fn derived_samples(db: &TestDatabase) -> Vec<(String, String, i64, f64)> {
    let client = bess_tests::connect(&db.url()).await.unwrap();
    client
        .query(
            "SELECT d.name, p.name, floor(extract(epoch FROM f.ts))::int8, f.vals[1]
             FROM frames f JOIN layouts l ON l.layout_id = f.layout_id
             JOIN devices d ON d.device_id = l.device_id
             JOIN points p ON p.point_id = l.point_ids[1]
             WHERE d.model = 'derived'
             ORDER BY d.name, p.name, f.ts",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn derived_points_are_stored_once_where_their_inputs_exist_and_rules_watch_them() {
    let db = TestDatabase::create("derived_once").await.unwrap();
    let (writer, _) = support::rules_writer(&db, RULES).await;
    let t = bess_collector::time::unix_ms_now() / 1000 - 60;

    // Second t: 1 kW + 2 kW; t+1: bms-2 times out (no site power);
    // t+2: 2 kW + 4 kW = 6 kW, above the rule's 5.
    let first = message(1, t, &[(1000, Some(2000)), (1000, None)]);
    let second = message(2, t + 2, &[(2000, Some(4000))]);
    for m in [&first, &first, &second, &second, &first] {
        let outcome = writer.write(std::slice::from_ref(m)).await.unwrap();
        assert!(outcome.derived_written == 0 || outcome.batches_written == 1);
    }

    let got = derived_samples(&db).await;
    let powers: Vec<_> = got.iter().filter(|r| r.0 == "site").cloned().collect();
    assert_eq!(
        powers,
        vec![
            ("site".to_owned(), "power".to_owned(), t, 3.0),
            ("site".to_owned(), "power".to_owned(), t + 2, 6.0),
        ],
        "site power once per complete second"
    );
    // The spread of each device is per frame, at the frame's own timestamp
    // (whole seconds, floored), also while bms-2's power is missing:
    // its voltages are there.
    let spreads: Vec<(String, i64, i64)> = got
        .iter()
        .filter(|r| r.0 == "derived")
        .map(|r| (r.1.clone(), r.2, (r.3 * 1000.0).round() as i64))
        .collect();
    let mut want = Vec::new();
    for device in ["bms-1", "bms-2"] {
        for s in [t, t + 1, t + 2] {
            want.push((
                format!("{device}.spread"),
                s,
                if device == "bms-1" { 100 } else { 10 },
            ));
        }
    }
    assert_eq!(spreads, want, "one spread per device frame, none doubled");

    let client = bess_tests::connect(&db.url()).await.unwrap();
    let episodes: Vec<(String, String)> = client
        .query("SELECT rule, target FROM alert_episodes", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        episodes,
        vec![("site-overload".into(), "site/power".into())]
    );
}
