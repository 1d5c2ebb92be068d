//! The uplink's guarantees against real brokers, each written once and run
//! over both transports: Kafka (a Tansu broker started for the test) and
//! MQTT (the Mosquitto on 127.0.0.1:1883, a topic of its own per test). A
//! batch leaves the buffer only after the broker acknowledged it, arrives
//! byte for byte as sealed, and batches go in the configured drain order.

mod support;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use rumqttc::QoS;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use bess_edge::buffer::{BufferHandle, SealSummary, SqliteBuffer};
use bess_edge::config::{KafkaConfig, MqttUplinkConfig};
use bess_edge::status::AgentStatus;
use bess_edge::uplink::{DrainOrder, KafkaUplink, MqttUplink};
use bess_protocol::SiteId;
use bess_tests::{free_port, wait_for, Broker, Scratch};
use support::{subscribe, unique, MOSQUITTO};

const SITE: &str = "site-u";

/// One broker the uplink can forward to.
enum Backend {
    Kafka { broker: Broker, topic: String },
    Mqtt { topic: String },
}

/// What the uplink under test shares with the test.
struct Edge {
    buffer: BufferHandle,
    status: Arc<AgentStatus>,
    sealed: Arc<Notify>,
}

impl Backend {
    async fn kafka(scratch: &Scratch) -> Self {
        Backend::Kafka {
            broker: Broker::start(&scratch.dir).await.unwrap(),
            topic: "edge-uplink-test".into(),
        }
    }

    fn mqtt() -> Self {
        Backend::Mqtt {
            topic: format!("{}/batches", unique("bess-test")),
        }
    }

    fn kafka_config(brokers: String, topic: &str) -> KafkaConfig {
        KafkaConfig {
            brokers,
            topic: topic.into(),
            live_topic: format!("{topic}.live"),
            delivery_timeout: Duration::from_secs(2),
            properties: BTreeMap::new(),
            tls: None,
        }
    }

    fn mqtt_config(port: u16, topic: &str) -> MqttUplinkConfig {
        MqttUplinkConfig {
            host: MOSQUITTO.0.into(),
            port,
            client_id: Some(unique("edge-uplink")),
            topic: topic.into(),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(5),
            inflight: 8,
            live_topic: format!("{topic}/live"),
            tls: None,
        }
    }

    /// Run an uplink to this broker (or, `reachable = false`, to a port
    /// where nothing listens) in the given drain order.
    fn spawn(
        &self,
        edge: &Edge,
        reachable: bool,
        drain: Option<DrainOrder>,
        stop: &CancellationToken,
        grace: Duration,
    ) -> JoinHandle<()> {
        let site = SiteId::new(SITE).unwrap();
        let (buffer, status, sealed) = (
            edge.buffer.clone(),
            edge.status.clone(),
            edge.sealed.clone(),
        );
        match self {
            Backend::Kafka { broker, topic } => {
                let brokers = if reachable {
                    broker.brokers()
                } else {
                    format!("127.0.0.1:{}", free_port())
                };
                let config = Self::kafka_config(brokers, topic);
                let uplink = KafkaUplink::new(&config, site, buffer, status, sealed).unwrap();
                let uplink = match drain {
                    Some(drain) => uplink.with_drain_order(drain),
                    None => uplink,
                };
                tokio::spawn(uplink.run(stop.clone(), grace))
            }
            Backend::Mqtt { topic } => {
                let port = if reachable { MOSQUITTO.1 } else { free_port() };
                let config = Self::mqtt_config(port, topic);
                let uplink = MqttUplink::new(&config, &site, buffer, status, sealed).unwrap();
                let uplink = match drain {
                    Some(drain) => uplink.with_drain_order(drain),
                    None => uplink,
                };
                tokio::spawn(uplink.run(stop.clone(), grace))
            }
        }
    }

