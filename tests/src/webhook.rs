//! A webhook receiver for tests: an HTTP server on a free port that
//! records every request (its path, `Idempotency-Key`, signature header and
//! body, and whether its `X-Bess-Signature` is the HMAC-SHA256 of the body
//! under the secret), verified here independently of the collector's code.
//!
//! It answers 200 unless told otherwise: [`WebhookReceiver::refuse_next`]
//! refuses the next requests with 503, and [`WebhookReceiver::answering`]
//! decides each status from the request's key and how many requests with
//! that key came before, to prove retries. Requests to any path are
//! recorded, so one receiver can stand for a webhook ([`url`](WebhookReceiver::url),
//! `/hook`) and for an Alertmanager (under [`base_url`](WebhookReceiver::base_url)).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The path of [`WebhookReceiver::url`].
pub const HOOK_PATH: &str = "/hook";

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub path: String,
    /// Empty when the header was absent.
    pub idempotency_key: String,
    /// The `X-Bess-Signature` header as sent.
    pub signature: Option<String>,
    /// The body bytes as sent.
    pub raw: Bytes,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: serde_json::Value,
    /// The signature header matched the body (`false` also when absent).
    pub signed: bool,
    /// What the receiver answered.
    pub status: u16,
    pub received_at: SystemTime,
}

impl Delivery {
    pub fn transition(&self) -> &str {
        self.body["transition"].as_str().unwrap_or_default()
    }

    pub fn rule(&self) -> &str {
        self.body["episode"]["rule"].as_str().unwrap_or_default()
    }

    pub fn target(&self) -> &str {
        self.body["episode"]["target"].as_str().unwrap_or_default()
    }

    /// Answered 2xx.
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The status for a request with this idempotency key (empty when none)
/// that is the `n`th (from 0) with that key to its path.
type Answer = dyn Fn(&str, usize) -> u16 + Send + Sync;

struct Shared {
    deliveries: Vec<Delivery>,
    refuse_next: usize,
    answer: Box<Answer>,
}

/// What the handler shares with the test: the record and the secret.
type ReceiverState = (Arc<Mutex<Shared>>, Arc<Vec<u8>>);

pub struct WebhookReceiver {
    /// `http://127.0.0.1:PORT/hook`, the URL a webhook receiver names.
    pub url: String,
    /// `http://127.0.0.1:PORT`; requests to any path under it are recorded.
    pub base_url: String,
    shared: Arc<Mutex<Shared>>,
    secret: Arc<Vec<u8>>,
    server: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Listen on a free port and take every request; signatures are
    /// checked against `secret`.
    pub async fn start(secret: &str) -> anyhow::Result<Self> {
        Self::answering(secret, |_, _| 200).await
    }

    /// Like [`start`](Self::start), answering each request with the status
    /// `answer` gives for its key and its count of earlier requests.
    pub async fn answering(
        secret: &str,
        answer: impl Fn(&str, usize) -> u16 + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Mutex::new(Shared {
            deliveries: Vec::new(),
            refuse_next: 0,
            answer: Box::new(answer),
        }));
        let secret = Arc::new(secret.as_bytes().to_vec());
        let app = axum::Router::new()
            .fallback(receive)
            .with_state((shared.clone(), secret.clone()));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Ok(Self {
            url: format!("{base_url}{HOOK_PATH}"),
            base_url,
            shared,
            secret,
            server,
        })
    }

    /// Answer the next `n` requests with 503, whatever `answer` says.
    pub fn refuse_next(&self, n: usize) {
        self.shared.lock().expect("webhook lock").refuse_next = n;
    }

    /// Every request so far, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.lock().expect("webhook lock").deliveries.clone()
    }

    /// The requests to `path`, in arrival order.
    pub fn deliveries_at(&self, path: &str) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.path == path)
            .collect()
    }

    /// The requests answered 2xx.
    pub fn accepted(&self) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(Delivery::accepted)
            .collect()
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    State((shared, secret)): State<ReceiverState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let signature = header("x-bess-signature");
    let signed = signature
        .as_deref()
        .and_then(|s| s.strip_prefix("sha256="))
        .is_some_and(|hex| signature_matches(&secret, &body, hex));
    let idempotency_key = header("idempotency-key").unwrap_or_default();
    let path = uri.path().to_owned();
    let mut shared = shared.lock().expect("webhook lock");
    let earlier = shared
        .deliveries
        .iter()
        .filter(|d| d.idempotency_key == idempotency_key && d.path == path)
        .count();
    let status = if shared.refuse_next > 0 {
        shared.refuse_next -= 1;
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::from_u16((shared.answer)(&idempotency_key, earlier))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    };
    shared.deliveries.push(Delivery {
        path,
        idempotency_key,
        signature,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        raw: body,
        signed,
        status: status.as_u16(),
        received_at: SystemTime::now(),
    });
    status
}

fn signature_matches(secret: &[u8], body: &[u8], hex: &str) -> bool {
    let Ok(expected) = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or(())
        })
        .collect::<Result<Vec<u8>, ()>>()
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}
