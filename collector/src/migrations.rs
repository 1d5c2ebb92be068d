//! Versioned schema migrations, applied at start-up under an advisory lock
//! so several collector instances can start at once.
//!
//! Most migrations apply to every database. Migration 3 decides the storage
//! backend once: `003_timescaledb_storage.sql` where the TimescaleDB
//! extension is available (and the operator did not ask for plain
//! PostgreSQL), `003_postgresql_storage.sql` otherwise. Which one was applied
//! is recorded in `schema_migrations`, so later starts keep that backend.

use tokio_postgres::Client;

use crate::storage::{StorageBackend, StoragePreference};

/// One migration; `backend` is `None` when it applies to both.
struct Migration {
    version: i32,
    name: &'static str,
    backend: Option<StorageBackend>,
    sql: &'static str,
}

/// In order. Never edit an applied migration; add one.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "schema",
        backend: None,
        sql: include_str!("sql/001_schema.sql"),
    },
    Migration {
        version: 2,
        name: "gaps",
        backend: None,
        sql: include_str!("sql/002_gaps.sql"),
    },
    Migration {
        version: 3,
        name: "postgresql_storage",
        backend: Some(StorageBackend::PostgreSql),
        sql: include_str!("sql/003_postgresql_storage.sql"),
    },
    Migration {
        version: 3,
        name: "timescaledb_storage",
        backend: Some(StorageBackend::TimescaleDb),
        sql: include_str!("sql/003_timescaledb_storage.sql"),
    },
    Migration {
        version: 4,
        name: "api_tokens",
        backend: None,
        sql: include_str!("sql/004_api_tokens.sql"),
    },
    Migration {
        version: 5,
        name: "api_lists",
        backend: None,
        sql: include_str!("sql/005_api_lists.sql"),
    },
];

/// The version whose name records the storage backend.
const STORAGE_VERSION: i32 = 3;

/// Arbitrary, fixed key for `pg_advisory_lock`.
const MIGRATION_LOCK: i64 = 0x4245_5353_4d49_4752;

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("TimescaleDB was requested but the extension is not available on this server")]
    TimescaleUnavailable,
    #[error(
        "TimescaleDB was requested and is installed on this server but not preloaded: \
         add `timescaledb` to shared_preload_libraries in postgresql.conf (or run \
         `timescaledb-tune`) and restart PostgreSQL"
    )]
    TimescaleNotPreloaded,
    #[error("migration {version} ({name}) failed: {source}")]
    Failed {
        version: i32,
        name: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("the database was set up for {found}, but {wanted} was requested")]
    BackendMismatch {
        found: StorageBackend,
        wanted: StorageBackend,
    },
}

/// What `apply` did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub versions: Vec<i32>,
    pub backend: StorageBackend,
}

pub async fn apply(
    client: &mut Client,
    preference: StoragePreference,
) -> Result<Applied, MigrationError> {
    // Lock first: even `CREATE TABLE IF NOT EXISTS` collides when two
    // instances run it at the same moment on a new database.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let created = client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await;
    let result = match created {
        Ok(()) => apply_locked(client, preference).await,
        Err(e) => Err(e.into()),
    };
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    result
}

