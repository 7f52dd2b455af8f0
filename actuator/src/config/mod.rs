//! medic-actuator configuration: a YAML file, `MEDIC_ACTUATOR_*` environment variables and
//! flags, declared once in [`layer::Layer`].
//!
//! Precedence, highest first: flag, environment, file, default. [`Config::load`] takes the
//! arguments and the environment as values (tests pass a map), reads each source one setting at
//! a time ([`sources`]), merges them and validates the result, reporting every problem at once.

mod audit_topic;
mod keda;
mod layer;
mod sources;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use audit_topic::{AuditTopicConfig, DEFAULT_AUDIT_TOPIC, DEFAULT_AUDIT_TOPIC_QUEUE};
pub use keda::{
    KedaConfig, KedaTlsConfig, DEFAULT_KEDA_ALERTS_POLL_INTERVAL, KEDA_MIN_ALERTS_POLL_INTERVAL,
};
pub use layer::Layer;
pub use sources::{command, env_name, keys, Cli, Origin};

use crate::policy::{Policies, PolicyError};
use crate::telemetry::LogFormat;

/// Prefix of every environment variable.
pub const ENV_PREFIX: &str = "MEDIC_ACTUATOR_";

/// Configuration errors; every problem is reported at once.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--help` or `--version`: clap prints these itself (exit 0).
    #[error("{0}")]
    Help(clap::Error),
    /// The YAML did not parse (the message names the key, line and column).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// One or more settings are invalid.
    #[error("invalid configuration ({source_desc}):\n  - {}", problems.join("\n  - "))]
    Invalid {
        /// Where the configuration came from.
        source_desc: String,
        /// One line per problem, naming the key and the value.
        problems: Vec<String>,
    },
}

/// Authentication of the HTTP API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// File holding the bearer token (trailing whitespace ignored). Alertmanager's
    /// `http_config.authorization.credentials_file` should point at the same secret.
    pub bearer_token_file: Option<PathBuf>,
    /// User name for HTTP basic auth (needs `basic_password_file`).
    pub basic_username: Option<String>,
    /// File holding the basic-auth password.
    pub basic_password_file: Option<PathBuf>,
}

/// TLS on the listener (both files or neither).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// The audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The current audit file (JSON lines). Rotated files get `.1`, `.2`, ...
    pub path: PathBuf,
    /// Rotate when the file reaches this many bytes (at least 65536).
    pub max_bytes: u64,
    /// Rotated files to keep (at least 1: the file just rotated is always kept).
    pub max_files: usize,
    /// A copy of every record on a Kafka topic (off unless `topic.bootstrap_servers` is set).
    pub topic: AuditTopicConfig,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/medic-actuator/audit.log"),
            max_bytes: 16 * 1024 * 1024,
            max_files: 5,
            topic: AuditTopicConfig::default(),
        }
    }
}

/// Smallest accepted `audit.max_bytes`: one file holds at least 64 records of 1 KiB (a
/// decision record is a few hundred bytes).
pub const AUDIT_MIN_MAX_BYTES: u64 = 64 * 1024;

/// Smallest accepted `audit.max_files`: rotation always keeps the file just closed, so the
/// newest `audit.max_bytes` of answered records (and the highest `seq`) survive a rotation.
pub const AUDIT_MIN_MAX_FILES: usize = 1;

impl AuditConfig {
    /// Every problem with the audit settings, naming the key, the value and why.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.path.as_os_str().is_empty() {
            p.push("audit.path: must not be empty".into());
        }
        if self.max_bytes < AUDIT_MIN_MAX_BYTES {
            p.push(format!(
                "audit.max_bytes: {} is below {AUDIT_MIN_MAX_BYTES}; a smaller file would rotate every few records and answered records would soon be dropped",
                self.max_bytes
            ));
        }
        if self.max_files < AUDIT_MIN_MAX_FILES {
            p.push(format!(
                "audit.max_files: {} must be at least {AUDIT_MIN_MAX_FILES}; with no rotated file kept, each rotation would delete the records just answered and restart seq at 1",
                self.max_files
            ));
        }
        p.extend(self.topic.problems());
        p
    }
}

