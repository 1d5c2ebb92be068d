//! The API's HTTP hardening against a real database and real sockets:
//! HTTPS with a certificate from a throwaway CA (and nothing for plain
//! HTTP on that port), start-up errors for certificates and keys that
//! cannot be used, the security headers, CORS only for configured
//! origins, and the limits on request bodies and WebSocket messages.

#[macro_use]
mod support;

use anyhow::Context as _;
use futures::{SinkExt, StreamExt};
use reqwest::header::{self, HeaderMap};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use bess_collector::api::{ApiState, ApiTls, CorsOrigin, HttpSettings};
use bess_collector::auth::AuthMode;
use bess_tests::tls::TestPki;
use bess_tests::{Scratch, TestDatabase};
use support::Backend;

/// A fresh database (plain PostgreSQL) with site `a`, and API state over it.
async fn state(test: &str, mode: AuthMode) -> anyhow::Result<(ApiState, TestDatabase)> {
    let database = Backend::PostgreSql.database(test).await;
    let (pool, storage) = Backend::PostgreSql.prepare(&database, 4).await;
    pool.get()
        .await?
        .batch_execute("INSERT INTO sites (name) VALUES ('a')")
        .await?;
    Ok((support::api_state(pool, storage, mode), database))
}

fn client_tls(ca: &Path) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to `addr` (`127.0.0.1:port`) trusting only `ca`.
async fn tls_connect(addr: &str, ca: &Path) -> anyhow::Result<TlsStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(ca)?));
    Ok(connector
        .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
        .await?)
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: bytes::Bytes,
}

/// One GET of `path` over HTTPS from `base` (`https://127.0.0.1:port`),
/// trusting only `ca`.
async fn https_get(base: &str, path: &str, ca: &Path) -> anyhow::Result<Answer> {
    let addr = base.trim_start_matches("https://");
    let tls = tls_connect(addr, ca).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(header::HOST, addr)
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let (parts, body) = sender.send_request(request).await?.into_parts();
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: http_body_util::BodyExt::collect(body).await?.to_bytes(),
    })
}

