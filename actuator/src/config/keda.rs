//! `keda.*`: KEDA's External Scaler gRPC service, its TLS and its `ALERTS` poll.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default `keda.alerts_poll_interval`.
pub const DEFAULT_KEDA_ALERTS_POLL_INTERVAL: Duration = Duration::from_secs(15);

/// Shortest accepted `keda.alerts_poll_interval`.
pub const KEDA_MIN_ALERTS_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// KEDA's External Scaler gRPC service (off unless `listen` is set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KedaConfig {
    /// Address and port of the gRPC listener; unset = not served.
    pub listen: Option<SocketAddr>,
    /// TLS on the gRPC listener (plain HTTP/2 without a certificate).
    pub tls: KedaTlsConfig,
    /// How often Prometheus's `ALERTS` is read for the groups whose `KafkaConsumerLagPersistent`
    /// fires (with `prometheus.url`; the webhooks are the only source without one).
    #[serde(with = "humantime_serde")]
    pub alerts_poll_interval: Duration,
}

impl Default for KedaConfig {
    fn default() -> Self {
        Self {
            listen: None,
            tls: KedaTlsConfig::default(),
            alerts_poll_interval: DEFAULT_KEDA_ALERTS_POLL_INTERVAL,
        }
    }
}

/// TLS on the External Scaler port: a server certificate and key (both or neither), and
/// optionally the CA that must have signed the client's certificate (mutual TLS).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KedaTlsConfig {
    /// PEM certificate chain of the server (its names must match KEDA's `scalerAddress` host).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the server (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle; when set, a client must present a certificate signed by it.
    pub client_ca_file: Option<PathBuf>,
}

impl KedaConfig {
    /// Every problem of the settings, each naming its key. Reads the TLS files: a missing,
    /// unparsable or mismatched one stops the start.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.alerts_poll_interval < KEDA_MIN_ALERTS_POLL_INTERVAL {
            p.push(format!(
                "keda.alerts_poll_interval: {} is below {}",
                humantime::format_duration(self.alerts_poll_interval),
                humantime::format_duration(KEDA_MIN_ALERTS_POLL_INTERVAL)
            ));
        }
        if let Err(tls) = crate::keda::tls::server_tls(&self.tls) {
            p.extend(tls);
        }
        p
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use crate::config::{Config, ConfigError};

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(
                dir.path().join("policies.yaml"),
                "policies:\n  - {cluster: prod, consumergroup: orders, deployment: {namespace: shop, name: orders}}\n",
            )
            .unwrap();
            let f = Self { dir };
            let server = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
            let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
            f.write("server.pem", &server.cert.pem());
            f.write("server.key", &server.signing_key.serialize_pem());
            f.write("other.key", &other.signing_key.serialize_pem());
            f.write("ca.pem", &other.cert.pem());
            f.write("garbage.pem", "not a certificate\n");
            f
        }
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.path(name);
            std::fs::write(&p, text).unwrap();
            p
        }
        fn load(&self, extra: &[String]) -> Result<Config, ConfigError> {
            let mut args = vec![
                "--policies-file".to_string(),
                self.path("policies.yaml").display().to_string(),
                "--insecure-no-auth".to_string(),
            ];
            args.extend(extra.iter().cloned());
            Config::load(args, &BTreeMap::new())
        }
    }

    fn problems(r: Result<Config, ConfigError>) -> Vec<String> {
        match r {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected invalid settings, got {other:?}"),
        }
    }

    fn flag(name: &str, p: &Path) -> String {
        format!("--{name}={}", p.display())
    }

    #[test]
    fn defaults_and_every_source_reach_the_keys() {
        let f = Files::new();
        let c = f.load(&[]).unwrap();
        assert_eq!(c.keda.alerts_poll_interval, Duration::from_secs(15));
        assert_eq!(c.keda.tls, super::KedaTlsConfig::default());
        let file = f.write(
            "c.yaml",
            &format!(
                "keda:\n  listen: 127.0.0.1:9096\n  alerts_poll_interval: 30s\n  tls:\n    cert_file: {}\n    key_file: {}\n",
                f.path("server.pem").display(),
                f.path("server.key").display()
            ),
        );
        let env = BTreeMap::from([(
            "MEDIC_ACTUATOR_KEDA_TLS_CLIENT_CA_FILE".to_string(),
            f.path("ca.pem").display().to_string(),
        )]);
        let args = vec![
            "--policies-file".to_string(),
            f.path("policies.yaml").display().to_string(),
            "--insecure-no-auth".to_string(),
            format!("--config={}", file.display()),
            "--keda-alerts-poll-interval=5s".to_string(),
        ];
        let c = Config::load(args, &env).unwrap();
        assert_eq!(c.keda.listen, Some("127.0.0.1:9096".parse().unwrap()));
        assert_eq!(
            c.keda.alerts_poll_interval,
            Duration::from_secs(5),
            "flag wins"
        );
        assert_eq!(c.keda.tls.cert_file, Some(f.path("server.pem")));
        assert_eq!(c.keda.tls.key_file, Some(f.path("server.key")));
        assert_eq!(c.keda.tls.client_ca_file, Some(f.path("ca.pem")));
        let tls = crate::keda::tls::server_tls(&c.keda.tls).unwrap();
        assert!(tls.is_some(), "valid files give a TLS config");
    }

    #[test]
    fn bad_tls_files_are_refused_at_start_all_at_once_naming_each_key() {
        let f = Files::new();
        let missing = f.path("missing.key");
        let got = problems(f.load(&[
            flag("keda-tls-cert-file", &f.path("garbage.pem")),
            flag("keda-tls-key-file", &missing),
            flag("keda-tls-client-ca-file", &f.path("garbage.pem")),
            "--keda-alerts-poll-interval=0s".into(),
        ]));
        let garbage = f.path("garbage.pem").display().to_string();
        assert_eq!(
            got,
            vec![
                "keda.alerts_poll_interval: 0s is below 1s".to_string(),
                format!("keda.tls.cert_file {garbage}: no certificate found"),
                format!("keda.tls.key_file {}: {}", missing.display(), {
                    use rustls::pki_types::pem::PemObject;
                    rustls::pki_types::PrivateKeyDer::from_pem_file(&missing).unwrap_err()
                }),
                format!("keda.tls.client_ca_file {garbage}: no certificate found"),
            ]
        );

        // A key that is not the certificate's; a CA file without a server certificate.
        let got = problems(f.load(&[
            flag("keda-tls-cert-file", &f.path("server.pem")),
            flag("keda-tls-key-file", &f.path("other.key")),
        ]));
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0].starts_with(&format!(
                "keda.tls.key_file {}: ",
                f.path("other.key").display()
            )) && got[0].contains("(is it the key of keda.tls.cert_file"),
            "{got:#?}"
        );
        let got = problems(f.load(&[flag("keda-tls-client-ca-file", &f.path("ca.pem"))]));
        assert_eq!(
            got,
            vec![format!(
                "keda.tls.client_ca_file {}: needs keda.tls.cert_file and keda.tls.key_file (mutual TLS is TLS with a client certificate)",
                f.path("ca.pem").display()
            )]
        );
        let got = problems(f.load(&[flag("keda-tls-cert-file", &f.path("server.pem"))]));
        assert_eq!(
            got,
            vec!["keda.tls.key_file: required with keda.tls.cert_file".to_string()]
        );
    }
}
