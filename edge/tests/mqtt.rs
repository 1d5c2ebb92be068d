//! The MQTT mirror against the real Mosquitto on 127.0.0.1:1883 (each test
//! uses its own topic prefix): it publishes the latest values as retained
//! JSON. The MQTT uplink's guarantees are tested with Kafka's, one body for
//! both, in `tests/uplink.rs`.

mod support;

use std::time::Duration;
use tokio_util::sync::CancellationToken;

use bess_edge::config::MqttMirrorConfig;
use bess_edge::mirror::MqttMirror;
use bess_protocol::{
    Catalog, DeviceInfo, Frame, GroupIndex, GroupInfo, MissingReason, PointInfo, PointKind,
    Reading, SiteId,
};
use support::{subscribe, unique, MOSQUITTO};

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
