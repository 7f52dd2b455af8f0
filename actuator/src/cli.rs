//! Command-line flags (clap). Each maps to one configuration key; see `config::KEYS`.

use std::path::PathBuf;

use clap::Parser;

/// Command-line flags. Every setting can also be given in the file (dotted key) or as
/// `MEDIC_ACTUATOR_<KEY>` (dots become underscores). Precedence: flag, env, file, default.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "medic-actuator", version, about = "Alertmanager webhook receiver that scales Kafka consumer Deployments.", long_about = None)]
pub struct Args {
    /// YAML config file [env: MEDIC_ACTUATOR_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address [key: listen] [env: MEDIC_ACTUATOR_LISTEN] [default: 0.0.0.0:9095]
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Policy file, YAML (required) [key: policies_file] [env: MEDIC_ACTUATOR_POLICIES_FILE]
    #[arg(long, value_name = "FILE")]
    pub policies_file: Option<String>,
    /// Instance name for audit records and annotations [key: instance] [env: MEDIC_ACTUATOR_INSTANCE] [default: $HOSTNAME]
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// Decide and audit but never patch [key: dry_run] [env: MEDIC_ACTUATOR_DRY_RUN]
    #[arg(long)]
    pub dry_run: bool,
    /// Start paused [key: paused] [env: MEDIC_ACTUATOR_PAUSED]
    #[arg(long)]
    pub paused: bool,
    /// Run without authentication (trusted loopback only) [key: insecure_no_auth] [env: MEDIC_ACTUATOR_INSECURE_NO_AUTH]
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Bearer token file [key: auth.bearer_token_file] [env: MEDIC_ACTUATOR_AUTH_BEARER_TOKEN_FILE]
    #[arg(long, value_name = "FILE")]
    pub auth_bearer_token_file: Option<String>,
    /// Basic-auth user name [key: auth.basic_username] [env: MEDIC_ACTUATOR_AUTH_BASIC_USERNAME]
    #[arg(long, value_name = "USER")]
    pub auth_basic_username: Option<String>,
    /// Basic-auth password file [key: auth.basic_password_file] [env: MEDIC_ACTUATOR_AUTH_BASIC_PASSWORD_FILE]
    #[arg(long, value_name = "FILE")]
    pub auth_basic_password_file: Option<String>,
    /// TLS certificate chain, PEM [key: tls.cert_file] [env: MEDIC_ACTUATOR_TLS_CERT_FILE]
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<String>,
    /// TLS private key, PEM [key: tls.key_file] [env: MEDIC_ACTUATOR_TLS_KEY_FILE]
    #[arg(long, value_name = "FILE")]
    pub tls_key_file: Option<String>,
    /// Largest request body, bytes [key: body_limit_bytes] [env: MEDIC_ACTUATOR_BODY_LIMIT_BYTES] [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub body_limit_bytes: Option<String>,
    /// Time to send a complete request head [key: http.header_read_timeout] [env: MEDIC_ACTUATOR_HTTP_HEADER_READ_TIMEOUT] [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub http_header_read_timeout: Option<String>,
    /// Close a connection with no request in flight after this long [key: http.idle_timeout] [env: MEDIC_ACTUATOR_HTTP_IDLE_TIMEOUT] [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub http_idle_timeout: Option<String>,
    /// Most connections open at once, kept below the open-file limit [key: http.max_connections] [env: MEDIC_ACTUATOR_HTTP_MAX_CONNECTIONS] [default: 1024]
    #[arg(long, value_name = "N")]
    pub http_max_connections: Option<String>,
    /// Audit log file [key: audit.path] [env: MEDIC_ACTUATOR_AUDIT_PATH] [default: /var/lib/medic-actuator/audit.log]
    #[arg(long, value_name = "FILE")]
    pub audit_path: Option<String>,
    /// Rotate the audit log at this size [key: audit.max_bytes] [env: MEDIC_ACTUATOR_AUDIT_MAX_BYTES] [default: 16777216]
    #[arg(long, value_name = "BYTES")]
    pub audit_max_bytes: Option<String>,
    /// Rotated audit files kept [key: audit.max_files] [env: MEDIC_ACTUATOR_AUDIT_MAX_FILES] [default: 5]
    #[arg(long, value_name = "N")]
    pub audit_max_files: Option<String>,
    /// Plain-HTTP Kubernetes API URL; unset = in-cluster or kubeconfig [key: kubernetes.api_url] [env: MEDIC_ACTUATOR_KUBERNETES_API_URL]
    #[arg(long, value_name = "URL")]
    pub kubernetes_api_url: Option<String>,
    /// Kubernetes request timeout [key: kubernetes.request_timeout] [env: MEDIC_ACTUATOR_KUBERNETES_REQUEST_TIMEOUT] [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub kubernetes_request_timeout: Option<String>,
    /// Attempts on 5xx/429/transport errors [key: kubernetes.retry_attempts] [env: MEDIC_ACTUATOR_KUBERNETES_RETRY_ATTEMPTS] [default: 4]
    #[arg(long, value_name = "N")]
    pub kubernetes_retry_attempts: Option<String>,
    /// First backoff delay, doubled per attempt [key: kubernetes.retry_backoff] [env: MEDIC_ACTUATOR_KUBERNETES_RETRY_BACKOFF] [default: 100ms]
    #[arg(long, value_name = "DURATION")]
    pub kubernetes_retry_backoff: Option<String>,
    /// Fresh reads after a 409 conflict [key: kubernetes.conflict_retries] [env: MEDIC_ACTUATOR_KUBERNETES_CONFLICT_RETRIES] [default: 3]
    #[arg(long, value_name = "N")]
    pub kubernetes_conflict_retries: Option<String>,
    /// Reuse of a namespace's autoscaler list [key: kubernetes.autoscaler_cache_ttl] [env: MEDIC_ACTUATOR_KUBERNETES_AUTOSCALER_CACHE_TTL] [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub kubernetes_autoscaler_cache_ttl: Option<String>,
    /// Prometheus base URL; unset = use the alert's lag_offsets annotation [key: prometheus.url] [env: MEDIC_ACTUATOR_PROMETHEUS_URL]
    #[arg(long, value_name = "URL")]
    pub prometheus_url: Option<String>,
    /// Prometheus query timeout [key: prometheus.timeout] [env: MEDIC_ACTUATOR_PROMETHEUS_TIMEOUT] [default: 2s]
    #[arg(long, value_name = "DURATION")]
    pub prometheus_timeout: Option<String>,
    /// Re-evaluation interval of firing alerts [key: reevaluate_interval] [env: MEDIC_ACTUATOR_REEVALUATE_INTERVAL] [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub reevaluate_interval: Option<String>,
    /// Window in which a repeated delivery is a duplicate [key: dedupe_window] [env: MEDIC_ACTUATOR_DEDUPE_WINDOW] [default: 10m]
    #[arg(long, value_name = "DURATION")]
    pub dedupe_window: Option<String>,
    /// Forget firing alerts not re-sent for this long [key: alert_ttl] [env: MEDIC_ACTUATOR_ALERT_TTL] [default: 6h]
    #[arg(long, value_name = "DURATION")]
    pub alert_ttl: Option<String>,
    /// Log format: auto, json or plain [key: log_format] [env: MEDIC_ACTUATOR_LOG_FORMAT] [default: auto]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

impl Args {
    /// The flags that were given, as (key, value).
    pub fn overrides(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut s = |k: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                out.push((k, v.clone()));
            }
        };
        s("listen", &self.listen);
        s("policies_file", &self.policies_file);
        s("instance", &self.instance);
        s("auth.bearer_token_file", &self.auth_bearer_token_file);
        s("auth.basic_username", &self.auth_basic_username);
        s("auth.basic_password_file", &self.auth_basic_password_file);
        s("tls.cert_file", &self.tls_cert_file);
        s("tls.key_file", &self.tls_key_file);
        s("body_limit_bytes", &self.body_limit_bytes);
        s("http.header_read_timeout", &self.http_header_read_timeout);
        s("http.idle_timeout", &self.http_idle_timeout);
        s("http.max_connections", &self.http_max_connections);
        s("audit.path", &self.audit_path);
        s("audit.max_bytes", &self.audit_max_bytes);
        s("audit.max_files", &self.audit_max_files);
        s("kubernetes.api_url", &self.kubernetes_api_url);
        s(
            "kubernetes.request_timeout",
            &self.kubernetes_request_timeout,
        );
        s("kubernetes.retry_attempts", &self.kubernetes_retry_attempts);
        s("kubernetes.retry_backoff", &self.kubernetes_retry_backoff);
        s(
            "kubernetes.conflict_retries",
            &self.kubernetes_conflict_retries,
        );
        s(
            "kubernetes.autoscaler_cache_ttl",
            &self.kubernetes_autoscaler_cache_ttl,
        );
        s("prometheus.url", &self.prometheus_url);
        s("prometheus.timeout", &self.prometheus_timeout);
        s("reevaluate_interval", &self.reevaluate_interval);
        s("dedupe_window", &self.dedupe_window);
        s("alert_ttl", &self.alert_ttl);
        s("log_format", &self.log_format);
        for (k, on) in [
            ("dry_run", self.dry_run),
            ("paused", self.paused),
            ("insecure_no_auth", self.insecure_no_auth),
        ] {
            if on {
                out.push((k, "true".into()));
            }
        }
        out
    }
}
