//! `[kafka.tls]` and `[mqtt_uplink.tls]`: the uplink's TLS files and the
//! checks that they can be used.
//!
//! The broker's certificate is always verified: against `ca_file` when
//! given, against the system's trust store otherwise, and it must name the
//! host the uplink connects to. A client certificate (`cert_file` with its
//! `key_file`) is optional, for brokers that require one (mutual TLS). A
//! table that names a file that is missing or holds no PEM certificate or
//! key is a config problem naming that file and field, so the agent never
//! starts with TLS it cannot do, and never falls back to plaintext.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use bess_config_report::Problems;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA certificate(s) the broker's certificate must be
    /// signed by. Absent: the system's trust store (public CAs).
    pub ca_file: Option<Spanned<PathBuf>>,
    /// PEM file of this site's client certificate (mutual TLS).
    pub cert_file: Option<Spanned<PathBuf>>,
    /// PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<Spanned<PathBuf>>,
}

/// A TLS file that cannot be used; `Display` names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a PEM file: {reason}", path.display())]
    NotPem { path: PathBuf, reason: String },
    #[error("{}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: holds no PEM private key (-----BEGIN PRIVATE KEY-----)", path.display())]
    NoKey { path: PathBuf },
}

impl TlsConfig {
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_ref().map(|f| f.get_ref().as_path())
    }

    /// The client certificate and its key, when both are given.
    pub fn client_identity(&self) -> Option<(&Path, &Path)> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some((cert.get_ref(), key.get_ref())),
            _ => None,
        }
    }

    /// Every problem of this table, each with the line of its key; `table`
    /// is the table's dotted name (`kafka.tls`).
    pub(super) fn check(&self, table: &str, problems: &mut Problems<'_>) {
        if let Some(ca) = &self.ca_file {
            if let Err(e) = read_certificates(ca.get_ref()) {
                problems.add(ca.span(), format!("{table}.ca_file"), e.to_string());
            }
        }
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                if let Err(e) = read_certificates(cert.get_ref()) {
                    problems.add(cert.span(), format!("{table}.cert_file"), e.to_string());
                }
                if let Err(e) = read_private_key(key.get_ref()) {
                    problems.add(key.span(), format!("{table}.key_file"), e.to_string());
                }
            }
            (Some(only), None) | (None, Some(only)) => {
                let (given, missing) = if self.cert_file.is_some() {
                    ("cert_file", "key_file")
                } else {
                    ("key_file", "cert_file")
                };
                problems.add(
                    only.span(),
                    format!("{table}.{missing}"),
                    format!("`{given}` needs `{missing}`: give the client certificate and its key together"),
                );
            }
            (None, None) => {}
        }
    }
}

/// The certificates of a PEM file, at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let text = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsFileError::NotPem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsFileError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}

/// The private key of a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let text = read(path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsFileError::NoKey {
            path: path.to_owned(),
        },
        other => TlsFileError::NotPem {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::fixtures::EXAMPLE;
    use crate::config::ValidConfig;

    /// The example with `tls` (a TOML table body) as `[kafka.tls]`.
    fn with_kafka_tls(tls: &str) -> String {
        EXAMPLE.replacen(
            "delivery_timeout = \"30s\"\n",
            &format!("delivery_timeout = \"30s\"\n[kafka.tls]\n{tls}\n"),
            1,
        )
    }

    fn pem_files(dir: &std::path::Path) -> (String, String) {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAEC\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        (cert.display().to_string(), key.display().to_string())
    }

    #[test]
    fn a_tls_table_with_readable_pem_files_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pem_files(dir.path());
        let text = with_kafka_tls(&format!(
            "ca_file = \"{cert}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\""
        ));
        let config = ValidConfig::parse(&text).unwrap_or_else(|p| panic!("{p:?}"));
        let tls = config.kafka().unwrap().tls.as_ref().unwrap();
        assert_eq!(tls.ca_file().unwrap().display().to_string(), cert);
        assert!(tls.client_identity().is_some());
    }

    #[test]
    fn a_missing_ca_file_is_a_problem_naming_the_file_its_field_and_line() {
        let text = with_kafka_tls("ca_file = \"/nonexistent/ca.pem\"");
        let problems = ValidConfig::parse(&text).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "kafka.tls.ca_file");
        assert!(
            problems[0]
                .message
                .starts_with("/nonexistent/ca.pem: cannot read"),
            "{problems:?}"
        );
        let line = text.lines().position(|l| l.starts_with("ca_file")).unwrap() + 1;
        assert_eq!(problems[0].line, line, "{problems:?}");
    }

    #[test]
    fn a_file_without_a_certificate_or_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pem_files(dir.path());
        // Swapped: the certificate file holds no key and the key file no certificate.
        let text = with_kafka_tls(&format!(
            "ca_file = \"{key}\"\ncert_file = \"{cert}\"\nkey_file = \"{cert}\""
        ));
        let problems = ValidConfig::parse(&text).unwrap_err();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["kafka.tls.ca_file", "kafka.tls.key_file"],
            "{problems:?}"
        );
        assert!(
            problems[0].message.contains("holds no PEM certificate"),
            "{problems:?}"
        );
        assert!(
            problems[1].message.contains("holds no PEM private key"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = pem_files(dir.path());
        let problems =
            ValidConfig::parse(&with_kafka_tls(&format!("cert_file = \"{cert}\""))).unwrap_err();
        assert_eq!(problems[0].field, "kafka.tls.key_file", "{problems:?}");
    }

    #[test]
    fn tls_properties_given_beside_the_tls_table_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = pem_files(dir.path());
        let text = with_kafka_tls(&format!(
            "ca_file = \"{cert}\"\n[kafka.properties]\n\"security.protocol\" = \"PLAINTEXT\""
        ));
        let problems = ValidConfig::parse(&text).unwrap_err();
        assert_eq!(
            problems[0].field, "kafka.properties.security.protocol",
            "{problems:?}"
        );
    }

    #[test]
    fn an_unknown_tls_key_is_refused() {
        let problems = ValidConfig::parse(&with_kafka_tls("verify = false")).unwrap_err();
        assert!(problems[0].message.contains("verify"), "{problems:?}");
    }
}
