//! `GET /api/v1/live`: a WebSocket that pushes the live lane's frames as JSON.
//! The frames, their view and its JSON come from [`crate::live`]; this
//! handler only filters, queues and sends them.
//!
//! Without a message from the client it sends every frame of the sites the
//! token may see (or of one site with `?site=...`), as before. A client may
//! send `{"subscribe":{"sites":[..],"devices":[..],"points":["soc","cell_*"]}}`
//! at any time: it gets a snapshot of the current values that match
//! (`{"type":"snapshot","points":[..]}`, the `/latest` point shape), then
//! only the matching frames (`{"type":"frame",...}`, with only the matching
//! values when `points` is given). Devices are `DEVICE` or `SITE/DEVICE`;
//! point patterns match the point name (or `SITE/DEVICE/POINT` when they
//! contain a `/`) with `*` as a wildcard.
//!
//! Each client has a bounded queue to its socket. When it is full the client
//! is behind: frames are coalesced — only the newest per (site, device,
//! group) is kept — and counted (`bess_collector_live_coalesced_total`);
//! they are sent as soon as the socket takes them. The broadcast feeding the
//! clients never waits for one.
//!
//! A client that can see at most [`MAX_SITE_CHANNELS`] sites (the ones it
//! subscribed to, or its token's) reads those sites' channels of the
//! [`LiveHub`], so only their frames wake it; any other client reads the
//! channel of all frames and filters. When a subscription changes, the
//! frames already on their way under the old one are passed through the
//! new filter after the snapshot, as if one channel had carried both.
//!
//! A client message over [`MAX_CLIENT_MESSAGE`], or bytes that are not
//! WebSocket framing, close that client with code 1008 and the reason; a
//! text message that is not a subscription, or a binary one, is answered
//! with `{"type":"error",...}` and the client stays. Either way the other
//! clients are not touched.
//!
//! A ping goes out every [`super::LiveTimings::ping_every`] (20 s by default); a
//! client that sends nothing (not even a pong) for
//! [`super::LiveTimings::idle_timeout`] (60 s), or whose socket does not take a
//! message for [`super::LiveTimings::send_timeout`] (30 s), is closed.

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::error::{bad_query, AppError};
use super::state::ApiState;
use crate::auth::{Access, SiteScope};
use crate::live::{LiveFrame, LiveHub, LiveMessage, Subscription as Feeds};

/// Messages waiting for one client's socket before frames are coalesced.
pub const CLIENT_QUEUE: usize = 256;

/// A client that can see more sites than this reads the all-sites channel.
pub const MAX_SITE_CHANNELS: usize = 16;
/// The largest message (and frame) a client may send, 64 KiB: a
/// subscription naming hundreds of sites and patterns fits many times over.
/// A client that sends more is closed with code 1008 (policy violation).
pub const MAX_CLIENT_MESSAGE: usize = 64 << 10;
/// Read buffer of a client's socket. Clients send only small messages
/// (subscriptions, pongs); the WebSocket library's default of 128 KiB is
/// zeroed on every read and so stays resident, per client.
pub const READ_BUFFER: usize = 4 * 1024;

#[derive(Deserialize)]
pub struct LiveQuery {
    site: Option<String>,
}

/// What a client asked for; an empty list means "any".
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    #[serde(default)]
    pub sites: Vec<String>,
    #[serde(default)]
    pub devices: Vec<String>,
    #[serde(default)]
    pub points: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    subscribe: Subscription,
}

/// A subscription checked against the token's scope.
#[derive(Debug, Clone)]
struct Filter {
    access: Access,
    sites: Option<BTreeSet<String>>,
    devices: Vec<String>,
    points: Vec<String>,
}

impl Filter {
    fn new(access: Access, subscription: Subscription) -> Self {
        let sites =
            (!subscription.sites.is_empty()).then(|| subscription.sites.into_iter().collect());
        Self {
            access,
            sites,
            devices: subscription.devices,
            points: subscription.points,
        }
    }

    /// The sites whose frames can pass, `None` for any site.
    fn readable_sites(&self) -> Option<Vec<String>> {
        match (&self.sites, self.access.scope()) {
            (Some(sites), _) => Some(
                sites
                    .iter()
                    .filter(|s| self.access.allows_site(s))
                    .cloned()
                    .collect(),
            ),
            (None, SiteScope::Only(sites)) => Some(sites.into_iter().collect()),
            (None, SiteScope::All) => None,
        }
    }

    fn wants_site(&self, site: &str) -> bool {
        self.access.allows_site(site) && self.sites.as_ref().is_none_or(|s| s.contains(site))
    }

