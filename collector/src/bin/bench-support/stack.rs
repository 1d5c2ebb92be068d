//! What the collector's benchmarks stand on: a Tansu broker on a free port
//! with its topic, scratch databases that are dropped afterwards, a
//! producer, and the collector's counters read from its metrics.

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The Tansu binary: `given`, or the one `deploy/tools/install-tansu.sh` installs.
pub fn tansu_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let tansu = given
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/tansu"));
    anyhow::ensure!(
        tansu.exists(),
        "no Tansu at {} (deploy/tools/install-tansu.sh, or --tansu)",
        tansu.display()
    );
    Ok(tansu)
}

/// A Tansu broker (in memory) on a free port, killed on drop.
pub struct Broker {
    pub brokers: String,
    _process: tokio::process::Child,
}

impl Broker {
    pub async fn start(tansu: &Path, logs: &Path) -> anyhow::Result<Self> {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let process = tokio::process::Command::new(tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(std::fs::File::create(logs.join("tansu.log"))?)
            .stderr(std::fs::File::create(logs.join("tansu.err"))?)
            .kill_on_drop(true)
            .spawn()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "Tansu did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            brokers: addr.to_string(),
            _process: process,
        })
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()?;
        admin
            .create_topics(
                [&NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await?;
        Ok(())
    }

    /// An idempotent producer as the edge configures one.
    pub fn producer(&self) -> anyhow::Result<FutureProducer> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "20")
            .create()?)
    }
}

/// Send every `(key, payload)` to `topic` and wait for all acknowledgements.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    messages: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    let sends = messages.iter().map(|(key, payload)| {
        producer.send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(60),
        )
    });
    for result in futures::future::join_all(sends).await {
        result.map_err(|(e, _)| e)?;
    }
    Ok(())
}

pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// Databases created on the admin server for one run, dropped by [`drop_all`](Self::drop_all).
pub struct ScratchDatabases {
    admin_url: String,
    admin: tokio_postgres::Client,
    names: Vec<String>,
}

impl ScratchDatabases {
    pub async fn new(admin_url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            admin_url: admin_url.to_owned(),
            admin: connect(admin_url)
                .await
                .context("connecting to PostgreSQL")?,
            names: Vec::new(),
        })
    }

    /// A fresh database; its URL.
    pub async fn create(&mut self, name: &str) -> anyhow::Result<String> {
        let name = format!("bess_bench_{}_{name}", std::process::id());
        self.admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .await?;
        self.admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        self.names.push(name.clone());
        Ok(database_url(&self.admin_url, &name))
    }

    pub async fn drop_all(&self) {
        for name in &self.names {
            self.admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .ok();
        }
    }
}

/// `admin`'s URL with another database name.
pub fn database_url(admin: &str, name: &str) -> String {
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => format!("{admin}/{name}"),
    }
}

/// A counter's value in Prometheus text (0 when absent), summed over labels.
pub fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `q` quantile (0..=1) of `values`, nearest rank.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}
