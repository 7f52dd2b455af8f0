//! One layer of settings: every field optional, filled from flags, the environment or the file.
//!
//! The same structs are parsed by clap (flags, and environment variables turned into flags) and
//! by serde (the YAML file), so a setting is declared once and has one name everywhere:
//! `audit.max_files` in the file, `--audit-max-files` as a flag, `MEDIC_ACTUATOR_AUDIT_MAX_FILES`
//! in the environment. The clap id of each argument is the dotted key; the defaults live in
//! [`super::Config`]'s `Default` and are shown in `--help` from there.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::telemetry::LogFormat;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| e.to_string())
}

fn number<T: FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.trim().parse::<T>().map_err(|e| e.to_string())
}

fn boolean(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (true/false)")),
    }
}

fn text(s: &str) -> Result<String, String> {
    Ok(s.trim().to_string())
}

fn path(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(s.trim()))
}

fn log_format(s: &str) -> Result<LogFormat, String> {
    LogFormat::from_str(s.trim())
}

/// Every medic-actuator setting. See `medic-actuator --help` for each one's meaning.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Address and port of the HTTP listener.
    #[arg(id = "listen", long = "listen", value_name = "ADDR:PORT", value_parser = number::<SocketAddr>)]
    pub listen: Option<SocketAddr>,
    /// Policy file, YAML (required).
    #[arg(id = "policies_file", long = "policies-file", value_name = "FILE", value_parser = path)]
    pub policies_file: Option<PathBuf>,
    /// Name of this actuator in audit records and annotations (default: $HOSTNAME).
    #[arg(id = "instance", long = "instance", value_name = "NAME", value_parser = text)]
    pub instance: Option<String>,
    /// Decide and audit, but never patch.
    #[arg(id = "dry_run", long = "dry-run", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = boolean)]
    pub dry_run: Option<bool>,
    /// Start paused (decisions are audited as skipped/paused).
    #[arg(id = "paused", long = "paused", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = boolean)]
    pub paused: Option<bool>,
    /// Run without authentication (trusted loopback only).
    #[arg(id = "insecure_no_auth", long = "insecure-no-auth", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = boolean)]
    pub insecure_no_auth: Option<bool>,
    /// Authentication of the HTTP API.
    #[command(flatten)]
    #[serde(default)]
    pub auth: AuthLayer,
    /// TLS on the listener.
    #[command(flatten)]
    #[serde(default)]
    pub tls: TlsLayer,
    /// Largest request body, bytes (413 above).
    #[arg(id = "body_limit_bytes", long = "body-limit-bytes", value_name = "BYTES", value_parser = number::<u64>)]
    pub body_limit_bytes: Option<u64>,
    /// Limits of the HTTP server against slow and idle clients.
    #[command(flatten)]
    #[serde(default)]
    pub http: HttpLayer,
    /// KEDA's External Scaler gRPC service.
    #[command(flatten)]
    #[serde(default)]
    pub keda: KedaLayer,
    /// The audit log.
    #[command(flatten)]
    #[serde(default)]
    pub audit: AuditLayer,
    /// The Kubernetes API.
    #[command(flatten)]
    #[serde(default)]
    pub kubernetes: KubernetesLayer,
    /// Prometheus.
    #[command(flatten)]
    #[serde(default)]
    pub prometheus: PrometheusLayer,
    /// Re-evaluation interval of firing (and resolved, until settled) lag alerts.
    #[arg(id = "reevaluate_interval", long = "reevaluate-interval", value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub reevaluate_interval: Option<Duration>,
    /// A delivery (fingerprint, status, startsAt) seen within this window is a duplicate.
    #[arg(id = "dedupe_window", long = "dedupe-window", value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub dedupe_window: Option<Duration>,
    /// Forget firing alerts not re-sent for this long (set it above the route's repeat_interval).
    #[arg(id = "alert_ttl", long = "alert-ttl", value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub alert_ttl: Option<Duration>,
    /// How often the config and policy files are checked for a change, which is reloaded like
    /// SIGHUP does (0s: on SIGHUP only).
    #[arg(id = "config_watch_interval", long = "config-watch-interval", value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub config_watch_interval: Option<Duration>,
    /// Log format: auto (json unless stderr is a terminal), json or text (alias: plain).
    #[arg(id = "log_format", long = "log-format", value_name = "FORMAT", value_parser = log_format)]
    pub log_format: Option<LogFormat>,
    /// Leader election through a Lease.
    #[command(flatten)]
    #[serde(default)]
    pub leader_election: LeaderElectionLayer,
}

