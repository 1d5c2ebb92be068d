//! Alert rules inside the writer's transaction, against a real database:
//! episodes open and close once however often their batches are delivered
//! and whichever instance writes them, pending phases survive a hand-over,
//! and the outbox gets a row per receiver unless a silence or the
//! episode's being over already says otherwise.

use std::sync::Arc;

mod support;

use bess_collector::message::IngestMessage;
use bess_collector::rules::Rules;
use bess_collector::writer::SampleWriter;
use bess_protocol::*;
use bess_tests::TestDatabase;

const RULES: &str = r#"
[[rule]]
name = "hot"
severity = "critical"
device = "bms-*"
point = "cell_temp_max"
kind = "threshold"
above = 45.0
hysteresis = 2.0
for = "2s"

[[receiver]]
name = "ops"
kind = "webhook"
url = "http://127.0.0.1:9/hook"

[[receiver]]
name = "am"
kind = "alertmanager"
url = "http://127.0.0.1:9"
"#;

fn catalog() -> Catalog {
    Catalog {
        devices: vec![DeviceInfo {
            name: "bms-1".into(),
            model: "test".into(),
        }],
        groups: vec![GroupInfo {
            device: 0,
            name: "fast".into(),
            interval_ms: 1000,
            points: vec![PointInfo::new(
                "cell_temp_max",
                "°C",
                PointKind::Analog,
                1.0,
                0.0,
            )],
        }],
    }
}

/// A batch of one frame per second from `first_s`, with these temperatures.
fn message(seq: u64, first_s: i64, temps: &[f64], received_ms: i64) -> IngestMessage {
    let catalog = catalog();
    let batch = Batch {
        site: SiteId::new("site-r").unwrap(),
        seq: BatchSeq(seq),
        catalog_hash: catalog.hash(),
        catalog: Some(catalog),
        frames: temps
            .iter()
            .enumerate()
            .map(|(i, t)| Frame {
                group: GroupIndex(0),
                ts_ms: (first_s + i as i64) * 1000,
                values: vec![Reading::Float(*t)],
            })
            .collect(),
        gaps: vec![],
    };
    IngestMessage {
        topic: "t".into(),
        partition: 0,
        offset: seq as i64,
        key: Some(b"site-r".to_vec()),
        payload: batch.encode(Codec::Zstd).unwrap(),
        received_ms,
    }
}

/// Now-ish event times, so nothing counts as late.
fn now_s() -> i64 {
    bess_collector::time::unix_ms_now() / 1000 - 60
}

async fn writer(db: &TestDatabase, rules_toml: &str) -> (SampleWriter, Arc<Rules>) {
    support::rules_writer(db, rules_toml).await
}

