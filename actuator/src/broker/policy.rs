//! Broker remediation policy, one entry per cluster under `brokers:` in the policy file.

use std::path::PathBuf;
use std::time::Duration;

use medic_kafka::SecuritySettings;
use serde::{Deserialize, Serialize};

use super::planner::Limits;

/// Which backend carries broker actions out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// Cruise Control's REST API.
    CruiseControl,
    /// The Kafka admin API (AlterPartitionReassignments, ElectLeaders), planned here.
    Kafka,
    /// Decide and audit the plan; change nothing.
    LogOnly,
}

impl BackendKind {
    /// The name used in config and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::CruiseControl => "cruise-control",
            BackendKind::Kafka => "kafka",
            BackendKind::LogOnly => "log-only",
        }
    }
}

/// How to reach the Kafka cluster (key names as in medic-agent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConnection {
    /// `host:port` of one or more brokers.
    pub bootstrap_servers: Vec<String>,
    /// plaintext, ssl, sasl_plaintext or sasl_ssl (default plaintext).
    #[serde(default = "default_protocol")]
    pub security_protocol: String,
    /// CA bundle (PEM); without it, the Mozilla roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// Client key for mutual TLS (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// Overrides the TLS server name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<String>,
    /// SASL user (PLAIN, SCRAM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_username: Option<String>,
    /// File holding the SASL password (PLAIN, SCRAM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_password_file: Option<PathBuf>,
    /// OIDC token endpoint for the client-credentials grant (OAUTHBEARER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_oauthbearer_token_endpoint_url: Option<String>,
    /// OIDC client id (OAUTHBEARER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_oauthbearer_client_id: Option<String>,
    /// File holding the OIDC client secret (OAUTHBEARER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_oauthbearer_client_secret_file: Option<PathBuf>,
    /// Scope requested with the token (OAUTHBEARER, optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_oauthbearer_scope: Option<String>,
    /// CA bundle (PEM) for an https token endpoint; without it, the Mozilla roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_oauthbearer_ca_file: Option<PathBuf>,
    /// AWS region of the MSK cluster (AWS_MSK_IAM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_aws_region: Option<String>,
    /// Timeout of one Kafka request (default 10s).
    #[serde(default = "default_kafka_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl KafkaConnection {
    /// The security keys as medic-kafka checks and builds them (the same keys as medic-agent).
    pub fn security_settings(&self) -> SecuritySettings {
        SecuritySettings {
            security_protocol: Some(self.security_protocol.clone()),
            tls_ca_file: self.tls_ca_file.clone(),
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            tls_server_name: self.tls_server_name.clone(),
            sasl_mechanism: self.sasl_mechanism.clone(),
            sasl_username: self.sasl_username.clone(),
            sasl_password_file: self.sasl_password_file.clone(),
            sasl_password: None,
            sasl_oauthbearer_token_endpoint_url: self.sasl_oauthbearer_token_endpoint_url.clone(),
            sasl_oauthbearer_client_id: self.sasl_oauthbearer_client_id.clone(),
            sasl_oauthbearer_client_secret_file: self.sasl_oauthbearer_client_secret_file.clone(),
            sasl_oauthbearer_scope: self.sasl_oauthbearer_scope.clone(),
            sasl_oauthbearer_ca_file: self.sasl_oauthbearer_ca_file.clone(),
            sasl_aws_region: self.sasl_aws_region.clone(),
            token_request_timeout: self.request_timeout,
        }
    }
}

/// Which Cruise Control endpoint replaces a dead broker's replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownEndpoint {
    /// `remove_broker`: move every replica off the broker (Cruise Control's own broker-failure fix).
    #[default]
    RemoveBroker,
    /// `fix_offline_replicas`: move only the offline replicas.
    FixOfflineReplicas,
}

