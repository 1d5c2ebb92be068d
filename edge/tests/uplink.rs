//! `KafkaUplink` against a real broker: a batch leaves the buffer only after
//! the broker acknowledged it, and arrives byte for byte as sealed.

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use bess_edge::buffer::{BufferHandle, SealSummary, SqliteBuffer};
use bess_edge::config::KafkaConfig;
use bess_edge::status::AgentStatus;
use bess_edge::uplink::KafkaUplink;
use bess_protocol::SiteId;
use bess_tests::{free_port, wait_for, Broker, Scratch};

fn kafka(brokers: String, topic: &str) -> KafkaConfig {
    KafkaConfig {
        brokers,
        topic: topic.into(),
        delivery_timeout: Duration::from_secs(2),
        properties: BTreeMap::new(),
    }
}

async fn seal(buffer: &BufferHandle, n: usize) {
    for i in 0..n {
        buffer
            .seal(SealSummary::default(), move |seq, _| {
                Ok(format!("batch {i} seq {}", seq.0).into_bytes())
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_stay_buffered_until_a_broker_acknowledges_them() {
    let scratch = Scratch::new("uplink");
    let buffer = BufferHandle::new(SqliteBuffer::open(&scratch.path("buffer.sqlite"), 1).unwrap());
    seal(&buffer, 20).await;
    let status = Arc::new(AgentStatus::new("site-u".into(), Vec::new()));
    let sealed = Arc::new(Notify::new());

    // No broker at this address: every delivery fails, nothing leaves the buffer.
    let nowhere = kafka(format!("127.0.0.1:{}", free_port()), "bess.telemetry");
    let stop = CancellationToken::new();
    let uplink = KafkaUplink::new(
        &nowhere,
        SiteId::new("site-u").unwrap(),
        buffer.clone(),
        status.clone(),
        sealed.clone(),
    )
    .unwrap();
    let task = tokio::spawn(uplink.run(stop.clone(), Duration::from_millis(100)));
    wait_for("a failed delivery", Duration::from_secs(30), || {
        let status = status.clone();
        async move { status.uplink().last_error.map(|_| ()) }
    })
    .await
    .unwrap();
    stop.cancel();
    task.await.unwrap();
    assert_eq!(
        buffer.stats().await.unwrap().batches,
        20,
        "nothing left the buffer without an acknowledgement"
    );

    // A real broker: everything is delivered in order and then removed.
    let broker = Broker::start(&scratch.dir).await.unwrap();
    let config = kafka(broker.brokers(), "edge-uplink-test");
    let stop = CancellationToken::new();
    let uplink = KafkaUplink::new(
        &config,
        SiteId::new("site-u").unwrap(),
        buffer.clone(),
        status.clone(),
        sealed.clone(),
    )
    .unwrap();
    let task = tokio::spawn(uplink.run(stop.clone(), Duration::from_secs(5)));
    seal(&buffer, 5).await;
    sealed.notify_one();
    wait_for("an empty buffer", Duration::from_secs(60), || {
        let buffer = buffer.clone();
        async move { (buffer.stats().await.unwrap().batches == 0).then_some(()) }
    })
    .await
    .unwrap();
    stop.cancel();
    task.await.unwrap();

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", "uplink-test")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "2000")
        .create()
        .unwrap();
    consumer.subscribe(&["edge-uplink-test"]).unwrap();
    let mut payloads = Vec::new();
    while payloads.len() < 25 {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("message")
            .unwrap();
        assert_eq!(message.key(), Some(&b"site-u"[..]));
        payloads.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
    }
    let expected: Vec<String> = (0..20)
        .map(|i| format!("batch {i} seq {}", 1000 + i))
        .chain((0..5).map(|i| format!("batch {i} seq {}", 1020 + i)))
        .collect();
    assert_eq!(
        payloads, expected,
        "every batch once, in sequence order, byte for byte"
    );
    assert_eq!(status.uplink().last_acked_seq, Some(1024));
}
