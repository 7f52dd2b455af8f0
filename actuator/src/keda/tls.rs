//! TLS on the External Scaler port (`keda.tls.*`): tonic's rustls server with the ring
//! provider. With `client_ca_file`, a client certificate signed by that CA is required (mutual
//! TLS), which is what KEDA's `tlsClientCert`/`tlsClientKey` present.
//!
//! The files are read and checked the way tonic will use them (certificate chain, key, that the
//! key is the certificate's, the CA bundle), so that a bad file is a configuration problem at
//! start-up naming its key rather than a failure of the listener.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::KedaTlsConfig;

/// A client that has not finished its TLS handshake after this long is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Make ring the process's rustls provider unless one is set already: tonic's server builds its
/// rustls config with the process default, and this workspace compiles ring only (reqwest is
/// built without a provider of its own).
pub fn install_ring_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may install one in between: either way there is one afterwards.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn read(key: &str, file: &Path, problems: &mut Vec<String>) -> Option<Vec<u8>> {
    std::fs::read(file)
        .map_err(|e| problems.push(format!("{key} {}: {e}", file.display())))
        .ok()
}

/// The server's TLS settings: `Ok(None)` without a certificate (plain HTTP/2), every problem
/// of the files otherwise, each naming its key and file.
pub fn server_tls(cfg: &KedaTlsConfig) -> Result<Option<ServerTlsConfig>, Vec<String>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut problems = Vec::new();
    let identity = match (&cfg.cert_file, &cfg.key_file) {
        (None, None) => None,
        (Some(_), None) => {
            problems.push("keda.tls.key_file: required with keda.tls.cert_file".to_string());
            None
        }
        (None, Some(_)) => {
            problems.push("keda.tls.cert_file: required with keda.tls.key_file".to_string());
            None
        }
        (Some(c), Some(k)) => {
            let certs = crate::tls::read_certs("keda.tls.cert_file", c)
                .map_err(|e| problems.push(e))
                .ok();
            let key = crate::tls::read_key("keda.tls.key_file", k)
                .map_err(|e| problems.push(e))
                .ok();
            match (certs, key) {
                (Some(certs), Some(key)) => {
                    // As tonic builds it: the key must load and be the certificate's.
                    let built = rustls::ServerConfig::builder_with_provider(provider.clone())
                        .with_safe_default_protocol_versions()
                        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key));
                    match built {
                        Ok(_) => {
                            let cert = read("keda.tls.cert_file", c, &mut problems);
                            let key = read("keda.tls.key_file", k, &mut problems);
                            cert.zip(key).map(|(c, k)| Identity::from_pem(c, k))
                        }
                        Err(e) => {
                            problems.push(format!(
                                "keda.tls.key_file {}: {e} (is it the key of keda.tls.cert_file {}?)",
                                k.display(),
                                c.display()
                            ));
                            None
                        }
                    }
                }
                _ => None,
            }
        }
    };
    let client_ca = match &cfg.client_ca_file {
        None => None,
        Some(f) => {
            if cfg.cert_file.is_none() && cfg.key_file.is_none() {
                problems.push(format!(
                    "keda.tls.client_ca_file {}: needs keda.tls.cert_file and keda.tls.key_file (mutual TLS is TLS with a client certificate)",
                    f.display()
                ));
            }
            match crate::tls::read_certs("keda.tls.client_ca_file", f) {
                Err(e) => {
                    problems.push(e);
                    None
                }
                Ok(certs) => {
                    let mut roots = RootCertStore::empty();
                    let (added, _) = roots.add_parsable_certificates(certs);
                    let verifier = if added == 0 {
                        Err("no usable CA certificate".to_string())
                    } else {
                        WebPkiClientVerifier::builder_with_provider(
                            Arc::new(roots),
                            provider.clone(),
                        )
                        .build()
                        .map_err(|e| e.to_string())
                    };
                    match verifier {
                        Ok(_) => read("keda.tls.client_ca_file", f, &mut problems)
                            .map(Certificate::from_pem),
                        Err(e) => {
                            problems.push(format!("keda.tls.client_ca_file {}: {e}", f.display()));
                            None
                        }
                    }
                }
            }
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(identity.map(|id| {
        let tls = ServerTlsConfig::new()
            .identity(id)
            .timeout(HANDSHAKE_TIMEOUT);
        match client_ca {
            Some(ca) => tls.client_ca_root(ca),
            None => tls,
        }
    }))
}
