//! `MqttTransport`: the alternative to Kafka for sites where only MQTT may
//! leave the network (e.g. an IoT broker that forwards to Kafka). It
//! publishes the same batch bytes with QoS 1 on a persistent session
//! (`clean_session = false`) to `bess/{site}/batches`, and reports a batch
//! delivered only on the broker's PubAck for its packet id.
//!
//! The drain loop's task drives rumqttc's `EventLoop` (through
//! `next_report`); nothing else polls it. Packet ids are assigned by the
//! event loop in the order publishes leave it (`Outgoing::Publish(pkid)`),
//! so the transport pairs them with the batch sequence numbers it queued,
//! in order. A connection error loses the session: the drain loop hands
//! every unacknowledged batch back to the buffer and, after its backoff,
//! a new session starts from the oldest unacknowledged batch. A batch may
//! thus reach the broker twice, always with the same sequence number and
//! bytes, which the collector's ledger recognises.

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use bess_protocol::{BatchSeq, SiteId};

use super::{QueueFull, Report, Transport, Uplink};
use crate::buffer::BufferHandle;
use crate::config::MqttUplinkConfig;
use crate::status::AgentStatus;

/// Largest MQTT packet we send or accept: a batch is at most this big.
pub const MAX_PACKET_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt: {0}")]
    Option(String),
    #[error("mqtt_uplink.tls: {0}")]
    Tls(#[from] super::tls::MqttTlsError),
}

/// Options for a persistent-session client, checked before any setter that
/// could panic.
pub fn mqtt_options(
    client_id: &str,
    host: &str,
    port: u16,
    keep_alive: Duration,
    credentials: Option<(&str, &str)>,
) -> Result<MqttOptions, MqttError> {
    if keep_alive < Duration::from_secs(1) {
        return Err(MqttError::Option("keep_alive must be at least 1s".into()));
    }
    if client_id.is_empty() || host.is_empty() {
        return Err(MqttError::Option(
            "client id and host must not be empty".into(),
        ));
    }
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_keep_alive(keep_alive)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    if let Some((user, password)) = credentials {
        options.set_credentials(user, password);
    }
    Ok(options)
}

/// Options for a client of the uplink's broker: its host, credentials,
/// keep-alive and TLS, and the client id (`client_id`, default `bess-edge-{site}`)
/// with `suffix` appended.
pub fn uplink_options(
    config: &MqttUplinkConfig,
    site: &SiteId,
    suffix: &str,
) -> Result<MqttOptions, MqttError> {
    let client_id = config
        .client_id
        .clone()
        .unwrap_or_else(|| format!("bess-edge-{site}"));
    let credentials = config
        .username
        .as_deref()
        .map(|u| (u, config.password.as_deref().unwrap_or("")));
    let mut options = mqtt_options(
        &format!("{client_id}{suffix}"),
        &config.host,
        config.port,
        config.keep_alive,
        credentials,
    )?;
    if let Some(tls) = &config.tls {
        options.set_transport(super::tls::mqtt_tls_transport(tls)?);
    }
    Ok(options)
}

/// The drain loop over MQTT.
pub type MqttUplink = Uplink<MqttTransport>;

impl MqttUplink {
    pub fn new(
        config: &MqttUplinkConfig,
        site: &SiteId,
        buffer: BufferHandle,
        status: Arc<AgentStatus>,
        sealed: Arc<Notify>,
    ) -> Result<Self, MqttError> {
        let transport = MqttTransport::new(config, site)?;
        Ok(Uplink::with_transport(transport, buffer, status, sealed))
    }
}

pub struct MqttTransport {
    /// To start a new session after a connection error.
    options: MqttOptions,
    topic: String,
    window: usize,
    client: AsyncClient,
    eventloop: EventLoop,
    connected: bool,
    /// Published, waiting for the event loop to give them a packet id.
    queued: VecDeque<BatchSeq>,
    /// Packet id → batch, waiting for the PubAck.
    in_flight: HashMap<u16, BatchSeq>,
}

impl MqttTransport {
    pub fn new(config: &MqttUplinkConfig, site: &SiteId) -> Result<Self, MqttError> {
        if config.inflight == 0 {
            return Err(MqttError::Option("inflight must be at least 1".into()));
        }
        let mut options = uplink_options(config, site, "")?;
        options
            .set_clean_session(false)
            .set_inflight(config.inflight);
        let window = usize::from(config.inflight);
        let (client, eventloop) = AsyncClient::new(options.clone(), request_queue(window));
        Ok(Self {
            options,
            topic: config.topic.replace("{site}", site.as_str()),
            window,
            client,
            eventloop,
            connected: false,
            queued: VecDeque::new(),
            in_flight: HashMap::new(),
        })
    }
}

/// Room in the client's request queue for a full window and some control packets.
fn request_queue(window: usize) -> usize {
    window * 2 + 8
}

impl Transport for MqttTransport {
    const NAME: &'static str = "mqtt";

    fn window(&self) -> usize {
        self.window
    }

    fn is_ready(&self) -> bool {
        self.connected
    }

    fn send(&mut self, seq: BatchSeq, payload: Vec<u8>) -> Result<(), QueueFull> {
        self.client
            .try_publish(&self.topic, QoS::AtLeastOnce, false, payload)
            .map_err(|e| QueueFull(e.to_string()))?;
        self.queued.push_back(seq);
        Ok(())
    }

    async fn next_report(&mut self) -> Report {
        loop {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    tracing::info!(
                        session_present = ack.session_present,
                        "mqtt uplink connected"
                    );
                    self.connected = true;
                    return Report::Connected;
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some(seq) = self.queued.pop_front() {
                        self.in_flight.insert(pkid, seq);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(seq) = self.in_flight.remove(&ack.pkid) {
                        return Report::Delivered(seq);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.connected = false;
                    return Report::LinkLost(super::tls::describe_link_error(&e.to_string()));
                }
            }
        }
    }

    /// A new client and event loop: the next poll opens a new session.
    fn recover(&mut self, _error: &str) {
        let (client, eventloop) =
            AsyncClient::new(self.options.clone(), request_queue(self.window));
        self.client = client;
        self.eventloop = eventloop;
        self.connected = false;
        self.queued.clear();
        self.in_flight.clear();
    }

    async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(500), self.client.disconnect()).await;
    }
}
