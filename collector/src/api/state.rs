//! `ApiState`: what every handler shares — the database pools, the domain
//! services the API reads (access control, the live hub, the latest-value
//! cache, the alert rules), the metrics handle, the shutdown signal — and
//! the WebSocket timings. Handlers import it from here; the router in
//! `mod.rs` is the only place that knows every handler.

use metrics_exporter_prometheus::PrometheusHandle;
use std::time::Duration;

use crate::auth::AccessControl;
use crate::latest::LatestCache;
use crate::live::LiveHub;

#[derive(Clone)]
pub struct ApiState {
    /// The primary: writes (tokens, acknowledgements) and reads that must
    /// see them at once.
    pub pool: deadpool_postgres::Pool,
    /// A read replica for history queries (`--read-database-url`), if any.
    pub replica: Option<deadpool_postgres::Pool>,
    pub live: LiveHub,
    pub metrics: PrometheusHandle,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub storage: crate::storage::StorageBackend,
    /// Tokens, site scopes and rate limits for `/api/v1`.
    pub access: AccessControl,
    /// Latest values, fed by the committed stream.
    pub latest: std::sync::Arc<LatestCache>,
    /// Pings and timeouts of live WebSocket clients.
    pub live_timings: LiveTimings,
    /// The alert rules: the set in force (`Rules::current`), for the rules
    /// listing and the names silences may take.
    pub rules: std::sync::Arc<crate::rules::Rules>,
}

impl ApiState {
    /// The pool for history reads (series, inventory, gaps, completeness,
    /// reports): the replica when there is one, else the primary. What is
    /// read here may trail the stream by the replica's lag.
    pub fn history(&self) -> &deadpool_postgres::Pool {
        self.replica.as_ref().unwrap_or(&self.pool)
    }
}

/// When the server pings live clients and gives up on silent or stuck ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveTimings {
    /// A ping goes out this often.
    pub ping_every: Duration,
    /// A client that sends nothing, not even a pong, for this long is closed.
    pub idle_timeout: Duration,
    /// A client whose socket does not take a message for this long is closed.
    pub send_timeout: Duration,
}

impl Default for LiveTimings {
    fn default() -> Self {
        Self {
            ping_every: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
        }
    }
}
