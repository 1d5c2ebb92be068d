//! The load generator: writes valid telemetry batches for N synthetic sites
//! straight to a Kafka topic at a target sample rate, so the collector can
//! be load-tested without running N edges.
//!
//! Each site has `units` devices with one poll group each, carrying the
//! "bess-controller v1" live block (18 registers → 15 points) read from a
//! simulated pack. A site's sequence numbers start at `unix_ms × 1000` like
//! a fresh edge buffer; its first batch carries the catalog; every batch is
//! encoded with zstd and keyed by site id, sent by an idempotent producer
//! with `acks=all`. With a live topic, each batch's frames also go there as
//! one live message per site, encoded as an edge's live lane encodes them
//! (acks=1, not counted in the summary). Progress goes to the log;
//! [`LoadSummary`] is the result.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bess_protocol::{
    Batch, BatchSeq, Catalog, Codec, DeviceInfo, Frame, GroupIndex, GroupInfo, LiveEncoder,
    PointInfo, PointKind, Reading, SiteId,
};
use futures::{stream::FuturesUnordered, FutureExt as _, StreamExt as _};
use rdkafka::{
    error::KafkaError,
    producer::{DeliveryFuture, FutureProducer, FutureRecord},
    ClientConfig,
};
use thiserror::Error;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::{
    battery::SimulatedPack,
    fleet::site_name,
    register_map::{addr, RegisterSnapshot, MAP_NAME},
};

/// What to generate and where to send it.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub brokers: String,
    pub topic: String,
    /// Where each batch's frames also go as live messages (`None`: nowhere).
    pub live_topic: Option<String>,
    pub sites: u16,
    pub units: u8,
    /// Target samples per second over all sites.
    pub rate: u64,
    pub duration: Duration,
    /// One batch per site per interval.
    pub batch_interval: Duration,
    pub seed: u64,
    /// Extra librdkafka properties (security settings, for instance).
    pub kafka_properties: Vec<(String, String)>,
    /// How often to log progress.
    pub progress_every: Duration,
}

/// What was sent and acknowledged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadSummary {
    pub batches: u64,
    pub samples: u64,
    pub frames: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub failed: u64,
}

