//! Identifier newtypes: where mixing two integers or strings would be a bug,
//! the type says which one is meant.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest site id the envelope can carry.
pub const MAX_SITE_ID_LEN: usize = 64;

/// A site's identifier: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
///
/// It is the Kafka message key, so all batches of one site stay in order on
/// one partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SiteId(String);

/// Why a string is not a valid [`SiteId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid site id {value:?}: use 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'")]
pub struct InvalidSiteId {
    pub value: String,
}

impl SiteId {
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidSiteId> {
        let value = value.into();
        let valid = !value.is_empty()
            && value.len() <= MAX_SITE_ID_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(value))
        } else {
            Err(InvalidSiteId { value })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SiteId {
    type Error = InvalidSiteId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<SiteId> for String {
    fn from(id: SiteId) -> Self {
        id.0
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Per-site batch sequence number. Assigned once when a batch is sealed;
/// never repeats and never changes when the batch is resent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BatchSeq(pub u64);

impl fmt::Display for BatchSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// FNV-1a 64 of a catalog's postcard encoding (see [`crate::Catalog::hash`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CatalogHash(pub u64);

impl fmt::Display for CatalogHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Index of a poll group in the catalog's `groups` list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupIndex(pub u16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_site_ids() {
        for id in ["a", "site-001", "eu.west_3", &"x".repeat(64)] {
            assert!(SiteId::new(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn rejects_empty_long_and_odd_site_ids() {
        for id in ["", "has space", "slash/", "ü", &"x".repeat(65)] {
            assert!(SiteId::new(id).is_err(), "{id}");
        }
    }
}
