//! The MQTT uplink and mirror against the real Mosquitto on 127.0.0.1:1883
//! (each test uses its own topic prefix): a batch leaves the buffer only
//! after its PubAck and arrives byte for byte; the mirror publishes the
//! latest values as retained JSON.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use bess_edge::buffer::{BufferHandle, SealSummary, SqliteBuffer};
use bess_edge::config::{MqttMirrorConfig, MqttUplinkConfig};
use bess_edge::mirror::MqttMirror;
use bess_edge::mqtt::MqttUplink;
use bess_edge::status::AgentStatus;
use bess_protocol::{
    Catalog, DeviceInfo, Frame, GroupIndex, GroupInfo, MissingReason, PointInfo, PointKind,
    Reading, SiteId,
};
use bess_tests::{free_port, wait_for, Scratch};

const MOSQUITTO: (&str, u16) = ("127.0.0.1", 1883);

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn uplink_config(port: u16, topic: &str) -> MqttUplinkConfig {
    MqttUplinkConfig {
        host: MOSQUITTO.0.into(),
        port,
        client_id: Some(unique("edge-uplink")),
        topic: topic.into(),
        username: None,
        password: None,
        keep_alive: Duration::from_secs(5),
        inflight: 8,
    }
}

/// A subscriber that has its subscription acknowledged before returning.
async fn subscribe(topic: &str) -> tokio::sync::mpsc::Receiver<rumqttc::Publish> {
    let mut options = MqttOptions::new(unique("test-sub"), MOSQUITTO.0, MOSQUITTO.1);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1000);
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    tokio::spawn(async move {
        let _client = client;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("subscriber: {e} (is Mosquitto running on 127.0.0.1:1883?)"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .expect("SubAck within 10 s")
        .unwrap();
    rx
}

async fn seal(buffer: &BufferHandle, n: usize) {
    for i in 0..n {
        buffer
            .seal(SealSummary::default(), move |seq, _gaps| {
                Ok(format!("batch {i} seq {}", seq.0).into_bytes())
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_leave_the_buffer_only_after_their_mqtt_puback() {
    let scratch = Scratch::new("mqtt-uplink");
    let buffer = BufferHandle::new(SqliteBuffer::open(&scratch.path("buffer.sqlite"), 1).unwrap());
    seal(&buffer, 20).await;
    let status = Arc::new(AgentStatus::new("site-m".into(), Vec::new()));
    let sealed = Arc::new(Notify::new());
    let site = SiteId::new("site-m").unwrap();
    let topic = format!("{}/batches", unique("bess-test"));

    // No broker there: nothing leaves the buffer.
    let nowhere = uplink_config(free_port(), &topic);
    let stop = CancellationToken::new();
    let uplink = MqttUplink::new(
        &nowhere,
        &site,
        buffer.clone(),
        status.clone(),
        sealed.clone(),
    )
    .unwrap();
    let task = tokio::spawn(uplink.run(stop.clone(), Duration::from_millis(100)));
    wait_for("a failed connection", Duration::from_secs(30), || {
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
        "nothing left the buffer without a PubAck"
    );

    // Mosquitto: every batch arrives once, in order, and is then removed.
    let mut received = subscribe(&topic).await;
    let config = uplink_config(MOSQUITTO.1, &topic);
    let stop = CancellationToken::new();
    let uplink = MqttUplink::new(
        &config,
        &site,
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

    let mut payloads = Vec::new();
    while payloads.len() < 25 {
        let publish = tokio::time::timeout(Duration::from_secs(30), received.recv())
            .await
            .expect("message")
            .unwrap();
        assert_eq!(publish.qos, QoS::AtLeastOnce);
        payloads.push(String::from_utf8(publish.payload.to_vec()).unwrap());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_uplink_sends_the_live_window_before_the_backlog_by_default() {
    let scratch = Scratch::new("mqtt-live-first");
    let buffer = BufferHandle::new(SqliteBuffer::open(&scratch.path("buffer.sqlite"), 1).unwrap());
    // A backlog sealed long ago, then three batches sealed just now.
    seal(&buffer, 20).await;
    let now = bess_edge::clock::now_ms();
    for i in 0..3 {
        let summary = SealSummary {
            sealed_at_ms: now,
            ..SealSummary::default()
        };
        buffer
            .seal(summary, move |seq, _gaps| {
                Ok(format!("live {i} seq {}", seq.0).into_bytes())
            })
            .await
            .unwrap();
    }
    let status = Arc::new(AgentStatus::new("site-l".into(), Vec::new()));
    let topic = format!("{}/batches", unique("bess-test"));
    let mut received = subscribe(&topic).await;
    let uplink = MqttUplink::new(
        &uplink_config(MOSQUITTO.1, &topic),
        &SiteId::new("site-l").unwrap(),
        buffer.clone(),
        status.clone(),
        Arc::new(Notify::new()),
    )
    .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(uplink.run(stop.clone(), Duration::from_secs(5)));
    wait_for("an empty buffer", Duration::from_secs(60), || {
        let buffer = buffer.clone();
        async move { (buffer.stats().await.unwrap().batches == 0).then_some(()) }
    })
    .await
    .unwrap();
    stop.cancel();
    task.await.unwrap();

    let mut payloads = Vec::new();
    while payloads.len() < 23 {
        let publish = tokio::time::timeout(Duration::from_secs(30), received.recv())
            .await
            .expect("message")
            .unwrap();
        payloads.push(String::from_utf8(publish.payload.to_vec()).unwrap());
    }
    let expected: Vec<String> = (0..3)
        .map(|i| format!("live {i} seq {}", 1020 + i))
        .chain((0..20).map(|i| format!("batch {i} seq {}", 1000 + i)))
        .collect();
    assert_eq!(
        payloads, expected,
        "the live window first, then the backlog oldest first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_publishes_latest_values_as_retained_json() {
    let prefix = unique("bess-mirror");
    let catalog = Catalog {
        devices: vec![DeviceInfo {
            name: "bms-1".into(),
            model: "m".into(),
        }],
        groups: vec![GroupInfo {
            device: 0,
            name: "fast".into(),
            interval_ms: 1000,
            points: vec![
                PointInfo::new("soc", "%", PointKind::Analog, 0.01, 0.0),
                PointInfo::new("temp", "°C", PointKind::Analog, 0.1, 0.0),
            ],
        }],
    };
    let config = MqttMirrorConfig {
        host: MOSQUITTO.0.into(),
        port: MOSQUITTO.1,
        client_id: Some(unique("mirror")),
        prefix: prefix.clone(),
        per_frame: false,
        username: None,
        password: None,
    };
    let (mirror, eventloop) =
        MqttMirror::new(&config, &SiteId::new("site-m").unwrap(), catalog).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(bess_edge::mirror::drive(eventloop, stop.clone()));
    let frame = Frame {
        group: GroupIndex(0),
        ts_ms: 1_700_000_000_000,
        values: vec![Reading::Int(8460), Reading::Missing(MissingReason::Timeout)],
    };
    mirror.publish_frame(&frame);

    // Retained: a subscriber that comes later still gets the latest values.
    let mut got = std::collections::BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "retained values within 30 s: {got:?}"
        );
        let mut received = subscribe(&format!("{prefix}/#")).await;
        while let Ok(Some(p)) =
            tokio::time::timeout(Duration::from_millis(500), received.recv()).await
        {
            got.insert(
                p.topic.clone(),
                serde_json::from_slice::<serde_json::Value>(&p.payload).unwrap(),
            );
        }
    }
    let mut later = subscribe(&format!("{prefix}/bms-1/soc")).await;
    let retained = tokio::time::timeout(Duration::from_secs(10), later.recv())
        .await
        .expect("retained value")
        .unwrap();
    assert!(
        retained.retain,
        "a late subscriber gets the retained latest value: {retained:?}"
    );
    let soc = &got[&format!("{prefix}/bms-1/soc")];
    assert_eq!(soc["value"], 84.6);
    assert_eq!(soc["quality"], "good");
    assert_eq!(soc["unit"], "%");
    let temp = &got[&format!("{prefix}/bms-1/temp")];
    assert_eq!(temp["value"], serde_json::Value::Null);
    assert_eq!(temp["quality"], "comm-loss");
    stop.cancel();
}
