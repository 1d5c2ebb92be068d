//! Dead letters on a real broker (Tansu): a message that is not a batch is
//! set aside in `rejected_messages` and produced to the dead-letter topic
//! with its reason and origin in headers, and the partition goes on.

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use bess_collector::dead_letter::*;
use bess_collector::ingest::{KafkaIngest, KafkaSettings};
use bess_collector::writer::SampleWriter;
use bess_protocol::*;
use bess_tests::{wait_for, Broker, Scratch, TestDatabase};

fn batch(seq: u64) -> Vec<u8> {
    let catalog = Catalog {
        devices: vec![DeviceInfo {
            name: "bms-1".into(),
            model: "test".into(),
        }],
        groups: vec![GroupInfo {
            device: 0,
            name: "fast".into(),
            interval_ms: 1000,
            points: vec![PointInfo::new("soc", "%", PointKind::Analog, 0.01, 0.0)],
        }],
    };
    Batch {
        site: SiteId::new("site-d").unwrap(),
        seq: BatchSeq(seq),
        catalog_hash: catalog.hash(),
        catalog: Some(catalog),
        frames: vec![Frame {
            group: GroupIndex(0),
            ts_ms: 1_700_000_000_000,
            values: vec![Reading::Int(5000)],
        }],
        gaps: vec![],
    }
    .encode(Codec::Zstd)
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_a_batch_goes_to_the_dead_letter_topic_with_its_reason() {
    let scratch = Scratch::new("dead_letters");
    let broker = Broker::start(&scratch.dir).await.unwrap();
    let database = TestDatabase::create("dead_letters").await.unwrap();
    let pool = bess_collector::service::pool(&database.url(), 3).unwrap();
    let backend = bess_collector::service::prepare_database(&pool, Duration::from_secs(5))
        .await
        .unwrap();

    // Same key: same partition, garbage first, so the batch after it must not be stalled.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .create()
        .unwrap();
    for payload in [b"garbage, not a batch".to_vec(), batch(1)] {
        producer
            .send(
                FutureRecord::to("bess.telemetry")
                    .key("site-d")
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    let settings = KafkaSettings {
        brokers: broker.brokers(),
        topic: "bess.telemetry".into(),
        group: "dlq-test".into(),
        session_timeout: Duration::from_secs(2),
        properties: vec![],
        dead_letter_topic: Some("bess.telemetry.dlq".into()),
    };
    let ingest = KafkaIngest::new(&settings, SampleWriter::new(pool.clone(), backend)).unwrap();
    let cancel = CancellationToken::new();
    let running = tokio::spawn(ingest.run(cancel.clone()));

    let dlq: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "2000")
        .set("heartbeat.interval.ms", "500")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .unwrap();
    dlq.subscribe(&["bess.telemetry.dlq"]).unwrap();
    let message = wait_for("a dead letter", Duration::from_secs(60), || async {
        tokio::time::timeout(Duration::from_secs(2), dlq.recv())
            .await
            .ok()?
            .ok()
            .map(|m| m.detach())
    })
    .await
    .unwrap();
    assert_eq!(message.payload(), Some(&b"garbage, not a batch"[..]));
    assert_eq!(message.key(), Some(&b"site-d"[..]));
    let headers: HashMap<String, String> = message
        .headers()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h.key.to_owned(),
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    assert_eq!(headers[HEADER_REASON_CLASS], "undecodable");
    assert!(
        headers[HEADER_REASON].starts_with("undecodable: bad magic"),
        "{headers:?}"
    );
    assert_eq!(headers[HEADER_SOURCE_TOPIC], "bess.telemetry");
    assert!(
        headers[HEADER_SOURCE_PARTITION].parse::<i32>().is_ok(),
        "{headers:?}"
    );
    assert_eq!(headers[HEADER_SOURCE_OFFSET], "0");

    // The batch behind it was written; the garbage is also on record locally.
    let db = database.client().await.unwrap();
    wait_for(
        "the batch after the bad message",
        Duration::from_secs(30),
        || async {
            let n: i64 = db
                .query_one("SELECT count(*) FROM batch_ledger", &[])
                .await
                .ok()?
                .get(0);
            (n == 1).then_some(())
        },
    )
    .await
    .unwrap();
    let row = db
        .query_one("SELECT reason_class, payload FROM rejected_messages", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "undecodable");
    assert_eq!(row.get::<_, Vec<u8>>(1), b"garbage, not a batch");

    cancel.cancel();
    running.await.unwrap();
}
