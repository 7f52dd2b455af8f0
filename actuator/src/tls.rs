//! TLS on the listener (rustls with the ring provider).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The PEM certificates of `file` (at least one); errors name `key` (the setting) and the file.
pub fn read_certs(key: &str, file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .map_err(|e| format!("{key} {}: {e}", file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{key} {}: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{key} {}: no certificate found", file.display()));
    }
    Ok(certs)
}

/// The PEM private key of `file` (PKCS#8, PKCS#1 or SEC1); errors name `key` and the file.
pub fn read_key(key: &str, file: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(file).map_err(|e| format!("{key} {}: {e}", file.display()))
}

/// Build an acceptor from PEM files; errors name the file.
pub fn acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, String> {
    let certs = read_certs("tls.cert_file", cert_file)?;
    let key = read_key("tls.key_file", key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls.key_file {}: {e}", key_file.display()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