impl LoadSummary {
    pub fn samples_per_s(&self) -> f64 {
        self.samples as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Why the load run failed.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("invalid load settings: {0}")]
    Invalid(String),
    #[error("cannot create the Kafka producer")]
    Producer(#[source] KafkaError),
    #[error("cannot encode a batch")]
    Encode(#[from] bess_protocol::EncodeError),
}

/// (name, unit, kind, scale, address) of each point in the live block.
const POINTS: [(&str, &str, PointKind, f64, u16); 15] = [
    ("soc", "%", PointKind::Analog, 0.01, addr::SOC),
    ("soh", "%", PointKind::Analog, 0.01, addr::SOH),
    ("dc_voltage", "V", PointKind::Analog, 0.1, addr::DC_VOLTAGE),
    ("dc_current", "A", PointKind::Analog, 0.1, addr::DC_CURRENT),
    (
        "active_power",
        "W",
        PointKind::Analog,
        1.0,
        addr::ACTIVE_POWER,
    ),
    (
        "cell_voltage_min",
        "V",
        PointKind::Analog,
        0.001,
        addr::CELL_VOLTAGE_MIN,
    ),
    (
        "cell_voltage_max",
        "V",
        PointKind::Analog,
        0.001,
        addr::CELL_VOLTAGE_MAX,
    ),
    (
        "cell_temp_min",
        "°C",
        PointKind::Analog,
        0.1,
        addr::CELL_TEMP_MIN,
    ),
    (
        "cell_temp_max",
        "°C",
        PointKind::Analog,
        0.1,
        addr::CELL_TEMP_MAX,
    ),
    ("status", "", PointKind::Bitfield, 1.0, addr::STATUS),
    ("alarms", "", PointKind::Bitfield, 1.0, addr::ALARMS),
    (
        "energy_charged",
        "kWh",
        PointKind::Counter,
        0.1,
        addr::ENERGY_CHARGED,
    ),
    (
        "energy_discharged",
        "kWh",
        PointKind::Counter,
        0.1,
        addr::ENERGY_DISCHARGED,
    ),
    (
        "ambient_temp",
        "°C",
        PointKind::Analog,
        0.1,
        addr::AMBIENT_TEMP,
    ),
    ("heartbeat", "s", PointKind::Counter, 1.0, addr::HEARTBEAT),
];

/// Batches awaiting their delivery report before sending pauses.
const MAX_IN_FLIGHT: usize = 10_000;

/// Samples in one frame.
pub const POINTS_PER_FRAME: usize = POINTS.len();

/// The catalog of a synthetic site with `units` devices.
pub fn site_catalog(units: u8, interval_ms: u32) -> Catalog {
    Catalog {
        devices: (1..=units)
            .map(|u| DeviceInfo {
                name: format!("bms-{u}"),
                model: MAP_NAME.to_owned(),
            })
            .collect(),
        groups: (0..u16::from(units))
            .map(|device| GroupInfo {
                device,
                name: "fast".to_owned(),
                interval_ms,
                points: POINTS
                    .iter()
                    .map(|(n, u, k, s, _)| PointInfo::new(n, u, *k, *s, 0.0))
                    .collect(),
            })
            .collect(),
    }
}

/// The readings of one frame from a snapshot, signed where the map is.
pub fn readings(s: &RegisterSnapshot) -> Vec<Reading> {
    let w = |a| s.word(a).unwrap_or(0);
    let pair = |a: u16| (u32::from(w(a)) << 16) | u32::from(w(a + 1));
    POINTS
        .iter()
        .map(|(_, _, _, _, a)| match *a {
            addr::DC_CURRENT | addr::CELL_TEMP_MIN | addr::CELL_TEMP_MAX | addr::AMBIENT_TEMP => {
                Reading::Int(i64::from(w(*a) as i16))
            }
            addr::ACTIVE_POWER => Reading::Int(i64::from(pair(*a) as i32)),
            addr::ENERGY_CHARGED | addr::ENERGY_DISCHARGED => Reading::Int(i64::from(pair(*a))),
            a => Reading::Int(i64::from(w(a))),
        })
        .collect()
}

struct SyntheticSite {
    id: SiteId,
    catalog: Catalog,
    catalog_sent: bool,
    next_seq: u64,
    packs: Vec<SimulatedPack>,
    last_ts: Vec<i64>,
    live: LiveEncoder,
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl SyntheticSite {
    /// A batch of `frames` frames spread over the devices and the interval
    /// ending now.
    fn batch(&mut self, frames: usize, interval: Duration) -> Batch {
        let now = unix_ms();
        let units = self.packs.len();
        let span_ms = interval.as_millis().max(1) as i64;
        let mut out = Vec::with_capacity(frames);
        for k in 0..frames {
            let device = k % units;
            let nth = (k / units) as i64;
            let per_device = frames.div_ceil(units) as i64;
            let pack = &mut self.packs[device];
            pack.advance(1);
            let snapshot = RegisterSnapshot::encode(&pack.spec, &pack.measure());
            let ts = (now - span_ms + (nth + 1) * span_ms / per_device.max(1))
                .max(self.last_ts[device] + 1);
            self.last_ts[device] = ts;
            out.push(Frame {
                group: GroupIndex(device as u16),
                ts_ms: ts,
                values: readings(&snapshot),
            });
        }
        let catalog = (!self.catalog_sent).then(|| self.catalog.clone());
        self.catalog_sent = true;
        let seq = BatchSeq(self.next_seq);
        self.next_seq += 1;
        Batch {
            site: self.id.clone(),
            seq,
            catalog_hash: self.catalog.hash(),
            catalog,
            frames: out,
            gaps: vec![],
        }
    }
}

/// Sends batches until `duration` has passed or `cancel` fires, then waits
/// for every delivery report.
pub async fn run(config: &LoadConfig, cancel: CancellationToken) -> Result<LoadSummary, LoadError> {
    if config.sites == 0 || config.units == 0 || config.rate == 0 || config.batch_interval.is_zero()
    {
        return Err(LoadError::Invalid(
            "sites, units, rate and batch interval must be above 0".into(),
        ));
    }
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (key, value) in &config.kafka_properties {
        client.set(key, value);
    }
    let producer: FutureProducer = client.create().map_err(LoadError::Producer)?;
    let mut live_client = ClientConfig::new();
    live_client
        .set("bootstrap.servers", &config.brokers)
        .set("acks", "1")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "5000");
    for (key, value) in &config.kafka_properties {
        live_client.set(key, value);
    }
    let live_producer: FutureProducer = live_client.create().map_err(LoadError::Producer)?;

    let interval_ms = config.batch_interval.as_millis() as u32;
    let start_seq = unix_ms() as u64 * 1000;
    let mut sites: Vec<SyntheticSite> = (0..config.sites)
        .map(|i| SyntheticSite {
            id: SiteId::new(format!("load-{}", site_name(i)))
                .expect("generated site ids are valid"),
            catalog: site_catalog(config.units, interval_ms),
            catalog_sent: false,
            next_seq: start_seq,
            packs: (1..=config.units)
                .map(|u| SimulatedPack::new(config.seed ^ u64::from(i) << 16, u))
                .collect(),
            last_ts: vec![0; usize::from(config.units)],
            live: LiveEncoder::new(
                site_catalog(config.units, interval_ms).hash(),
                bess_protocol::DEFAULT_KEYFRAME_EVERY_MS,
                unix_ms() as u64 + u64::from(i),
            ),
        })
        .collect();

    // Frames each site owes per interval, carried as a fraction.
    let frames_per_interval = config.rate as f64 * config.batch_interval.as_secs_f64()
        / POINTS_PER_FRAME as f64
        / f64::from(config.sites);
    let mut owed = vec![0.0_f64; sites.len()];
    let mut summary = LoadSummary::default();
    let mut pending: FuturesUnordered<Delivery> = FuturesUnordered::new();
    let started = Instant::now();
    let mut last_progress = started;
    let mut tick = tokio::time::interval(config.batch_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    while started.elapsed() < config.duration {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        for (site, owed) in sites.iter_mut().zip(owed.iter_mut()) {
            *owed += frames_per_interval;
            let frames = owed.floor() as usize;
            if frames == 0 {
                continue;
            }
            *owed -= frames as f64;
            let batch = site.batch(frames, config.batch_interval);
            if let Some(live_topic) = &config.live_topic {
                let message = site.live.encode(&batch.frames);
                let record = FutureRecord::to(live_topic)
                    .key(site.id.as_str())
                    .payload(&message);
                if live_producer.send_result(record).is_err() {
                    // The live lane is best effort, as on an edge.
                    site.live.restart();
                }
            }
            let samples = batch.sample_count() as u64;
            let bytes = batch.encode_with(Codec::Zstd, bess_protocol::Effort::Compact)?;
            let record = FutureRecord::to(&config.topic)
                .key(site.id.as_str())
                .payload(&bytes);
            let len = bytes.len() as u64;
            match producer.send_result(record) {
                Ok(future) => pending.push(delivery(future, samples, frames as u64, len)),
                Err((err, _)) => {
                    tracing::warn!(error = %err, "cannot queue a batch");
                    summary.failed += 1;
                }
            }
        }
        // Count what has been acknowledged; wait when too much is in flight.
        while let Some(Some(done)) = pending.next().now_or_never() {
            count(&mut summary, done);
        }
        while pending.len() > MAX_IN_FLIGHT {
            if let Some(done) = pending.next().await {
                count(&mut summary, done);
            }
        }
        if last_progress.elapsed() >= config.progress_every {
            last_progress = Instant::now();
            summary.elapsed = started.elapsed();
            tracing::info!(
                batches = summary.batches,
                samples = summary.samples,
                bytes = summary.bytes,
                in_flight = pending.len(),
                "acknowledged so far: {:.0} samples/s",
                summary.samples_per_s()
            );
        }
    }
    while let Some(done) = pending.next().await {
        count(&mut summary, done);
    }
    let _ = rdkafka::producer::Producer::flush(&live_producer, Duration::from_secs(5));
    summary.elapsed = started.elapsed();
    Ok(summary)
}

type Delivery = std::pin::Pin<Box<dyn std::future::Future<Output = (bool, u64, u64, u64)> + Send>>;

fn delivery(future: DeliveryFuture, samples: u64, frames: u64, bytes: u64) -> Delivery {
    Box::pin(async move {
        let delivered = match future.await {
            Ok(Ok(_)) => true,
            Ok(Err((err, _))) => {
                tracing::warn!(error = %err, "batch not delivered");
                false
            }
            Err(_) => false,
        };
        (delivered, samples, frames, bytes)
    })
}

fn count(summary: &mut LoadSummary, (delivered, samples, frames, bytes): (bool, u64, u64, u64)) {
    if delivered {
        summary.batches += 1;
        summary.samples += samples;
        summary.frames += frames;
        summary.bytes += bytes;
    } else {
        summary.failed += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_has_one_group_of_fifteen_points_per_device() {
        let catalog = site_catalog(3, 1000);
        assert_eq!(catalog.devices.len(), 3);
        assert_eq!(catalog.groups.len(), 3);
        assert!(catalog
            .groups
            .iter()
            .all(|g| g.points.len() == POINTS_PER_FRAME));
    }

    #[test]
    fn synthetic_batches_decode_with_increasing_sequence_and_catalog_first() {
        let mut site = SyntheticSite {
            id: SiteId::new("load-site-001").unwrap(),
            catalog: site_catalog(2, 1000),
            catalog_sent: false,
            next_seq: 5_000,
            packs: vec![SimulatedPack::new(1, 1), SimulatedPack::new(1, 2)],
            last_ts: vec![0; 2],
            live: LiveEncoder::new(site_catalog(2, 1000).hash(), 10_000, 1),
        };
        let first = site.batch(6, Duration::from_secs(1));
        let second = site.batch(6, Duration::from_secs(1));
        assert!(first.catalog.is_some() && second.catalog.is_none());
        assert_eq!((first.seq, second.seq), (BatchSeq(5_000), BatchSeq(5_001)));
        let decoded = Batch::decode(&first.encode(Codec::Zstd).unwrap()).unwrap();
        assert_eq!(decoded, first);
        assert_eq!(decoded.sample_count(), 6 * POINTS_PER_FRAME);
        for device in 0..2 {
            let ts: Vec<_> = first
                .frames
                .iter()
                .chain(&second.frames)
                .filter(|f| f.group.0 == device)
                .map(|f| f.ts_ms)
                .collect();
            assert!(
                ts.windows(2).all(|w| w[0] < w[1]),
                "timestamps increase per group: {ts:?}"
            );
        }
    }
}
