//! `MqttUplink`: the alternative to `KafkaUplink` for sites where only MQTT
//! may leave the network (e.g. an IoT broker that forwards to Kafka). It
//! publishes the same batch bytes, in the same drain order as
//! `KafkaUplink` (live first by default), with QoS 1 on a persistent
//! session (`clean_session = false`) to `bess/{site}/batches`, and deletes a
//! batch from the buffer only after the broker's PubAck for that packet id.
//!
//! One task drives rumqttc's `EventLoop`. Packet ids are assigned by the
//! event loop in the order publishes leave it (`Outgoing::Publish(pkid)`),
//! so the uplink pairs them with the batch sequence numbers it queued, in
//! order. After a connection error the session is rebuilt and sending
//! restarts from the oldest unacknowledged batch: a batch may reach the
//! broker twice, always with the same sequence number and bytes, which the
//! collector's ledger recognises.

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use bess_protocol::{BatchSeq, SiteId};

use crate::buffer::BufferHandle;
use crate::clock::now_ms;
use crate::config::MqttUplinkConfig;
use crate::status::{AgentStatus, Totals};
use crate::uplink::DrainOrder;

const RETRY_DELAY_MIN: Duration = Duration::from_millis(250);
const RETRY_DELAY_MAX: Duration = Duration::from_secs(10);
/// Largest MQTT packet we send or accept: a batch is at most this big.
pub const MAX_PACKET_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt: {0}")]
    Option(String),
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

pub struct MqttUplink {
    options: MqttOptions,
    topic: String,
    window: usize,
    buffer: BufferHandle,
    status: Arc<AgentStatus>,
    sealed: Arc<Notify>,
    drain: DrainOrder,
}