/// How to reach Cruise Control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CruiseControlConnection {
    /// Base URL, e.g. `http://cruise-control:9090/kafkacruisecontrol`.
    pub url: String,
    /// Send `dryrun=true`: Cruise Control computes the proposal and executes nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// HTTP basic auth user (with `basic_password_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_username: Option<String>,
    /// File holding the basic-auth password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_password_file: Option<PathBuf>,
    /// File holding a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// Timeout of one request (default 30s).
    #[serde(default = "default_cc_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The endpoint for a dead broker (default `remove_broker`).
    #[serde(default)]
    pub broker_down_endpoint: DownEndpoint,
}

fn default_protocol() -> String {
    "plaintext".into()
}
fn default_kafka_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_cc_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_broker_cooldown() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_cluster_cooldown() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_moves() -> u32 {
    5
}
fn default_leaders() -> u32 {
    1000
}
fn default_settle() -> Duration {
    Duration::from_secs(60)
}
fn default_grace() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_share() -> f64 {
    0.3
}
fn default_disk_target() -> f64 {
    0.75
}
fn default_timeout() -> Duration {
    Duration::from_secs(6 * 3600)
}
fn default_poll() -> Duration {
    Duration::from_secs(10)
}

/// The longest `down_grace`: `KafkaBrokerDown`'s vanished-broker case resolves after 1h.
pub const MAX_DOWN_GRACE: Duration = Duration::from_secs(3600);

