//! Configuration: YAML file, then `MEDIC_ACTUATOR_*` environment, then flags (highest).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::cli::Args;
use crate::policy::{Policies, PolicyError};
use crate::telemetry::LogFormat;

/// Prefix of every environment variable.
pub const ENV_PREFIX: &str = "MEDIC_ACTUATOR_";

/// Configuration errors; every problem is reported at once.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
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
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/medic-actuator/audit.log"),
            max_bytes: 16 * 1024 * 1024,
            max_files: 5,
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
    /// Log format: auto, json or plain.
    pub log_format: LogFormat,
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
            audit: AuditConfig::default(),
            kubernetes: KubernetesConfig::default(),
            prometheus: PrometheusConfig::default(),
            reevaluate_interval: Duration::from_secs(30),
            dedupe_window: Duration::from_secs(600),
            alert_ttl: Duration::from_secs(6 * 3600),
            log_format: LogFormat::Auto,
        }
    }
}

/// Every setting's key, as used in the file (dotted), in `--flags` and in `MEDIC_ACTUATOR_*`.
pub const KEYS: &[&str] = &[
    "listen",
    "policies_file",
    "instance",
    "dry_run",
    "paused",
    "insecure_no_auth",
    "auth.bearer_token_file",
    "auth.basic_username",
    "auth.basic_password_file",
    "tls.cert_file",
    "tls.key_file",
    "body_limit_bytes",
    "http.header_read_timeout",
    "http.idle_timeout",
    "http.max_connections",
    "audit.path",
    "audit.max_bytes",
    "audit.max_files",
    "kubernetes.api_url",
    "kubernetes.request_timeout",
    "kubernetes.retry_attempts",
    "kubernetes.retry_backoff",
    "kubernetes.conflict_retries",
    "kubernetes.autoscaler_cache_ttl",
    "prometheus.url",
    "prometheus.timeout",
    "reevaluate_interval",
    "dedupe_window",
    "alert_ttl",
    "log_format",
];

/// The environment variable for a key: `audit.max_bytes` -> `MEDIC_ACTUATOR_AUDIT_MAX_BYTES`.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_uppercase())
}

fn parse_num<T: std::str::FromStr>(raw: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    raw.trim().parse::<T>().map_err(|e| e.to_string())
}

fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (true/false)")),
    }
}

fn parse_dur(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim()).map_err(|e| e.to_string())
}

fn opt(raw: &str) -> Option<String> {
    let t = raw.trim();
    (!t.is_empty()).then(|| t.to_string())
}

impl Config {
    /// Set one setting from its string form (env or flag).
    pub fn set(&mut self, key: &str, raw: &str) -> Result<(), String> {
        match key {
            "listen" => self.listen = parse_num(raw)?,
            "policies_file" => self.policies_file = opt(raw).map(PathBuf::from),
            "instance" => self.instance = opt(raw),
            "dry_run" => self.dry_run = parse_bool(raw)?,
            "paused" => self.paused = parse_bool(raw)?,
            "insecure_no_auth" => self.insecure_no_auth = parse_bool(raw)?,
            "auth.bearer_token_file" => self.auth.bearer_token_file = opt(raw).map(PathBuf::from),
            "auth.basic_username" => self.auth.basic_username = opt(raw),
            "auth.basic_password_file" => {
                self.auth.basic_password_file = opt(raw).map(PathBuf::from)
            }
            "tls.cert_file" => self.tls.cert_file = opt(raw).map(PathBuf::from),
            "tls.key_file" => self.tls.key_file = opt(raw).map(PathBuf::from),
            "body_limit_bytes" => self.body_limit_bytes = parse_num(raw)?,
            "http.header_read_timeout" => self.http.header_read_timeout = parse_dur(raw)?,
            "http.idle_timeout" => self.http.idle_timeout = parse_dur(raw)?,
            "http.max_connections" => self.http.max_connections = parse_num(raw)?,
            "audit.path" => self.audit.path = PathBuf::from(raw.trim()),
            "audit.max_bytes" => self.audit.max_bytes = parse_num(raw)?,
            "audit.max_files" => self.audit.max_files = parse_num(raw)?,
            "kubernetes.api_url" => self.kubernetes.api_url = opt(raw),
            "kubernetes.request_timeout" => self.kubernetes.request_timeout = parse_dur(raw)?,
            "kubernetes.retry_attempts" => self.kubernetes.retry_attempts = parse_num(raw)?,
            "kubernetes.retry_backoff" => self.kubernetes.retry_backoff = parse_dur(raw)?,
            "kubernetes.conflict_retries" => self.kubernetes.conflict_retries = parse_num(raw)?,
            "kubernetes.autoscaler_cache_ttl" => {
                self.kubernetes.autoscaler_cache_ttl = parse_dur(raw)?
            }
            "prometheus.url" => self.prometheus.url = opt(raw),
            "prometheus.timeout" => self.prometheus.timeout = parse_dur(raw)?,
            "reevaluate_interval" => self.reevaluate_interval = parse_dur(raw)?,
            "dedupe_window" => self.dedupe_window = parse_dur(raw)?,
            "alert_ttl" => self.alert_ttl = parse_dur(raw)?,
            "log_format" => {
                self.log_format = match raw.trim() {
                    "auto" => LogFormat::Auto,
                    "json" => LogFormat::Json,
                    "plain" => LogFormat::Plain,
                    other => return Err(format!("{other:?} is not one of auto, json, plain")),
                }
            }
            other => return Err(format!("unknown setting {other:?}")),
        }
        Ok(())
    }

