//! TLS on the uplink, one mechanism for both brokers: the `[kafka.tls]`
//! table as librdkafka properties, the `[mqtt_uplink.tls]` table as a
//! rustls client (ring provider), and the words a technician reads when
//! a handshake fails.
//!
//! The broker's certificate is always verified and must name the host
//! connected to (librdkafka: `ssl.endpoint.identification.algorithm =
//! https`; rustls verifies the name by default). A TLS table never falls
//! back to plaintext: a handshake that fails is a failed link, reported
//! with its reason.

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};

use crate::config::{read_certificates, read_private_key, KafkaConfig, TlsConfig, TlsFileError};
use crate::status::AgentStatus;

/// The librdkafka settings every client of the Kafka uplink shares: the
/// brokers, the user's `properties`, and `[kafka.tls]` on top.
pub fn kafka_client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    if let Some(tls) = &kafka.tls {
        for (key, value) in kafka_tls_properties(tls, &kafka.properties) {
            config.set(key, value);
        }
    }
    config
}

/// `[kafka.tls]` as librdkafka properties: `SSL`, or `SASL_SSL` when the
/// user's properties configure SASL.
fn kafka_tls_properties(
    tls: &TlsConfig,
    properties: &std::collections::BTreeMap<String, String>,
) -> Vec<(&'static str, String)> {
    let sasl = properties.keys().any(|k| k.starts_with("sasl."));
    let mut settings = vec![
        (
            "security.protocol",
            if sasl { "SASL_SSL" } else { "SSL" }.to_owned(),
        ),
        ("ssl.endpoint.identification.algorithm", "https".to_owned()),
    ];
    if let Some(ca) = tls.ca_file() {
        settings.push(("ssl.ca.location", ca.display().to_string()));
    }
    if let Some((cert, key)) = tls.client_identity() {
        settings.push(("ssl.certificate.location", cert.display().to_string()));
        settings.push(("ssl.key.location", key.display().to_string()));
    }
    settings
}

/// A librdkafka client context that keeps the last error the client
/// reported outside any delivery (a refused TLS handshake, a broker that
/// cannot be reached), logs it, and shows it in the agent's status, so
/// the reason the uplink is down is visible before the first delivery
/// times out.
#[derive(Clone, Default)]
pub struct LinkErrors {
    last: Arc<Mutex<Option<String>>>,
    status: Option<Arc<AgentStatus>>,
}

impl LinkErrors {
    /// Errors reported to `status` as the uplink's.
    pub fn reporting_to(status: Arc<AgentStatus>) -> Self {
        Self {
            last: Arc::default(),
            status: Some(status),
        }
    }

    /// The last error, in a technician's words.
    pub fn last(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forget the last error (the link works again).
    pub fn clear(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl ClientContext for LinkErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        // "1/1 brokers are down" follows every broker's own error: keep the cause.
        if matches!(error, KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)) && last.is_some() {
            tracing::debug!("kafka: {reason}");
            return;
        }
        let why = describe_link_error(reason);
        tracing::warn!("kafka: {why}");
        // A TLS refusal often reaches the client only on some attempts
        // (others see the connection reset): keep it as the reason until
        // a delivery succeeds.
        let known_tls = last.as_deref().is_some_and(|l| l.starts_with("TLS: "));
        if known_tls && tls_hint(reason).is_none() {
            return;
        }
        if let Some(status) = &self.status {
            status.record_uplink_error(why.clone());
        }
        *last = Some(why);
    }
}

impl ProducerContext for LinkErrors {
    type DeliveryOpaque = ();