    fn wants_device(&self, site: &str, device: &str) -> bool {
        self.devices.is_empty()
            || self.devices.iter().any(|d| match d.split_once('/') {
                Some((s, d)) => s == site && d == device,
                None => d == device,
            })
    }

    fn wants_point(&self, site: &str, device: &str, point: &str) -> bool {
        self.points.is_empty()
            || self.points.iter().any(|pattern| {
                if pattern.contains('/') {
                    glob(pattern, &format!("{site}/{device}/{point}"))
                } else {
                    glob(pattern, point)
                }
            })
    }

    /// The JSON to send for this frame, if any.
    fn frame_json(&self, message: &LiveMessage) -> Option<Utf8Bytes> {
        let device = &message.frame.layout().device;
        if !self.wants_site(&message.site) || !self.wants_device(&message.site, device) {
            return None;
        }
        if self.points.is_empty() {
            return Some(message.json());
        }
        let frame = message.view();
        let values: Vec<_> = frame
            .values
            .iter()
            .filter(|v| self.wants_point(&frame.site, &frame.device, &v.point))
            .cloned()
            .collect();
        if values.is_empty() {
            return None;
        }
        let filtered = LiveFrame {
            values,
            ..frame.clone()
        };
        Some(
            serde_json::json!({ "type": "frame", "frame": filtered })
                .to_string()
                .into(),
        )
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first)
        || !text[first.len()..].ends_with(last)
        || text.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// WebSocket: each frame the moment the edge's live message arrives.
///
/// Upgrade to a WebSocket. Send `{"subscribe":{"sites":[..],"devices":[..],"points":["soc","cell_*"]}}`
/// to get `{"type":"snapshot","points":[LatestPoint...]}`, then
/// `{"type":"frame","frame":{site,device,group,ts,ts_ms,received_ms,values:[{point,value,unit,quality}]}}`
/// for each matching frame, sent as its live message is read (`received_ms`:
/// Unix epoch milliseconds when the collector took the message carrying the
/// frame off the live topic; the values are the ones stored later). Without a subscription every frame of the
/// token's sites (or of `?site=`) is sent. Other messages:
/// `{"type":"lagged","missed":N}`, `{"type":"error","error":{code,message}}`.
/// Pings every 20 s; clients silent for 60 s are closed. A message over
/// 64 KiB closes the client with code 1008.
#[utoipa::path(
    get,
    path = "/api/v1/live",
    operation_id = "live",
    tag = "live",
    params(
        ("site" = Option<String>, Query, description = "Only this site"),
        ("access_token" = Option<String>, Query, description = "The API token, for clients that cannot set headers"),
    ),
    security(("bearer" = [])),
    responses((status = 101, description = "Switching protocols"), super::error::ApiErrors)
)]
pub async fn live(
    State(state): State<ApiState>,
    access: Option<Extension<Access>>,
    query: Result<Query<LiveQuery>, QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, AppError> {
    let Query(query) = query.map_err(bad_query)?;
    let access = access.map_or_else(Access::everything, |Extension(a)| a);
    if let Some(site) = query.site.as_deref().filter(|s| !access.allows_site(s)) {
        return Err(AppError::Forbidden(format!(
            "this token may not access site {site:?}"
        )));
    }
    let subscription = Subscription {
        sites: query.site.into_iter().collect(),
        ..Subscription::default()
    };
    let filter = Filter::new(access, subscription);
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve(socket, state, filter)))
}

type CoalesceKey = (Arc<str>, Arc<str>, Arc<str>);

/// The channels carrying every frame this filter can pass.
fn feeds_for(hub: &LiveHub, filter: &Filter) -> Feeds {
    match filter.readable_sites() {
        Some(sites) if sites.len() <= MAX_SITE_CHANNELS => {
            hub.subscribe_sites(sites.iter().map(String::as_str))
        }
        _ => hub.subscribe_all(),
    }
}

/// The next frame from any of the receivers (none: wait forever).
async fn next_frame(
    receivers: &mut [broadcast::Receiver<LiveMessage>],
) -> Result<LiveMessage, RecvError> {
    match receivers {
        [] => std::future::pending().await,
        [one] => one.recv().await,
        many => {
            futures::future::select_all(many.iter_mut().map(|r| Box::pin(r.recv())))
                .await
                .0
        }
    }
}

