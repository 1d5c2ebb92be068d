//! `site_keys` and its version row (migration 10): every change writes the
//! key and bumps the version in one transaction, so an instance that polls
//! the version sees every enrolment and revocation.

use bess_protocol::signature::{format_public_key, parse_public_key};
use bess_protocol::{KeyId, VerifyingKey};
use time::OffsetDateTime;
use tokio_postgres::{GenericClient, Row};

/// One row of `site_keys`.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteKeyRecord {
    pub site: String,
    pub key_id: KeyId,
    pub public_key: VerifyingKey,
    pub valid_from: Option<OffsetDateTime>,
    pub valid_until: Option<OffsetDateTime>,
    pub note: String,
    pub enrolled_by: String,
    pub enrolled_at: OffsetDateTime,
    pub revoked_by: Option<String>,
    pub revoked_at: Option<OffsetDateTime>,
}

const COLUMNS: &str = "site, key_id, public_key, valid_from, valid_until, note, enrolled_by, enrolled_at, revoked_by, revoked_at";

impl SiteKeyRecord {
    /// From `COLUMNS` starting at column `at`; `None` for a row whose key no
    /// longer parses (only a hand-edited table has one).
    fn from_row(row: &Row, at: usize) -> Option<Self> {
        let key_id: String = row.get(at + 1);
        let public_key: String = row.get(at + 2);
        Some(Self {
            site: row.get(at),
            key_id: KeyId::parse(&key_id).ok()?,
            public_key: parse_public_key(&public_key).ok()?,
            valid_from: row.get(at + 3),
            valid_until: row.get(at + 4),
            note: row.get(at + 5),
            enrolled_by: row.get(at + 6),
            enrolled_at: row.get(at + 7),
            revoked_by: row.get(at + 8),
            revoked_at: row.get(at + 9),
        })
    }
}

/// Why an enrolment or revocation was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyChangeError {
    #[error("site {site:?} already has key {key_id}")]
    Exists { site: String, key_id: KeyId },
    #[error("site {site:?} has no key {key_id}")]
    NotFound { site: String, key_id: KeyId },
    #[error("key {key_id} of site {site:?} was revoked already")]
    AlreadyRevoked { site: String, key_id: KeyId },
    #[error("a weak (small-order) public key cannot sign anything")]
    WeakKey,
    #[error("valid_from must be before valid_until")]
    EmptyWindow,
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
}

/// A key to enrol.
#[derive(Debug, Clone)]
pub struct Enrolment {
    pub site: String,
    pub public_key: VerifyingKey,
    pub valid_from: Option<OffsetDateTime>,
    pub valid_until: Option<OffsetDateTime>,
    pub note: String,
    pub by: String,
}

pub async fn version(client: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT version FROM site_keys_version", &[])
        .await?
        .get(0))
}

/// Every key, and the version they are (one statement, one snapshot).
pub async fn load_all(
    client: &impl GenericClient,
) -> Result<(i64, Vec<SiteKeyRecord>), tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT v.version, k.{} FROM site_keys_version v LEFT JOIN site_keys k ON true ORDER BY k.site, k.enrolled_at",
                COLUMNS.replace(", ", ", k.")
            ),
            &[],
        )
        .await?;
    let version = rows.first().map(|r| r.get(0)).unwrap_or(0);
    let keys = rows
        .iter()
        .filter(|r| r.get::<_, Option<String>>(1).is_some())
        .filter_map(|r| SiteKeyRecord::from_row(r, 1))
        .collect();
    Ok((version, keys))
}

/// The keys of one site (or of every site), oldest first.
pub async fn list(
    client: &impl GenericClient,
    site: Option<&str>,
) -> Result<Vec<SiteKeyRecord>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM site_keys WHERE $1::text IS NULL OR site = $1 ORDER BY site, enrolled_at"),
            &[&site],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| SiteKeyRecord::from_row(r, 0))
        .collect())
}

/// Enrol a key; refused when the site has it already.
pub async fn enrol(
    client: &mut tokio_postgres::Client,
    enrolment: &Enrolment,
) -> Result<SiteKeyRecord, KeyChangeError> {
    if enrolment.public_key.is_weak() {
        return Err(KeyChangeError::WeakKey);
    }
    if let (Some(from), Some(until)) = (enrolment.valid_from, enrolment.valid_until) {
        if from >= until {
            return Err(KeyChangeError::EmptyWindow);
        }
    }
    let key_id = KeyId::of(&enrolment.public_key);
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            &format!(
                "INSERT INTO site_keys (site, key_id, public_key, valid_from, valid_until, note, enrolled_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (site, key_id) DO NOTHING
                 RETURNING {COLUMNS}"
            ),
            &[
                &enrolment.site,
                &key_id.to_string(),
                &format_public_key(&enrolment.public_key),
                &enrolment.valid_from,
                &enrolment.valid_until,
                &enrolment.note,
                &enrolment.by,
            ],
        )
        .await?;
    let Some(row) = row else {
        return Err(KeyChangeError::Exists {
            site: enrolment.site.clone(),
            key_id,
        });
    };
    bump(&tx).await?;
    tx.commit().await?;
    Ok(SiteKeyRecord::from_row(&row, 0).expect("a key just written parses"))
}

/// Pin `key` as `site`'s first key, unless the site has a key already
/// (another instance may pin at the same moment: the site's advisory lock
/// keeps it to one). Returns whether this call pinned it.
pub async fn pin_first(
    client: &mut tokio_postgres::Client,
    site: &str,
    key: &VerifyingKey,
) -> Result<bool, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('bess-site-keys:' || $1))",
        &[&site],
    )
    .await?;
    let inserted = tx
        .execute(
            "INSERT INTO site_keys (site, key_id, public_key, note, enrolled_by)
             SELECT $1, $2, $3, 'pinned on first use', 'first-use pinning'
             WHERE NOT EXISTS (SELECT 1 FROM site_keys WHERE site = $1)",
            &[&site, &KeyId::of(key).to_string(), &format_public_key(key)],
        )
        .await?;
    if inserted > 0 {
        bump(&tx).await?;
    }
    tx.commit().await?;
    Ok(inserted > 0)
}

/// Revoke a key: every instance refuses its batches once it sees the new
/// version.
pub async fn revoke(
    client: &mut tokio_postgres::Client,
    site: &str,
    key_id: KeyId,
    by: &str,
) -> Result<SiteKeyRecord, KeyChangeError> {
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            &format!(
                "UPDATE site_keys SET revoked_at = now(), revoked_by = $3
                 WHERE site = $1 AND key_id = $2 AND revoked_at IS NULL
                 RETURNING {COLUMNS}"
            ),
            &[&site, &key_id.to_string(), &by],
        )
        .await?;
    let Some(row) = row else {
        let exists = tx
            .query_opt(
                "SELECT 1 FROM site_keys WHERE site = $1 AND key_id = $2",
                &[&site, &key_id.to_string()],
            )
            .await?
            .is_some();
        let (site, key_id) = (site.to_owned(), key_id);
        return Err(if exists {
            KeyChangeError::AlreadyRevoked { site, key_id }
        } else {
            KeyChangeError::NotFound { site, key_id }
        });
    };
    let record = SiteKeyRecord::from_row(&row, 0).expect("a stored key parses");
    bump(&tx).await?;
    tx.commit().await?;
    Ok(record)
}

async fn bump(tx: &tokio_postgres::Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    tx.execute("UPDATE site_keys_version SET version = version + 1", &[])
        .await?;
    Ok(())
}