/// One GET of `path` over plain HTTP.
async fn http_get(base: &str, path: &str) -> anyhow::Result<Answer> {
    let response = reqwest::get(format!("{base}{path}")).await?;
    Ok(Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await?,
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The API over HTTPS with the test PKI's server certificate.
async fn serve_tls(state: ApiState, pki: &TestPki) -> anyhow::Result<String> {
    let tls = ApiTls::load(&pki.server.cert, &pki.server.key)?;
    support::serve_api_with(
        state,
        HttpSettings {
            tls: Some(tls),
            ..HttpSettings::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_api_and_the_live_websocket_and_plain_http_gets_nothing(
) -> anyhow::Result<()> {
    let scratch = Scratch::new("api-https");
    let pki = TestPki::generate(&scratch.dir)?;
    let (state, _db) = state("https_serves_the_api", AuthMode::Disabled).await?;
    let url = serve_tls(state, &pki).await?;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let sites = https_get(&url, "/api/v1/sites", &pki.ca).await?;
    assert_eq!(sites.status, 200);
    let sites: serde_json::Value = serde_json::from_slice(&sites.body)?;
    assert_eq!(sites["sites"][0]["site"], "a", "{sites}");
    let dashboard = https_get(&url, "/", &pki.ca).await?;
    assert_eq!(dashboard.status, 200);
    assert!(String::from_utf8_lossy(&dashboard.body).contains("BESS fleet"));

    // The live WebSocket over the same TLS port (wss://).
    let addr = url.trim_start_matches("https://");
    let tls = tls_connect(addr, &pki.ca).await?;
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://{addr}/api/v1/live"), tls).await?;
    ws.send(Message::Text(r#"{"subscribe":{"sites":["a"]}}"#.into()))
        .await?;
    let reply = next_text(&mut ws).await?;
    assert_eq!(reply["type"], "snapshot", "{reply}");

    // Plain HTTP to the TLS port: no HTTP answer, only a closed connection.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/sites"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    // A client that does not trust the certificate's CA gets nothing either.
    let stranger = tls_connect(addr, &pki.other_ca).await;
    assert!(
        stranger.is_err(),
        "a certificate of another CA was accepted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_handshake_holds_up_no_one() -> anyhow::Result<()> {
    let scratch = Scratch::new("api-https-stalled");
    let pki = TestPki::generate(&scratch.dir)?;
    let (state, _db) = state("a_connection_that_never_finishes", AuthMode::Disabled).await?;
    let url = serve_tls(state, &pki).await?;
    let addr = url.trim_start_matches("https://");
    // Connected, but never a ClientHello; another sends half of one.
    let _silent = tokio::net::TcpStream::connect(addr).await?;
    let mut half = tokio::net::TcpStream::connect(addr).await?;
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await?;
    let response = https_get(&url, "/health", &pki.ca).await?;
    assert_eq!(response.status, 200);
    Ok(())
}

/// `bess-collector run` with these arguments: its stderr, after checking
/// that it failed.
fn failed_start(args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bess-collector"))
        .arg("run")
        .args(args)
        .env_remove("BESS_TLS_CERT")
        .env_remove("BESS_TLS_KEY")
        .output()
        .context("running bess-collector")?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    anyhow::ensure!(!output.status.success(), "it started: {stderr}");
    Ok(stderr)
}

#[test]
fn a_certificate_or_key_that_cannot_be_used_stops_start_up_naming_flag_and_file(
) -> anyhow::Result<()> {
    let scratch = Scratch::new("api-tls-start-up");
    let pki = TestPki::generate(&scratch.dir)?;
    let path = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
    let (cert, key) = (path(&pki.server.cert), path(&pki.server.key));
    let missing = path(&scratch.path("missing.pem"));
    let not_pem = scratch.path("not-pem.txt");
    std::fs::write(&not_pem, "this is not PEM\n")?;
    let not_pem = path(&not_pem);
    // The client's key beside the server's certificate.
    let other_key = path(&pki.client.key);

    let cases: [(&[&str], &[&str]); 6] = [
        (
            &["--tls-cert", &missing, "--tls-key", &key],
            &["--tls-cert", &missing, "cannot read"],
        ),
        (
            &["--tls-cert", &cert, "--tls-key", &missing],
            &["--tls-key", &missing, "cannot read"],
        ),
        (
            &["--tls-cert", &not_pem, "--tls-key", &key],
            &["--tls-cert", &not_pem, "no PEM certificate"],
        ),
        (
            &["--tls-cert", &cert, "--tls-key", &not_pem],
            &["--tls-key", &not_pem, "no PEM private key"],
        ),
        (
            &["--tls-cert", &cert, "--tls-key", &other_key],
            &[
                "--tls-key",
                &other_key,
                "is not the key of the certificate",
                &cert,
            ],
        ),
        (&["--tls-cert", &cert], &["--tls-key"]),
    ];
    for (args, expected) in cases {
        let stderr = failed_start(args)?;
        for part in expected {
            assert!(
                stderr.contains(part),
                "{args:?}: {part:?} missing from: {stderr}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers_and_hsts_only_over_tls() -> anyhow::Result<()>
{
    let scratch = Scratch::new("api-headers");
    let pki = TestPki::generate(&scratch.dir)?;
    let (state, _db) = state("every_response_carries_the_headers", AuthMode::Required).await?;
    let plain = support::serve_api(state.clone()).await?;
    let tls = serve_tls(state, &pki).await?;
    for base in [&plain, &tls] {
        // The dashboard, one of its scripts, the open health check, a 401
        // from the API and a 404 from the fallback.
        for (path, status) in [
            ("/", 200),
            ("/dashboard/dashboard.js", 200),
            ("/health", 200),
            ("/api/v1/sites", 401),
            ("/no/such/route", 404),
        ] {
            let response = if base == &tls {
                https_get(base, path, &pki.ca).await?
            } else {
                http_get(base, path).await?
            };
            assert_eq!(response.status, status, "{base}{path}");
            let headers = &response.headers;
            assert_eq!(header(headers, "x-content-type-options"), Some("nosniff"));
            assert_eq!(header(headers, "x-frame-options"), Some("DENY"));
            assert_eq!(header(headers, "referrer-policy"), Some("no-referrer"));
            let csp = header(headers, "content-security-policy").unwrap_or_default();
            assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
            if path == "/" {
                assert!(csp.contains("script-src 'self'"), "{csp}");
                assert!(csp.contains("connect-src 'self'"), "{csp}");
            } else {
                assert!(csp.starts_with("default-src 'none'"), "{path}: {csp}");
            }
            let cache = header(headers, "cache-control");
            if path.starts_with("/dashboard") || path == "/" {
                assert_eq!(cache, Some("no-cache"), "{path}");
            } else {
                assert_eq!(cache, Some("no-store"), "{path}");
            }
            let hsts = header(headers, "strict-transport-security");
            if base == &tls {
                assert_eq!(hsts, Some("max-age=31536000"), "{path}");
            } else {
                assert_eq!(hsts, None, "HSTS over plain HTTP on {path}");
            }
            // No CORS unless origins are configured.
            assert_eq!(header(headers, "access-control-allow-origin"), None);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_the_configured_origins_only() -> anyhow::Result<()> {
    let (state, _db) = state("cors_answers_the_configured_origins", AuthMode::Required).await?;
    let closed = support::serve_api(state.clone()).await?;
    let allowed: CorsOrigin = "https://grid.example.com".parse()?;
    let open = support::serve_api_with(
        state,
        HttpSettings {
            cors_origins: vec![allowed, "http://localhost:3000".parse()?],
            ..HttpSettings::default()
        },
    )
    .await?;
    let client = reqwest::Client::new();
    let preflight = |base: &str, origin: &str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{base}/api/v1/silences"))
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "DELETE")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type",
            )
            .send()
    };
    let get = |base: &str, origin: &str| {
        client
            .get(format!("{base}/api/v1/sites"))
            .header(header::ORIGIN, origin)
            .send()
    };
    let origin_header =
        |headers: &HeaderMap| header(headers, "access-control-allow-origin").map(str::to_owned);

    // Off by default: not even the would-be origin gets a header.
    let response = preflight(&closed, "https://grid.example.com").await?;
    assert_eq!(origin_header(response.headers()), None);
    let response = get(&closed, "https://grid.example.com").await?;
    assert_eq!(origin_header(response.headers()), None);

    // A configured origin: the preflight is answered without a token.
    let response = preflight(&open, "https://grid.example.com").await?;
    assert!(response.status().is_success(), "{}", response.status());
    let headers = response.headers();
    assert_eq!(
        origin_header(headers).as_deref(),
        Some("https://grid.example.com")
    );
    let methods = header(headers, "access-control-allow-methods").unwrap_or_default();
    for method in ["GET", "POST", "PUT", "DELETE"] {
        assert!(methods.contains(method), "{methods}");
    }
    let allowed_headers = header(headers, "access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    assert!(
        allowed_headers.contains("content-type"),
        "{allowed_headers}"
    );
    // … and the request itself (a 401 here) carries the header, so the
    // page can read the error.
    let response = get(&open, "https://grid.example.com").await?;
    assert_eq!(response.status(), 401);
    assert_eq!(
        origin_header(response.headers()).as_deref(),
        Some("https://grid.example.com")
    );
    let response = get(&open, "http://localhost:3000").await?;
    assert_eq!(
        origin_header(response.headers()).as_deref(),
        Some("http://localhost:3000")
    );

    // Any other origin, however close, gets nothing.
    for stranger in [
        "https://evil.example.com",
        "http://grid.example.com",
        "https://grid.example.com.evil.example",
    ] {
        let response = preflight(&open, stranger).await?;
        assert_eq!(origin_header(response.headers()), None, "{stranger}");
        let response = get(&open, stranger).await?;
        assert_eq!(origin_header(response.headers()), None, "{stranger}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_over_64_kib_is_a_413_json_error() -> anyhow::Result<()> {
    let (state, _db) = state("a_request_body_over_64_kib", AuthMode::Disabled).await?;
    let url = support::serve_api(state).await?;
    let client = reqwest::Client::new();
    let comment = "x".repeat(bess_collector::api::BODY_LIMIT);
    let body = serde_json::json!({ "device": "pcs-1", "duration": "1h", "comment": comment });
    let response = client
        .post(format!("{url}/api/v1/silences"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await?;
    assert_eq!(response.status(), 413);
    let error: serde_json::Value = response.json().await?;
    assert_eq!(error["error"]["code"], "payload_too_large", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("64 KiB")),
        "{error}"
    );
    // Under the limit, the same endpoint reads the body (and says what is
    // wrong with it).
    let response = client
        .post(format!("{url}/api/v1/silences"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"not": "a silence"}"#)
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    let error: serde_json::Value = response.json().await?;
    assert_eq!(error["error"]["code"], "bad_request", "{error}");
    Ok(())
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn live(url: &str) -> anyhow::Result<Socket> {
    let ws_url = format!("{}/api/v1/live", url.replacen("http", "ws", 1));
    Ok(tokio_tungstenite::connect_async(ws_url).await?.0)
}

/// The next text message as JSON (pings skipped).
async fn next_text<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
) -> anyhow::Result<serde_json::Value>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match ws.next().await.context("the socket closed")?? {
            Message::Text(text) => return Ok(serde_json::from_str(&text)?),
            Message::Ping(_) | Message::Pong(_) => {}
            other => anyhow::bail!("expected a text message, got {other:?}"),
        }
    }
}

/// Read until the server closes: the close code it sent, if any.
async fn close_code(ws: &mut Socket) -> Option<CloseCode> {
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Close(frame)) => return frame.map(|f| f.code),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// A subscription answered with a snapshot: the client is served.
async fn is_served(ws: &mut Socket) -> anyhow::Result<()> {
    ws.send(Message::Text(r#"{"subscribe":{"sites":["a"]}}"#.into()))
        .await?;
    let reply = next_text(ws).await?;
    anyhow::ensure!(reply["type"] == "snapshot", "not served: {reply}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_message_over_the_limit_closes_that_client_only() -> anyhow::Result<()> {
    let (state, _db) = state("a_websocket_message_over_the_limit", AuthMode::Disabled).await?;
    let url = support::serve_api(state).await?;
    let mut big = live(&url).await?;
    let mut bystander = live(&url).await?;
    is_served(&mut big).await?;
    is_served(&mut bystander).await?;

    let sites: Vec<String> = (0..10_000).map(|i| format!("site-{i:05}")).collect();
    let oversized = serde_json::json!({ "subscribe": { "sites": sites } }).to_string();
    assert!(oversized.len() > 64 << 10);
    big.send(Message::Text(oversized.into())).await?;
    assert_eq!(close_code(&mut big).await, Some(CloseCode::Policy));

    is_served(&mut bystander).await?;
    // A message just under the limit is still read.
    let sites: Vec<String> = (0..3_000).map(|i| format!("site-{i:05}")).collect();
    let large = serde_json::json!({ "subscribe": { "sites": sites } }).to_string();
    assert!(large.len() < 64 << 10);
    bystander.send(Message::Text(large.into())).await?;
    let reply = next_text(&mut bystander).await?;
    assert_eq!(reply["type"], "snapshot", "{reply}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_websocket_message_is_answered_with_an_error_or_a_close() -> anyhow::Result<()>
{
    let (state, _db) = state("a_malformed_websocket_message", AuthMode::Disabled).await?;
    let url = support::serve_api(state).await?;
    let mut ws = live(&url).await?;
    let mut bystander = live(&url).await?;

    // Messages that are not subscriptions: an error each, the client stays.
    for message in [
        Message::Text("not json".into()),
        Message::Text(r#"{"unsubscribe":{}}"#.into()),
        Message::Text(r#"{"subscribe":{"sites":"a"}}"#.into()),
        Message::Binary(vec![0xff, 0x00, 0x17].into()),
    ] {
        ws.send(message.clone()).await?;
        let reply = next_text(&mut ws).await?;
        assert_eq!(reply["type"], "error", "{message:?}: {reply}");
        assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    }
    is_served(&mut ws).await?;

    // Bytes that are not WebSocket framing (a client frame must be
    // masked): that client is closed with a policy violation.
    let raw = match ws.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp,
        _ => anyhow::bail!("expected a plain TCP socket"),
    };
    raw.write_all(&[0x81, 0x05, b'h', b'e', b'l', b'l', b'o'])
        .await?;
    raw.flush().await?;
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Policy));

    is_served(&mut bystander).await?;
    Ok(())
}
