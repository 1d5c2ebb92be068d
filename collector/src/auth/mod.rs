//! Who may use the API, without HTTP: API tokens and their store
//! (`tokens`: creation, listing, revocation, lookup by hash; roles and site
//! scopes), access decisions (`access`: authentication with a short-lived
//! lookup cache, the [`Access`] of a request, role checks) and the
//! per-token rate limit (`rate_limit`). The API layer's middleware and
//! handlers call into here; nothing here imports the API.

mod access;
mod rate_limit;
mod tokens;

pub use access::{Access, AccessControl, AccessError, AccessSettings, AuthMode, TOKEN_CACHE_TTL};
pub use rate_limit::{Bucket, RateLimit, RateLimitParseError};
pub use tokens::{
    create, generate_secret, hash_secret, list, lookup, revoke, NewToken, Role, SiteScope,
    TokenError, TokenRecord, TOKEN_PREFIX,
};