    fn delivery(&self, _result: &DeliveryResult<'_>, _opaque: ()) {}
}

/// A broker error, with what it means in plain words first when it is a
/// TLS failure.
pub fn describe_link_error(reason: &str) -> String {
    match tls_hint(reason) {
        Some(hint) => format!("TLS: {hint} ({reason})"),
        None => reason.to_owned(),
    }
}

/// What a TLS failure means, from the words OpenSSL (librdkafka) or
/// rustls (MQTT) use for it.
pub fn tls_hint(reason: &str) -> Option<&'static str> {
    let text = reason.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    if has(&["certificate expired", "certificateexpired"]) {
        Some("the broker refused this site's client certificate: it has expired (or the site's clock is wrong); renew `cert_file`")
    } else if has(&[
        "unknown ca",
        "unknownca",
        "bad certificate",
        "badcertificate",
        "decrypt error",
    ]) {
        Some("the broker does not trust this site's client certificate: `cert_file` is not signed by a CA the broker knows")
    } else if has(&[
        "certificate required",
        "certificaterequired",
        "handshake failure",
        "handshakefailure",
    ]) {
        Some("the broker requires a client certificate signed by a CA it knows: set `cert_file` and `key_file`, or renew them from the broker's CA")
    } else if has(&[
        "certificate verify failed",
        "unknownissuer",
        "invalid peer certificate",
        "notvalidforname",
    ]) {
        Some("the broker's certificate could not be verified: it is not signed by the CA in `ca_file`, or does not name the host connected to")
    } else if has(&[
        "wrong version number",
        "packet length too long",
        "corrupt message",
        "invalidcontenttype",
    ]) {
        Some("the broker's port does not speak TLS")
    } else if has(&["ssl handshake failed", "ssl routines", "tls error"]) {
        Some("the TLS handshake with the broker failed")
    } else {
        None
    }
}

/// Why the TLS settings of the MQTT uplink cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MqttTlsError {
    #[error(transparent)]
    File(#[from] TlsFileError),
    #[error("the system's trust store has no usable CA certificate ({0}): set `ca_file`")]
    NoSystemRoots(String),
    #[error("{}: {source}", path.display())]
    Rejected {
        path: std::path::PathBuf,
        source: rustls::Error,
    },
}

/// `[mqtt_uplink.tls]` as rustls client settings (ring provider, TLS 1.2
/// and 1.3, the broker verified against `ca_file` or the system's trust
/// store).
pub fn rustls_client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, MqttTlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match tls.ca_file() {
        Some(ca) => {
            for certificate in read_certificates(ca)? {
                roots
                    .add(certificate)
                    .map_err(|source| MqttTlsError::Rejected {
                        path: ca.to_owned(),
                        source,
                    })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), ToString::to_string);
                return Err(MqttTlsError::NoSystemRoots(why));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| MqttTlsError::Rejected {
            path: tls.ca_file().unwrap_or(std::path::Path::new("")).to_owned(),
            source,
        })?
        .with_root_certificates(roots);
    match tls.client_identity() {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certificates(cert)?, read_private_key(key)?)
            .map_err(|source| MqttTlsError::Rejected {
                path: key.to_owned(),
                source,
            }),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The rumqttc transport for `[mqtt_uplink.tls]`.
pub fn mqtt_tls_transport(tls: &TlsConfig) -> Result<rumqttc::Transport, MqttTlsError> {
    let config = rustls_client_config(tls)?;
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_openssl_verify_failure_is_explained_as_an_untrusted_broker_certificate() {
        let reason = "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified";
        let described = describe_link_error(reason);
        assert!(
            described.starts_with("TLS: the broker's certificate could not be verified"),
            "{described}"
        );
        assert!(described.contains(reason), "{described}");
    }

    #[test]
    fn a_refused_client_certificate_is_told_apart_from_an_untrusted_broker() {
        assert!(tls_hint("SSL routines::tlsv13 alert certificate expired")
            .unwrap()
            .contains("expired"));
        assert!(tls_hint("tlsv1 alert unknown ca")
            .unwrap()
            .contains("client certificate"));
        assert!(tls_hint("received fatal alert: CertificateRequired")
            .unwrap()
            .contains("requires a client certificate"));
        assert_eq!(
            tls_hint("Connect to ipv4#127.0.0.1:9 failed: Connection refused"),
            None
        );
    }

    #[test]
    fn sasl_properties_turn_tls_into_sasl_ssl() {
        let tls = TlsConfig {
            ca_file: None,
            cert_file: None,
            key_file: None,
        };
        let mut properties = std::collections::BTreeMap::new();
        let protocol = |p: &std::collections::BTreeMap<String, String>| {
            kafka_tls_properties(&tls, p)
                .into_iter()
                .find(|(k, _)| *k == "security.protocol")
                .map(|(_, v)| v)
        };
        assert_eq!(protocol(&properties).as_deref(), Some("SSL"));
        properties.insert("sasl.mechanism".into(), "SCRAM-SHA-512".into());
        assert_eq!(protocol(&properties).as_deref(), Some("SASL_SSL"));
    }
}