/// What the receivers already hold that was published before `before_seq`,
/// in publication order.
fn drain_before(
    receivers: &mut [broadcast::Receiver<LiveMessage>],
    before_seq: u64,
) -> Vec<LiveMessage> {
    let mut earlier = Vec::new();
    for receiver in receivers {
        loop {
            match receiver.try_recv() {
                Ok(message) if message.seq < before_seq => earlier.push(message),
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    metrics::counter!("bess_collector_live_lagged_total").increment(missed);
                }
                Err(_) => break,
            }
        }
    }
    earlier.sort_by_key(|m| m.seq);
    earlier
}

/// Queue a frame the filter passes, or hold it back (coalesced) while the
/// queue is full. `Err`: the client is gone.
fn offer(
    filter: &Filter,
    message: &LiveMessage,
    queue: &mpsc::Sender<Message>,
    behind: &mut HashMap<CoalesceKey, Utf8Bytes>,
) -> Result<(), ()> {
    let Some(json) = filter.frame_json(message) else {
        return Ok(());
    };
    let layout = message.frame.layout();
    let key = (
        message.site.clone(),
        layout.device.clone(),
        layout.group.clone(),
    );
    if behind.is_empty() {
        match queue.try_send(Message::Text(json)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Message::Text(json))) => {
                behind.insert(key, json);
            }
            Err(_) => return Err(()),
        }
    } else if behind.insert(key, json).is_some() {
        metrics::counter!("bess_collector_live_coalesced_total").increment(1);
    }
    Ok(())
}

async fn serve(socket: WebSocket, state: ApiState, mut filter: Filter) {
    metrics::gauge!("bess_collector_live_clients").increment(1.0);
    let mut feeds = feeds_for(&state.live, &filter).receivers;
    let (mut sink, mut stream) = socket.split();
    let timings = state.live_timings;
    let (queue, mut outbox) = mpsc::channel::<Message>(CLIENT_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(message) = outbox.recv().await {
            // Everything queued by now goes in one write: frames of a poll
            // cycle arrive together, and a write per frame is most of the
            // fan-out's cost.
            let send_all = async {
                sink.feed(message).await?;
                while let Ok(more) = outbox.try_recv() {
                    sink.feed(more).await?;
                }
                sink.flush().await
            };
            match tokio::time::timeout(timings.send_timeout, send_all).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    metrics::counter!("bess_collector_live_send_timeouts_total").increment(1);
                    break;
                }
            }
        }
        let _ = sink.close().await;
    });
    // Frames held back while the queue is full: newest per (site, device, group).
    let mut behind: HashMap<CoalesceKey, Utf8Bytes> = HashMap::new();
    let mut ping =
        tokio::time::interval_at(Instant::now() + timings.ping_every, timings.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            received = next_frame(&mut feeds) => match received {
                Ok(message) => {
                    if offer(&filter, &message, &queue, &mut behind).is_err() {
                        break;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    metrics::counter!("bess_collector_live_lagged_total").increment(missed);
                    let notice = serde_json::json!({ "type": "lagged", "missed": missed }).to_string();
                    if queue.send(Message::Text(notice.into())).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Closed) => break,
            },
            permit = queue.reserve(), if !behind.is_empty() => {
                let Ok(permit) = permit else { break };
                let key = behind.keys().next().cloned().expect("not empty");
                let json = behind.remove(&key).expect("present");
                permit.send(Message::Text(json));
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    heard = Instant::now();
                    match serde_json::from_str::<ClientMessage>(&text) {
                        Ok(ClientMessage { subscribe }) => {
                            filter = Filter::new(filter.access.clone(), subscribe);
                            behind.clear();
                            let next = feeds_for(&state.live, &filter);
                            let earlier = drain_before(&mut feeds, next.from_seq);
                            feeds = next.receivers;
                            let reply = match forbidden_sites(&filter) {
                                Some(error) => error,
                                None => snapshot(&state, &filter).await,
                            };
                            if queue.send(Message::Text(reply.into())).await.is_err() {
                                break;
                            }
                            if earlier.iter().any(|m| offer(&filter, m, &queue, &mut behind).is_err()) {
                                break;
                            }
                        }
                        Err(e) => {
                            if queue.send(bad_request(&format!("{EXPECTED}: {e}"))).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    heard = Instant::now();
                    if queue.send(bad_request(&format!("binary messages are not understood; {EXPECTED} as text"))).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    // Too large, not WebSocket framing, or the connection
                    // broke: this client goes, told why if it still
                    // listens; the others are not touched.
                    metrics::counter!("bess_collector_live_read_errors_total").increment(1);
                    tracing::debug!("live client closed: {e}");
                    let _ = queue.send(policy_violation(&e.to_string())).await;
                    break;
                }
                Some(Ok(_)) => heard = Instant::now(),
            },
            _ = ping.tick() => {
                if heard.elapsed() >= timings.idle_timeout {
                    metrics::counter!("bess_collector_live_idle_closed_total").increment(1);
                    break;
                }
                if queue.try_send(Message::Ping(Default::default())).is_err() && queue.is_closed() {
                    break;
                }
            },
            () = state.shutdown.cancelled() => {
                let _ = queue.send(Message::Close(None)).await;
                break;
            }
        }
    }
    drop(queue);
    // The writer ends when its queue is drained or the socket is gone.
    let _ = tokio::time::timeout(timings.send_timeout, writer).await;
    metrics::gauge!("bess_collector_live_clients").decrement(1.0);
}

