//! The token store: creation, listing, revocation and lookup of API tokens.
//!
//! A token is `bess_` followed by 64 hex digits (32 random bytes). Only its
//! SHA-256 is stored (`api_tokens`, migration 4), so a database dump does
//! not reveal usable tokens; the token itself is printed once by
//! `bess-collector token create`. Each token has a [`Role`] and a
//! [`SiteScope`]; `access.rs` decides with both.

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;

/// Prefix of every token, so a leaked one is easy to recognise in logs and
/// secret scanners.
pub const TOKEN_PREFIX: &str = "bess_";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("the system random number generator failed: {0}")]
    Random(String),
    #[error("unknown role {0:?}; expected read, operate or admin")]
    UnknownRole(String),
    #[error("a token needs at least one site (or --all-sites)")]
    NoSites,
}

/// What a token may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Role {
    /// Read sites, latest values, series, reports and the live stream.
    Read,
    /// Read, plus operating actions (acknowledging alarms, set-points) once
    /// the API has them.
    Operate,
    /// Everything, including administration endpoints once there are any.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Role::Read),
            "operate" => Ok(Role::Operate),
            "admin" => Ok(Role::Admin),
            other => Err(TokenError::UnknownRole(other.to_owned())),
        }
    }
}

/// The sites a token may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteScope {
    All,
    Only(BTreeSet<String>),
}

impl SiteScope {
    pub fn allows(&self, site: &str) -> bool {
        match self {
            SiteScope::All => true,
            SiteScope::Only(sites) => sites.contains(site),
        }
    }

    fn to_column(&self) -> Option<Vec<String>> {
        match self {
            SiteScope::All => None,
            SiteScope::Only(sites) => Some(sites.iter().cloned().collect()),
        }
    }

    fn from_column(sites: Option<Vec<String>>) -> Self {
        sites.map_or(SiteScope::All, |s| SiteScope::Only(s.into_iter().collect()))
    }
}

impl fmt::Display for SiteScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SiteScope::All => f.write_str("*"),
            SiteScope::Only(sites) => {
                f.write_str(&sites.iter().cloned().collect::<Vec<_>>().join(","))
            }
        }
    }
}

/// A stored token (never the secret itself).
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: i32,
    pub name: String,
    pub role: Role,
    pub sites: SiteScope,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// A token just created: the secret is available only here.
#[derive(Debug)]
pub struct NewToken {
    pub secret: String,
    pub record: TokenRecord,
}

/// SHA-256 of a token as presented by a client.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A fresh random token.
pub fn generate_secret() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    let mut secret = String::with_capacity(TOKEN_PREFIX.len() + 64);
    secret.push_str(TOKEN_PREFIX);
    for b in bytes {
        secret.push_str(&format!("{b:02x}"));
    }
    Ok(secret)
}

const COLUMNS: &str = "token_id, name, role, sites, created_at, revoked_at";

fn record(row: &tokio_postgres::Row) -> Result<TokenRecord, TokenError> {
    Ok(TokenRecord {
        id: row.get(0),
        name: row.get(1),
        role: row.get::<_, String>(2).parse()?,
        sites: SiteScope::from_column(row.get(3)),
        created_at: row.get(4),
        revoked_at: row.get(5),
    })
}

/// Create a token and return it with its secret (shown once).
pub async fn create(
    client: &tokio_postgres::Client,
    name: &str,
    role: Role,
    sites: SiteScope,
) -> Result<NewToken, TokenError> {
    if matches!(&sites, SiteScope::Only(s) if s.is_empty()) {
        return Err(TokenError::NoSites);
    }
    let secret = generate_secret()?;
    let hash = hash_secret(&secret);
    let row = client
        .query_one(
            &format!("INSERT INTO api_tokens (name, token_hash, role, sites) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"),
            &[&name, &&hash[..], &role.as_str(), &sites.to_column()],
        )
        .await?;
    Ok(NewToken {
        secret,
        record: record(&row)?,
    })
}

/// Every token, revoked ones included, oldest first.
pub async fn list(client: &tokio_postgres::Client) -> Result<Vec<TokenRecord>, TokenError> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM api_tokens ORDER BY token_id"),
            &[],
        )
        .await?;
    rows.iter().map(record).collect()
}

/// Revoke a token; `false` if there is no such token or it was revoked before.
pub async fn revoke(client: &tokio_postgres::Client, id: i32) -> Result<bool, TokenError> {
    let n = client
        .execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL",
            &[&id],
        )
        .await?;
    Ok(n == 1)
}

/// The live (not revoked) token with this hash.
pub async fn lookup(
    client: &tokio_postgres::Client,
    hash: &[u8; 32],
) -> Result<Option<TokenRecord>, TokenError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
            ),
            &[&&hash[..]],
        )
        .await?;
    row.as_ref().map(record).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_prefixed_hex_and_differ() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert!(a[TOKEN_PREFIX.len()..]
            .chars()
            .all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn the_hash_is_sha256_of_the_token() {
        let hash = hash_secret("abc");
        assert_eq!(hash[..4], [0xba, 0x78, 0x16, 0xbf]);
    }

    #[test]
    fn roles_include_the_lower_ones() {
        assert!(Role::Admin > Role::Operate && Role::Operate > Role::Read);
        assert_eq!("operate".parse::<Role>().unwrap(), Role::Operate);
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn a_site_scope_allows_only_its_sites() {
        let scope = SiteScope::Only(["a".to_owned()].into());
        assert!(scope.allows("a"));
        assert!(!scope.allows("b"));
        assert!(SiteScope::All.allows("b"));
    }
}
