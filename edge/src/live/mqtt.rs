//! `MqttLiveSink`: live messages with QoS 0 to `bess/{site}/live` on a
//! clean session of its own (client id `<uplink client id>-live`), so the
//! batches' persistent session never queues a live message. While the
//! connection is down nothing is handed to the client: a message queued
//! then would leave late, as history.

use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use bess_protocol::SiteId;

use super::LiveSink;
use crate::config::MqttUplinkConfig;
use crate::uplink::mqtt::{uplink_options, MqttError};

/// Messages the client may hold before `send` refuses.
const REQUEST_QUEUE: usize = 64;

pub struct MqttLiveSink {
    client: AsyncClient,
    topic: String,
    connected: Arc<AtomicBool>,
    lost: Arc<Notify>,
}

impl MqttLiveSink {
    /// The sink, and the task that drives its connection until `stop`.
    pub fn new(
        config: &MqttUplinkConfig,
        site: &SiteId,
        stop: CancellationToken,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), MqttError> {
        let mut options = uplink_options(config, site, "-live")?;
        options.set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
        let connected = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(Notify::new());
        let driver = tokio::spawn({
            let (connected, lost) = (connected.clone(), lost.clone());
            async move {
                loop {
                    let event = tokio::select! {
                        event = eventloop.poll() => event,
                        () = stop.cancelled() => return,
                    };
                    match event {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            connected.store(true, Ordering::Release);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            if connected.swap(false, Ordering::AcqRel) {
                                tracing::warn!("mqtt live lane disconnected: {e}");
                            }
                            lost.notify_one();
                            tokio::select! {
                                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                                () = stop.cancelled() => return,
                            }
                        }
                    }
                }
            }
        });
        Ok((
            Self {
                client,
                topic: config.live_topic.replace("{site}", site.as_str()),
                connected,
                lost,
            },
            driver,
        ))
    }
}

impl LiveSink for MqttLiveSink {
    const NAME: &'static str = "mqtt";

    fn send(&mut self, message: Vec<u8>) -> bool {
        self.connected.load(Ordering::Acquire)
            && self
                .client
                .try_publish(&self.topic, QoS::AtMostOnce, false, message)
                .is_ok()
    }

    async fn next_loss(&mut self) {
        self.lost.notified().await;
    }
}
