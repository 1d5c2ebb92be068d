//! Serving the API on a listener: plain HTTP, or HTTPS only when TLS is
//! configured, with the deployment's own layers around [`super::router`] —
//! CORS for the configured origins and, over TLS, HSTS.

use std::io;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::http_security::{self, CorsOrigin};
use super::state::ApiState;
use super::tls::{ApiTls, TlsListener};

/// How the API is served beyond its routes.
#[derive(Debug, Clone, Default)]
pub struct HttpSettings {
    /// Serve HTTPS with this certificate (`None`: plain HTTP, for a load
    /// balancer that terminates TLS).
    pub tls: Option<ApiTls>,
    /// Browser origins allowed to read the API (empty: no CORS headers).
    pub cors_origins: Vec<CorsOrigin>,
}

impl HttpSettings {
    /// The API's base URL on this address: `https://…` with TLS.
    pub fn url(&self, addr: SocketAddr) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{addr}")
    }
}

/// The router with the deployment's layers.
pub fn app(state: ApiState, settings: &HttpSettings) -> axum::Router {
    let mut app = super::router(state);
    if settings.tls.is_some() {
        app = app.layer(http_security::strict_transport_security());
    }
    if let Some(cors) = http_security::cors(&settings.cors_origins) {
        app = app.layer(cors);
    }
    app
}

/// Serve the API on `listener` until `stop`, then finish the requests in
/// flight.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    settings: HttpSettings,
    stop: CancellationToken,
) -> io::Result<()> {
    let app = app(state, &settings);
    match &settings.tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
        Some(tls) => {
            axum::serve(TlsListener::new(listener, tls)?, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    }
}
