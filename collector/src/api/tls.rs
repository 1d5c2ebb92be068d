//! HTTPS for the API, for deployments without a load balancer that
//! terminates TLS: the certificate and key of `--tls-cert`/`--tls-key`
//! (rustls with the ring provider), and a listener that hands axum only
//! connections whose handshake has finished.
//!
//! Handshakes run in their own tasks, each bounded by
//! [`HANDSHAKE_TIMEOUT`], so a client that connects and sends nothing (or
//! sends plain HTTP) holds up no one; a failed handshake closes that
//! connection and is counted (`bess_collector_api_tls_handshake_failures_total`).
//! There is no plain-HTTP listener beside it.

use axum::serve::Listener;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A client that has not finished its handshake after this long is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections past their handshake, waiting for axum to take them.
const HANDSHAKEN_QUEUE: usize = 64;

/// The server side of the API's TLS: certificate chain and matching key.
#[derive(Clone)]
pub struct ApiTls {
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ApiTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTls").finish_non_exhaustive()
    }
}

/// Why the certificate or key cannot be used; each names its flag and file
/// (the underlying error, where there is one, is the source).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {}: cannot read it", path.display())]
    Unreadable {
        flag: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("--tls-cert {}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("--tls-key {}: no PEM private key in it (expected -----BEGIN PRIVATE KEY-----, RSA or EC PRIVATE KEY)", path.display())]
    NoKey { path: PathBuf },
    #[error("--tls-key {} is not the key of the certificate in --tls-cert {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("--tls-cert {} with --tls-key {} cannot be used", cert.display(), key.display())]
    Refused {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

impl ApiTls {
    /// Read the certificate chain (server certificate first) and its
    /// private key, both PEM, and check that they belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = read("--tls-cert", cert)?;
        let key_pem = read("--tls-key", key)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|chain| !chain.is_empty())
            .ok_or_else(|| TlsError::NoCertificate { path: cert.into() })?;
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|_| TlsError::NoKey { path: key.into() })?;
        // Named explicitly: the collector links a second provider (for the
        // history lake's object store), so there is no single default.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| {
                builder
                    .with_no_client_auth()
                    .with_single_cert(chain, private_key)
            })
            .map_err(|source| match source {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    TlsError::KeyMismatch {
                        cert: cert.into(),
                        key: key.into(),
                    }
                }
                source => TlsError::Refused {
                    cert: cert.into(),
                    key: key.into(),
                    source,
                },
            })?;
        // axum serves HTTP/1.1 (WebSocket upgrades included), nothing else.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Unreadable {
        flag,
        path: path.into(),
        source,
    })
}

/// Accepts TCP connections, completes their TLS handshakes concurrently
/// and yields the finished ones to `axum::serve`.
pub struct TlsListener {
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Must be called within a Tokio runtime: it starts the accepting task,
    /// which ends when this listener is dropped.
    pub fn new(tcp: TcpListener, tls: &ApiTls) -> io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let (queue, handshaken) = mpsc::channel(HANDSHAKEN_QUEUE);
        tokio::spawn(accept_connections(
            tcp,
            TlsAcceptor::from(tls.config.clone()),
            queue,
        ));
        Ok(Self {
            handshaken,
            local_addr,
        })
    }
}

async fn accept_connections(
    mut tcp: TcpListener,
    acceptor: TlsAcceptor,
    queue: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        // The TCP listener's own accept logs and backs off on errors.
        let (stream, peer) = tokio::select! {
            () = queue.closed() => return,
            accepted = Listener::accept(&mut tcp) => accepted,
        };
        let acceptor = acceptor.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = queue.send((tls, peer)).await;
                }
                Ok(Err(e)) => {
                    metrics::counter!("bess_collector_api_tls_handshake_failures_total")
                        .increment(1);
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                }
                Err(_) => {
                    metrics::counter!("bess_collector_api_tls_handshake_failures_total")
                        .increment(1);
                    tracing::debug!(%peer, "TLS handshake not finished in time");
                }
            }
        });
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(connection) => connection,
            // The accepting task never ends while this listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
