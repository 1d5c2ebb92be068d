//! The live lane against real brokers, one body over each: Kafka (a Tansu
//! broker started for the test) and MQTT (the Mosquitto on 127.0.0.1:1883).
//! Frames read together leave as one message, a reader decodes exactly the
//! frames that were read, and a message the broker never took is not sent
//! late: the next one starts a chain a new reader can decode whole.

mod support;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use bess_edge::clock::now_ms;
use bess_edge::config::{KafkaConfig, LiveConfig, MqttUplinkConfig};
use bess_edge::live::{KafkaLiveSink, LiveFeed, LiveLane, MqttLiveSink};
use bess_protocol::{CatalogHash, Frame, GroupIndex, LiveDecoder, Reading, SiteId};
use bess_tests::{Broker, Scratch};
use support::{subscribe, unique, MOSQUITTO};

const SITE: &str = "site-live";

fn frame(group: u16, ts_ms: i64, value: i64) -> Frame {
    Frame {
        group: GroupIndex(group),
        ts_ms,
        values: vec![Reading::Int(value), Reading::Int(900), Reading::Float(0.5)],
    }
}

/// Two poll cycles of two groups, a second apart (now, so none is too old).
fn cycles() -> Vec<Vec<Frame>> {
    let now = now_ms();
    vec![
        vec![frame(0, now, 10), frame(1, now + 2, 20)],
        vec![frame(0, now + 1000, 11), frame(1, now + 1003, 20)],
    ]
}

/// Feed the cycles through a lane with `sink`, a cycle at a time.
async fn run_lane<S: bess_edge::live::LiveSink + 'static>(sink: S, sent: &[Vec<Frame>]) {
    let lane = LiveLane::new(CatalogHash(77), &LiveConfig::default(), sink);
    let (feed, frames) = LiveFeed::channel();
    let task = tokio::spawn(lane.run(frames));
    for cycle in sent {
        for frame in cycle {
            feed.offer(frame);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(feed);
    task.await.unwrap();
}

fn assert_decodes_to_the_cycles(messages: &[Vec<u8>], sent: &[Vec<Frame>]) {
    assert_eq!(messages.len(), sent.len(), "one message per poll cycle");
    let mut decoder = LiveDecoder::new();
    for (message, cycle) in messages.iter().zip(sent) {
        let update = decoder.decode(message).unwrap();
        assert_eq!(update.catalog_hash, CatalogHash(77));
        assert_eq!(&update.frames, cycle);
    }
    assert!(
        messages[1].len() < messages[0].len(),
        "the second cycle goes as a change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_kafka_frames_read_together_arrive_as_one_message_keyed_by_site() {
    let scratch = Scratch::new("edge-live-kafka");
    let broker = Broker::start(&scratch.dir).await.unwrap();
    let kafka = KafkaConfig {
        brokers: broker.brokers(),
        topic: "edge-live-batches".into(),
        live_topic: "edge-live".into(),
        delivery_timeout: Duration::from_secs(5),
        properties: Default::default(),
        tls: None,
    };
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .create()
        .unwrap();
    admin
        .create_topics(
            [&NewTopic::new("edge-live", 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", unique("live-test"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["edge-live"]).unwrap();
    let sent = cycles();
    let sink =
        KafkaLiveSink::new(&kafka, &LiveConfig::default(), SiteId::new(SITE).unwrap()).unwrap();
    run_lane(sink, &sent).await;
    let mut messages = Vec::new();
    while messages.len() < sent.len() {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("a live message within 30 s")
            .unwrap();
        assert_eq!(message.key(), Some(SITE.as_bytes()));
        messages.push(message.payload().unwrap().to_vec());
    }
    assert_decodes_to_the_cycles(&messages, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mqtt_the_same_messages_go_with_qos_0_to_the_sites_live_topic() {
    let topic = format!("{}/live", unique("bess-test"));
    let config = MqttUplinkConfig {
        host: MOSQUITTO.0.into(),
        port: MOSQUITTO.1,
        client_id: Some(unique("edge-live")),
        topic: format!("{topic}/batches"),
        username: None,
        password: None,
        keep_alive: Duration::from_secs(5),
        inflight: 8,
        live_topic: topic.clone(),
        tls: None,
    };
    let mut received = subscribe(&topic).await;
    let stop = CancellationToken::new();
    let (sink, driver) =
        MqttLiveSink::new(&config, &SiteId::new(SITE).unwrap(), stop.clone()).unwrap();
    // Let the live session connect: while it is down nothing is handed over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = cycles();
    run_lane(sink, &sent).await;
    let mut messages = Vec::new();
    while messages.len() < sent.len() {
        let publish = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .expect("a live message within 10 s")
            .unwrap();
        assert_eq!(publish.qos, rumqttc::QoS::AtMostOnce);
        messages.push(publish.payload.to_vec());
    }
    stop.cancel();
    driver.await.unwrap();
    assert_decodes_to_the_cycles(&messages, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_broker_nothing_is_queued_to_leave_late() {
    // An MQTT live session to a port where nothing listens: every message
    // is refused at once (never queued), so none can reach a dashboard late.
    let config = MqttUplinkConfig {
        host: "127.0.0.1".into(),
        port: bess_tests::free_port(),
        client_id: Some(unique("edge-live-down")),
        topic: "unused/batches".into(),
        username: None,
        password: None,
        keep_alive: Duration::from_secs(5),
        inflight: 8,
        live_topic: "unused/live".into(),
        tls: None,
    };
    let stop = CancellationToken::new();
    let (mut sink, driver) =
        MqttLiveSink::new(&config, &SiteId::new(SITE).unwrap(), stop.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    use bess_edge::live::LiveSink as _;
    assert!(
        !sink.send(vec![1, 2, 3]),
        "a message handed over while the link is down"
    );
    stop.cancel();
    driver.await.unwrap();
}
