//! Start-up and shutdown of a collector instance: database pool and
//! migrations, topic check, the ingest task and the API server.

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::catalog::CatalogRegistry;
use crate::ingest::{consumer_config, KafkaIngest, KafkaSettings};
use crate::writer::SampleWriter;

/// Frames buffered for live clients before a slow one is told it lagged.
const LIVE_CHANNEL: usize = 4096;

pub struct CollectorSettings {
    pub database_url: String,
    pub pool_size: usize,
    pub kafka: KafkaSettings,
    /// Create the topic with this many partitions if it does not exist.
    pub create_topic_partitions: Option<i32>,
    pub listen: SocketAddr,
    pub database_wait: Duration,
}

pub fn pool(database_url: &str, size: usize) -> anyhow::Result<Pool> {
    let config = tokio_postgres::Config::from_str(database_url).context("parsing the database URL")?;
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Ok(Pool::builder(manager).max_size(size).build()?)
}

/// Connect (waiting up to `wait` for the database to come up) and migrate.
pub async fn prepare_database(pool: &Pool, wait: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut client = loop {
        match pool.get().await {
            Ok(client) => break client,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!("database not reachable yet: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).context("connecting to the database"),
        }
    };
    let client: &mut tokio_postgres::Client = &mut client;
    crate::migrations::apply(client).await.context("applying migrations")?;
    Ok(())
}

async fn ensure_topic(settings: &KafkaSettings, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = consumer_config(settings).create()?;
    let topic = NewTopic::new(&settings.topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&topic], &options).await? {
        match result {
            Ok(name) => tracing::info!(topic = name, partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => tracing::warn!(topic = name, "could not create topic: {code}"),
        }
    }
    Ok(())
}

pub async fn run(settings: CollectorSettings, metrics: PrometheusHandle, cancel: CancellationToken) -> anyhow::Result<()> {
    let pool = pool(&settings.database_url, settings.pool_size)?;
    prepare_database(&pool, settings.database_wait).await?;
    if let Some(partitions) = settings.create_topic_partitions {
        ensure_topic(&settings.kafka, partitions).await.context("checking the topic")?;
    }

    let (live, _) = broadcast::channel(LIVE_CHANNEL);
    let writer = SampleWriter { pool: pool.clone(), catalogs: Arc::new(CatalogRegistry::default()) };
    let ingest = KafkaIngest::new(&settings.kafka, writer, live.clone()).context("creating Kafka consumer")?;

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding API address {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let api_stop = CancellationToken::new();
    let router = api::router(ApiState { pool: pool.clone(), live, metrics, shutdown: api_stop.clone() });
    let server = tokio::spawn({
        let stop = api_stop.clone();
        async move { axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await }
    });
    println!("bess-collector: API on http://{addr}");
    tracing::info!(%addr, topic = %settings.kafka.topic, group = %settings.kafka.group, "collector started");

    ingest.run(cancel.clone()).await;
    tracing::info!("ingest stopped; closing the API");
    api_stop.cancel();
    server.await.ok();
    tracing::info!("collector stopped");
    Ok(())
}