    /// Start listening for what the uplink delivers (MQTT delivers only to
    /// subscribers that are already there; Kafka keeps everything).
    async fn listen(&self) -> Listener {
        match self {
            Backend::Kafka { broker, topic } => Listener::Kafka {
                brokers: broker.brokers(),
                topic: topic.clone(),
                consumer: None,
            },
            Backend::Mqtt { topic } => Listener::Mqtt(subscribe(topic).await),
        }
    }
}

enum Listener {
    Kafka {
        brokers: String,
        topic: String,
        consumer: Option<StreamConsumer>,
    },
    Mqtt(tokio::sync::mpsc::Receiver<rumqttc::Publish>),
}

impl Listener {
    /// The next delivered batch's bytes, after the transport's own checks
    /// on the message (Kafka: keyed by site; MQTT: QoS 1).
    async fn next(&mut self) -> String {
        match self {
            Listener::Kafka {
                brokers,
                topic,
                consumer,
            } => {
                let consumer = consumer.get_or_insert_with(|| {
                    let consumer: StreamConsumer = ClientConfig::new()
                        .set("bootstrap.servers", brokers.as_str())
                        .set("group.id", unique("uplink-test"))
                        .set("auto.offset.reset", "earliest")
                        .set("session.timeout.ms", "2000")
                        .create()
                        .unwrap();
                    consumer.subscribe(&[topic.as_str()]).unwrap();
                    consumer
                });
                let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
                    .await
                    .expect("message")
                    .unwrap();
                assert_eq!(message.key(), Some(SITE.as_bytes()));
                String::from_utf8(message.payload().unwrap().to_vec()).unwrap()
            }
            Listener::Mqtt(received) => {
                let publish = tokio::time::timeout(Duration::from_secs(30), received.recv())
                    .await
                    .expect("message")
                    .unwrap();
                assert_eq!(publish.qos, QoS::AtLeastOnce);
                String::from_utf8(publish.payload.to_vec()).unwrap()
            }
        }
    }

    async fn take(&mut self, n: usize) -> Vec<String> {
        let mut payloads = Vec::with_capacity(n);
        while payloads.len() < n {
            payloads.push(self.next().await);
        }
        payloads
    }
}

impl Edge {
    fn new(scratch: &Scratch) -> Self {
        let buffer = SqliteBuffer::open(&scratch.path("buffer.sqlite"), 1).unwrap();
        Self {
            buffer: BufferHandle::new(buffer),
            status: Arc::new(AgentStatus::new(SITE.into(), Vec::new())),
            sealed: Arc::new(Notify::new()),
        }
    }

    /// Seal `n` batches labelled `label`, sealed at `sealed_at_ms`.
    async fn seal_at(&self, label: &'static str, sealed_at_ms: i64, n: usize) {
        for i in 0..n {
            let summary = SealSummary {
                sealed_at_ms,
                ..SealSummary::default()
            };
            self.buffer
                .seal(summary, move |seq, _gaps| {
                    Ok(format!("{label} {i} seq {}", seq.0).into_bytes())
                })
                .await
                .unwrap();
        }
    }

    /// Seal `n` batches long ago: a backlog.
    async fn seal(&self, n: usize) {
        self.seal_at("batch", 0, n).await;
    }

    async fn wait_until_empty(&self) {
        wait_for("an empty buffer", Duration::from_secs(60), || {
            let buffer = self.buffer.clone();
            async move { (buffer.stats().await.unwrap().batches == 0).then_some(()) }
        })
        .await
        .unwrap();
    }
}