/// Limits of the HTTP server against slow and idle clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Time a connection has to send a complete request head (and finish a TLS handshake);
    /// also bounds the wait for the next request on a kept-alive connection.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most connections open at once (lowered to fit the open-file limit). At the cap the
    /// oldest connection with no request in flight is closed to make room.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: medic_http::DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: medic_http::DEFAULT_IDLE_TIMEOUT,
            max_connections: medic_http::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl HttpConfig {
    /// The server settings, with `shutdown_grace` for requests in flight at shutdown.
    pub fn settings(&self, shutdown_grace: Duration) -> medic_http::Settings {
        medic_http::Settings {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            shutdown_grace,
        }
    }
}

/// The Kubernetes API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Plain-HTTP API URL (e.g. `kubectl proxy`); unset = in-cluster ServiceAccount or kubeconfig.
    pub api_url: Option<String>,
    /// Timeout of one API request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Attempts for a request failing with 5xx, 429 or a transport error.
    pub retry_attempts: u32,
    /// First backoff delay; doubled per attempt, at most 2s.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Fresh reads after a 409 conflict before giving up.
    pub conflict_retries: u32,
    /// How long a namespace's HorizontalPodAutoscalers and KEDA ScaledObjects are reused before
    /// they are listed again (0s: list before every scaling decision).
    #[serde(with = "humantime_serde")]
    pub autoscaler_cache_ttl: Duration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            api_url: None,
            request_timeout: Duration::from_secs(5),
            retry_attempts: 4,
            retry_backoff: Duration::from_millis(100),
            conflict_retries: 3,
            autoscaler_cache_ttl: Duration::from_secs(30),
        }
    }
}

/// Prometheus, for fresh lag and broker alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://prometheus:9090`; unset = use the alert's `lag_offsets` annotation.
    pub url: Option<String>,
    /// Timeout of one query.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            url: None,
            timeout: Duration::from_secs(2),
        }
    }
}

/// The actuator's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port of the HTTP listener.
    pub listen: SocketAddr,
    /// The policy file (YAML).
    pub policies_file: Option<PathBuf>,
    /// Name of this actuator in audit records and annotations (default: $HOSTNAME).
    pub instance: Option<String>,
    /// Decide and audit, but never patch.
    pub dry_run: bool,
    /// Start paused (decisions are audited as skipped/paused). Wins over a resume in the audit log.
    pub paused: bool,
    /// Serve without authentication. Only for tests on a trusted loopback.
    pub insecure_no_auth: bool,
    /// Authentication.
    pub auth: AuthConfig,
    /// TLS on the listener.
    pub tls: TlsConfig,
    /// Largest accepted request body in bytes (413 above).
    pub body_limit_bytes: u64,
    /// Limits of the HTTP server against slow and idle clients.
    pub http: HttpConfig,
    /// KEDA's External Scaler gRPC service.
    pub keda: KedaConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// The Kubernetes API.
    pub kubernetes: KubernetesConfig,
    /// Prometheus.
    pub prometheus: PrometheusConfig,
    /// How often firing (and resolved, until settled) lag alerts are re-evaluated.
    #[serde(with = "humantime_serde")]
    pub reevaluate_interval: Duration,
    /// A delivery (fingerprint, status, startsAt) seen within this window is a duplicate.
    #[serde(with = "humantime_serde")]
    pub dedupe_window: Duration,
    /// A firing alert not re-sent by Alertmanager for this long is forgotten (set it above the
    /// route's repeat_interval).
    #[serde(with = "humantime_serde")]
    pub alert_ttl: Duration,
    /// How often the config and policy files are checked for a change (reloaded as on SIGHUP);
    /// 0s: on SIGHUP only.
    #[serde(with = "humantime_serde")]
    pub config_watch_interval: Duration,
    /// Log format: auto, json or text (`plain` is accepted for text).
    pub log_format: LogFormat,
    /// Leader election through a Lease (broker remediation and periodic work on one replica).
    pub leader_election: crate::leader::LeaderElectionConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9095)),
            policies_file: None,
            instance: None,
            dry_run: false,
            paused: false,
            insecure_no_auth: false,
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            body_limit_bytes: 1024 * 1024,
            http: HttpConfig::default(),
            keda: KedaConfig::default(),
            audit: AuditConfig::default(),
            kubernetes: KubernetesConfig::default(),
            prometheus: PrometheusConfig::default(),
            reevaluate_interval: Duration::from_secs(30),
            dedupe_window: Duration::from_secs(600),
            alert_ttl: Duration::from_secs(6 * 3600),
            config_watch_interval: Duration::from_secs(5),
            log_format: LogFormat::Auto,
            leader_election: crate::leader::LeaderElectionConfig::default(),
        }
    }
}