async fn apply_locked(
    client: &mut Client,
    preference: StoragePreference,
) -> Result<Applied, MigrationError> {
    let mut versions = Vec::new();
    // Common migrations before the storage choice, then the choice, then the rest in order.
    for migration in MIGRATIONS
        .iter()
        .filter(|m| m.backend.is_none() && m.version < STORAGE_VERSION)
    {
        if run(client, migration).await? {
            versions.push(migration.version);
        }
    }
    let recorded = client
        .query_opt(
            "SELECT name FROM schema_migrations WHERE version = $1",
            &[&STORAGE_VERSION],
        )
        .await?
        .map(|row| row.get::<_, String>(0));
    let backend = match recorded {
        Some(name) => {
            let found = MIGRATIONS
                .iter()
                .find(|m| m.version == STORAGE_VERSION && m.name == name)
                .and_then(|m| m.backend)
                .unwrap_or(StorageBackend::PostgreSql);
            if let Some(wanted) = preference.forced().filter(|w| *w != found) {
                return Err(MigrationError::BackendMismatch { found, wanted });
            }
            found
        }
        None => {
            let timescale = timescale_state(client).await?;
            let available = timescale == TimescaleState::Usable;
            let wanted = match preference {
                StoragePreference::PostgreSql => StorageBackend::PostgreSql,
                StoragePreference::TimescaleDb if timescale == TimescaleState::NotPreloaded => {
                    return Err(MigrationError::TimescaleNotPreloaded)
                }
                StoragePreference::TimescaleDb if !available => {
                    return Err(MigrationError::TimescaleUnavailable)
                }
                StoragePreference::Auto if timescale == TimescaleState::NotPreloaded => {
                    tracing::warn!(
                        "TimescaleDB is installed but not in shared_preload_libraries; \
                         using plain PostgreSQL (preload it, e.g. with timescaledb-tune, \
                         before the first start to store in TimescaleDB)"
                    );
                    StorageBackend::PostgreSql
                }
                StoragePreference::TimescaleDb => StorageBackend::TimescaleDb,
                StoragePreference::Auto if available => StorageBackend::TimescaleDb,
                StoragePreference::Auto => StorageBackend::PostgreSql,
            };
            let chosen = match (wanted, preference) {
                (StorageBackend::TimescaleDb, StoragePreference::Auto) => {
                    match run(client, storage_migration(StorageBackend::TimescaleDb)).await {
                        Ok(_) => StorageBackend::TimescaleDb,
                        Err(e) => {
                            // e.g. installed but not in shared_preload_libraries.
                            tracing::warn!("TimescaleDB is installed but could not be set up ({e}); using plain PostgreSQL");
                            run(client, storage_migration(StorageBackend::PostgreSql)).await?;
                            StorageBackend::PostgreSql
                        }
                    }
                }
                (backend, _) => {
                    run(client, storage_migration(backend)).await?;
                    backend
                }
            };
            versions.push(STORAGE_VERSION);
            chosen
        }
    };
    for migration in MIGRATIONS
        .iter()
        .filter(|m| m.version > STORAGE_VERSION && m.backend.is_none_or(|b| b == backend))
    {
        if run(client, migration).await? {
            versions.push(migration.version);
        }
    }
    Ok(Applied { versions, backend })
}

fn storage_migration(backend: StorageBackend) -> &'static Migration {
    MIGRATIONS
        .iter()
        .find(|m| m.version == STORAGE_VERSION && m.backend == Some(backend))
        .expect("a storage migration per backend")
}

/// What this server offers of TimescaleDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimescaleState {
    /// Created in this database, or installed and preloaded.
    Usable,
    /// Installed (listed in `pg_available_extensions`) but not in
    /// `shared_preload_libraries`: `CREATE EXTENSION` would fail with a
    /// FATAL error that closes the connection, so it is never tried.
    NotPreloaded,
    Missing,
}

async fn timescale_state(client: &Client) -> Result<TimescaleState, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),
                    EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
                    current_setting('shared_preload_libraries') ~ '(^|[[:space:],/])timescaledb'",
            &[],
        )
        .await?;
    let (created, available, preloaded): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
    Ok(match (created, available, preloaded) {
        (true, _, _) | (false, true, true) => TimescaleState::Usable,
        (false, true, false) => TimescaleState::NotPreloaded,
        (false, false, _) => TimescaleState::Missing,
    })
}

/// Apply one migration in its own transaction unless its version is
/// recorded; `true` when it ran.
async fn run(client: &mut Client, migration: &Migration) -> Result<bool, MigrationError> {
    let tx = client.transaction().await?;
    let done = tx
        .query_opt(
            "SELECT 1 FROM schema_migrations WHERE version = $1",
            &[&migration.version],
        )
        .await?;
    if done.is_some() {
        return Ok(false);
    }
    let failed = |source| MigrationError::Failed {
        version: migration.version,
        name: migration.name,
        source,
    };
    tx.batch_execute(migration.sql).await.map_err(failed)?;
    tx.execute(
        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
        &[&migration.version, &migration.name],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        version = migration.version,
        name = migration.name,
        "applied migration"
    );
    Ok(true)
}