async fn batches_stay_buffered_until_the_broker_acknowledges_them(backend: Backend, edge: Edge) {
    edge.seal(20).await;

    // No broker at this address: every delivery fails, nothing leaves the buffer.
    let stop = CancellationToken::new();
    let task = backend.spawn(&edge, false, None, &stop, Duration::from_millis(100));
    wait_for("a failed delivery", Duration::from_secs(30), || {
        let status = edge.status.clone();
        async move { status.uplink().last_error.map(|_| ()) }
    })
    .await
    .unwrap();
    stop.cancel();
    task.await.unwrap();
    assert_eq!(
        edge.buffer.stats().await.unwrap().batches,
        20,
        "nothing left the buffer without an acknowledgement"
    );

    // A real broker: everything is delivered in order and then removed.
    let mut listener = backend.listen().await;
    let stop = CancellationToken::new();
    let task = backend.spawn(&edge, true, None, &stop, Duration::from_secs(5));
    edge.seal(5).await;
    edge.sealed.notify_one();
    edge.wait_until_empty().await;
    stop.cancel();
    task.await.unwrap();

    let payloads = listener.take(25).await;
    let expected: Vec<String> = (0..20)
        .map(|i| format!("batch {i} seq {}", 1000 + i))
        .chain((0..5).map(|i| format!("batch {i} seq {}", 1020 + i)))
        .collect();
    assert_eq!(
        payloads, expected,
        "every batch once, in sequence order, byte for byte"
    );
    assert_eq!(edge.status.uplink().last_acked_seq, Some(1024));
}

async fn the_live_window_goes_before_the_backlog_by_default(backend: Backend, edge: Edge) {
    // A backlog sealed long ago, then three batches sealed just now.
    edge.seal(20).await;
    edge.seal_at("live", bess_edge::clock::now_ms(), 3).await;
    let mut listener = backend.listen().await;
    let stop = CancellationToken::new();
    let task = backend.spawn(&edge, true, None, &stop, Duration::from_secs(5));
    edge.wait_until_empty().await;
    stop.cancel();
    task.await.unwrap();

    let payloads = listener.take(23).await;
    let expected: Vec<String> = (0..3)
        .map(|i| format!("live {i} seq {}", 1020 + i))
        .chain((0..20).map(|i| format!("batch {i} seq {}", 1000 + i)))
        .collect();
    assert_eq!(
        payloads, expected,
        "the live window first, then the backlog oldest first"
    );
}

async fn oldest_first_ignores_the_live_window(backend: Backend, edge: Edge) {
    edge.seal(5).await;
    edge.seal_at("live", bess_edge::clock::now_ms(), 2).await;
    let mut listener = backend.listen().await;
    let stop = CancellationToken::new();
    let drain = Some(DrainOrder::OldestFirst);
    let task = backend.spawn(&edge, true, drain, &stop, Duration::from_secs(5));
    edge.wait_until_empty().await;
    stop.cancel();
    task.await.unwrap();

    let payloads = listener.take(7).await;
    let expected: Vec<String> = (0..5)
        .map(|i| format!("batch {i} seq {}", 1000 + i))
        .chain((0..2).map(|i| format!("live {i} seq {}", 1005 + i)))
        .collect();
    assert_eq!(payloads, expected, "strictly in sequence order");
}

/// One `#[tokio::test]` per backend for a test body.
macro_rules! over_both_brokers {
    ($body:ident, $kafka:ident, $mqtt:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $kafka() {
            let scratch = Scratch::new(stringify!($kafka));
            let edge = Edge::new(&scratch);
            $body(Backend::kafka(&scratch).await, edge).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $mqtt() {
            let scratch = Scratch::new(stringify!($mqtt));
            let edge = Edge::new(&scratch);
            $body(Backend::mqtt(), edge).await;
        }
    };
}

over_both_brokers!(
    batches_stay_buffered_until_the_broker_acknowledges_them,
    batches_stay_buffered_until_a_kafka_broker_acknowledges_them,
    batches_leave_the_buffer_only_after_their_mqtt_puback
);
over_both_brokers!(
    the_live_window_goes_before_the_backlog_by_default,
    kafka_sends_the_live_window_before_the_backlog_by_default,
    the_mqtt_uplink_sends_the_live_window_before_the_backlog_by_default
);
over_both_brokers!(
    oldest_first_ignores_the_live_window,
    kafka_oldest_first_ignores_the_live_window,
    mqtt_oldest_first_ignores_the_live_window
);