impl MqttUplink {
    pub fn new(
        config: &MqttUplinkConfig,
        site: &SiteId,
        buffer: BufferHandle,
        status: Arc<AgentStatus>,
        sealed: Arc<Notify>,
    ) -> Result<Self, MqttError> {
        if config.inflight == 0 {
            return Err(MqttError::Option("inflight must be at least 1".into()));
        }
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("bess-edge-{site}"));
        let credentials = config
            .username
            .as_deref()
            .map(|u| (u, config.password.as_deref().unwrap_or("")));
        let mut options = mqtt_options(
            &client_id,
            &config.host,
            config.port,
            config.keep_alive,
            credentials,
        )?;
        options
            .set_clean_session(false)
            .set_inflight(config.inflight);
        Ok(Self {
            options,
            topic: config.topic.replace("{site}", site.as_str()),
            window: usize::from(config.inflight),
            buffer,
            status,
            sealed,
            drain: DrainOrder::LiveFirst {
                window: Duration::from_secs(10),
            },
        })
    }

    /// Choose the drain order (default: live first with a 10 s window).
    pub fn with_drain_order(mut self, drain: DrainOrder) -> Self {
        self.drain = drain;
        self
    }

    /// Send until `stop` fires and then until the buffer is empty or
    /// `grace` has passed; what is left stays in the buffer for next time.
    pub async fn run(self, stop: CancellationToken, grace: Duration) {
        let mut retry_delay = RETRY_DELAY_MIN;
        let mut deadline: Option<Instant> = None;
        loop {
            let (client, eventloop) = AsyncClient::new(self.options.clone(), self.window * 2 + 8);
            let ended = self
                .session(
                    &client,
                    eventloop,
                    &stop,
                    grace,
                    &mut deadline,
                    &mut retry_delay,
                )
                .await;
            match ended {
                SessionEnd::Done => {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(500), client.disconnect()).await;
                    return;
                }
                SessionEnd::Failed(error) => {
                    metrics::counter!("bess_edge_delivery_failures_total").increment(1);
                    tracing::warn!(retry_in = ?retry_delay, "mqtt uplink: {error}");
                    self.status.record_uplink_error(error);
                    let wait = deadline.map_or(retry_delay, |d| {
                        retry_delay.min(d.saturating_duration_since(Instant::now()))
                    });
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stop.cancelled(), if deadline.is_none() => {}
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        tracing::warn!(
                            "shutdown grace period over; unsent batches stay in the buffer"
                        );
                        return;
                    }
                    retry_delay = (retry_delay * 2).min(RETRY_DELAY_MAX);
                }
            }
        }
    }

    async fn session(
        &self,
        client: &AsyncClient,
        mut eventloop: EventLoop,
        stop: &CancellationToken,
        grace: Duration,
        deadline: &mut Option<Instant>,
        retry_delay: &mut Duration,
    ) -> SessionEnd {
        // Published, waiting for the event loop to give them a packet id.
        let mut queued: VecDeque<BatchSeq> = VecDeque::new();
        // Packet id → batch, waiting for the PubAck.
        let mut in_flight: HashMap<u16, BatchSeq> = HashMap::new();
        let mut connected = false;
        let mut buffer_empty = false;
        loop {
            if stop.is_cancelled() {
                let at = *deadline.get_or_insert_with(|| Instant::now() + grace);
                if buffer_empty && queued.is_empty() && in_flight.is_empty() {
                    return SessionEnd::Done;
                }
                if Instant::now() >= at {
                    tracing::warn!("shutdown grace period over; unsent batches stay in the buffer");
                    self.settle_all(&mut queued, &mut in_flight).await;
                    return SessionEnd::Done;
                }
            }
            if connected && queued.len() + in_flight.len() < self.window {
                // Taking marks the batches in flight, so the disk cap leaves them alone.
                let live_since = self
                    .drain
                    .live_window()
                    .map(|w| now_ms() - w.as_millis() as i64);
                match self
                    .buffer
                    .take_for_sending(live_since, self.window - queued.len() - in_flight.len())
                    .await
                {
                    Ok(batches) => {
                        buffer_empty =
                            batches.is_empty() && queued.is_empty() && in_flight.is_empty();
                        let mut unsent = Vec::new();
                        for batch in batches {
                            if !unsent.is_empty() {
                                unsent.push(batch.seq);
                                continue;
                            }
                            match client.try_publish(
                                &self.topic,
                                QoS::AtLeastOnce,
                                false,
                                batch.payload,
                            ) {
                                Ok(()) => queued.push_back(batch.seq),
                                Err(e) => {
                                    tracing::debug!("mqtt request queue: {e}");
                                    unsent.push(batch.seq);
                                }
                            }
                        }
                        if !unsent.is_empty() {
                            let _ = self.buffer.settle(unsent).await;
                        }
                    }
                    Err(e) => tracing::error!("reading buffer: {e}"),
                }
            }
            let wait = deadline.map_or(Duration::from_millis(500), |d| {
                d.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(500))
            });
            let event = tokio::select! {
                event = eventloop.poll() => event,
                () = self.sealed.notified() => continue,
                () = stop.cancelled(), if deadline.is_none() => continue,
                () = tokio::time::sleep(wait) => continue,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    tracing::info!(
                        session_present = ack.session_present,
                        "mqtt uplink connected"
                    );
                    connected = true;
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some(seq) = queued.pop_front() {
                        in_flight.insert(pkid, seq);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    let Some(seq) = in_flight.remove(&ack.pkid) else {
                        continue;
                    };
                    match self.buffer.remove(vec![seq]).await {
                        Ok(()) => {
                            metrics::counter!("bess_edge_batches_acked_total").increment(1);
                            metrics::gauge!("bess_edge_buffer_batches").decrement(1.0);
                            Totals::add(&self.status.totals.batches_acked, 1);
                            self.status.record_ack(seq.0, now_ms());
                            *retry_delay = RETRY_DELAY_MIN;
                        }
                        Err(e) => tracing::error!("removing acknowledged batch: {e}"),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    // Unacknowledged batches go again (same bytes, same sequence) in the next session.
                    self.settle_all(&mut queued, &mut in_flight).await;
                    return SessionEnd::Failed(e.to_string());
                }
            }
        }
    }

    async fn settle_all(
        &self,
        queued: &mut VecDeque<BatchSeq>,
        in_flight: &mut HashMap<u16, BatchSeq>,
    ) {
        let seqs: Vec<BatchSeq> = queued
            .drain(..)
            .chain(in_flight.drain().map(|(_, seq)| seq))
            .collect();
        if !seqs.is_empty() {
            let _ = self.buffer.settle(seqs).await;
        }
    }
}

enum SessionEnd {
    Done,
    Failed(String),
}
