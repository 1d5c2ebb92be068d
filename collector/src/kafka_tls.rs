//! `--kafka-tls`, `--kafka-ca`, `--kafka-cert`, `--kafka-key`: TLS to the
//! Kafka brokers, for every librdkafka client the collector builds (the
//! consumer, the dead-letter producer, the live-lane reader and the admin
//! client that creates topics), since they all start from the same
//! `KafkaSettings::properties`.
//!
//! The brokers' certificates are always verified (against `--kafka-ca`, or
//! the system's trust store) and must name the host connected to. The
//! files are checked before anything else starts, and one handshake is
//! tried at start-up: a certificate the broker refuses, or a broker the
//! CA does not vouch for, stops the collector with the reason instead of
//! leaving it to retry in silence. TLS never falls back to plaintext.

use anyhow::{bail, Context as _};
use clap::Args;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the start-up handshake may take before the collector goes on
/// (an unreachable broker is retried as without TLS).
const HANDSHAKE_PROBE: Duration = Duration::from_secs(5);

/// The librdkafka keys these flags set; not to be given again with
/// `--kafka-property`.
fn is_tls_key(key: &str) -> bool {
    key == "security.protocol" || key.starts_with("ssl.")
}

#[derive(Args, Debug, Clone, Default)]
pub struct KafkaTlsArgs {
    /// TLS to the brokers, verified against the system's trust store (for
    /// brokers with a public certificate, e.g. Amazon MSK). Implied by
    /// --kafka-ca and --kafka-cert. With a SASL --kafka-property
    /// (sasl.mechanism=...) the protocol becomes SASL_SSL.
    #[arg(long, env = "BESS_KAFKA_TLS")]
    kafka_tls: bool,
    /// PEM file of the CA certificate(s) the brokers' certificates must be
    /// signed by; turns TLS on.
    #[arg(long, env = "BESS_KAFKA_CA", value_name = "PEM")]
    kafka_ca: Option<PathBuf>,
    /// PEM file of the collector's client certificate, for brokers that
    /// require one (mutual TLS); needs --kafka-key.
    #[arg(
        long,
        env = "BESS_KAFKA_CERT",
        value_name = "PEM",
        requires = "kafka_key"
    )]
    kafka_cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key; needs --kafka-cert.
    #[arg(
        long,
        env = "BESS_KAFKA_KEY",
        value_name = "PEM",
        requires = "kafka_cert"
    )]
    kafka_key: Option<PathBuf>,
}

impl KafkaTlsArgs {
    fn enabled(&self) -> bool {
        self.kafka_tls || self.kafka_ca.is_some() || self.kafka_cert.is_some()
    }

    /// The user's `--kafka-property` list with the TLS settings added,
    /// after checking the files and trying one handshake with `brokers`.
    pub fn client_properties(
        &self,
        brokers: &str,
        mut properties: Vec<(String, String)>,
    ) -> anyhow::Result<Vec<(String, String)>> {
        if !self.enabled() {
            return Ok(properties);
        }
        if let Some((key, _)) = properties.iter().find(|(k, _)| is_tls_key(k)) {
            bail!("--kafka-property {key}: set by the --kafka-tls/--kafka-ca/--kafka-cert flags; remove it");
        }
        let sasl = properties.iter().any(|(k, _)| k.starts_with("sasl."));
        let mut add = |key: &str, value: String| properties.push((key.to_owned(), value));
        add(
            "security.protocol",
            if sasl { "SASL_SSL" } else { "SSL" }.to_owned(),
        );
        add("ssl.endpoint.identification.algorithm", "https".to_owned());
        if let Some(ca) = &self.kafka_ca {
            check_pem(ca, "--kafka-ca", "CERTIFICATE-----")?;
            add("ssl.ca.location", ca.display().to_string());
        }
        if let (Some(cert), Some(key)) = (&self.kafka_cert, &self.kafka_key) {
            check_pem(cert, "--kafka-cert", "CERTIFICATE-----")?;
            check_pem(key, "--kafka-key", "PRIVATE KEY-----")?;
            add("ssl.certificate.location", cert.display().to_string());
            add("ssl.key.location", key.display().to_string());
        }
        try_handshake(brokers, &properties)?;
        Ok(properties)
    }
}

/// `path` can be read and holds a PEM block whose BEGIN line ends in `marker`.
fn check_pem(path: &Path, flag: &str, marker: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{flag} {}: cannot read", path.display()))?;
    if !text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.ends_with(marker))
    {
        bail!(
            "{flag} {}: not a PEM file with a -----BEGIN ...{marker} block",
            path.display()
        );
    }
    Ok(())
}

