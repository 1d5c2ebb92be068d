//! Start-up and shutdown of a collector instance: database pool and
//! migrations (which choose the storage backend), topic checks, the ingest
//! pipeline, the storage upkeep task and the API server.

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::auth::{AccessControl, AccessSettings};
use crate::ingest::{consumer_config, KafkaIngest, KafkaSettings};
use crate::latest::LatestCache;
use crate::live::{LiveHub, LiveLane};
use crate::migrations::MigrationError;
use crate::rules::{self, Rules};
use crate::site_keys::{SignaturePolicy, SiteKeys};
use crate::storage::{self, FramePartitions, StorageBackend, StoragePreference};
use crate::writer::SampleWriter;

pub struct CollectorSettings {
    pub database_url: String,
    /// A read replica of `database_url` for the API's history queries.
    pub read_database_url: Option<String>,
    pub pool_size: usize,
    pub kafka: KafkaSettings,
    /// The live topic every instance reads whole (`None`: no live lane;
    /// WebSocket clients then get no frames and `/latest` comes from the
    /// database).
    pub live_topic: Option<String>,
    /// How far back into the live topic an instance starts reading (at
    /// least the edges' `live.keyframe_every`, so every site shows at once).
    pub live_replay: Duration,
    /// Create the topic with this many partitions if it does not exist.
    pub create_topic_partitions: Option<i32>,
    pub listen: SocketAddr,
    pub database_wait: Duration,
    pub storage: StorageSettings,
    /// Pings and timeouts of live WebSocket clients.
    pub live_timings: api::LiveTimings,
    /// The alert rules and receivers (`None`: no rules); reloaded on SIGHUP.
    pub rules_file: Option<PathBuf>,
    /// What a batch's signature must be for it to be stored.
    pub signatures: SignaturePolicy,
    /// TLS and CORS of the API.
    pub http: api::HttpSettings,
}

#[derive(Debug, Clone)]
pub struct StorageSettings {
    pub preference: StoragePreference,
    /// Drop frames older than this (`None`: keep forever).
    pub retention: Option<Duration>,
    /// How often the plain-PostgreSQL upkeep runs (rollups, partitions).
    pub maintenance_interval: Duration,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            preference: StoragePreference::Auto,
            retention: None,
            maintenance_interval: Duration::from_secs(30),
        }
    }
}

pub fn pool(database_url: &str, size: usize) -> anyhow::Result<Pool> {
    let config =
        tokio_postgres::Config::from_str(database_url).context("parsing the database URL")?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager).max_size(size).build()?)
}

/// Connect (waiting up to `wait` for the database to come up) and migrate,
/// choosing the storage backend automatically.
pub async fn prepare_database(pool: &Pool, wait: Duration) -> anyhow::Result<StorageBackend> {
    prepare_database_with(pool, wait, StoragePreference::Auto).await
}

/// Connect (waiting up to `wait`) and migrate; the backend in use.
pub async fn prepare_database_with(
    pool: &Pool,
    wait: Duration,
    preference: StoragePreference,
) -> anyhow::Result<StorageBackend> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut client = connect_until(pool, deadline).await?;
    let applied = match crate::migrations::apply(&mut client, preference).await {
        Err(MigrationError::ConnectionLost { source }) if preference == StoragePreference::Auto => {
            // Setting up TimescaleDB ended the session (e.g. not preloaded):
            // plain PostgreSQL, on a new connection.
            tracing::warn!("TimescaleDB could not be set up ({source}); using plain PostgreSQL");
            drop(client);
            let mut fresh = connect_until(pool, deadline).await?;
            crate::migrations::apply(&mut fresh, StoragePreference::PostgreSql).await
        }
        applied => applied,
    }
    .context("applying migrations")?;
    Ok(applied.backend)
}

