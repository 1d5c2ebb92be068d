//! Who may do what: [`AccessControl`] authenticates a presented token
//! (lookups cached for [`TOKEN_CACHE_TTL`], so a revoked token stops
//! working within that time on every instance), applies its rate limit and
//! yields the [`Access`] of the request — its site scope and role. Nothing
//! here knows HTTP; the API's middleware and handlers ask these questions
//! and turn the answers ([`AccessError`]) into responses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::rate_limit::{Bucket, RateLimit};
use super::tokens::{self, Role, SiteScope, TokenError, TokenRecord};

/// How long a looked-up token (or its absence) is trusted without asking the database.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);
/// Most cached lookups; the cache is cleared when it grows past this.
const TOKEN_CACHE_MAX: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The token's role is below what the operation needs.
    #[error("this needs a token with role {needed} or above; this token's role is {actual}")]
    RoleTooLow { needed: Role, actual: Role },
    /// The token's rate limit is used up for this long.
    #[error("rate limit exceeded; retry in {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// The token could not be looked up.
    #[error("token lookup: {0}")]
    Lookup(#[from] TokenError),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// Whether the API asks for tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AuthMode {
    /// Every `/api/v1` request needs a valid token (production).
    #[default]
    Required,
    /// No tokens: everyone sees every site (tests, a closed lab network).
    Disabled,
}

/// The API's access settings.
#[derive(Debug, Clone)]
pub struct AccessSettings {
    pub mode: AuthMode,
    /// Per token; `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
}

impl AccessSettings {
    /// No tokens, no limit: for embedding the collector in tests and benchmarks.
    pub fn open() -> Self {
        Self {
            mode: AuthMode::Disabled,
            rate_limit: None,
        }
    }
}

/// What the current request may see; attached to every `/api/v1` request.
#[derive(Debug, Clone)]
pub struct Access {
    pub token: Option<Arc<TokenRecord>>,
}

impl Access {
    /// Access control is off: everything is allowed.
    pub fn everything() -> Self {
        Self { token: None }
    }

    pub fn allows_site(&self, site: &str) -> bool {
        self.token.as_ref().is_none_or(|t| t.sites.allows(site))
    }

    pub fn scope(&self) -> SiteScope {
        self.token
            .as_ref()
            .map_or(SiteScope::All, |t| t.sites.clone())
    }

    pub fn role(&self) -> Role {
        self.token.as_ref().map_or(Role::Admin, |t| t.role)
    }

    /// Refused unless the token's role is `role` or above.
    pub fn require(&self, role: Role) -> Result<(), AccessError> {
        if self.role() >= role {
            Ok(())
        } else {
            Err(AccessError::RoleTooLow {
                needed: role,
                actual: self.role(),
            })
        }
    }

    /// The sites of the token as a SQL parameter: `None` for every site.
    pub fn site_filter(&self) -> Option<Vec<String>> {
        match self.scope() {
            SiteScope::All => None,
            SiteScope::Only(sites) => Some(sites.into_iter().collect()),
        }
    }

    /// Who is acting, for audit columns: the token's name, or `anonymous`
    /// when access control is off.
    pub fn actor(&self) -> (String, Option<i32>) {
        match &self.token {
            Some(t) => (t.name.clone(), Some(t.id)),
            None => ("anonymous".to_owned(), None),
        }
    }
}

/// A token (or its absence) as looked up, and when.
type CachedLookup = (Option<Arc<TokenRecord>>, Instant);

/// Token lookups (cached) and rate-limit buckets, shared by all requests.
#[derive(Clone)]
pub struct AccessControl {
    settings: AccessSettings,
    lookups: Arc<Mutex<HashMap<[u8; 32], CachedLookup>>>,
    buckets: Arc<Mutex<HashMap<i32, Bucket>>>,
}

impl AccessControl {
    pub fn new(settings: AccessSettings) -> Self {
        Self {
            settings,
            lookups: Arc::default(),
            buckets: Arc::default(),
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.settings.mode
    }

    /// The live token with this secret, `None` if unknown or revoked.
    pub async fn authenticate(
        &self,
        pool: &deadpool_postgres::Pool,
        secret: &str,
    ) -> Result<Option<Arc<TokenRecord>>, AccessError> {
        let hash = tokens::hash_secret(secret);
        if let Some((record, at)) = self.lookups.lock().expect("token cache lock").get(&hash) {
            if at.elapsed() < TOKEN_CACHE_TTL {
                return Ok(record.clone());
            }
        }
        let client = pool.get().await?;
        let record = tokens::lookup(&client, &hash).await?.map(Arc::new);
        let mut lookups = self.lookups.lock().expect("token cache lock");
        if lookups.len() >= TOKEN_CACHE_MAX {
            lookups.clear();
        }
        lookups.insert(hash, (record.clone(), Instant::now()));
        Ok(record)
    }

    /// Forget cached lookups of a revoked token, so this instance refuses
    /// it at once (others within [`TOKEN_CACHE_TTL`]).
    pub fn forget_token(&self, id: i32) {
        self.lookups
            .lock()
            .expect("token cache lock")
            .retain(|_, (record, _)| record.as_ref().is_none_or(|r| r.id != id));
    }

    /// Take one request from the token's bucket.
    pub fn check_rate(&self, token: &TokenRecord) -> Result<(), AccessError> {
        let Some(limit) = self.settings.rate_limit else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        let bucket = buckets
            .entry(token.id)
            .or_insert_with(|| Bucket::full(limit, now));
        bucket.take(limit, now).map_err(|retry_after| {
            metrics::counter!("bess_collector_api_rate_limited_total").increment(1);
            AccessError::RateLimited { retry_after }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(role: Role) -> Access {
        Access {
            token: Some(Arc::new(TokenRecord {
                id: 7,
                name: "t".into(),
                role,
                sites: SiteScope::Only(["a".to_owned()].into()),
                created_at: time::OffsetDateTime::UNIX_EPOCH,
                revoked_at: None,
            })),
        }
    }

    #[test]
    fn a_role_below_the_needed_one_is_refused_and_says_both() {
        let error = token(Role::Read).require(Role::Operate).unwrap_err();
        assert!(matches!(
            error,
            AccessError::RoleTooLow {
                needed: Role::Operate,
                actual: Role::Read
            }
        ));
        assert!(error.to_string().contains("role operate or above"));
        assert!(token(Role::Admin).require(Role::Operate).is_ok());
        assert!(Access::everything().require(Role::Admin).is_ok());
    }

    #[test]
    fn a_token_sees_only_its_sites_and_no_token_sees_all() {
        assert!(token(Role::Read).allows_site("a"));
        assert!(!token(Role::Read).allows_site("b"));
        assert_eq!(token(Role::Read).site_filter(), Some(vec!["a".to_owned()]));
        assert!(Access::everything().allows_site("b"));
        assert_eq!(Access::everything().site_filter(), None);
    }

    #[test]
    fn each_token_has_its_own_bucket() {
        let control = AccessControl::new(AccessSettings {
            mode: AuthMode::Required,
            rate_limit: Some("1/h".parse().unwrap()),
        });
        let one = token(Role::Read).token.unwrap();
        let mut other = (*one).clone();
        other.id = 8;
        assert!(control.check_rate(&one).is_ok());
        assert!(matches!(
            control.check_rate(&one),
            Err(AccessError::RateLimited { retry_after }) if retry_after > Duration::from_secs(3000)
        ));
        assert!(control.check_rate(&other).is_ok());
    }
}
