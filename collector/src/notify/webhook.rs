//! Webhook receivers: one JSON POST per notification.
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! Idempotency-Key: <key>                      the same on every retry
//! X-Bess-Signature: sha256=<hex>              only when a secret is set
//!
//! {"idempotency_key": "<key>", "transition": "firing" | "resolved",
//!  "episode": {"id": 12, "rule": "...", "severity": "...", "site": "...",
//!              "target": "DEVICE/POINT", "summary": "...",
//!              "started_at": "<RFC 3339>", "ended_at": "<RFC 3339>" | null,
//!              "peak": <number> | null, "late": <bool>}}
//! ```
//!
//! The signature is the lowercase hex HMAC-SHA256, keyed with the
//! receiver's secret, of the exact body bytes; a receiver checks it with
//! [`verify_signature`] (or the same computation in its own language)
//! before parsing the body. `ended_at` is the episode's state when the
//! notification was sent: a `firing` notification delivered late may
//! already carry it.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::time::Duration;

use super::episode::{Episode, Transition};
use super::http::{post_json, DeliveryError};
use crate::time::rfc3339;

pub const HEADER_IDEMPOTENCY_KEY: &str = "Idempotency-Key";
pub const HEADER_SIGNATURE: &str = "X-Bess-Signature";
const SIGNATURE_PREFIX: &str = "sha256=";

type HmacSha256 = Hmac<Sha256>;

#[derive(Serialize)]
struct Body<'a> {
    idempotency_key: &'a str,
    transition: &'static str,
    episode: EpisodeBody<'a>,
}

#[derive(Serialize)]
struct EpisodeBody<'a> {
    id: i64,
    rule: &'a str,
    severity: &'a str,
    site: &'a str,
    target: &'a str,
    summary: &'a str,
    started_at: String,
    ended_at: Option<String>,
    peak: Option<f64>,
    late: bool,
}

/// The body bytes of one notification (what is signed and sent).
pub fn body(idempotency_key: &str, transition: Transition, episode: &Episode) -> Vec<u8> {
    let body = Body {
        idempotency_key,
        transition: transition.as_str(),
        episode: EpisodeBody {
            id: episode.id,
            rule: &episode.rule,
            severity: &episode.severity,
            site: &episode.site,
            target: &episode.target,
            summary: &episode.summary,
            started_at: rfc3339(episode.started_at),
            ended_at: episode.ended_at.map(rfc3339),
            peak: episode.peak,
            late: episode.late,
        },
    };
    serde_json::to_vec(&body).expect("a struct of strings and numbers serializes")
}

/// The `X-Bess-Signature` value for `body`: `sha256=<lowercase hex>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!(
        "{SIGNATURE_PREFIX}{}",
        hex_encode(&mac.finalize().into_bytes())
    )
}

/// Whether `header` (an `X-Bess-Signature` value) signs `body` with
/// `secret`. The comparison takes the same time wherever the first wrong
/// byte is.
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(claimed) = header
        .trim()
        .strip_prefix(SIGNATURE_PREFIX)
        .and_then(hex_decode)
    else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.verify_slice(&claimed).is_ok()
}

/// POST one notification to a webhook.
pub async fn deliver(
    http: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
    idempotency_key: &str,
    transition: Transition,
    episode: &Episode,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let body = body(idempotency_key, transition, episode);
    let mut headers = vec![(HEADER_IDEMPOTENCY_KEY, idempotency_key.to_owned())];
    if let Some(secret) = secret {
        headers.push((HEADER_SIGNATURE, signature(secret.as_bytes(), &body)));
    }
    post_json(http, url, body, &headers, timeout).await
}

fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]])
        .map(char::from)
        .collect()
}

/// Hex of either case; `None` for an odd length or a non-hex character.
fn hex_decode(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let text = text.as_bytes();
    if text.len() % 2 != 0 {
        return None;
    }
    text.chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn episode() -> Episode {
        Episode {
            id: 12,
            rule: "cell_hot".into(),
            severity: "critical".into(),
            site: "site-001".into(),
            target: "bms-1/cell_temp_max".into(),
            summary: "cell temperature above 45 °C".into(),
            started_at: datetime!(2026-01-01 00:00:00 UTC),
            ended_at: None,
            peak: Some(47.5),
            late: false,
        }
    }

    #[test]
    fn body_carries_key_transition_and_episode() {
        let body: serde_json::Value =
            serde_json::from_slice(&body("k-1", Transition::Firing, &episode())).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "idempotency_key": "k-1",
                "transition": "firing",
                "episode": {
                    "id": 12,
                    "rule": "cell_hot",
                    "severity": "critical",
                    "site": "site-001",
                    "target": "bms-1/cell_temp_max",
                    "summary": "cell temperature above 45 °C",
                    "started_at": "2026-01-01T00:00:00Z",
                    "ended_at": null,
                    "peak": 47.5,
                    "late": false
                }
            })
        );
    }

    #[test]
    fn resolved_body_carries_the_end() {
        let mut episode = episode();
        episode.ended_at = Some(datetime!(2026-01-01 00:10:00.25 UTC));
        episode.peak = None;
        let body: serde_json::Value =
            serde_json::from_slice(&body("k-2", Transition::Resolved, &episode)).unwrap();
        assert_eq!(body["transition"], "resolved");
        assert_eq!(body["episode"]["ended_at"], "2026-01-01T00:10:00.25Z");
        assert_eq!(body["episode"]["peak"], serde_json::Value::Null);
    }

    #[test]
    fn signature_matches_a_known_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verify_accepts_its_own_signature_in_either_case() {
        let header = signature(b"s3cret", b"{\"a\":1}");
        assert!(verify_signature(b"s3cret", b"{\"a\":1}", &header));
        assert!(verify_signature(
            b"s3cret",
            b"{\"a\":1}",
            &format!("sha256={}", header["sha256=".len()..].to_uppercase())
        ));
    }

    #[test]
    fn verify_rejects_other_bodies_secrets_and_malformed_headers() {
        let header = signature(b"s3cret", b"{\"a\":1}");
        assert!(!verify_signature(b"s3cret", b"{\"a\":2}", &header));
        assert!(!verify_signature(b"other", b"{\"a\":1}", &header));
        assert!(!verify_signature(
            b"s3cret",
            b"{\"a\":1}",
            &header["sha256=".len()..]
        ));
        assert!(!verify_signature(b"s3cret", b"{\"a\":1}", "sha256=abc"));
        assert!(!verify_signature(b"s3cret", b"{\"a\":1}", "sha256=zz"));
        assert!(!verify_signature(
            b"s3cret",
            b"{\"a\":1}",
            &header[..header.len() - 2]
        ));
        assert!(!verify_signature(b"s3cret", b"{\"a\":1}", ""));
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_decode(&hex_encode(&bytes)), Some(bytes));
    }
}