/// `leader_election.*`
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LeaderElectionLayer {
    /// Run for leadership through a coordination.k8s.io/v1 Lease; off: this replica always
    /// leads (run one replica).
    #[arg(id = "leader_election.enabled", long = "leader-election-enabled", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = boolean)]
    pub enabled: Option<bool>,
    /// Name of the Lease.
    #[arg(id = "leader_election.lease_name", long = "leader-election-lease-name", value_name = "NAME", value_parser = text)]
    pub lease_name: Option<String>,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else the client's namespace).
    #[arg(id = "leader_election.namespace", long = "leader-election-namespace", value_name = "NAMESPACE", value_parser = text)]
    pub namespace: Option<String>,
    /// This replica's identity in the Lease, unique per replica (default: $POD_NAME, else $HOSTNAME).
    #[arg(id = "leader_election.identity", long = "leader-election-identity", value_name = "NAME", value_parser = text)]
    pub identity: Option<String>,
    /// A Lease unchanged for this long (on the observer's clock) may be taken over; whole seconds.
    #[arg(id = "leader_election.lease_duration", long = "leader-election-lease-duration", value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub lease_duration: Option<Duration>,
    /// The leader steps down when it has not renewed for this long (below lease_duration).
    #[arg(id = "leader_election.renew_deadline", long = "leader-election-renew-deadline", value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub renew_deadline: Option<Duration>,
    /// Time between attempts to acquire or renew (below renew_deadline).
    #[arg(id = "leader_election.retry_period", long = "leader-election-retry-period", value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub retry_period: Option<Duration>,
}

/// `auth.*`
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthLayer {
    /// Bearer token file (trailing whitespace ignored).
    #[arg(id = "auth.bearer_token_file", long = "auth-bearer-token-file", value_name = "FILE", value_parser = path)]
    pub bearer_token_file: Option<PathBuf>,
    /// Basic-auth user name (with auth.basic_password_file).
    #[arg(id = "auth.basic_username", long = "auth-basic-username", value_name = "USER", value_parser = text)]
    pub basic_username: Option<String>,
    /// Basic-auth password file.
    #[arg(id = "auth.basic_password_file", long = "auth-basic-password-file", value_name = "FILE", value_parser = path)]
    pub basic_password_file: Option<PathBuf>,
}

/// `tls.*`
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsLayer {
    /// TLS certificate chain, PEM (with tls.key_file).
    #[arg(id = "tls.cert_file", long = "tls-cert-file", value_name = "FILE", value_parser = path)]
    pub cert_file: Option<PathBuf>,
    /// TLS private key, PEM: PKCS#8, PKCS#1 or SEC1 (with tls.cert_file).
    #[arg(id = "tls.key_file", long = "tls-key-file", value_name = "FILE", value_parser = path)]
    pub key_file: Option<PathBuf>,
}

/// `keda.*`
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KedaLayer {
    /// Address and port of KEDA's External Scaler gRPC listener (unset: not served).
    #[arg(id = "keda.listen", long = "keda-listen", value_name = "ADDR:PORT", value_parser = number::<SocketAddr>)]
    pub listen: Option<SocketAddr>,
    /// TLS on the External Scaler port.
    #[command(flatten)]
    #[serde(default)]
    pub tls: KedaTlsLayer,
    /// How often Prometheus's ALERTS is read for firing KafkaConsumerLagPersistent alerts (level-
    /// triggered IsActive, with prometheus.url).
    #[arg(id = "keda.alerts_poll_interval", long = "keda-alerts-poll-interval", value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub alerts_poll_interval: Option<Duration>,
}

