//! `MqttMirror`: publishes the latest values as JSON to the site's own
//! broker, for a local HMI. Per point, retained, to
//! `{prefix}/{device}/{point}`:
//!
//! ```json
//! {"value":84.6,"raw":8460,"unit":"%","quality":"good","ts_ms":1795637425070}
//! ```
//!
//! or, with `per_frame = true`, one message per frame to
//! `{prefix}/{device}/{group}` with every point of the frame. The mirror is
//! best effort (QoS 0) and never slows polling: when its queue is full a
//! message is dropped and counted in `bess_edge_mirror_dropped_total`.

use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use bess_protocol::{Catalog, Frame, Reading, SiteId};

use crate::backoff::Backoff;
use crate::config::MqttMirrorConfig;
use crate::uplink::mqtt::{mqtt_options, MqttError};

const QUEUE: usize = 10_000;
/// Pause after a connection error before the next attempt.
const RETRY_DELAY: Duration = Duration::from_secs(2);

pub struct MqttMirror {
    client: AsyncClient,
    prefix: String,
    per_frame: bool,
    catalog: Catalog,
}

impl MqttMirror {
    /// The mirror and the event loop that must be driven by [`drive`].
    pub fn new(
        config: &MqttMirrorConfig,
        site: &SiteId,
        catalog: Catalog,
    ) -> Result<(Self, EventLoop), MqttError> {
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("bess-edge-mirror-{site}"));
        let credentials = config
            .username
            .as_deref()
            .map(|u| (u, config.password.as_deref().unwrap_or("")));
        let options = mqtt_options(
            &client_id,
            &config.host,
            config.port,
            Duration::from_secs(30),
            credentials,
        )?;
        let (client, eventloop) = AsyncClient::new(options, QUEUE);
        let prefix = config.prefix.replace("{site}", site.as_str());
        Ok((
            Self {
                client,
                prefix,
                per_frame: config.per_frame,
                catalog,
            },
            eventloop,
        ))
    }

    /// Queue the frame's values; never waits.
    pub fn publish_frame(&self, frame: &Frame) {
        let Some(group) = self.catalog.groups.get(usize::from(frame.group.0)) else {
            return;
        };
        let device = &self.catalog.devices[usize::from(group.device)].name;
        let values = group
            .points
            .iter()
            .zip(&frame.values)
            .map(|(point, reading)| {
                let raw = match reading {
                    Reading::Int(v) => json!(v),
                    Reading::Float(v) => json!(v),
                    Reading::Missing(_) => serde_json::Value::Null,
                };
                let mut value = json!({
                    "value": reading.raw().map(|r| point.engineering(r)),
                    "raw": raw,
                    "unit": point.unit,
                    "quality": reading.quality().as_str(),
                    "ts_ms": frame.ts_ms,
                });
                if let Reading::Missing(reason) = reading {
                    value["reason"] = json!(reason.describe());
                }
                (point.name.as_str(), value)
            });
        if self.per_frame {
            let points: serde_json::Map<String, serde_json::Value> =
                values.map(|(n, v)| (n.to_owned(), v)).collect();
            let body = json!({ "device": device, "group": group.name, "ts_ms": frame.ts_ms, "points": points });
            self.send(
                format!("{}/{device}/{}", self.prefix, group.name),
                body,
                false,
            );
        } else {
            for (name, value) in values {
                self.send(format!("{}/{device}/{name}", self.prefix), value, true);
            }
        }
    }

    fn send(&self, topic: String, body: serde_json::Value, retain: bool) {
        if self
            .client
            .try_publish(topic, QoS::AtMostOnce, retain, body.to_string())
            .is_err()
        {
            metrics::counter!("bess_edge_mirror_dropped_total").increment(1);
        } else {
            metrics::counter!("bess_edge_mirror_published_total").increment(1);
        }
    }
}

/// Drive the mirror's connection until `stop`; rumqttc reconnects on the
/// next poll after an error, so errors only pause it.
pub async fn drive(mut eventloop: EventLoop, stop: CancellationToken) {
    let mut logged = false;
    let mut backoff = Backoff::new(RETRY_DELAY, RETRY_DELAY);
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!("mqtt mirror connected");
                logged = false;
                backoff.reset();
            }
            Ok(_) => {}
            Err(e) => {
                if !logged {
                    tracing::warn!("mqtt mirror: {e}; retrying");
                    logged = true;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}