/// A pooled connection, retrying once a second until `deadline`.
async fn connect_until(
    pool: &Pool,
    deadline: tokio::time::Instant,
) -> anyhow::Result<deadpool_postgres::Object> {
    loop {
        match pool.get().await {
            Ok(client) => return Ok(client),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!("database not reachable yet: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).context("connecting to the database"),
        }
    }
}

async fn ensure_topic(settings: &KafkaSettings, name: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = consumer_config(settings).create()?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
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

/// Run with the API open to everyone (no tokens, no rate limit): for tests
/// and benchmarks that embed the collector. The command line uses
/// [`run_with_access`].
pub async fn run(
    settings: CollectorSettings,
    metrics: PrometheusHandle,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    run_with_access(settings, AccessSettings::open(), metrics, cancel).await
}

/// Run with the given API access control.
pub async fn run_with_access(
    settings: CollectorSettings,
    access: AccessSettings,
    metrics: PrometheusHandle,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let pool = pool(&settings.database_url, settings.pool_size)?;
    let backend =
        prepare_database_with(&pool, settings.database_wait, settings.storage.preference).await?;
    tracing::info!(storage = %backend, "storage backend");
    {
        let client = pool.get().await?;
        storage::configure_retention(&**client, backend, settings.storage.retention)
            .await
            .context("setting retention")?;
    }
    if let Some(partitions) = settings.create_topic_partitions {
        ensure_topic(&settings.kafka, &settings.kafka.topic, partitions)
            .await
            .context("checking the topic")?;
        if let Some(dlq) = &settings.kafka.dead_letter_topic {
            ensure_topic(&settings.kafka, dlq, partitions)
                .await
                .context("checking the dead-letter topic")?;
        }
        if let Some(live_topic) = &settings.live_topic {
            ensure_topic(&settings.kafka, live_topic, partitions)
                .await
                .context("checking the live topic")?;
        }
    }

    let live = LiveHub::default();
    let latest = Arc::new(LatestCache::default());
    let latest_feed = tokio::spawn(crate::latest::feed(
        latest.clone(),
        live.subscribe(),
        pool.clone(),
        cancel.clone(),
    ));
    let rule_set = match &settings.rules_file {
        Some(path) => rules::config::load(path)?,
        None => rules::model::RuleSet::default(),
    };
    tracing::info!(
        rules = rule_set.rules.len(),
        receivers = rule_set.receivers.len(),
        "alert rules"
    );
    let rules = Rules::new(rule_set);
    {
        // The rules managed over the API beside the file's; episodes of
        // rules that were removed while no instance ran are closed.
        let client = pool.get().await?;
        let sources = rules
            .refresh_api_rules(&**client)
            .await
            .context("loading the alert rules' state")?;
        tracing::info!(
            api_rules = sources.api.len(),
            "alert rules managed over the API"
        );
    }
    let site_keys = SiteKeys::new(settings.signatures);
    {
        let client = pool.get().await?;
        site_keys
            .refresh(&**client)
            .await
            .context("loading the sites' signing keys")?;
        let keys = store_keys_count(&site_keys);
        match (settings.signatures.require, settings.signatures.pin_first_key) {
            (true, false) => tracing::info!(keys, "batches must be signed by an enrolled site key"),
            (true, true) => tracing::warn!(keys, "batches must be signed; a new site's first key is pinned on first use (lab setting)"),
            (false, _) => tracing::warn!(keys, pin_first_key = settings.signatures.pin_first_key, "unsigned batches are accepted (--batch-signatures optional: for migration only)"),
        }
    }
    let site_keys_follow = tokio::spawn(site_keys.clone().follow(pool.clone(), cancel.clone()));
    let writer = SampleWriter::new(pool.clone(), backend)
        .with_rules(rules.clone())
        .with_site_keys(site_keys.clone());
    let partitions = writer.partitions.clone();
    let live_lane = match &settings.live_topic {
        Some(topic) => {
            let lane = LiveLane::new(
                &settings.kafka,
                topic,
                settings.live_replay,
                live.clone(),
                writer.catalogs.clone(),
                pool.clone(),
            )
            .context("creating the live topic's consumer")?
            .with_derived(rules.clone());
            Some(tokio::spawn(lane.run(cancel.clone())))
        }
        None => {
            tracing::warn!("no live topic: WebSocket clients get no frames");
            None
        }
    };
    let ingest = KafkaIngest::new(&settings.kafka, writer).context("creating Kafka consumer")?;
    let offline_checks = tokio::spawn(rules.clone().run_offline_checks(
        pool.clone(),
        assigned_partitions(ingest.consumer.clone()),
        cancel.clone(),
    ));
    let api_rules_poll = tokio::spawn(rules.clone().poll_api_rules(pool.clone(), cancel.clone()));
    let rules_reload = settings.rules_file.clone().map(|path| {
        tokio::spawn(reload_rules_on_hangup(
            path,
            rules.clone(),
            pool.clone(),
            cancel.clone(),
        ))
    });
    // Its own connections: a delivery cycle holds one while it posts.
    let notify_pool = self::pool(&settings.database_url, 2)?;
    let notifier = tokio::spawn(
        crate::notify::Notifier::new(notify_pool, rules.subscribe(), reqwest::Client::new())
            .woken_by(rules.notifications_queued())
            .run(cancel.clone()),
    );
    let upkeep = tokio::spawn(maintain_storage(
        pool.clone(),
        backend,
        partitions,
        settings.storage.clone(),
        cancel.clone(),
    ));

    let replica = settings
        .read_database_url
        .as_deref()
        .map(|url| self::pool(url, settings.pool_size))
        .transpose()
        .context("the read replica's URL")?;
    if let Some(replica) = &replica {
        // A replica that is down at start-up is not fatal: history queries
        // fail with 503 until it answers, the stream and /latest go on.
        match replica.get().await {
            Ok(_) => tracing::info!("history queries go to the read replica"),
            Err(e) => tracing::warn!(error = %e, "the read replica does not answer yet"),
        }
    }

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding API address {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let api_stop = CancellationToken::new();
    let state = ApiState {
        pool: pool.clone(),
        replica,
        live,
        metrics,
        shutdown: api_stop.clone(),
        storage: backend,
        access: AccessControl::new(access),
        latest,
        live_timings: settings.live_timings,
        rules: rules.clone(),
    };
    let url = settings.http.url(addr);
    if !settings.http.cors_origins.is_empty() {
        let origins: Vec<String> = settings
            .http
            .cors_origins
            .iter()
            .map(|o| o.to_string())
            .collect();
        tracing::info!(
            ?origins,
            "browsers of these origins may read the API (CORS)"
        );
    }
    let server = tokio::spawn(api::serve(listener, state, settings.http, api_stop.clone()));
    println!("bess-collector: API on {url}");
    tracing::info!(%addr, topic = %settings.kafka.topic, group = %settings.kafka.group, storage = %backend, "collector started");

    ingest.run(cancel.clone()).await;
    if let Some(lane) = live_lane {
        lane.await.ok();
    }
    upkeep.await.ok();
    latest_feed.await.ok();
    offline_checks.await.ok();
    api_rules_poll.await.ok();
    site_keys_follow.await.ok();
    notifier.await.ok();
    if let Some(reload) = rules_reload {
        reload.await.ok();
    }
    tracing::info!("ingest stopped; closing the API");
    api_stop.cancel();
    server.await.ok();
    tracing::info!("collector stopped");
    Ok(())
}

/// The partitions of the stored topic the consumer owns now.
fn assigned_partitions(
    consumer: Arc<rdkafka::consumer::StreamConsumer>,
) -> impl Fn() -> HashSet<i32> + Send {
    use rdkafka::consumer::Consumer as _;
    move || {
        consumer
            .assignment()
            .map(|list| list.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default()
    }
}

/// On SIGHUP, load the rules file again and merge it with the API rules; a
/// file with problems is logged (file, line, field) and the rules in force
/// stay.
async fn reload_rules_on_hangup(
    path: PathBuf,
    rules: Arc<Rules>,
    pool: Pool,
    cancel: CancellationToken,
) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("cannot watch SIGHUP: the rules file is read once");
        return;
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = hangup.recv() => {}
        }
        let set = match rules::config::load(&path) {
            Ok(set) => set,
            Err(e) => {
                metrics::counter!("bess_collector_rules_reload_failures_total").increment(1);
                tracing::error!("rules file not reloaded, the rules in force stay:\n{e}");
                continue;
            }
        };
        let replaced = match pool.get().await {
            Ok(client) => rules
                .replace_file(set, &**client)
                .await
                .map_err(anyhow::Error::from),
            Err(e) => Err(e.into()),
        };
        match replaced {
            Ok(_) => {
                let count = rules.current().rules.len();
                metrics::counter!("bess_collector_rules_reloads_total").increment(1);
                tracing::info!(rules = count, path = %path.display(), "rules reloaded");
                println!("bess-collector: rules reloaded ({count} rules)");
            }
            Err(e) => tracing::error!("rules not reloaded: {e:#}"),
        }
    }
}

/// Every `maintenance_interval`: on plain PostgreSQL recompute stale
/// rollups, create partitions ahead, drop partitions past retention; on
/// TimescaleDB (whose policies do the rest) refresh the rollups of hours
/// that received frames older than the policies reach. Cycles never
/// overlap; a failed cycle is logged and retried on the next tick.
async fn maintain_storage(
    pool: Pool,
    backend: StorageBackend,
    partitions: Arc<FramePartitions>,
    settings: StorageSettings,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(settings.maintenance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = cancel.cancelled() => return,
        }
        let cycle = match backend {
            StorageBackend::PostgreSql => {
                maintain_once(&pool, &partitions, settings.retention).await
            }
            StorageBackend::TimescaleDb => refresh_late_rollups(&pool, settings.retention).await,
        };
        if let Err(e) = cycle {
            metrics::counter!("bess_collector_maintenance_failures_total").increment(1);
            tracing::warn!("storage upkeep failed: {e:#}");
        }
    }
}

