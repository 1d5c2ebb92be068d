//! One POST to a receiver, bounded by a deadline, and how its answer is
//! classed: a 2xx is delivered; a refusal (any other status) and a broken
//! link (connect error, timeout) are kept apart in [`DeliveryError`], and
//! both are retried by the caller.

use std::time::Duration;

/// How much of a refusal's body goes into `last_error` and the log.
const BODY_EXCERPT: usize = 200;

/// Why a receiver did not take a notification. The notification itself
/// stays in the outbox: nothing is lost by an error here.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver answered, but not with a 2xx.
    #[error("receiver answered {status}: {body}")]
    Refused { status: u16, body: String },
    /// No answer: connection refused or reset, DNS, or the timeout.
    #[error("no answer from receiver: {0}")]
    Transport(#[source] reqwest::Error),
}

/// POST `body` as JSON to `url` with `headers`, waiting at most `timeout`
/// for the whole exchange.
pub(crate) async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    headers: &[(&'static str, String)],
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let mut request = http
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.map_err(DeliveryError::Transport)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    // The body only explains the refusal; failing to read it changes nothing.
    let text = response.text().await.unwrap_or_default();
    Err(DeliveryError::Refused {
        status: status.as_u16(),
        body: excerpt(&text),
    })
}

fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(BODY_EXCERPT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_keeps_short_bodies_and_cuts_long_ones_on_a_character() {
        assert_eq!(excerpt("  bad request \n"), "bad request");
        let long = "é".repeat(BODY_EXCERPT + 5);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), BODY_EXCERPT + 1);
        assert!(cut.ends_with('…'));
    }
}
