//! A webhook receiver for scenarios: an HTTP server on a free port that
//! records every POST (its `Idempotency-Key`, JSON body and whether its
//! `X-Bess-Signature` is the HMAC-SHA256 of the body under the secret),
//! verified here independently of the collector's code. It can be told to
//! refuse the next requests, to prove retries.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::{Arc, Mutex};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub idempotency_key: String,
    pub body: serde_json::Value,
    /// The signature header matched the body (`false` also when absent).
    pub signed: bool,
    /// What the receiver answered.
    pub status: u16,
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
}

/// What the handler shares with the test: the record and the secret.
type ReceiverState = (Arc<Mutex<Shared>>, Arc<Vec<u8>>);

#[derive(Default)]
struct Shared {
    deliveries: Vec<Delivery>,
    refuse_next: usize,
}

pub struct WebhookReceiver {
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    secret: Arc<Vec<u8>>,
    server: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Listen on a free port; requests are checked against `secret`.
    pub async fn start(secret: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let secret = Arc::new(secret.as_bytes().to_vec());
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state((shared.clone(), secret.clone()));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Ok(Self {
            url,
            shared,
            secret,
            server,
        })
    }

    /// Answer the next `n` requests with 503.
    pub fn refuse_next(&self, n: usize) {
        self.shared.lock().expect("webhook lock").refuse_next = n;
    }

    /// Every request so far, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.lock().expect("webhook lock").deliveries.clone()
    }

    /// The requests answered 2xx.
    pub fn accepted(&self) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| (200..300).contains(&d.status))
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
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let signed = header("x-bess-signature")
        .strip_prefix("sha256=")
        .is_some_and(|hex| signature_matches(&secret, &body, hex));
    let mut shared = shared.lock().expect("webhook lock");
    let status = if shared.refuse_next > 0 {
        shared.refuse_next -= 1;
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    shared.deliveries.push(Delivery {
        idempotency_key: header("idempotency-key"),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        signed,
        status: status.as_u16(),
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