/// One upkeep cycle (TimescaleDB): the rollups of late hours.
pub async fn refresh_late_rollups(pool: &Pool, retention: Option<Duration>) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let outcome = crate::late_rollups::refresh_late_hours(&client, retention).await?;
    if outcome != Default::default() {
        tracing::info!(
            refreshed = outcome.refreshed,
            expired = outcome.expired,
            "rollups of late hours refreshed"
        );
    }
    metrics::counter!("bess_collector_late_rollup_hours_refreshed_total")
        .increment(outcome.refreshed);
    Ok(())
}

/// One upkeep cycle (plain PostgreSQL).
pub async fn maintain_once(
    pool: &Pool,
    partitions: &FramePartitions,
    retention: Option<Duration>,
) -> anyhow::Result<()> {
    let mut client = pool.get().await?;
    let dropped = storage::maintain_partitions(&**client, partitions, retention).await?;
    if !dropped.is_empty() {
        tracing::info!(?dropped, "dropped partitions past retention");
    }
    let refreshed = storage::refresh_rollups(&mut client).await?;
    metrics::counter!("bess_collector_rollup_minutes_refreshed_total").increment(refreshed.minutes);
    Ok(())
}

fn store_keys_count(keys: &SiteKeys) -> usize {
    keys.table().len()
}