impl Config {
    /// Builds the configuration from the arguments (without the program name), the
    /// environment and the file named by `--config` or `MEDIC_ACTUATOR_CONFIG`: defaults, then
    /// the file, then the environment, then the flags. Every problem of every source is
    /// reported at once.
    pub fn load<I, T>(args: I, env: &BTreeMap<String, String>) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let (config_flag, flag_leaves, mut problems) =
            sources::flags(&args).map_err(ConfigError::Help)?;
        let (env_leaves, env_problems) = sources::environment(env);
        problems.extend(env_problems);
        let file =
            config_flag.or_else(|| env.get(&format!("{ENV_PREFIX}CONFIG")).map(PathBuf::from));
        let mut merged = sources::Leaves::new();
        let mut origins = BTreeMap::new();
        if let Some(path) = &file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let (leaves, file_problems) = sources::file(&text, path);
                    problems.extend(file_problems);
                    for key in leaves.keys() {
                        origins.insert(key.clone(), Origin::File(path.clone()));
                    }
                    merged.extend(leaves);
                }
                Err(e) => problems.push(format!("cannot read config file {}: {e}", path.display())),
            }
        }
        for (leaves, origin) in [(env_leaves, Origin::Env), (flag_leaves, Origin::Flag)] {
            for key in leaves.keys() {
                origins.insert(key.clone(), origin.clone());
            }
            merged.extend(leaves);
        }
        let cfg = match serde_json::from_value::<Config>(sources::tree(&merged)) {
            Ok(cfg) => Some(cfg),
            Err(_) => {
                // A value of the right type in its own source that the setting cannot take
                // (an empty one): name each.
                for (key, value) in &merged {
                    let one = sources::tree(&BTreeMap::from([(key.clone(), value.clone())]));
                    if let Err(e) = serde_json::from_value::<Config>(one) {
                        let at = origins
                            .get(key)
                            .map(|o| o.describe(key))
                            .unwrap_or_else(|| key.clone());
                        problems.push(format!("{at}: {e}"));
                    }
                }
                None
            }
        };
        if let Some(cfg) = &cfg {
            problems.extend(cfg.validate());
        }
        match cfg {
            Some(cfg) if problems.is_empty() => Ok(cfg),
            _ => Err(ConfigError::Invalid {
                source_desc: file
                    .map(|p| format!("file {}, environment and flags", p.display()))
                    .unwrap_or_else(|| "environment and flags".into()),
                problems,
            }),
        }
    }

    /// Parses a YAML config file on its own (no environment, no flags, no validation).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let (leaves, problems) = sources::file(text, path);
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        if !problems.is_empty() {
            let prefix = format!("config file {}: ", path.display());
            let lines: Vec<&str> = problems
                .iter()
                .map(|p| p.strip_prefix(&prefix).unwrap_or(p))
                .collect();
            return Err(parse_error(lines.join("; ")));
        }
        serde_json::from_value(sources::tree(&leaves)).map_err(|e| parse_error(e.to_string()))
    }

    /// Every problem with the settings, naming the key and the value. Also loads the policy
    /// file and the credential files, so a bad one stops the start.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        match &self.policies_file {
            None => p.push("policies_file: not set (a policy file is required)".into()),
            Some(path) => match Policies::load(path) {
                Ok(policies) => p.extend(
                    policies
                        .brokers()
                        .iter()
                        .enumerate()
                        .flat_map(|(i, b)| b.file_problems(&format!("brokers[{i}]")))
                        .map(|x| format!("policies_file {}: {x}", path.display())),
                ),
                Err(PolicyError::Invalid { path, problems }) => p.extend(
                    problems
                        .into_iter()
                        .map(|x| format!("policies_file {}: {x}", path.display())),
                ),
                Err(e) => p.push(format!("policies_file: {e}")),
            },
        }
        if self.body_limit_bytes < 1024 {
            p.push(format!(
                "body_limit_bytes: {} is below 1024",
                self.body_limit_bytes
            ));
        }
        p.extend(self.audit.problems());
        p.extend(self.keda.problems());
        p.extend(self.leader_election.problems());
        p.extend(self.http.settings(Duration::ZERO).problems("http."));
        if self.kubernetes.retry_attempts == 0 {
            p.push("kubernetes.retry_attempts: 0 must be at least 1".into());
        }
        if self.kubernetes.request_timeout.is_zero() {
            p.push("kubernetes.request_timeout: 0s must be positive".into());
        }
        if self.prometheus.timeout.is_zero() {
            p.push("prometheus.timeout: 0s must be positive".into());
        }
        if let Some(url) = &self.prometheus.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                p.push(format!(
                    "prometheus.url: {url:?} must start with http:// or https://"
                ));
            }
        }
        if let Some(url) = &self.kubernetes.api_url {
            if !url.starts_with("http://") {
                p.push(format!(
                    "kubernetes.api_url: {url:?} must be a plain http:// URL (use in-cluster config or kubeconfig for TLS)"
                ));
            }
        }
        if self.reevaluate_interval < Duration::from_secs(1) {
            p.push(format!(
                "reevaluate_interval: {} is below 1s",
                humantime::format_duration(self.reevaluate_interval)
            ));
        }
        if self.alert_ttl < self.reevaluate_interval {
            p.push(format!(
                "alert_ttl: {} is shorter than reevaluate_interval {}",
                humantime::format_duration(self.alert_ttl),
                humantime::format_duration(self.reevaluate_interval)
            ));
        }
        let a = &self.auth;
        if let Some(user) = &a.basic_username {
            if let Err(why) = check_basic_username(user) {
                p.push(format!("auth.basic_username: {user:?} {why}"));
            }
        }
        match (&a.basic_username, &a.basic_password_file) {
            (Some(_), None) => {
                p.push("auth.basic_password_file: required with auth.basic_username".into())
            }
            (None, Some(f)) => p.push(format!(
                "auth.basic_username: required with auth.basic_password_file {}",
                f.display()
            )),
            _ => {}
        }
        for (key, file) in [
            ("auth.bearer_token_file", &a.bearer_token_file),
            ("auth.basic_password_file", &a.basic_password_file),
        ] {
            if let Some(f) = file {
                match read_secret(f) {
                    Ok(s) if s.is_empty() => p.push(format!("{key}: {} is empty", f.display())),
                    Ok(_) => {}
                    Err(e) => p.push(format!("{key}: cannot read {}: {e}", f.display())),
                }
            }
        }
        let has_creds = a.bearer_token_file.is_some() || a.basic_username.is_some();
        if !has_creds && !self.insecure_no_auth {
            p.push("auth: no credentials configured (set auth.bearer_token_file or auth.basic_username + auth.basic_password_file), refusing to start; pass --insecure-no-auth to run without authentication".into());
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => p.push("tls.key_file: required with tls.cert_file".into()),
            (None, Some(_)) => p.push("tls.cert_file: required with tls.key_file".into()),
            (Some(c), Some(k)) => {
                for (key, f) in [("tls.cert_file", c), ("tls.key_file", k)] {
                    if let Err(e) = std::fs::metadata(f) {
                        p.push(format!("{key}: cannot read {}: {e}", f.display()));
                    }
                }
            }
            _ => {}
        }
        p
    }

    /// The config file named by `--config` in `args` or by `MEDIC_ACTUATOR_CONFIG`, if any.
    pub fn file_of(args: &[OsString], env: &BTreeMap<String, String>) -> Option<PathBuf> {
        let flag = sources::flags(args).ok().and_then(|(file, _, _)| file);
        flag.or_else(|| env.get(&format!("{ENV_PREFIX}CONFIG")).map(PathBuf::from))
    }

    /// The instance name: `instance`, else $HOSTNAME from `env`, else "medic-actuator".
    pub fn instance_name(&self, env: &BTreeMap<String, String>) -> String {
        self.instance
            .clone()
            .or_else(|| env.get("HOSTNAME").cloned())
            .unwrap_or_else(|| "medic-actuator".into())
    }
}

/// Read a secret file, trimming trailing whitespace (newlines from `echo` or editors).
pub fn read_secret(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim_end().to_string())
}

/// Why a basic-auth user name is unusable, if it is: RFC 7617 splits `user:password` at the
/// first colon, so a name with a colon never matches; an empty name or a control character
/// cannot be typed into a client either.
pub fn check_basic_username(username: &str) -> Result<(), &'static str> {
    if username.is_empty() {
        return Err("must not be empty");
    }
    if username.contains(':') {
        return Err("must not contain ':' (HTTP basic auth splits user and password at the first colon, RFC 7617)");
    }
    if username.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