/// (rule, target, open?, peak) of every episode, and the outbox rows as
/// (transition, receiver).
async fn stored(
    db: &TestDatabase,
) -> (
    Vec<(String, String, bool, Option<f64>)>,
    Vec<(String, String)>,
) {
    let client = bess_tests::connect(&db.url()).await.unwrap();
    let episodes = client
        .query(
            "SELECT rule, target, ended_at IS NULL, peak FROM alert_episodes ORDER BY episode_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let outbox = client
        .query(
            "SELECT transition, receiver FROM notification_outbox ORDER BY notification_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    (episodes, outbox)
}

fn rows(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn an_episode_fires_and_resolves_once_however_often_its_batches_come_back() {
    let db = TestDatabase::create("rules_once").await.unwrap();
    let (writer, _rules) = writer(&db, RULES).await;
    let t = now_s();
    let now = bess_collector::time::unix_ms_now();
    let hot = message(1, t, &[40.0, 46.0, 47.0, 48.0], now);
    let cool = message(2, t + 4, &[44.0, 42.0, 41.0], now);

    writer.write(std::slice::from_ref(&hot)).await.unwrap();
    let (episodes, outbox) = stored(&db).await;
    assert_eq!(
        episodes,
        vec![("hot".into(), "bms-1/cell_temp_max".into(), true, Some(48.0))]
    );
    assert_eq!(outbox, rows(&[("firing", "ops"), ("firing", "am")]));

    // Redelivered, then the cooling batch twice: one end, notified once
    // per receiver.
    for m in [&hot, &cool, &cool, &hot] {
        writer.write(std::slice::from_ref(m)).await.unwrap();
    }
    let (episodes, outbox) = stored(&db).await;
    assert_eq!(
        episodes,
        vec![(
            "hot".into(),
            "bms-1/cell_temp_max".into(),
            false,
            Some(48.0)
        )]
    );
    assert_eq!(
        outbox,
        rows(&[
            ("firing", "ops"),
            ("firing", "am"),
            ("resolved", "ops"),
            ("resolved", "am")
        ])
    );
}

#[tokio::test]
async fn another_instance_continues_a_pending_phase_and_closes_the_episode_it_did_not_open() {
    let db = TestDatabase::create("rules_handover").await.unwrap();
    let t = now_s();
    let now = bess_collector::time::unix_ms_now();
    {
        // Pending from t+1 (held 1 s of the 2 s needed) on the first instance.
        let (first, _) = writer(&db, RULES).await;
        first
            .write(&[message(1, t, &[40.0, 46.0, 47.0], now)])
            .await
            .unwrap();
        let (episodes, _) = stored(&db).await;
        assert!(episodes.is_empty());
    }
    // The second instance knows nothing in memory: it reads the pending
    // phase, fires with the real start, and later closes it.
    let (second, _) = writer(&db, RULES).await;
    second
        .write(&[message(2, t + 3, &[48.0], now)])
        .await
        .unwrap();
    let client = bess_tests::connect(&db.url()).await.unwrap();
    let started: i64 = client
        .query_one(
            "SELECT (extract(epoch FROM started_at))::int8 FROM alert_episodes",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        started,
        t + 1,
        "the episode starts when the condition began"
    );
    drop(second);
    let (third, _) = writer(&db, RULES).await;
    third
        .write(&[message(3, t + 4, &[40.0], now)])
        .await
        .unwrap();
    let (episodes, outbox) = stored(&db).await;
    assert_eq!(episodes.len(), 1);
    assert!(
        !episodes[0].2,
        "closed by the instance that did not open it"
    );
    assert_eq!(outbox.len(), 4);
}

#[tokio::test]
async fn an_episode_over_before_it_was_seen_is_recorded_late_and_notified_only_if_the_rule_asks() {
    let db = TestDatabase::create("rules_past").await.unwrap();
    let t = now_s() - 3600;
    let now = bess_collector::time::unix_ms_now();
    let backlog = message(1, t, &[46.0, 47.0, 48.0, 40.0], now);

    let (quiet, _) = writer(&db, RULES).await;
    quiet.write(std::slice::from_ref(&backlog)).await.unwrap();
    let client = bess_tests::connect(&db.url()).await.unwrap();
    let late: bool = client
        .query_one("SELECT late FROM alert_episodes", &[])
        .await
        .unwrap()
        .get(0);
    assert!(late);
    let (episodes, outbox) = stored(&db).await;
    assert_eq!(episodes.len(), 1);
    assert!(outbox.is_empty(), "{outbox:?}");

    let loud = RULES.replace("for = \"2s\"", "for = \"2s\"\nnotify_past = true");
    let db2 = TestDatabase::create("rules_past_notified").await.unwrap();
    let (writer2, _) = writer(&db2, &loud).await;
    writer2.write(&[backlog]).await.unwrap();
    let (_, outbox) = stored(&db2).await;
    assert_eq!(
        outbox,
        rows(&[
            ("firing", "ops"),
            ("firing", "am"),
            ("resolved", "ops"),
            ("resolved", "am")
        ])
    );
}

#[tokio::test]
async fn a_silence_records_the_episode_without_notifying_it() {
    let db = TestDatabase::create("rules_silence").await.unwrap();
    let (writer, _) = writer(&db, RULES).await;
    let client = bess_tests::connect(&db.url()).await.unwrap();
    // The site exists once its first batch is written.
    let t = now_s();
    let now = bess_collector::time::unix_ms_now();
    writer.write(&[message(1, t, &[20.0], now)]).await.unwrap();
    client
        .execute(
            "INSERT INTO alert_silences (site_id, device, ends_at, created_by)
             SELECT site_id, 'bms-1', now() + interval '1 hour', 'test' FROM sites",
            &[],
        )
        .await
        .unwrap();
    writer
        .write(&[message(2, t + 1, &[46.0, 47.0, 48.0, 49.0], now)])
        .await
        .unwrap();
    let (episodes, outbox) = stored(&db).await;
    assert_eq!(episodes.len(), 1);
    assert!(outbox.is_empty(), "{outbox:?}");
}

#[tokio::test]
async fn a_flag_rule_reads_the_flag_names_the_edge_catalog_carries() {
    let db = TestDatabase::create("rules_flag").await.unwrap();
    let rules = r#"
[[rule]]
name = "fault-bit"
point = "status"
kind = "flag"
flag = "fault"
"#;
    let (writer, _) = writer(&db, rules).await;
    let mut status = PointInfo::new("status", "", PointKind::Bitfield, 1.0, 0.0);
    status.flags = vec![
        FlagName {
            bit: 0,
            name: "running".into(),
        },
        FlagName {
            bit: 4,
            name: "fault".into(),
        },
    ];
    let catalog = Catalog {
        devices: vec![DeviceInfo {
            name: "pcs-1".into(),
            model: "test".into(),
        }],
        groups: vec![GroupInfo {
            device: 0,
            name: "state".into(),
            interval_ms: 1000,
            points: vec![status],
        }],
    };
    let t = now_s();
    let batch = Batch {
        site: SiteId::new("site-f").unwrap(),
        seq: BatchSeq(1),
        catalog_hash: catalog.hash(),
        catalog: Some(catalog),
        frames: [1, 17, 17, 1]
            .iter()
            .enumerate()
            .map(|(i, v)| Frame {
                group: GroupIndex(0),
                ts_ms: (t + i as i64) * 1000,
                values: vec![Reading::Int(*v)],
            })
            .collect(),
        gaps: vec![],
    };
    let message = IngestMessage {
        topic: "t".into(),
        partition: 0,
        offset: 1,
        key: Some(b"site-f".to_vec()),
        payload: batch.encode(Codec::Zstd).unwrap(),
        received_ms: bess_collector::time::unix_ms_now(),
    };
    writer.write(&[message]).await.unwrap();
    let (episodes, _) = stored(&db).await;
    assert_eq!(
        episodes,
        vec![("fault-bit".into(), "pcs-1/status:fault".into(), false, None)]
    );
}
