//! What the collector's integration tests share: the two storage backends
//! a test body runs against, one fresh database per test on each.
//!
//! A body is written once as `async fn name(backend: Backend)` and
//! `on_both_backends!` turns it into two tests, `name::on_postgresql` (the
//! server in `BESS_TEST_DATABASE_URL`, migrated with `--storage
//! postgresql`) and `name::on_timescaledb` (the TimescaleDB server in
//! `BESS_TEST_TIMESCALEDB_URL`, migrated with `--storage timescaledb`).
//! Without that URL the TimescaleDB test prints `SKIPPED (no TimescaleDB):
//! <test>` to stderr and passes, except under `CI`, where it fails: CI
//! must have the server (`deploy/tools/ensure-timescaledb.sh`).

#![allow(dead_code)] // each test file uses its own part

use bess_collector::storage::{StorageBackend, StoragePreference};
use bess_tests::TestDatabase;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    PostgreSql,
    TimescaleDb,
}

impl Backend {
    /// The server's admin URL; `None` (after saying so on stderr) when this
    /// backend's server is not configured and the test should be skipped.
    /// Panics under `CI` instead of skipping.
    pub fn admin_url(self, test: &str) -> Option<String> {
        match self {
            Backend::PostgreSql => Some(TestDatabase::admin_url()),
            Backend::TimescaleDb => TestDatabase::timescaledb_admin_url(test),
        }
    }

    /// A fresh database for `test` on this backend's server.
    pub async fn database(self, test: &str) -> TestDatabase {
        let url = self
            .admin_url(test)
            .expect("the test wrapper skips a backend without a server");
        TestDatabase::create_on(&url, test)
            .await
            .unwrap_or_else(|e| panic!("creating the {self:?} test database: {e:#}"))
    }

    /// What the migrations are asked for, so a test never falls back silently.
    pub fn preference(self) -> StoragePreference {
        match self {
            Backend::PostgreSql => StoragePreference::PostgreSql,
            Backend::TimescaleDb => StoragePreference::TimescaleDb,
        }
    }

    pub fn storage(self) -> StorageBackend {
        match self {
            Backend::PostgreSql => StorageBackend::PostgreSql,
            Backend::TimescaleDb => StorageBackend::TimescaleDb,
        }
    }

    /// How many migrations a database of this backend has applied: the
    /// common ones, its own storage migration, and (TimescaleDB) the
    /// late-rollup marks.
    pub fn migration_count(self) -> i64 {
        match self {
            Backend::PostgreSql => 9,
            Backend::TimescaleDb => 10,
        }
    }

    /// A pool of `size` over `database`, migrated for this backend.
    pub async fn prepare(
        self,
        database: &TestDatabase,
        size: usize,
    ) -> (deadpool_postgres::Pool, StorageBackend) {
        let pool = bess_collector::service::pool(&database.url(), size).unwrap();
        let backend = bess_collector::service::prepare_database_with(
            &pool,
            std::time::Duration::from_secs(10),
            self.preference(),
        )
        .await
        .unwrap();
        assert_eq!(backend, self.storage());
        (pool, backend)
    }

    /// Bring the rollups up to date now: the upkeep cycle on plain
    /// PostgreSQL, a full refresh of both continuous aggregates on TimescaleDB.
    pub async fn refresh_rollups(self, pool: &deadpool_postgres::Pool) {
        let client = pool.get().await.unwrap();
        match self {
            Backend::PostgreSql => {
                bess_collector::service::maintain_once(
                    pool,
                    &bess_collector::storage::FramePartitions::default(),
                    None,
                )
                .await
                .unwrap();
                let pending: i64 = client
                    .query_one("SELECT count(*) FROM rollup_pending", &[])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(pending, 0, "every written minute was rolled up");
            }
            Backend::TimescaleDb => {
                // A refresh policy may be running over the same window: wait
                // for it (TimescaleDB refuses two refreshes at once, 55P03).
                for view in ["rollup_1m", "rollup_1h"] {
                    let sql = format!("CALL refresh_continuous_aggregate('{view}', NULL, NULL)");
                    let mut attempts = 0;
                    loop {
                        match client.batch_execute(&sql).await {
                            Ok(()) => break,
                            Err(e)
                                if e.code()
                                    == Some(
                                        &tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE,
                                    )
                                    && attempts < 300 =>
                            {
                                attempts += 1;
                                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            }
                            Err(e) => panic!("refreshing {view}: {e}"),
                        }
                    }
                }
            }
        }
    }
}