/// `keda.tls.*`
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KedaTlsLayer {
    /// External Scaler TLS certificate chain, PEM (with keda.tls.key_file).
    #[arg(id = "keda.tls.cert_file", long = "keda-tls-cert-file", value_name = "FILE", value_parser = path)]
    pub cert_file: Option<PathBuf>,
    /// External Scaler TLS private key, PEM: PKCS#8, PKCS#1 or SEC1 (with keda.tls.cert_file).
    #[arg(id = "keda.tls.key_file", long = "keda-tls-key-file", value_name = "FILE", value_parser = path)]
    pub key_file: Option<PathBuf>,
    /// CA bundle, PEM: when set, KEDA must present a client certificate signed by it (mutual TLS).
    #[arg(id = "keda.tls.client_ca_file", long = "keda-tls-client-ca-file", value_name = "FILE", value_parser = path)]
    pub client_ca_file: Option<PathBuf>,
}

/// `http.*`
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpLayer {
    /// Time to send a complete request head (and finish a TLS handshake); also bounds the wait
    /// for the next request on a kept-alive connection.
    #[arg(id = "http.header_read_timeout", long = "http-header-read-timeout", value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub header_read_timeout: Option<Duration>,
    /// Close a connection with no request in flight after this long.
    #[arg(id = "http.idle_timeout", long = "http-idle-timeout", value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// Most connections open at once, kept below the open-file limit; at the cap the oldest
    /// connection with no request in flight is closed to make room.
    #[arg(id = "http.max_connections", long = "http-max-connections", value_name = "N", value_parser = number::<usize>)]
    pub max_connections: Option<usize>,
}

/// `audit.*`
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditLayer {
    /// Audit log file (JSON lines); rotated files get .1, .2, ...
    #[arg(id = "audit.path", long = "audit-path", value_name = "FILE", value_parser = path)]
    pub path: Option<PathBuf>,
    /// Rotate the audit log at this size, bytes (at least 65536).
    #[arg(id = "audit.max_bytes", long = "audit-max-bytes", value_name = "BYTES", value_parser = number::<u64>)]
    pub max_bytes: Option<u64>,
    /// Rotated audit files kept (at least 1).
    #[arg(id = "audit.max_files", long = "audit-max-files", value_name = "N", value_parser = number::<usize>)]
    pub max_files: Option<usize>,
    /// A copy of every audit record on a Kafka topic.
    #[command(flatten)]
    #[serde(default)]
    pub topic: AuditTopicLayer,
}

/// A list of `host:port`: a YAML list, or one string with commas (flags and variables).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(transparent)]
pub struct ServerList(pub Vec<String>);

impl ServerList {
    fn parse(s: &str) -> Self {
        Self(
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect(),
        )
    }
}

impl<'de> Deserialize<'de> for ServerList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            One(String),
            Many(Vec<String>),
        }
        match Either::deserialize(d) {
            Ok(Either::One(s)) => Ok(Self::parse(&s)),
            Ok(Either::Many(v)) => Ok(Self(v.iter().map(|x| x.trim().to_string()).collect())),
            Err(_) => Err(serde::de::Error::custom(
                "expected a list of host:port, or one string of them separated by commas",
            )),
        }
    }
}

fn server_list(s: &str) -> Result<ServerList, String> {
    Ok(ServerList::parse(s))
}

