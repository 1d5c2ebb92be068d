//! Versioned schema migrations, applied at start-up under an advisory lock
//! so several collector instances can start at once.
//!
//! Most migrations apply to every database. Migration 3 decides the storage
//! backend once: `003_timescaledb_storage.sql` where the TimescaleDB
//! extension is available (and the operator did not ask for plain
//! PostgreSQL), `003_postgresql_storage.sql` otherwise. Which one was applied
//! is recorded in `schema_migrations`, so later starts keep that backend.
//!
//! "Available" means installed *and* preloaded: on a server where the
//! extension's files are installed but `timescaledb` is not in
//! `shared_preload_libraries`, `CREATE EXTENSION timescaledb` is a FATAL
//! error that closes the connection. So the probe never tries it: it reads
//! the catalog and whether the extension's loader has registered its
//! settings (`timescaledb.*` in `pg_settings`, visible to any role). Such a
//! server is plain PostgreSQL for `--storage auto` and a clear refusal,
//! naming the fix, for `--storage timescaledb`. Should setting it up still
//! end the connection, `apply` says so ([`MigrationError::ConnectionLost`])
//! and the caller continues on a fresh connection.

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
    Migration {
        version: 6,
        name: "timescaledb_late_rollups",
        backend: Some(StorageBackend::TimescaleDb),
        sql: include_str!("sql/006_timescaledb_late_rollups.sql"),
    },
    Migration {
        version: 7,
        name: "lake",
        backend: None,
        sql: include_str!("sql/007_lake.sql"),
    },
    Migration {
        version: 8,
        name: "rules",
        backend: None,
        sql: include_str!("sql/008_rules.sql"),
    },
    Migration {
        version: 9,
        name: "api_rules",
        backend: None,
        sql: include_str!("sql/009_api_rules.sql"),
    },
    Migration {
        version: 10,
        name: "site_keys",
        backend: None,
        sql: include_str!("sql/010_site_keys.sql"),
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
        "TimescaleDB was requested but it is installed on this server without being preloaded: \
         add 'timescaledb' to shared_preload_libraries in postgresql.conf (timescaledb-tune does this) \
         and restart PostgreSQL, or start with --storage postgresql"
    )]
    TimescaleNotPreloaded,
    #[error("the database closed the connection while setting up TimescaleDB ({source}); plain PostgreSQL needs a fresh connection")]
    ConnectionLost { source: Box<MigrationError> },
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
    if client.is_closed() {
        // The session ended, and its advisory lock with it.
        return result;
    }
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
    let backend = match recorded_backend(client).await? {
        Some(found) => {
            if let Some(wanted) = preference.forced().filter(|w| *w != found) {
                return Err(MigrationError::BackendMismatch { found, wanted });
            }
            found
        }
        None => {
            let support = if preference == StoragePreference::PostgreSql {
                TimescaleSupport::Missing
            } else {
                timescale_support(client).await?
            };
            let wanted = match (preference, support) {
                (StoragePreference::PostgreSql, _) => StorageBackend::PostgreSql,
                (StoragePreference::TimescaleDb, TimescaleSupport::Ready) => {
                    StorageBackend::TimescaleDb
                }
                (StoragePreference::TimescaleDb, TimescaleSupport::NotPreloaded) => {
                    return Err(MigrationError::TimescaleNotPreloaded)
                }
                (StoragePreference::TimescaleDb, TimescaleSupport::Missing) => {
                    return Err(MigrationError::TimescaleUnavailable)
                }
                (StoragePreference::Auto, TimescaleSupport::Ready) => StorageBackend::TimescaleDb,
                (StoragePreference::Auto, TimescaleSupport::NotPreloaded) => {
                    tracing::warn!(
                        "TimescaleDB is installed on this server but not preloaded; using plain PostgreSQL \
                         (to use TimescaleDB on a new database: add 'timescaledb' to shared_preload_libraries, \
                         e.g. with timescaledb-tune, and restart PostgreSQL)"
                    );
                    StorageBackend::PostgreSql
                }
                (StoragePreference::Auto, TimescaleSupport::Missing) => StorageBackend::PostgreSql,
            };
            let chosen = match (wanted, preference) {
                (StorageBackend::TimescaleDb, StoragePreference::Auto) => {
                    match run(client, storage_migration(StorageBackend::TimescaleDb)).await {
                        Ok(_) => StorageBackend::TimescaleDb,
                        Err(e) if client.is_closed() => {
                            return Err(MigrationError::ConnectionLost {
                                source: Box::new(e),
                            })
                        }
                        Err(e) => {
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

/// The storage backend a migrated database chose (migration 3), `None`
/// before that migration ran.
pub async fn recorded_backend(
    client: &Client,
) -> Result<Option<StorageBackend>, tokio_postgres::Error> {
    let migrated = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get::<_, bool>(0);
    if !migrated {
        return Ok(None);
    }
    let recorded = client
        .query_opt(
            "SELECT name FROM schema_migrations WHERE version = $1",
            &[&STORAGE_VERSION],
        )
        .await?
        .map(|row| row.get::<_, String>(0));
    Ok(recorded.map(|name| {
        MIGRATIONS
            .iter()
            .find(|m| m.version == STORAGE_VERSION && m.name == name)
            .and_then(|m| m.backend)
            .unwrap_or(StorageBackend::PostgreSql)
    }))
}

fn storage_migration(backend: StorageBackend) -> &'static Migration {
    MIGRATIONS
        .iter()
        .find(|m| m.version == STORAGE_VERSION && m.backend == Some(backend))
        .expect("a storage migration per backend")
}

/// What a server offers for TimescaleDB, found without trying `CREATE
/// EXTENSION` (which is FATAL where the library is not preloaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimescaleSupport {
    /// Created in this database already, or installed and preloaded.
    Ready,
    /// Installed, but `timescaledb` is not in `shared_preload_libraries`.
    NotPreloaded,
    Missing,
}

async fn timescale_support(client: &Client) -> Result<TimescaleSupport, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),
                    EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
                    EXISTS (SELECT 1 FROM pg_settings WHERE name LIKE 'timescaledb.%')",
            &[],
        )
        .await?;
    let (created, installed, loaded): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
    Ok(match (created || installed, created || loaded) {
        (true, true) => TimescaleSupport::Ready,
        (true, false) => TimescaleSupport::NotPreloaded,
        (false, _) => TimescaleSupport::Missing,
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