/// A test whose server is missing (`why`): a loud line, or a failure under `CI`.
pub fn skip_or_fail(test: &str, why: &str) {
    bess_tests::skip_without_timescaledb(test, why);
}

/// Two tests from one body: `$name::on_postgresql` and `$name::on_timescaledb`.
/// The body is `async fn $name(backend: Backend)`, returning `()` or, with
/// `-> anyhow::Result<()>` after the name, a result.
#[allow(unused_macros)] // not every test file runs bodies on both backends
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            use crate::support::Backend;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgresql() {
                super::$name(Backend::PostgreSql).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_timescaledb() {
                let test = concat!(module_path!(), "::on_timescaledb");
                if Backend::TimescaleDb.admin_url(test).is_some() {
                    super::$name(Backend::TimescaleDb).await
                }
            }
        }
    };
    ($name:ident -> anyhow::Result<()>) => {
        mod $name {
            use crate::support::Backend;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgresql() -> anyhow::Result<()> {
                super::$name(Backend::PostgreSql).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_timescaledb() -> anyhow::Result<()> {
                let test = concat!(module_path!(), "::on_timescaledb");
                match Backend::TimescaleDb.admin_url(test) {
                    Some(_) => super::$name(Backend::TimescaleDb).await,
                    None => Ok(()),
                }
            }
        }
    };
}

/// Only on TimescaleDB: `$name::on_timescaledb` (skipped like above).
#[allow(unused_macros)]
macro_rules! on_timescaledb {
    ($name:ident) => {
        mod $name {
            use crate::support::Backend;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_timescaledb() {
                let test = concat!(module_path!(), "::on_timescaledb");
                if Backend::TimescaleDb.admin_url(test).is_some() {
                    super::$name(Backend::TimescaleDb).await
                }
            }
        }
    };
}

/// A writer over `db` (migrated for plain PostgreSQL) evaluating the rules
/// and derived points of `rules_toml`.
pub async fn rules_writer(
    db: &TestDatabase,
    rules_toml: &str,
) -> (
    bess_collector::writer::SampleWriter,
    std::sync::Arc<bess_collector::rules::Rules>,
) {
    let pool = bess_collector::service::pool(&db.url(), 2).unwrap();
    let backend = bess_collector::service::prepare_database_with(
        &pool,
        std::time::Duration::from_secs(5),
        StoragePreference::PostgreSql,
    )
    .await
    .unwrap();
    let set = bess_collector::rules::config::parse(rules_toml, std::path::Path::new("rules.toml"))
        .unwrap();
    let rules = bess_collector::rules::Rules::new(set);
    (
        bess_collector::writer::SampleWriter::new(pool, backend).with_rules(rules.clone()),
        rules,
    )
}

/// API state over `pool` with everything else at its default: no replica,
/// a small live hub, an empty latest-value cache, no rules. Tests change
/// what they need with struct update syntax.
pub fn api_state(
    pool: deadpool_postgres::Pool,
    storage: StorageBackend,
    mode: bess_collector::auth::AuthMode,
) -> bess_collector::api::ApiState {
    bess_collector::api::ApiState {
        pool,
        replica: None,
        live: bess_collector::live::LiveHub::new(64, 64),
        metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle(),
        shutdown: tokio_util::sync::CancellationToken::new(),
        storage,
        access: bess_collector::auth::AccessControl::new(bess_collector::auth::AccessSettings {
            mode,
            rate_limit: None,
        }),
        latest: std::sync::Arc::new(bess_collector::latest::LatestCache::default()),
        live_timings: Default::default(),
        rules: bess_collector::rules::Rules::new(Default::default()),
    }
}

/// Serve `state`'s router on a free port; its base URL.
pub async fn serve_api(state: bess_collector::api::ApiState) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, bess_collector::api::router(state)).await });
    Ok(url)
}

/// Serve `state` as `bess-collector run` does, with the TLS and CORS of
/// `http`, on a free port; its base URL (`https://…` with TLS). The server
/// stops with `state.shutdown`.
pub async fn serve_api_with(
    state: bess_collector::api::ApiState,
    http: bess_collector::api::HttpSettings,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = http.url(listener.local_addr()?);
    let stop = state.shutdown.clone();
    tokio::spawn(bess_collector::api::serve(listener, state, http, stop));
    Ok(url)
}
