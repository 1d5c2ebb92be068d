//! The `bess-collector` command line.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use bess_collector::api::{ApiTls, CorsOrigin, HttpSettings, LiveTimings};
use bess_collector::auth::{AccessSettings, AuthMode, RateLimit};
use bess_collector::ingest::KafkaSettings;
use bess_collector::service::{self, CollectorSettings, StorageSettings};
use bess_collector::site_keys::SignaturePolicy;
use bess_collector::storage::StoragePreference;

mod export_command;
mod kafka_tls;
mod site_command;
mod token_command;

#[derive(Parser)]
#[command(
    name = "bess-collector",
    version,
    about = "BESS cloud collector: consumes site batches from Kafka, stores them in PostgreSQL/TimescaleDB exactly once, serves the live API",
    after_help = "Example:\n  bess-collector run --database-url postgres://postgres@127.0.0.1:5432/bess --brokers 127.0.0.1:9092\n\nThen: curl http://127.0.0.1:8080/api/v1/sites"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume, store and serve until stopped (Ctrl-C or SIGTERM).
    #[command(
        after_help = "Run several instances with the same --group to share the topic's partitions.\nEvery flag can also be set through the environment variable shown."
    )]
    Run(Box<RunArgs>),
    /// Apply database migrations and exit.
    Migrate {
        #[arg(
            long,
            env = "BESS_DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/bess"
        )]
        database_url: String,
        /// Storage backend for a new database (see `run --help`).
        #[arg(long, env = "BESS_STORAGE", value_enum, default_value_t = StoragePreference::Auto)]
        storage: StoragePreference,
    },
    /// Report on the database's storage and exit non-zero on a problem.
    ///
    /// Shows the backend; on TimescaleDB the extension's version, chunks,
    /// compression ratio and every policy job (compression, rollup refresh,
    /// retention) with its last run, runs and failures; on plain PostgreSQL
    /// the day partitions and the minutes waiting for rollups. Exits 1 when
    /// a job failed its last run or is not scheduled, 2 when the database is
    /// not migrated.
    #[command(
        after_help = "Example:\n  bess-collector check --database-url postgres://bess@db.example/bess"
    )]
    Check {
        #[arg(
            long,
            env = "BESS_DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/bess"
        )]
        database_url: String,
    },
    /// Check a rules file (alert rules, receivers, derived points) and exit
    /// non-zero on a problem, naming file, line and field of each.
    #[command(
        name = "check-rules",
        after_help = "Example, before a reload:\n  bess-collector check-rules /etc/bess/rules.toml && kill -HUP $(pidof bess-collector)"
    )]
    CheckRules {
        /// The rules file.
        file: std::path::PathBuf,
    },
    /// Create, list and revoke API tokens.
    Token(token_command::TokenArgs),
    /// Enroll, list and revoke the sites' batch-signing keys.
    Site(site_command::SiteArgs),
    /// Export stored samples to the history lake (Parquet files in S3) until stopped.
    ///
    /// Each (site, UTC hour) becomes one object,
    /// <prefix>/samples/site=<site>/date=<YYYY-MM-DD>/hour=<HH>/part-0.parquet,
    /// written once the hour ended --grace ago and rewritten whole when late
    /// data arrives for it. Several instances may run at once.
    #[command(
        after_help = "Example:\n  AWS_REGION=eu-west-1 bess-collector export --database-url postgres://bess@db.example/bess --bucket s3://bess-history/fleet\n\nBackfill history stored before the exporter ran:\n  bess-collector export --bucket s3://bess-history/fleet --backfill --once"
    )]
    Export(Box<export_command::ExportArgs>),
}