/// Broker remediation for one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerPolicy {
    /// The alerts' `cluster` label.
    pub cluster: String,
    /// `kafka`, `cruise-control` or `log-only`.
    pub backend: BackendKind,
    /// Kafka connection: required for `kafka`; optional for `log-only` (to plan from metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaConnection>,
    /// Cruise Control connection: required for `cruise-control`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cruise_control: Option<CruiseControlConnection>,
    /// Brokers the cluster should have, for the mass-failure share. Required when the backend
    /// cannot read the metadata (`cruise-control`, `log-only` without `kafka`); otherwise the
    /// larger of this and the brokers the metadata knows (live ones and dead ones in replica lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_brokers: Option<u32>,
    /// Decide and audit, never change the cluster (also when the global `dry_run` is off).
    #[serde(default)]
    pub dry_run: bool,
    /// Minimum time between actions on one broker, counted from the end of the previous one.
    #[serde(default = "default_broker_cooldown", with = "humantime_serde")]
    pub broker_cooldown: Duration,
    /// Minimum time between actions on the cluster, counted from the end of the previous one.
    #[serde(default = "default_cluster_cooldown", with = "humantime_serde")]
    pub cluster_cooldown: Duration,
    /// Replica moves per live broker in one action (Cruise Control's default 5).
    #[serde(default = "default_moves")]
    pub max_partition_moves_per_broker: u32,
    /// Leadership changes in one action (Cruise Control's default 1000).
    #[serde(default = "default_leaders")]
    pub max_leader_moves: u32,
    /// Wait this long after first hearing of a broker alert before acting on it, so that the
    /// alerts of a mass failure, which arrive in separate notifications, are counted together.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle_time: Duration,
    /// Wait this long after `KafkaBrokerDown` starts before replacing the broker (below 1h).
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub down_grace: Duration,
    /// Above this share of the cluster's brokers alerting at once, act on none.
    #[serde(default = "default_share")]
    pub mass_failure_share: f64,
    /// Disk pressure: move replicas until the directory's projected use is at or under this.
    #[serde(default = "default_disk_target")]
    pub disk_target_ratio: f64,
    /// Replication throttle while data moves (bytes/s per broker); unset = no throttle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_bytes_per_second: Option<u64>,
    /// Give up (cancel) a reassignment still running after this long.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub reassignment_timeout: Duration,
    /// How often a running action is polled.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl BrokerPolicy {
    /// The planner's caps and target.
    pub fn limits(&self) -> Limits {
        Limits {
            max_moves_per_broker: self.max_partition_moves_per_broker,
            max_leader_moves: self.max_leader_moves,
            disk_target_ratio: self.disk_target_ratio,
        }
    }

    /// Whether the backend can read the cluster metadata (and so plan here).
    pub fn reads_metadata(&self) -> bool {
        self.kafka.is_some() && self.backend != BackendKind::CruiseControl
    }

    /// Every secret or certificate file this entry names that cannot be read,
    /// prefixed with `at`: checked with the rest of the configuration, so that a missing mount
    /// is a configuration error reported with all the others, before anything starts.
    pub fn file_problems(&self, at: &str) -> Vec<String> {
        let mut files: Vec<(String, &PathBuf)> = Vec::new();
        if let Some(k) = &self.kafka {
            for (key, f) in [
                ("tls_ca_file", &k.tls_ca_file),
                ("tls_cert_file", &k.tls_cert_file),
                ("tls_key_file", &k.tls_key_file),
                ("sasl_password_file", &k.sasl_password_file),
                (
                    "sasl_oauthbearer_client_secret_file",
                    &k.sasl_oauthbearer_client_secret_file,
                ),
                ("sasl_oauthbearer_ca_file", &k.sasl_oauthbearer_ca_file),
            ] {
                if let Some(f) = f {
                    files.push((format!("{at}.kafka.{key}"), f));
                }
            }
        }
        if let Some(cc) = &self.cruise_control {
            for (key, f) in [
                ("basic_password_file", &cc.basic_password_file),
                ("bearer_token_file", &cc.bearer_token_file),
            ] {
                if let Some(f) = f {
                    files.push((format!("{at}.cruise_control.{key}"), f));
                }
            }
        }
        files
            .into_iter()
            .filter_map(|(key, f)| {
                let e = std::fs::read(f).err()?;
                Some(format!("{key}: cannot read {}: {e}", f.display()))
            })
            .collect()
    }

    /// Every problem of this entry, prefixed with `at` (e.g. `brokers[0]`).
    pub fn problems(&self, at: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.cluster.is_empty() {
            out.push(format!("{at}.cluster: must not be empty"));
        }
        match self.backend {
            BackendKind::Kafka if self.kafka.is_none() => {
                out.push(format!("{at}.kafka: required with backend kafka"))
            }
            BackendKind::CruiseControl if self.cruise_control.is_none() => out.push(format!(
                "{at}.cruise_control: required with backend cruise-control"
            )),
            _ => {}
        }
        if self.backend != BackendKind::CruiseControl && self.cruise_control.is_some() {
            out.push(format!(
                "{at}.cruise_control: set, but backend is {}",
                self.backend.as_str()
            ));
        }
        if self.backend == BackendKind::CruiseControl && self.kafka.is_some() {
            out.push(format!("{at}.kafka: set, but backend is cruise-control"));
        }
        if !self.reads_metadata() && self.expected_brokers.is_none() {
            out.push(format!(
                "{at}.expected_brokers: required with backend {} without kafka metadata (the mass-failure guard needs the cluster size)",
                self.backend.as_str()
            ));
        }
        if self.expected_brokers == Some(0) {
            out.push(format!("{at}.expected_brokers: 0 must be at least 1"));
        }
        if let Some(k) = &self.kafka {
            if k.bootstrap_servers.is_empty() {
                out.push(format!("{at}.kafka.bootstrap_servers: must not be empty"));
            }
            for s in &k.bootstrap_servers {
                if s.rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    out.push(format!(
                        "{at}.kafka.bootstrap_servers: {s:?} is not host:port"
                    ));
                }
            }
            for p in k.security_settings().check() {
                out.push(p.render(&format!("{at}.kafka.{}", p.key)));
            }
            if k.request_timeout.is_zero() {
                out.push(format!("{at}.kafka.request_timeout: 0s must be positive"));
            }
        }
        if let Some(cc) = &self.cruise_control {
            if !(cc.url.starts_with("http://") || cc.url.starts_with("https://")) {
                out.push(format!(
                    "{at}.cruise_control.url: {:?} is not an http(s) URL",
                    cc.url
                ));
            }
            if cc.basic_username.is_some() != cc.basic_password_file.is_some() {
                out.push(format!(
                    "{at}.cruise_control: basic_username and basic_password_file must be given together"
                ));
            }
            if cc.request_timeout.is_zero() {
                out.push(format!(
                    "{at}.cruise_control.request_timeout: 0s must be positive"
                ));
            }
        }
        if self.max_partition_moves_per_broker == 0 {
            out.push(format!(
                "{at}.max_partition_moves_per_broker: 0 must be at least 1"
            ));
        }
        if self.max_leader_moves == 0 {
            out.push(format!("{at}.max_leader_moves: 0 must be at least 1"));
        }
        if self.down_grace >= MAX_DOWN_GRACE {
            out.push(format!(
                "{at}.down_grace: {} must be below 1h: the rules' KafkaBrokerDown for a vanished broker resolves after 1h, so the broker would never be replaced",
                humantime::format_duration(self.down_grace)
            ));
        }
        if !(self.mass_failure_share > 0.0 && self.mass_failure_share <= 1.0) {
            out.push(format!(
                "{at}.mass_failure_share: {} must be in (0, 1]",
                self.mass_failure_share
            ));
        }
        if !(self.disk_target_ratio > 0.0 && self.disk_target_ratio < 1.0) {
            out.push(format!(
                "{at}.disk_target_ratio: {} must be in (0, 1)",
                self.disk_target_ratio
            ));
        }
        if self.throttle_bytes_per_second == Some(0) {
            out.push(format!(
                "{at}.throttle_bytes_per_second: 0 would stop replication; leave it unset for no throttle"
            ));
        }
        if self.poll_interval.is_zero() {
            out.push(format!("{at}.poll_interval: 0s must be positive"));
        }
        if self.reassignment_timeout <= self.poll_interval {
            out.push(format!(
                "{at}.reassignment_timeout: {} must be longer than poll_interval {}",
                humantime::format_duration(self.reassignment_timeout),
                humantime::format_duration(self.poll_interval)
            ));
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_cruise_controls() {
        let p: BrokerPolicy = serde_yaml::from_str(
            "cluster: prod\nbackend: kafka\nkafka: {bootstrap_servers: ['k:9092']}\n",
        )
        .unwrap();
        assert_eq!(p.max_partition_moves_per_broker, 5);
        assert_eq!(p.max_leader_moves, 1000);
        assert_eq!(p.down_grace, Duration::from_secs(1800));
        assert_eq!(p.mass_failure_share, 0.3);
        assert_eq!(p.broker_cooldown, Duration::from_secs(1800));
        assert_eq!(p.cluster_cooldown, Duration::from_secs(600));
        assert_eq!(p.settle_time, Duration::from_secs(60));
        assert_eq!(p.kafka.as_ref().unwrap().security_protocol, "plaintext");
        assert!(p.problems("brokers[0]").is_empty());
        assert!(p.reads_metadata());
    }

    #[test]
    fn every_problem_is_named() {
        let p: BrokerPolicy = serde_yaml::from_str(
            "cluster: prod\nbackend: cruise-control\nkafka: {bootstrap_servers: ['nohost'], security_protocol: sasl_ssl}\ndown_grace: 1h\nmass_failure_share: 0\nmax_leader_moves: 0\nthrottle_bytes_per_second: 0\n",
        )
        .unwrap();
        assert_eq!(
            p.problems("brokers[1]"),
            vec![
                "brokers[1].cruise_control: required with backend cruise-control".to_string(),
                "brokers[1].kafka: set, but backend is cruise-control".into(),
                "brokers[1].expected_brokers: required with backend cruise-control without kafka metadata (the mass-failure guard needs the cluster size)".into(),
                "brokers[1].kafka.bootstrap_servers: \"nohost\" is not host:port".into(),
                "brokers[1].kafka.sasl_mechanism: required with security_protocol \"sasl_ssl\" (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM)".into(),
                "brokers[1].max_leader_moves: 0 must be at least 1".into(),
                "brokers[1].down_grace: 1h must be below 1h: the rules' KafkaBrokerDown for a vanished broker resolves after 1h, so the broker would never be replaced".into(),
                "brokers[1].mass_failure_share: 0 must be in (0, 1]".into(),
                "brokers[1].throttle_bytes_per_second: 0 would stop replication; leave it unset for no throttle".into(),
            ]
        );
        let err = serde_yaml::from_str::<BrokerPolicy>("cluster: a\nbackend: zookeeper\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `zookeeper`"), "{err}");
    }
}