/// One metadata request with the TLS settings: a TLS failure stops the
/// start; a broker that does not answer yet does not.
fn try_handshake(brokers: &str, properties: &[(String, String)]) -> anyhow::Result<()> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in properties {
        config.set(key, value);
    }
    let context = TlsErrors::default();
    let client: BaseConsumer<TlsErrors> = config
        .create_with_context(context.clone())
        .context("Kafka TLS settings")?;
    // A TLS refusal reaches the client on some attempts only (others see
    // the connection reset): try a few times for its reason.
    let mut probe = client.fetch_metadata(None, HANDSHAKE_PROBE);
    for _ in 0..3 {
        if probe.is_ok() {
            break;
        }
        // The client's own errors (a refused handshake) arrive as events.
        let _ = client.poll(Duration::from_millis(200));
        if context.tls_failure().is_some() {
            break;
        }
        probe = client.fetch_metadata(None, HANDSHAKE_PROBE);
    }
    match (probe, context.tls_failure()) {
        (Ok(_), _) => {
            tracing::info!(brokers, "Kafka TLS handshake succeeded");
            Ok(())
        }
        (Err(_), Some(why)) => bail!("Kafka TLS to {brokers}: {why}"),
        (Err(e), None) => {
            tracing::warn!(brokers, "Kafka brokers not reachable yet ({e}); going on");
            Ok(())
        }
    }
}

/// The first TLS failure librdkafka reported.
#[derive(Clone, Default)]
struct TlsErrors(Arc<Mutex<Option<String>>>);

impl TlsErrors {
    fn tls_failure(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ClientContext for TlsErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        let tls =
            matches!(error, KafkaError::Global(RDKafkaErrorCode::SSL)) || reason.contains("SSL");
        if tls {
            let mut first = self.0.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| describe(reason));
        }
    }
}

impl ConsumerContext for TlsErrors {}

/// A TLS failure in an operator's words, then OpenSSL's.
fn describe(reason: &str) -> String {
    let text = reason.to_ascii_lowercase();
    let meaning = if text.contains("certificate expired") {
        "the broker refused the collector's client certificate: it has expired (renew --kafka-cert)"
    } else if text.contains("unknown ca") || text.contains("bad certificate") {
        "the broker does not trust the collector's client certificate (--kafka-cert is not signed by a CA it knows)"
    } else if text.contains("certificate required") || text.contains("handshake failure") {
        "the broker requires a client certificate signed by a CA it knows: give --kafka-cert and --kafka-key from the broker's CA"
    } else if text.contains("certificate verify failed") {
        "the broker's certificate could not be verified: it is not signed by the CA in --kafka-ca, or does not name the host connected to"
    } else if text.contains("wrong version number") {
        "the broker's port does not speak TLS"
    } else {
        "the TLS handshake with the broker failed"
    };
    format!("{meaning} ({reason})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_tls_flags_the_properties_are_unchanged() {
        let properties = vec![("client.rack".to_owned(), "a".to_owned())];
        let out = KafkaTlsArgs::default()
            .client_properties("127.0.0.1:1", properties.clone())
            .unwrap();
        assert_eq!(out, properties);
    }

    #[test]
    fn a_missing_ca_file_is_named_with_its_flag() {
        let args = KafkaTlsArgs {
            kafka_ca: Some("/nonexistent/ca.pem".into()),
            ..KafkaTlsArgs::default()
        };
        let error = args
            .client_properties("127.0.0.1:1", Vec::new())
            .unwrap_err();
        assert!(
            format!("{error:#}").starts_with("--kafka-ca /nonexistent/ca.pem: cannot read"),
            "{error:#}"
        );
    }

    #[test]
    fn a_tls_property_given_twice_is_refused() {
        let args = KafkaTlsArgs {
            kafka_tls: true,
            ..KafkaTlsArgs::default()
        };
        let properties = vec![("security.protocol".to_owned(), "PLAINTEXT".to_owned())];
        let error = args
            .client_properties("127.0.0.1:1", properties)
            .unwrap_err();
        assert!(error.to_string().contains("security.protocol"), "{error}");
    }

    #[test]
    fn an_untrusted_broker_certificate_is_explained() {
        let why = describe("ssl://h:1/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed");
        assert!(
            why.starts_with("the broker's certificate could not be verified"),
            "{why}"
        );
    }
}