#[derive(Args)]
struct RunArgs {
    /// PostgreSQL connection URL.
    #[arg(
        long,
        env = "BESS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/bess"
    )]
    database_url: String,
    /// A read replica of --database-url for the API's history queries
    /// (series, rollups, inventory, gaps, completeness reports). Ingest,
    /// tokens and alarm acknowledgements stay on the primary; /latest and
    /// the WebSocket are fed by the stream and stay current. History read
    /// here trails the stream by the replica's lag (shown by
    /// /health?detail=storage); a replica that does not answer gives 503.
    #[arg(long, env = "BESS_READ_DATABASE_URL")]
    read_database_url: Option<String>,
    /// Database connections in the pool (each pool: primary and replica).
    #[arg(long, env = "BESS_DATABASE_POOL", default_value_t = 8)]
    database_pool: usize,
    /// How long to wait for the database at start-up.
    #[arg(long, env = "BESS_DATABASE_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    database_wait: Duration,
    /// Kafka bootstrap servers (host:port, comma-separated).
    #[arg(long, env = "BESS_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Telemetry topic.
    #[arg(long, env = "BESS_KAFKA_TOPIC", default_value = "bess.telemetry")]
    topic: String,
    /// Dead-letter topic: messages that are not valid batches are produced
    /// here with the reason and their origin in headers (empty: only the
    /// `rejected_messages` table).
    #[arg(
        long,
        env = "BESS_DEAD_LETTER_TOPIC",
        default_value = "bess.telemetry.dlq"
    )]
    dead_letter_topic: String,
    /// Live topic: the edges' newest frames, read whole by every instance
    /// (no group, no commits) for the WebSocket and `/latest` (empty: no
    /// live lane).
    #[arg(long, env = "BESS_LIVE_TOPIC", default_value = "bess.live")]
    live_topic: String,
    /// How far back into the live topic an instance starts: the edges send
    /// each group whole at least every `live.keyframe_every` (30 s), so
    /// reading that far back shows every site at once (0: start at the end).
    #[arg(long, env = "BESS_LIVE_REPLAY", default_value = "35s", value_parser = humantime::parse_duration)]
    live_replay: Duration,
    /// Alert rules and notification receivers (TOML; see
    /// `deploy/local/rules.example.toml`). Reloaded on SIGHUP; a file with
    /// problems is refused at start with file, line and field.
    #[arg(long, env = "BESS_RULES", value_name = "FILE")]
    rules: Option<std::path::PathBuf>,
    /// What a batch's signature must be: `required` (only batches signed by
    /// a key enrolled for their site are stored; the rest go to the dead
    /// letters with the reason) or `optional` (unsigned batches are stored
    /// too, for a fleet migrating to signing; signed ones are still checked).
    #[arg(long, env = "BESS_BATCH_SIGNATURES", value_enum, default_value_t = SignatureMode::Required)]
    batch_signatures: SignatureMode,
    /// Trust on first use: a site with no key enrolled gets the key of its
    /// first signed batch. For lab setups; anyone who reaches the topic
    /// first can claim a new site.
    #[arg(long, env = "BESS_PIN_FIRST_KEY")]
    pin_first_key: bool,
    /// Consumer group; instances in one group share the partitions.
    #[arg(long, env = "BESS_KAFKA_GROUP", default_value = "bess-collector")]
    group: String,
    /// Consumer session timeout (the group notices a dead instance after this long).
    #[arg(long, env = "BESS_KAFKA_SESSION_TIMEOUT", default_value = "6s", value_parser = humantime::parse_duration)]
    session_timeout: Duration,
    /// Extra librdkafka property, repeatable (e.g. security.protocol=SASL_SSL).
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = parse_property)]
    kafka_properties: Vec<(String, String)>,
    #[command(flatten)]
    kafka_tls: kafka_tls::KafkaTlsArgs,
    /// Create the topic with this many partitions if it is missing (0 = never create).
    #[arg(long, env = "BESS_KAFKA_CREATE_PARTITIONS", default_value_t = 4)]
    create_topic_partitions: i32,
    /// Address of the API server.
    #[arg(long, env = "BESS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve the API, the live WebSocket and the dashboard over HTTPS only,
    /// with this certificate chain (PEM, the server's certificate first).
    /// Needs --tls-key. Unset: plain HTTP, for a load balancer that
    /// terminates TLS in front of the collector.
    #[arg(long, env = "BESS_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC).
    #[arg(long, env = "BESS_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A browser origin allowed to read the API from its pages (CORS),
    /// e.g. https://grid.example.com; repeatable, or comma-separated in the
    /// environment variable. Unset: no CORS headers, so browsers refuse
    /// cross-origin reads (the built-in dashboard is same-origin).
    #[arg(
        long = "cors-origin",
        env = "BESS_CORS_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    cors_origins: Vec<CorsOrigin>,
    /// Storage backend, chosen when the database is first set up:
    /// TimescaleDB if the extension is available (auto), or forced.
    #[arg(long, env = "BESS_STORAGE", value_enum, default_value_t = StoragePreference::Auto)]
    storage: StoragePreference,
    /// Drop raw frames older than this, e.g. 400d (rollups are kept).
    /// Unset: keep everything. At least 7 days.
    #[arg(long, env = "BESS_RETENTION", value_parser = parse_retention)]
    retention: Option<Duration>,
    /// How often the storage upkeep runs: on plain PostgreSQL rollups are
    /// brought up to date and partitions created ahead / dropped past
    /// retention; on TimescaleDB the rollups of hours that received frames
    /// older than the refresh policies reach (3 days) are refreshed.
    #[arg(long, env = "BESS_MAINTENANCE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    maintenance_interval: Duration,
    /// API access control: `required` (every /api/v1 request needs a token
    /// from `bess-collector token create`) or `disabled` (open to anyone
    /// who can reach --listen; only for tests and closed lab networks).
    #[arg(long, env = "BESS_AUTH", value_enum, default_value_t = AuthMode::Required)]
    auth: AuthMode,
    /// Requests per token: RATE/s, /min or /h, optionally :BURST
    /// (e.g. 50/s:100). Over it: 429 with Retry-After. "none": unlimited.
    #[arg(long, env = "BESS_RATE_LIMIT", default_value = "50/s:100", value_parser = parse_rate_limit)]
    // Spelled out so clap takes the parser's `Option` as the value.
    rate_limit: std::option::Option<RateLimit>,
    /// How often live WebSocket clients are pinged.
    #[arg(long, env = "BESS_LIVE_PING_INTERVAL", default_value = "20s", value_parser = humantime::parse_duration)]
    live_ping_interval: Duration,
    /// A live client that sends nothing (not even a pong) for this long is
    /// closed. Checked at each ping, so keep it above --live-ping-interval.
    #[arg(long, env = "BESS_LIVE_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    live_idle_timeout: Duration,
    /// A live client whose socket takes no message for this long is closed.
    #[arg(long, env = "BESS_LIVE_SEND_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    live_send_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SignatureMode {
    Required,
    Optional,
}

