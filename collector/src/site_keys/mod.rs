//! Which site may write which readings: each site's enrolled public keys,
//! and the check every batch passes before it is stored (SPEC section 14).
//!
//! - **Keys** live in `site_keys` (migration 10), enrolled by an admin
//!   (`bess-collector site enroll`, `POST /api/v1/sites/{site}/keys`) or,
//!   for lab setups and only when `--pin-first-key` is on, pinned from a
//!   site's first signed batch. A site may have several keys, each valid
//!   for readings in its window, so a key is rotated without a gap; a
//!   revoked key signs nothing.
//! - **Every instance follows.** Each keeps the whole table in memory
//!   ([`SiteKeys`]) and polls its version every [`SITE_KEYS_POLL`]: an
//!   enrolment or a revocation is in force on every instance within about
//!   a second. A batch whose key is not in memory is looked up in the
//!   database before it is refused, so a key enrolled a moment ago is never
//!   missed.
//! - **The check** ([`check`]) runs on the decode stage (blocking pool),
//!   with Ed25519 batch verification over a chunk's signatures; what fails
//!   is set aside with its reason (`unsigned`, `unknown_site`,
//!   `unknown_key`, `revoked_key`, `expired_key`, `bad_signature`) and
//!   never stored.

pub mod check;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bess_protocol::{KeyId, VerifyingKey};
use tokio_util::sync::CancellationToken;

pub use store::{Enrolment, KeyChangeError, SiteKeyRecord};

/// How often an instance looks at the keys' version.
pub const SITE_KEYS_POLL: Duration = Duration::from_secs(1);

/// What the collector demands of a batch's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignaturePolicy {
    /// Version-1 (unsigned) batches are set aside (`unsigned`); off only
    /// while a fleet migrates to signing.
    pub require: bool,
    /// A signed batch of a site with no key enrolled pins its key as the
    /// site's (trust on first use). For lab setups; off by default.
    pub pin_first_key: bool,
}

impl SignaturePolicy {
    /// Production: signatures required, keys enrolled by an admin.
    pub const STRICT: SignaturePolicy = SignaturePolicy {
        require: true,
        pin_first_key: false,
    };
    /// Unsigned batches accepted, signed ones checked against enrolled keys:
    /// what a writer built without a policy gets (tools and tests that
    /// write unsigned batches in-process).
    pub const MIGRATING: SignaturePolicy = SignaturePolicy {
        require: false,
        pin_first_key: false,
    };
}

/// One enrolled key as the check needs it.
#[derive(Debug, Clone)]
pub struct EnrolledKey {
    pub key_id: KeyId,
    pub key: VerifyingKey,
    pub valid_from_ms: Option<i64>,
    pub valid_until_ms: Option<i64>,
    pub revoked: bool,
}

impl EnrolledKey {
    pub fn of(record: &SiteKeyRecord) -> Self {
        let ms = |t: time::OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
        Self {
            key_id: record.key_id,
            key: record.public_key,
            valid_from_ms: record.valid_from.map(ms),
            valid_until_ms: record.valid_until.map(ms),
            revoked: record.revoked_at.is_some(),
        }
    }

    /// Whether readings from `first_ms` to `last_ms` lie in the key's window
    /// (`valid_until` exclusive).
    pub fn covers(&self, first_ms: i64, last_ms: i64) -> bool {
        self.valid_from_ms.is_none_or(|from| first_ms >= from)
            && self.valid_until_ms.is_none_or(|until| last_ms < until)
    }
}

/// Every site's keys at one version.
#[derive(Debug, Default)]
pub struct KeyTable {
    pub version: i64,
    sites: HashMap<String, Vec<EnrolledKey>>,
}

impl KeyTable {
    pub fn from_records(version: i64, records: &[SiteKeyRecord]) -> Self {
        let mut sites: HashMap<String, Vec<EnrolledKey>> = HashMap::new();
        for record in records {
            sites
                .entry(record.site.clone())
                .or_default()
                .push(EnrolledKey::of(record));
        }
        Self { version, sites }
    }

    /// How many keys, of every site.
    pub fn len(&self) -> usize {
        self.sites.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    /// The site's keys; `None` when it has none at all.
    pub fn site(&self, site: &str) -> Option<&[EnrolledKey]> {
        self.sites.get(site).map(Vec::as_slice)
    }
}

/// The key table in force on this instance, replaced whole on each change.
#[derive(Debug)]
pub struct SiteKeys {
    pub policy: SignaturePolicy,
    table: RwLock<Arc<KeyTable>>,
}

impl SiteKeys {
    pub fn new(policy: SignaturePolicy) -> Arc<Self> {
        Arc::new(Self {
            policy,
            table: RwLock::new(Arc::new(KeyTable::default())),
        })
    }

    pub fn table(&self) -> Arc<KeyTable> {
        self.table.read().expect("key table lock").clone()
    }

    /// Load the whole table now.
    pub async fn refresh(
        &self,
        client: &impl tokio_postgres::GenericClient,
    ) -> Result<i64, tokio_postgres::Error> {
        let (version, records) = store::load_all(client).await?;
        *self.table.write().expect("key table lock") =
            Arc::new(KeyTable::from_records(version, &records));
        metrics::gauge!("bess_collector_site_keys").set(records.len() as f64);
        metrics::gauge!("bess_collector_site_keys_version").set(version as f64);
        Ok(version)
    }

    /// Follow the keys' version every [`SITE_KEYS_POLL`] until cancelled,
    /// loading the table whenever it moved.
    pub async fn follow(self: Arc<Self>, pool: deadpool_postgres::Pool, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(SITE_KEYS_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let result = async {
                let client = pool.get().await.map_err(|e| e.to_string())?;
                let version = store::version(&**client).await.map_err(|e| e.to_string())?;
                if version != self.table().version {
                    self.refresh(&**client).await.map_err(|e| e.to_string())?;
                    tracing::info!(version, "site keys changed");
                }
                Ok::<_, String>(())
            }
            .await;
            if let Err(error) = result {
                metrics::counter!("bess_collector_site_keys_poll_failures_total").increment(1);
                tracing::warn!(%error, "could not check the site keys' version; keeping the keys in memory");
            }
        }
    }
}
