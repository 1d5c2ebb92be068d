//! What the MQTT tests share: the Mosquitto under test, names unique to one
//! run, and a subscriber that is ready before it is returned.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::Duration;

pub const MOSQUITTO: (&str, u16) = ("127.0.0.1", 1883);

/// `prefix` made unique to this process and moment.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A subscriber that has its subscription acknowledged before returning.
pub async fn subscribe(topic: &str) -> tokio::sync::mpsc::Receiver<rumqttc::Publish> {
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