fn parse_rate_limit(s: &str) -> Result<Option<RateLimit>, String> {
    if s == "none" {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e: bess_collector::auth::RateLimitParseError| e.to_string())
}

fn parse_retention(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(7 * 86_400) {
        return Err(
            "retention must be at least 7d (rollups are refreshed over the last 3 days)".into(),
        );
    }
    Ok(d)
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run(args) => run(*args),
        Command::Migrate {
            database_url,
            storage,
        } => migrate(&database_url, storage),
        Command::Check { database_url } => match check(&database_url) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::CheckRules { file } => match bess_collector::rules::config::load(&file) {
            Ok(set) => {
                println!(
                    "{}: {} rules, {} receivers, {} derived points",
                    file.display(),
                    set.rules.len(),
                    set.receivers.len(),
                    set.derived.len()
                );
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        Command::Token(args) => runtime().and_then(|rt| token_command::token(args, rt)),
        Command::Site(args) => runtime().and_then(|rt| site_command::site(args, rt)),
        Command::Export(args) => runtime().and_then(|rt| export_command::export(*args, rt)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bess-collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn migrate(database_url: &str, storage: StoragePreference) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let pool = service::pool(database_url, 1)?;
        let backend =
            service::prepare_database_with(&pool, Duration::from_secs(5), storage).await?;
        println!("migrations applied; storage: {backend}");
        Ok(())
    })
}

fn check(database_url: &str) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to {database_url}"))?;
        tokio::spawn(connection);
        let Some(backend) = bess_collector::migrations::recorded_backend(&client).await? else {
            eprintln!(
                "bess-collector: {database_url} is not migrated yet (run `bess-collector migrate`)"
            );
            return Ok(ExitCode::from(2));
        };
        let report = bess_collector::storage_health::report(&client, backend).await?;
        print!("{report}");
        Ok(if report.is_healthy() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    raise_open_files_limit();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing metrics recorder")?;
    // Before any connection is made, so a certificate or key that cannot
    // be used stops the start at once.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ApiTls::load(cert, key)?),
        _ => None,
    };
    let access = AccessSettings {
        mode: args.auth,
        rate_limit: args.rate_limit,
    };
    let kafka_properties = args
        .kafka_tls
        .client_properties(&args.brokers, args.kafka_properties)?;
    let settings = CollectorSettings {
        database_url: args.database_url,
        read_database_url: args.read_database_url.filter(|url| !url.trim().is_empty()),
        pool_size: args.database_pool.max(3),
        kafka: KafkaSettings {
            brokers: args.brokers,
            topic: args.topic,
            group: args.group,
            session_timeout: args.session_timeout,
            properties: kafka_properties,
            dead_letter_topic: Some(args.dead_letter_topic).filter(|t| !t.trim().is_empty()),
        },
        live_topic: Some(args.live_topic).filter(|t| !t.trim().is_empty()),
        live_replay: args.live_replay,
        create_topic_partitions: (args.create_topic_partitions > 0)
            .then_some(args.create_topic_partitions),
        listen: args.listen,
        database_wait: args.database_wait,
        storage: StorageSettings {
            preference: args.storage,
            retention: args.retention,
            maintenance_interval: args.maintenance_interval,
        },
        live_timings: LiveTimings {
            ping_every: args.live_ping_interval,
            idle_timeout: args.live_idle_timeout,
            send_timeout: args.live_send_timeout,
        },
        rules_file: args.rules,
        signatures: SignaturePolicy {
            require: args.batch_signatures == SignatureMode::Required,
            pin_first_key: args.pin_first_key,
        },
        http: HttpSettings {
            tls,
            cors_origins: args.cors_origins,
        },
    };
    runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(shutdown_signal(cancel.clone()));
        service::run_with_access(settings, access, metrics, cancel).await
    })
}

/// Every API client holds a socket: raise the soft limit on open files to
/// the hard limit, so the number of clients does not depend on the shell's
/// `ulimit -n`. Logs the limit in force.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!("cannot read the open files limit: {e}");
            return;
        }
    };
    if soft < hard {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            tracing::warn!(soft, hard, "cannot raise the open files limit: {e}");
            return;
        }
    }
    tracing::info!(
        open_files = hard,
        "open files limit (API clients, database and broker connections)"
    );
}

async fn shutdown_signal(cancel: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stop signal received");
    cancel.cancel();
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,librdkafka=warn"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