/// What a client may send.
const EXPECTED: &str = r#"expected {"subscribe":{"sites":[..],"devices":[..],"points":[..]}}"#;

/// `{"type":"error","error":{"code":"bad_request",...}}`; the client stays.
fn bad_request(message: &str) -> Message {
    let error = serde_json::json!({ "type": "error", "error": {
        "code": "bad_request",
        "message": message,
    }});
    Message::Text(error.to_string().into())
}

/// A close frame with code 1008 and the reason (cut to the 123 bytes a
/// close frame can carry).
fn policy_violation(reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code: close_code::POLICY,
        reason: reason[..end].into(),
    }))
}

/// An error message if the subscription names sites outside the token's scope.
fn forbidden_sites(filter: &Filter) -> Option<String> {
    let denied: Vec<&String> = filter
        .sites
        .iter()
        .flatten()
        .filter(|s| !filter.access.allows_site(s))
        .collect();
    (!denied.is_empty()).then(|| {
        serde_json::json!({ "type": "error", "error": {
            "code": "forbidden",
            "message": format!("this token may not access sites {denied:?}; they are left out"),
        }})
        .to_string()
    })
}

/// Current values matching the filter.
async fn snapshot(state: &ApiState, filter: &Filter) -> String {
    let sites: Vec<String> = match &filter.sites {
        Some(sites) => sites.iter().cloned().collect(),
        None => state.latest.site_names(),
    };
    let mut points = Vec::new();
    for site in sites.iter().filter(|s| filter.wants_site(s)) {
        let values = match state.latest.fetch(&state.pool, site).await {
            Ok(values) => values.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(site, "snapshot: {e:?}");
                state.latest.site(site).unwrap_or_default()
            }
        };
        points.extend(values.into_iter().filter(|p| {
            filter.wants_device(site, &p.device) && filter.wants_point(site, &p.device, &p.name)
        }));
    }
    serde_json::json!({ "type": "snapshot", "points": points }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Role, SiteScope, TokenRecord};

    #[test]
    fn glob_patterns_match_with_stars() {
        assert!(glob("soc", "soc"));
        assert!(!glob("soc", "soc2"));
        assert!(glob("cell_*", "cell_v_max"));
        assert!(!glob("cell_*", "soc"));
        assert!(glob("*_v_*", "cell_v_max"));
        assert!(glob("*", ""));
        assert!(!glob("a*a", "a"));
    }

    fn scoped(site: &str) -> Access {
        Access {
            token: Some(Arc::new(TokenRecord {
                id: 1,
                name: "t".into(),
                role: Role::Read,
                sites: SiteScope::Only([site.to_owned()].into()),
                created_at: time::OffsetDateTime::UNIX_EPOCH,
                revoked_at: None,
            })),
        }
    }

    #[test]
    fn a_subscription_never_widens_the_tokens_sites() {
        let filter = Filter::new(
            scoped("a"),
            Subscription {
                sites: vec!["a".into(), "b".into()],
                ..Default::default()
            },
        );
        assert!(filter.wants_site("a"));
        assert!(!filter.wants_site("b"));
        assert!(forbidden_sites(&filter).is_some());
        let everything = Filter::new(scoped("a"), Subscription::default());
        assert!(!everything.wants_site("b"));
    }

    #[test]
    fn devices_and_points_filter_by_name_or_full_id() {
        let filter = Filter::new(
            Access::everything(),
            Subscription {
                devices: vec!["s/bms-1".into()],
                points: vec!["cell_*".into(), "s/bms-1/soc".into()],
                ..Default::default()
            },
        );
        assert!(filter.wants_device("s", "bms-1"));
        assert!(!filter.wants_device("t", "bms-1"));
        assert!(filter.wants_point("s", "bms-1", "cell_v_max"));
        assert!(filter.wants_point("s", "bms-1", "soc"));
        assert!(!filter.wants_point("s", "bms-1", "power"));
    }
}