    /// Build the configuration: defaults, then the file, then `env`, then the flags.
    pub fn load(args: &Args, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let file = args
            .config
            .clone()
            .or_else(|| env.get(&format!("{ENV_PREFIX}CONFIG")).map(PathBuf::from));
        let mut cfg = match &file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Self::parse(&text, path)?
            }
            None => Self::default(),
        };
        let mut problems = Vec::new();
        let config_env = format!("{ENV_PREFIX}CONFIG");
        for (name, value) in env.iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)) {
            if *name == config_env {
                continue;
            }
            match KEYS.iter().find(|k| env_name(k) == *name) {
                Some(key) => {
                    if let Err(e) = cfg.set(key, value) {
                        problems.push(format!("{name}={value:?}: {e}"));
                    }
                }
                None => problems.push(format!("{name}: unknown environment variable")),
            }
        }
        for (key, value) in args.overrides() {
            if let Err(e) = cfg.set(key, &value) {
                problems.push(format!("--{}={value:?}: {e}", key.replace(['.', '_'], "-")));
            }
        }
        problems.extend(cfg.validate());
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                source_desc: file
                    .map(|p| format!("file {}, environment and flags", p.display()))
                    .unwrap_or_else(|| "environment and flags".into()),
                problems,
            })
        }
    }

    /// Parse the YAML file.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Every problem with the settings, naming the key and the value. Also loads the policy
    /// file and the credential files, so a bad one stops the start.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        match &self.policies_file {
            None => p.push("policies_file: not set (a policy file is required)".into()),
            Some(path) => match Policies::load(path) {
                Ok(_) => {}
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
            if let Err(why) = crate::auth::check_basic_username(user) {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(
                dir.path().join("policies.yaml"),
                "policies:\n  - {cluster: prod, consumergroup: orders, deployment: {namespace: shop, name: orders}}\n",
            )
            .unwrap();
            std::fs::write(dir.path().join("token"), "s3cret-token-value\n").unwrap();
            Self { dir }
        }
        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn precedence_flag_env_file_default() {
        let f = Fixture::new();
        let file = f.write(
            "c.yaml",
            &format!(
                "policies_file: {}\nauth: {{bearer_token_file: {}}}\nlisten: 127.0.0.1:1000\nreevaluate_interval: 45s\ndedupe_window: 2m\naudit: {{max_files: 2}}\n",
                f.path("policies.yaml"),
                f.path("token")
            ),
        );
        let args = Args {
            config: Some(file),
            listen: Some("127.0.0.1:3000".into()),
            ..Default::default()
        };
        let e = env(&[
            ("MEDIC_ACTUATOR_LISTEN", "127.0.0.1:2000"),
            ("MEDIC_ACTUATOR_REEVALUATE_INTERVAL", "15s"),
            ("MEDIC_ACTUATOR_DRY_RUN", "true"),
            ("PATH", "/usr/bin"),
        ]);
        let c = Config::load(&args, &e).unwrap();
        assert_eq!(c.listen, "127.0.0.1:3000".parse().unwrap(), "flag wins");
        assert_eq!(
            c.reevaluate_interval,
            Duration::from_secs(15),
            "env beats file"
        );
        assert_eq!(
            c.dedupe_window,
            Duration::from_secs(120),
            "file beats default"
        );
        assert_eq!(c.audit.max_files, 2);
        assert_eq!(c.audit.max_bytes, 16 * 1024 * 1024, "default");
        assert!(c.dry_run);
        assert_eq!(c.body_limit_bytes, 1 << 20);
    }

    #[test]
    fn refuses_to_start_without_credentials() {
        let f = Fixture::new();
        let args = Args {
            policies_file: Some(f.path("policies.yaml")),
            ..Default::default()
        };
        let err = Config::load(&args, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth: no credentials configured"), "{err}");
        assert!(err.contains("--insecure-no-auth"), "{err}");
        let args = Args {
            insecure_no_auth: true,
            ..args
        };
        let c = Config::load(&args, &BTreeMap::new()).unwrap();
        assert!(c.insecure_no_auth);
    }

    #[test]
    fn reports_all_errors_naming_key_and_value() {
        let f = Fixture::new();
        let bad_policies = f.write("bad.yaml", "policies:\n  - {cluster: prod, consumergroup: g, deployment: {namespace: n, name: d}, min_replicas: 4, max_replicas: 2}\n");
        let args = Args {
            policies_file: Some(bad_policies.display().to_string()),
            audit_max_files: Some("many".into()),
            auth_basic_username: Some("am".into()),
            tls_cert_file: Some(f.path("cert.pem")),
            ..Default::default()
        };
        let e = env(&[
            ("MEDIC_ACTUATOR_PROMETHEUS_TIMEOUT", "soon"),
            ("MEDIC_ACTUATOR_LISTN", "x"),
            ("MEDIC_ACTUATOR_BODY_LIMIT_BYTES", "10"),
        ]);
        let err = Config::load(&args, &e).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        let want = [
            "MEDIC_ACTUATOR_LISTN: unknown environment variable".to_string(),
            "MEDIC_ACTUATOR_PROMETHEUS_TIMEOUT=\"soon\": expected number at 0".into(),
            "--audit-max-files=\"many\": invalid digit found in string".into(),
            format!(
                "policies_file {}: policies[0].min_replicas: 4 is greater than max_replicas 2",
                bad_policies.display()
            ),
            "body_limit_bytes: 10 is below 1024".into(),
            "auth.basic_password_file: required with auth.basic_username".into(),
            "tls.key_file: required with tls.cert_file".into(),
        ];
        for w in &want {
            assert!(problems.contains(w), "missing {w:?} in {problems:#?}");
        }
        assert_eq!(problems.len(), want.len(), "{problems:#?}");
    }

    #[test]
    fn audit_settings_that_would_drop_records_are_refused() {
        let f = Fixture::new();
        let args = |files: &str, bytes: &str| Args {
            policies_file: Some(f.path("policies.yaml")),
            auth_bearer_token_file: Some(f.path("token")),
            audit_max_files: Some(files.into()),
            audit_max_bytes: Some(bytes.into()),
            ..Default::default()
        };
        let err = Config::load(&args("0", "4096"), &BTreeMap::new()).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(
            problems,
            &vec![
                "audit.max_bytes: 4096 is below 65536; a smaller file would rotate every few records and answered records would soon be dropped".to_string(),
                "audit.max_files: 0 must be at least 1; with no rotated file kept, each rotation would delete the records just answered and restart seq at 1".to_string(),
            ]
        );
        // The smallest accepted values are exactly the documented minimums.
        let c = Config::load(&args("1", "65536"), &BTreeMap::new()).unwrap();
        assert_eq!(
            (c.audit.max_files, c.audit.max_bytes),
            (AUDIT_MIN_MAX_FILES, AUDIT_MIN_MAX_BYTES)
        );
        let err = Config::load(&args("1", "65535"), &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("audit.max_bytes: 65535 is below 65536"),
            "{err}"
        );
    }

    #[test]
    fn basic_username_with_a_colon_is_refused() {
        let f = Fixture::new();
        let args = Args {
            policies_file: Some(f.path("policies.yaml")),
            auth_basic_username: Some("alert:manager".into()),
            auth_basic_password_file: Some(f.path("token")),
            ..Default::default()
        };
        let err = Config::load(&args, &BTreeMap::new()).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(
            problems,
            &vec!["auth.basic_username: \"alert:manager\" must not contain ':' (HTTP basic auth splits user and password at the first colon, RFC 7617)".to_string()]
        );
    }

    #[test]
    fn http_limits_have_defaults_keys_and_checks() {
        let f = Fixture::new();
        let file = f.write(
            "c.yaml",
            &format!(
                "policies_file: {}\ninsecure_no_auth: true\nhttp: {{header_read_timeout: 3s, max_connections: 64}}\n",
                f.path("policies.yaml")
            ),
        );
        let args = Args {
            config: Some(file),
            http_max_connections: Some("32".into()),
            ..Default::default()
        };
        let e = env(&[("MEDIC_ACTUATOR_HTTP_IDLE_TIMEOUT", "90s")]);
        let c = Config::load(&args, &e).unwrap();
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(3), "file");
        assert_eq!(c.http.idle_timeout, Duration::from_secs(90), "env");
        assert_eq!(c.http.max_connections, 32, "flag");
        let d = HttpConfig::default();
        assert_eq!(
            (d.header_read_timeout, d.idle_timeout, d.max_connections),
            (Duration::from_secs(10), Duration::from_secs(60), 1024)
        );

        let args = Args {
            policies_file: Some(f.path("policies.yaml")),
            insecure_no_auth: true,
            http_max_connections: Some("0".into()),
            http_header_read_timeout: Some("10ms".into()),
            ..Default::default()
        };
        let err = Config::load(&args, &BTreeMap::new()).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(
            problems,
            &vec![
                "http.header_read_timeout: 10ms is below 100ms".to_string(),
                "http.max_connections: 0 must be at least 1".into(),
            ]
        );
    }

    #[test]
    fn http_limits_have_defaults_keys_and_checks() {
        let f = Fixture::new();
        let file = f.write(
            "c.yaml",
            &format!(
                "policies_file: {}\ninsecure_no_auth: true\nhttp: {{header_read_timeout: 3s, max_connections: 64}}\n",
                f.path("policies.yaml")
            ),
        );
        let args = Args {
            config: Some(file),
            http_max_connections: Some("32".into()),
            ..Default::default()
        };
        let e = env(&[("MEDIC_ACTUATOR_HTTP_IDLE_TIMEOUT", "90s")]);
        let c = Config::load(&args, &e).unwrap();
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(3), "file");
        assert_eq!(c.http.idle_timeout, Duration::from_secs(90), "env");
        assert_eq!(c.http.max_connections, 32, "flag");
        let d = HttpConfig::default();
        assert_eq!(
            (d.header_read_timeout, d.idle_timeout, d.max_connections),
            (Duration::from_secs(10), Duration::from_secs(60), 1024)
        );

        let args = Args {
            policies_file: Some(f.path("policies.yaml")),
            insecure_no_auth: true,
            http_max_connections: Some("0".into()),
            http_header_read_timeout: Some("10ms".into()),
            ..Default::default()
        };
        let err = Config::load(&args, &BTreeMap::new()).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(
            problems,
            &vec![
                "http.header_read_timeout: 10ms is below 100ms".to_string(),
                "http.max_connections: 0 must be at least 1".into(),
            ]
        );
    }

    #[test]
    fn unknown_file_keys_are_rejected_with_location() {
        let err = Config::parse(
            "listen: 127.0.0.1:1\naudit:\n  max_byte: 5\n",
            Path::new("c.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("config file c.yaml: audit: unknown field `max_byte`"),
            "{err}"
        );
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn every_key_has_env_flag_and_setter() {
        let cmd = Args::command();
        let help = cmd.clone().render_long_help().to_string();
        for key in KEYS {
            let flag = format!("--{}", key.replace(['.', '_'], "-"));
            assert!(
                cmd.get_arguments()
                    .any(|a| a.get_long() == Some(&flag[2..])),
                "no flag {flag}"
            );
            assert!(
                help.contains(&env_name(key)),
                "help does not name {}",
                env_name(key)
            );
            assert!(
                help.contains(&format!("[key: {key}]")),
                "help does not name key {key}"
            );
            let mut c = Config::default();
            // Setting with a bogus value names the problem rather than "unknown setting".
            if let Err(e) = c.set(key, "???") {
                assert!(!e.contains("unknown setting"), "{key}: {e}");
            }
        }
    }

    #[test]
    fn example_config_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let c = Config::parse(
            &std::fs::read_to_string(dir.join("actuator.yaml")).unwrap(),
            Path::new("actuator.yaml"),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9095);
        let p = Policies::load(&dir.join("policies.yaml")).unwrap();
        assert!(p.all().len() >= 2);
    }
}
