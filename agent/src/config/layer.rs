//! One layer of settings: every field optional, filled from flags, the environment or the file.
//!
//! The same struct is parsed by clap (flags, and environment variables turned into flags) and
//! by serde (the YAML file), so a setting has one name everywhere: `bootstrap_servers` in the
//! file, `--bootstrap-servers` as a flag, `MEDIC_AGENT_BOOTSTRAP_SERVERS` in the environment.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 10s, 1m30s, 500ms)"))
}

/// Accepts `[a, b]` or `"a,b"` in the file.
mod one_or_many {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form<T> {
        One(String),
        Many(Vec<T>),
    }

    pub(crate) fn deserialize<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + std::str::FromStr,
        <T as std::str::FromStr>::Err: std::fmt::Display,
    {
        match Option::<Form<T>>::deserialize(d)? {
            None => Ok(None),
            Some(Form::Many(v)) => Ok(Some(v)),
            Some(Form::One(s)) => s
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(|x| x.parse::<T>().map_err(serde::de::Error::custom))
                .collect::<Result<Vec<T>, _>>()
                .map(Some),
        }
    }
}

/// Every medic-agent setting. See `medic-agent --help` for each one's meaning.
#[derive(Debug, Clone, Default, Args, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Layer {
    /// Kafka bootstrap servers, host:port, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT,...")]
    #[serde(default, deserialize_with = "one_or_many::deserialize")]
    pub(crate) bootstrap_servers: Option<Vec<String>>,

    /// Address the HTTP server listens on (/metrics, /healthz, /api/v1/groups). Default 0.0.0.0:9308.
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) listen: Option<String>,

    /// Cluster name, the `cluster` label on every series. Default "kafka".
    #[arg(long, value_name = "NAME")]
    pub(crate) cluster: Option<String>,

    /// Time between collections. Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub(crate) interval: Option<Duration>,

    /// Sidecar mode: report the groups coordinated by this broker id, and its health.
    /// Without it the agent runs in cluster mode (every group, no broker health).
    #[arg(long, value_name = "N")]
    pub(crate) broker_id: Option<i32>,

    /// Cluster mode, sharded: this agent's shard, 0 to shard_count - 1. It reports the groups
    /// (and topics' end offsets) that rendezvous hashing of their names assigns to it. Unset with
    /// shard_count > 1: the ordinal of the pod name in POD_NAME or HOSTNAME (<name>-<ordinal>).
    #[arg(long, value_name = "I")]
    pub(crate) shard_index: Option<u32>,

    /// Cluster mode: the number of shards the groups are split over, each run with its own
    /// shard_index. Default 1 (no sharding).
    #[arg(long, value_name = "N")]
    pub(crate) shard_count: Option<u32>,

    /// Timeout of one Kafka request. Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub(crate) request_timeout: Option<Duration>,

    /// Report only groups matching one of these regexes (anchored with ^...$ by you). Default: all.
    #[arg(long, value_delimiter = ',', value_name = "REGEX,...")]
    #[serde(default, deserialize_with = "one_or_many::deserialize")]
    pub(crate) group_allow: Option<Vec<String>>,

    /// Never report groups matching one of these regexes. Deny wins over allow.
    #[arg(long, value_delimiter = ',', value_name = "REGEX,...")]
    #[serde(default, deserialize_with = "one_or_many::deserialize")]
    pub(crate) group_deny: Option<Vec<String>>,

    /// Report only topics matching one of these regexes. Default: all but internal topics.
    #[arg(long, value_delimiter = ',', value_name = "REGEX,...")]
    #[serde(default, deserialize_with = "one_or_many::deserialize")]
    pub(crate) topic_allow: Option<Vec<String>>,

    /// Never report topics matching one of these regexes.
    #[arg(long, value_delimiter = ',', value_name = "REGEX,...")]
    #[serde(default, deserialize_with = "one_or_many::deserialize")]
    pub(crate) topic_deny: Option<Vec<String>>,

    /// plaintext, ssl, sasl_plaintext or sasl_ssl. Default plaintext.
    #[arg(long, value_name = "PROTOCOL")]
    pub(crate) security_protocol: Option<String>,

    /// PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM (with sasl_plaintext or
    /// sasl_ssl).
    #[arg(long, value_name = "MECHANISM")]
    pub(crate) sasl_mechanism: Option<String>,

    /// SASL user name.
    #[arg(long, value_name = "USER")]
    pub(crate) sasl_username: Option<String>,

    /// File holding the SASL password (preferred over sasl_password).
    #[arg(long, value_name = "FILE")]
    pub(crate) sasl_password_file: Option<PathBuf>,

    /// SASL password. Prefer sasl_password_file or the environment variable.
    #[arg(long, value_name = "PASSWORD")]
    pub(crate) sasl_password: Option<String>,

    /// OIDC token endpoint for the client-credentials grant (sasl_mechanism OAUTHBEARER).
    #[arg(long, value_name = "URL")]
    pub(crate) sasl_oauthbearer_token_endpoint_url: Option<String>,

    /// OIDC client id (OAUTHBEARER).
    #[arg(long, value_name = "ID")]
    pub(crate) sasl_oauthbearer_client_id: Option<String>,

    /// File holding the OIDC client secret (OAUTHBEARER); read again at every token fetch.
    #[arg(long, value_name = "FILE")]
    pub(crate) sasl_oauthbearer_client_secret_file: Option<PathBuf>,

    /// Scope requested with the token (OAUTHBEARER). Default: none.
    #[arg(long, value_name = "SCOPE")]
    pub(crate) sasl_oauthbearer_scope: Option<String>,

    /// PEM CA bundle for an https token endpoint (OAUTHBEARER). Default: the Mozilla roots.
    #[arg(long, value_name = "FILE")]
    pub(crate) sasl_oauthbearer_ca_file: Option<PathBuf>,

    /// AWS region of the MSK cluster (sasl_mechanism AWS_MSK_IAM), e.g. eu-west-1.
    #[arg(long, value_name = "REGION")]
    pub(crate) sasl_aws_region: Option<String>,

    /// PEM file of CA certificates to trust. Default: the bundled Mozilla roots.
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_ca_file: Option<PathBuf>,

    /// PEM client certificate for mutual TLS (with tls_key_file).
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_cert_file: Option<PathBuf>,

    /// PEM private key for mutual TLS (with tls_cert_file).
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_key_file: Option<PathBuf>,

    /// TLS server name to verify, when it differs from the broker's advertised host.
    #[arg(long, value_name = "NAME")]
    pub(crate) tls_server_name: Option<String>,

    /// Where broker CPU and memory come from (sidecar mode): host, pid_file, cmdline or cgroup.
    /// Default host.
    #[arg(long, value_name = "SOURCE")]
    pub(crate) process_source: Option<String>,

    /// With process_source=pid_file: the file holding the broker's pid.
    #[arg(long, value_name = "FILE")]
    pub(crate) process_pid_file: Option<PathBuf>,

    /// With process_source=cmdline: a regex matched against each process's command line
    /// (the pod must share its process namespace), e.g. 'kafka\.Kafka'.
    #[arg(long, value_name = "REGEX")]
    pub(crate) process_cmdline_pattern: Option<String>,

    /// With process_source=cgroup: the broker's cgroup directory (v2 or v1).
    #[arg(long, value_name = "DIR")]
    pub(crate) process_cgroup_dir: Option<PathBuf>,

    /// The broker's log directories; each one's filesystem size and use is reported.
    #[arg(long, value_delimiter = ',', value_name = "DIR,...")]
    #[serde(default, deserialize_with = "one_or_many::deserialize")]
    pub(crate) log_dirs: Option<Vec<PathBuf>>,

    /// Root of the proc filesystem. Default /proc.
    #[arg(long, value_name = "DIR")]
    pub(crate) proc_root: Option<PathBuf>,

    /// Root of the cgroup filesystem. Default /sys/fs/cgroup.
    #[arg(long, value_name = "DIR")]
    pub(crate) cgroup_root: Option<PathBuf>,

    /// End-offset observations kept per partition for lag in seconds. Default 64.
    #[arg(long, value_name = "N")]
    pub(crate) history_samples: Option<usize>,

    /// Window over which the consumption rate for time-to-drain is measured. Default 5m.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub(crate) drain_rate_window: Option<Duration>,

    /// /healthz turns 503 when the last successful collection is older than this.
    /// Default: 3 intervals.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub(crate) stale_after: Option<Duration>,

    /// Bytes of record data read per broker per collection to find record timestamps.
    /// Default 4194304 (4 MiB).
    #[arg(long, value_name = "BYTES")]
    pub(crate) fetch_max_bytes: Option<i32>,

    /// Bytes of record data read per partition for its timestamp. Default 65536.
    #[arg(long, value_name = "BYTES")]
    pub(crate) fetch_partition_max_bytes: Option<i32>,

    /// Groups per OffsetFetch request (brokers with OffsetFetch v8+). Default 500.
    #[arg(long, value_name = "N")]
    pub(crate) offset_fetch_batch: Option<usize>,

    /// Time an HTTP client has to send a complete request head; also bounds the wait for the
    /// next request on a kept-alive connection. Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub(crate) http_header_read_timeout: Option<Duration>,

    /// An HTTP connection with no request in flight for this long is closed. Default 60s.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub(crate) http_idle_timeout: Option<Duration>,

    /// Most HTTP connections open at once, lowered to fit the open-file limit; at the cap the
    /// oldest connection with no request in flight is closed to make room. Default 1024.
    #[arg(long, value_name = "N")]
    pub(crate) http_max_connections: Option<usize>,

    /// Log format: auto (json unless stderr is a terminal), json or text. Default auto.
    #[arg(long, value_name = "FORMAT")]
    pub(crate) log_format: Option<String>,

    /// Lag series per `partition` (kafka_exporter's names) or per `topic` (per group and topic
    /// sums and maxima, for very large clusters). Default partition.
    #[arg(long, value_name = "partition|topic")]
    pub(crate) granularity: Option<String>,

    /// Most series one scrape may carry; above it the lowest-priority series are dropped
    /// (per-partition ones first) and counted in medic_agent_series_dropped. Default: no limit.
    #[arg(long, value_name = "N")]
    pub(crate) max_series: Option<usize>,
}