/// `audit.topic.*`
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditTopicLayer {
    /// Kafka brokers (host:port, comma separated) for a copy of every audit record on a topic;
    /// unset: no topic.
    #[arg(id = "audit.topic.bootstrap_servers", long = "audit-topic-bootstrap-servers", value_name = "HOST:PORT,...", value_parser = server_list)]
    pub bootstrap_servers: Option<ServerList>,
    /// The audit topic.
    #[arg(id = "audit.topic.name", long = "audit-topic-name", value_name = "TOPIC", value_parser = text)]
    pub name: Option<String>,
    /// plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(id = "audit.topic.security_protocol", long = "audit-topic-security-protocol", value_name = "PROTOCOL", value_parser = text)]
    pub security_protocol: Option<String>,
    /// CA bundle, PEM (ssl, sasl_ssl).
    #[arg(id = "audit.topic.tls_ca_file", long = "audit-topic-tls-ca-file", value_name = "FILE", value_parser = path)]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate, PEM, for mutual TLS (with audit.topic.tls_key_file).
    #[arg(id = "audit.topic.tls_cert_file", long = "audit-topic-tls-cert-file", value_name = "FILE", value_parser = path)]
    pub tls_cert_file: Option<PathBuf>,
    /// Client key, PEM, for mutual TLS (with audit.topic.tls_cert_file).
    #[arg(id = "audit.topic.tls_key_file", long = "audit-topic-tls-key-file", value_name = "FILE", value_parser = path)]
    pub tls_key_file: Option<PathBuf>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (sasl_plaintext, sasl_ssl).
    #[arg(id = "audit.topic.sasl_mechanism", long = "audit-topic-sasl-mechanism", value_name = "MECHANISM", value_parser = text)]
    pub sasl_mechanism: Option<String>,
    /// SASL user.
    #[arg(id = "audit.topic.sasl_username", long = "audit-topic-sasl-username", value_name = "USER", value_parser = text)]
    pub sasl_username: Option<String>,
    /// File holding the SASL password.
    #[arg(id = "audit.topic.sasl_password_file", long = "audit-topic-sasl-password-file", value_name = "FILE", value_parser = path)]
    pub sasl_password_file: Option<PathBuf>,
    /// Most records waiting for Kafka; beyond it a record is dropped from the topic (never from
    /// the file) and counted.
    #[arg(id = "audit.topic.queue_capacity", long = "audit-topic-queue-capacity", value_name = "N", value_parser = number::<usize>)]
    pub queue_capacity: Option<usize>,
    /// How long the producer retries a record before it counts as failed.
    #[arg(id = "audit.topic.delivery_timeout", long = "audit-topic-delivery-timeout", value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub delivery_timeout: Option<Duration>,
    /// How long shutdown waits for the records still waiting for Kafka.
    #[arg(id = "audit.topic.flush_timeout", long = "audit-topic-flush-timeout", value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub flush_timeout: Option<Duration>,
}

/// `kubernetes.*`
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesLayer {
    /// Plain-HTTP Kubernetes API URL (e.g. kubectl proxy); unset = in-cluster or kubeconfig.
    #[arg(id = "kubernetes.api_url", long = "kubernetes-api-url", value_name = "URL", value_parser = text)]
    pub api_url: Option<String>,
    /// Timeout of one Kubernetes request.
    #[arg(id = "kubernetes.request_timeout", long = "kubernetes-request-timeout", value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    /// Attempts on 5xx, 429 and transport errors.
    #[arg(id = "kubernetes.retry_attempts", long = "kubernetes-retry-attempts", value_name = "N", value_parser = number::<u32>)]
    pub retry_attempts: Option<u32>,
    /// First backoff delay, doubled per attempt, at most 2s.
    #[arg(id = "kubernetes.retry_backoff", long = "kubernetes-retry-backoff", value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub retry_backoff: Option<Duration>,
    /// Fresh reads after a 409 conflict before giving up.
    #[arg(id = "kubernetes.conflict_retries", long = "kubernetes-conflict-retries", value_name = "N", value_parser = number::<u32>)]
    pub conflict_retries: Option<u32>,
    /// Reuse of a namespace's HorizontalPodAutoscaler and ScaledObject list (0s: list before
    /// every scaling decision).
    #[arg(id = "kubernetes.autoscaler_cache_ttl", long = "kubernetes-autoscaler-cache-ttl", value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub autoscaler_cache_ttl: Option<Duration>,
}

/// `prometheus.*`
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrometheusLayer {
    /// Prometheus base URL; unset = use the alert's lag_offsets annotation.
    #[arg(id = "prometheus.url", long = "prometheus-url", value_name = "URL", value_parser = text)]
    pub url: Option<String>,
    /// Timeout of one Prometheus query.
    #[arg(id = "prometheus.timeout", long = "prometheus-timeout", value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}
