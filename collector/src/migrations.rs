//! Versioned schema migrations, applied at start-up under an advisory lock
//! so several collector instances can start at once.

use tokio_postgres::Client;

/// (version, name, SQL), in order. Never edit an applied migration; add one.
const MIGRATIONS: &[(i32, &str, &str)] = &[(1, "schema", include_str!("sql/001_schema.sql"))];

/// Arbitrary, fixed key for `pg_advisory_lock`.
const MIGRATION_LOCK: i64 = 0x4245_5353_4d49_4752;

pub async fn apply(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .or_else(ignore_concurrent_create)?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let result = apply_locked(client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    result
}

async fn apply_locked(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        let tx = client.transaction().await?;
        let done = tx.query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[&version]).await?;
        if done.is_none() {
            tx.batch_execute(sql).await?;
            tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[&version, &name]).await?;
            tx.commit().await?;
            tracing::info!(version, name, "applied migration");
            applied.push(version);
        }
    }
    Ok(applied)
}

/// Two instances racing on `CREATE TABLE IF NOT EXISTS` can collide on the
/// catalog's unique index; the table exists either way.
fn ignore_concurrent_create(e: tokio_postgres::Error) -> Result<(), tokio_postgres::Error> {
    match e.code() {
        Some(code) if *code == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => Ok(()),
        _ => Err(e),
    }
}
