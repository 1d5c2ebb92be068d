//! `LiveHub`: where the live lane's frames are published to the WebSocket
//! clients and the latest-value cache.
//!
//! The hub has one broadcast channel carrying every frame (the latest-value
//! cache and clients that follow all sites read it) and one channel per
//! site that some client follows, created on its first subscription and
//! dropped once nobody reads it. A client of one site is then woken only by
//! that site's frames, not by every frame of the fleet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

use super::message::LiveMessage;

/// Frames buffered in the all-sites channel before a slow reader lags.
pub const ALL_SITES_CHANNEL: usize = 4096;
/// Frames buffered in one site's channel before a slow reader lags. Each
/// channel allocates its buffer up front (about 70 bytes a slot), and only
/// sites with live clients have one.
pub const SITE_CHANNEL: usize = 1024;

/// Where live frames are published; cheap to clone.
#[derive(Clone)]
pub struct LiveHub {
    all: broadcast::Sender<LiveMessage>,
    sites: Arc<Mutex<SiteChannels>>,
    site_capacity: usize,
}

struct SiteChannels {
    next_seq: u64,
    senders: HashMap<Arc<str>, broadcast::Sender<LiveMessage>>,
    /// Drop unread channels when there are this many (amortizes the sweep).
    sweep_at: usize,
}

/// Receivers handed to one reader, and the sequence number of the first
/// message they will see: every message published before it went elsewhere.
pub struct Subscription {
    pub receivers: Vec<broadcast::Receiver<LiveMessage>>,
    pub from_seq: u64,
}

impl LiveHub {
    pub fn new(all_capacity: usize, site_capacity: usize) -> Self {
        let (all, _) = broadcast::channel(all_capacity);
        Self {
            all,
            sites: Arc::new(Mutex::new(SiteChannels {
                next_seq: 0,
                senders: HashMap::new(),
                sweep_at: 64,
            })),
            site_capacity,
        }
    }

    /// Publish one frame to the all-sites channel and to its
    /// site's channel, if anyone reads it.
    pub fn publish(&self, mut message: LiveMessage) {
        let mut sites = self.sites.lock().expect("live hub lock");
        message.seq = sites.next_seq;
        sites.next_seq += 1;
        if let Some(sender) = sites.senders.get(&message.site) {
            if sender.receiver_count() == 0 {
                sites.senders.remove(&message.site);
            } else {
                let _ = sender.send(message.clone());
            }
        }
        let _ = self.all.send(message);
    }

    /// Every frame, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveMessage> {
        self.subscribe_all().receivers.remove(0)
    }

    /// Every frame, from now on, with the sequence number it starts at.
    pub fn subscribe_all(&self) -> Subscription {
        let sites = self.sites.lock().expect("live hub lock");
        Subscription {
            receivers: vec![self.all.subscribe()],
            from_seq: sites.next_seq,
        }
    }

    /// The frames of these sites, from now on: one receiver per site.
    pub fn subscribe_sites<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Subscription {
        let mut sites = self.sites.lock().expect("live hub lock");
        if sites.senders.len() >= sites.sweep_at {
            sites
                .senders
                .retain(|_, sender| sender.receiver_count() > 0);
            sites.sweep_at = (sites.senders.len() * 2).max(64);
        }
        let receivers = names
            .into_iter()
            .map(|name| match sites.senders.get(name) {
                Some(sender) => sender.subscribe(),
                None => {
                    let (sender, receiver) = broadcast::channel(self.site_capacity);
                    sites.senders.insert(name.into(), sender);
                    receiver
                }
            })
            .collect();
        Subscription {
            receivers,
            from_seq: sites.next_seq,
        }
    }

    /// Readers of any channel (the ingest skips building frames without them).
    pub fn receiver_count(&self) -> usize {
        let sites = self.sites.lock().expect("live hub lock");
        self.all.receiver_count()
            + sites
                .senders
                .values()
                .map(broadcast::Sender::receiver_count)
                .sum::<usize>()
    }
}

impl Default for LiveHub {
    fn default() -> Self {
        Self::new(ALL_SITES_CHANNEL, SITE_CHANNEL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(site: &str, ts_ms: i64) -> LiveMessage {
        LiveMessage::new(crate::live::frame::tests::committed(site, ts_ms, &[]))
    }

    #[test]
    fn a_site_channel_carries_only_its_site_and_the_all_channel_everything() {
        let hub = LiveHub::new(16, 16);
        let mut all = hub.subscribe();
        let mut a = hub.subscribe_sites(["a"]);
        assert_eq!(a.from_seq, 0);
        hub.publish(message("a", 1));
        hub.publish(message("b", 2));
        hub.publish(message("a", 3));
        let a = &mut a.receivers[0];
        assert_eq!(a.try_recv().unwrap().frame.ts_ms, 1);
        assert_eq!(a.try_recv().unwrap().frame.ts_ms, 3);
        assert!(a.try_recv().is_err());
        let seqs: Vec<u64> = (0..3).map(|_| all.try_recv().unwrap().seq).collect();
        assert_eq!(seqs, [0, 1, 2]);
        assert_eq!(hub.subscribe_sites(["b"]).from_seq, 3);
    }

    #[test]
    fn a_site_channel_nobody_reads_is_dropped() {
        let hub = LiveHub::new(16, 16);
        let _all = hub.subscribe();
        let a = hub.subscribe_sites(["a"]);
        assert_eq!(hub.receiver_count(), 2);
        drop(a);
        hub.publish(message("a", 1));
        assert_eq!(hub.sites.lock().unwrap().senders.len(), 0);
        assert_eq!(hub.receiver_count(), 1);
    }
}
