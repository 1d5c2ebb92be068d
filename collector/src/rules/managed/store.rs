//! `api_rules` and its version row (migration 9): every change writes the
//! rule and bumps the version in one transaction, so an instance that
//! polls the version sees every change, deletes included, and the rules
//! it then loads are those of that version (one statement, one snapshot).

use time::OffsetDateTime;
use tokio_postgres::{GenericClient, Row, Transaction};

use super::definition::RuleDefinition;

/// One row of `api_rules`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRuleRecord {
    pub name: String,
    pub definition: RuleDefinition,
    pub enabled: bool,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub updated_by: String,
    pub updated_at: OffsetDateTime,
}

const COLUMNS: &str = "name, definition, enabled, created_by, created_at, updated_by, updated_at";

impl ApiRuleRecord {
    /// From `COLUMNS` starting at column `at`.
    fn from_row(row: &Row, at: usize) -> Self {
        let definition: serde_json::Value = row.get(at + 1);
        Self {
            name: row.get(at),
            // The table's CHECK keeps it an object.
            definition: RuleDefinition::from_json(definition).unwrap_or_default(),
            enabled: row.get(at + 2),
            created_by: row.get(at + 3),
            created_at: row.get(at + 4),
            updated_by: row.get(at + 5),
            updated_at: row.get(at + 6),
        }
    }
}

/// The version of the API rules now.
pub async fn version(client: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT version FROM api_rules_version", &[])
        .await?
        .get(0))
}

/// Every API rule, by name, and the version they are.
pub async fn load(
    client: &impl GenericClient,
) -> Result<(i64, Vec<ApiRuleRecord>), tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT v.version, r.name, r.definition, r.enabled, r.created_by, r.created_at, r.updated_by, r.updated_at
             FROM api_rules_version v LEFT JOIN api_rules r ON true
             ORDER BY r.name",
            &[],
        )
        .await?;
    let version = rows.first().map_or(0, |row| row.get(0));
    let records = rows
        .iter()
        .filter(|row| row.get::<_, Option<String>>(1).is_some())
        .map(|row| ApiRuleRecord::from_row(row, 1))
        .collect();
    Ok((version, records))
}

/// A new rule, unless one of its name exists (`None`).
pub async fn insert(
    tx: &Transaction<'_>,
    name: &str,
    definition: &RuleDefinition,
    by: &str,
) -> Result<Option<ApiRuleRecord>, tokio_postgres::Error> {
    let definition = definition.clone().into_json();
    let row = tx
        .query_opt(
            &format!(
                "INSERT INTO api_rules (name, definition, created_by, updated_by)
                 VALUES ($1, $2, $3, $3)
                 ON CONFLICT (name) DO NOTHING
                 RETURNING {COLUMNS}"
            ),
            &[&name, &definition, &by],
        )
        .await?;
    Ok(row.map(|row| ApiRuleRecord::from_row(&row, 0)))
}

/// The rule of this name, locked until the transaction ends.
pub async fn lock(
    tx: &Transaction<'_>,
    name: &str,
) -> Result<Option<ApiRuleRecord>, tokio_postgres::Error> {
    let row = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM api_rules WHERE name = $1 FOR UPDATE"),
            &[&name],
        )
        .await?;
    Ok(row.map(|row| ApiRuleRecord::from_row(&row, 0)))
}

/// Write a locked rule's definition and whether it is enabled.
pub async fn update(
    tx: &Transaction<'_>,
    name: &str,
    definition: &RuleDefinition,
    enabled: bool,
    by: &str,
) -> Result<ApiRuleRecord, tokio_postgres::Error> {
    let definition = definition.clone().into_json();
    let row = tx
        .query_one(
            &format!(
                "UPDATE api_rules SET definition = $2, enabled = $3, updated_by = $4, updated_at = now()
                 WHERE name = $1
                 RETURNING {COLUMNS}"
            ),
            &[&name, &definition, &enabled, &by],
        )
        .await?;
    Ok(ApiRuleRecord::from_row(&row, 0))
}

pub async fn delete(tx: &Transaction<'_>, name: &str) -> Result<(), tokio_postgres::Error> {
    tx.execute("DELETE FROM api_rules WHERE name = $1", &[&name])
        .await?;
    Ok(())
}

/// Mark a change, in its transaction; the new version.
pub async fn bump(tx: &Transaction<'_>) -> Result<i64, tokio_postgres::Error> {
    Ok(tx
        .query_one(
            "UPDATE api_rules_version SET version = version + 1 RETURNING version",
            &[],
        )
        .await?
        .get(0))
}
