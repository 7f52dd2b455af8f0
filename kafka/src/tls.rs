//! TLS client configuration from PEM files.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::KafkaError;

/// Builds a rustls client config: trust `ca_file` (or the bundled Mozilla roots when `None`),
/// and present `cert_file` + `key_file` for mutual TLS when both are given.
pub fn client_config(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, KafkaError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| KafkaError::Tls(format!("{}: {e}", path.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| KafkaError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (cert_file, key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| KafkaError::Tls(format!("client certificate: {e}")))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(KafkaError::Tls(
                "tls_cert_file and tls_key_file must be given together".to_string(),
            ))
        }
    };
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, KafkaError> {
    let pem = std::fs::read(path)
        .map_err(|e| KafkaError::Tls(format!("cannot read {}: {e}", path.display())))?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    let certs = certs.map_err(|e| KafkaError::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(KafkaError::Tls(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, KafkaError> {
    let pem = std::fs::read(path)
        .map_err(|e| KafkaError::Tls(format!("cannot read {}: {e}", path.display())))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            KafkaError::Tls(format!("{} holds no PEM private key", path.display()))
        }
        e => KafkaError::Tls(format!("{}: {e}", path.display())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_roots_build_and_bad_files_are_named() {
        assert!(client_config(None, None, None).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let err = client_config(Some(&ca), None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.pem holds no PEM certificate"), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = client_config(Some(&missing), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read") && err.contains("missing.pem"),
            "{err}"
        );
        let err = client_config(None, Some(&ca), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be given together"), "{err}");
    }

    #[test]
    fn a_key_file_without_a_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("client.key");
        std::fs::write(
            &key,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = read_key(&key).unwrap_err().to_string();
        assert!(
            err.ends_with("client.key holds no PEM private key"),
            "{err}"
        );
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nAAAA\n").unwrap();
        let err = read_key(&key).unwrap_err().to_string();
        assert!(
            err.contains("client.key: missing section end marker"),
            "{err}"
        );
    }
}
