//! `audit.topic.*`: the optional copy of every audit record on a Kafka topic.

use std::path::PathBuf;
use std::time::Duration;

use medic_kafka::{SaslMechanism, SecurityProtocol};
use serde::{Deserialize, Serialize};

/// Default `audit.topic.name`.
pub const DEFAULT_AUDIT_TOPIC: &str = "kafka-medic-audit";
/// Default `audit.topic.queue_capacity`.
pub const DEFAULT_AUDIT_TOPIC_QUEUE: usize = 10_000;
/// Largest accepted `audit.topic.queue_capacity` (records waiting for Kafka, each a few hundred
/// bytes to a few kilobytes).
pub const MAX_AUDIT_TOPIC_QUEUE: usize = 1_000_000;

/// The Kafka topic sink of the audit log: off unless `bootstrap_servers` is set. The file stays
/// the source of truth; the topic gets a copy of every durable line, asynchronously.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditTopicConfig {
    /// `host:port` of one or more brokers; empty = no topic sink.
    pub bootstrap_servers: Vec<String>,
    /// The topic (it must exist, or the cluster must create topics on first use).
    pub name: String,
    /// plaintext, ssl, sasl_plaintext or sasl_ssl.
    pub security_protocol: String,
    /// CA bundle (PEM) for ssl and sasl_ssl.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS, with `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (sasl_plaintext, sasl_ssl).
    pub sasl_mechanism: Option<String>,
    /// SASL user.
    pub sasl_username: Option<String>,
    /// File holding the SASL password (its trailing line ending is cut).
    pub sasl_password_file: Option<PathBuf>,
    /// Most records waiting for Kafka (queued or unacknowledged); a record beyond it is dropped
    /// from the topic (never from the file) and counted.
    pub queue_capacity: usize,
    /// How long the producer retries one record before it counts as failed
    /// (librdkafka's `message.timeout.ms`).
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// How long shutdown waits for the records still waiting.
    #[serde(with = "humantime_serde")]
    pub flush_timeout: Duration,
}

impl Default for AuditTopicConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: Vec::new(),
            name: DEFAULT_AUDIT_TOPIC.into(),
            security_protocol: SecurityProtocol::Plaintext.as_str().into(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password_file: None,
            queue_capacity: DEFAULT_AUDIT_TOPIC_QUEUE,
            delivery_timeout: Duration::from_secs(30),
            flush_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether `name` is a legal Kafka topic name: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn topic_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name == "." || name == ".." {
        return Some(format!("{name:?} is not a legal topic name"));
    }
    if name.len() > 249 {
        return Some(format!(
            "{} characters is longer than Kafka's 249",
            name.len()
        ));
    }
    name.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .map(|c| {
            format!(
                "{name:?} has {c:?}; a topic name may only hold a-z, A-Z, 0-9, '.', '_' and '-'"
            )
        })
}

impl AuditTopicConfig {
    /// Whether the sink is on.
    pub fn enabled(&self) -> bool {
        !self.bootstrap_servers.is_empty()
    }

    /// The security protocol (plaintext when the setting does not parse; `problems` says so).
    pub fn protocol(&self) -> SecurityProtocol {
        self.security_protocol.parse().unwrap_or_default()
    }

    /// Every problem of the settings, each naming its key (`audit.topic.*`). Nothing is checked
    /// while the sink is off. Also reads the secret and certificate files, and asks librdkafka
    /// (as built into this binary) whether it takes the resulting producer settings.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.enabled() {
            return p;
        }
        for s in &self.bootstrap_servers {
            let ok = s
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                p.push(format!(
                    "audit.topic.bootstrap_servers: {s:?} is not host:port"
                ));
            }
        }
        if let Some(why) = topic_name_problem(&self.name) {
            p.push(format!("audit.topic.name: {why}"));
        }
        let protocol = match self.security_protocol.parse::<SecurityProtocol>() {
            Ok(x) => x,
            Err(e) => {
                p.push(format!("audit.topic.security_protocol: {e}"));
                SecurityProtocol::Plaintext
            }
        };
        if protocol.uses_sasl() {
            match self.sasl_mechanism.as_deref().map(str::parse::<SaslMechanism>) {
                None => p.push(format!(
                    "audit.topic.sasl_mechanism: required with security_protocol {protocol} (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
                )),
                Some(Err(_)) | Some(Ok(SaslMechanism::OAuthBearer | SaslMechanism::AwsMskIam)) => {
                    p.push(format!(
                        "audit.topic.sasl_mechanism: {:?} is not supported for the audit topic; expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                        self.sasl_mechanism.as_deref().unwrap_or_default()
                    ))
                }
                Some(Ok(_)) => {}
            }
            if self.sasl_username.as_deref().is_none_or(str::is_empty) {
                p.push(format!(
                    "audit.topic.sasl_username: required with security_protocol {protocol}"
                ));
            }
            if self.sasl_password_file.is_none() {
                p.push(format!(
                    "audit.topic.sasl_password_file: required with security_protocol {protocol}"
                ));
            }
        } else {
            for (key, set) in [
                ("sasl_mechanism", self.sasl_mechanism.is_some()),
                ("sasl_username", self.sasl_username.is_some()),
                ("sasl_password_file", self.sasl_password_file.is_some()),
            ] {
                if set {
                    p.push(format!(
                        "audit.topic.{key}: set, but security_protocol {protocol} does not use SASL"
                    ));
                }
            }
        }
        if !protocol.uses_tls() {
            for (key, set) in [
                ("tls_ca_file", self.tls_ca_file.is_some()),
                ("tls_cert_file", self.tls_cert_file.is_some()),
                ("tls_key_file", self.tls_key_file.is_some()),
            ] {
                if set {
                    p.push(format!(
                        "audit.topic.{key}: set, but security_protocol {protocol} does not use TLS"
                    ));
                }
            }
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            p.push(
                "audit.topic.tls_cert_file: tls_cert_file and tls_key_file must be given together"
                    .into(),
            );
        }
        for (key, file) in [
            ("tls_ca_file", &self.tls_ca_file),
            ("tls_cert_file", &self.tls_cert_file),
            ("tls_key_file", &self.tls_key_file),
            ("sasl_password_file", &self.sasl_password_file),
        ] {
            if let Some(f) = file {
                if let Err(e) = std::fs::read(f) {
                    p.push(format!(
                        "audit.topic.{key}: cannot read {}: {e}",
                        f.display()
                    ));
                }
            }
        }
        if self.queue_capacity == 0 || self.queue_capacity > MAX_AUDIT_TOPIC_QUEUE {
            p.push(format!(
                "audit.topic.queue_capacity: {} must be between 1 and {MAX_AUDIT_TOPIC_QUEUE}",
                self.queue_capacity
            ));
        }
        if self.delivery_timeout < Duration::from_secs(1)
            || self.delivery_timeout > Duration::from_secs(24 * 3600)
        {
            p.push(format!(
                "audit.topic.delivery_timeout: {} must be between 1s and 24h",
                humantime::format_duration(self.delivery_timeout)
            ));
        }
        if self.flush_timeout > Duration::from_secs(600) {
            p.push(format!(
                "audit.topic.flush_timeout: {} is above 10m",
                humantime::format_duration(self.flush_timeout)
            ));
        }
        if p.is_empty() {
            // Only librdkafka knows what this build supports (TLS and SCRAM need OpenSSL).
            p.extend(crate::audit::topic::librdkafka_problems(self));
        }
        p
    }
}
