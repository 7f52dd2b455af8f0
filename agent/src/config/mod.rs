//! medic-agent configuration: a YAML file, flags and `MEDIC_AGENT_*` environment variables.
//!
//! Precedence, highest first: flag, environment, file, default. [`load`] takes the arguments
//! and the environment as values (tests pass a map), merges the layers, and [`validate`]s the
//! result, reporting every problem at once with where the bad value came from.

mod layer;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser};
pub(crate) use layer::Layer;
use medic_kafka::{Security, SecuritySettings};
use regex::Regex;

use crate::health::{HealthConfig, ProcessSource};

/// Prefix of the environment variables.
pub(crate) const ENV_PREFIX: &str = "MEDIC_AGENT_";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "medic-agent",
    version,
    about = "Exports Kafka consumer-group lag (offsets and seconds) and broker health to Prometheus.",
    after_help = "Every setting is also a key of the YAML file given with --config (the flag's \
name with underscores) and an environment variable MEDIC_AGENT_<NAME>. Precedence, highest \
first: flag, environment, file, default."
)]
pub(crate) struct Cli {
    /// YAML configuration file.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) layer: Layer,
}

/// Where a setting's value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    Flag,
    Env,
    File(PathBuf),
    Default,
}

impl Origin {
    fn describe(&self, key: &str) -> String {
        match self {
            Origin::Flag => format!("flag --{}", key.replace('_', "-")),
            Origin::Env => format!("env {ENV_PREFIX}{}", key.to_ascii_uppercase()),
            Origin::File(p) => format!("{}: key {key}", p.display()),
            Origin::Default => format!("default {key}"),
        }
    }
}

/// All the problems found, one per line.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

/// Which groups the agent reports.
#[derive(Debug, Clone)]
pub(crate) enum Mode {
    /// Groups coordinated by this broker, and the broker's health.
    Sidecar { broker_id: i32 },
    /// Every group, no broker health.
    Cluster,
}

/// Allow and deny regexes over names. An empty allow list allows everything; deny wins.
#[derive(Debug, Clone, Default)]
pub(crate) struct NameFilter {
    pub(crate) allow: Vec<Regex>,
    pub(crate) deny: Vec<Regex>,
}

impl NameFilter {
    pub(crate) fn accepts(&self, name: &str) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|r| r.is_match(name)))
            && !self.deny.iter().any(|r| r.is_match(name))
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) cluster: String,
    pub(crate) bootstrap_servers: Vec<String>,
    pub(crate) listen: SocketAddr,
    pub(crate) interval: Duration,
    pub(crate) mode: Mode,
    /// Cluster mode: the part of the groups and topics this agent reports.
    pub(crate) shard: crate::shard::Shard,
    pub(crate) request_timeout: Duration,
    pub(crate) groups: NameFilter,
    pub(crate) topics: NameFilter,
    pub(crate) security: Security,
    /// Broker health sources; set in sidecar mode.
    pub(crate) health: Option<HealthConfig>,
    pub(crate) history_samples: usize,
    pub(crate) drain_rate_window: Duration,
    pub(crate) stale_after: Duration,
    pub(crate) fetch_max_bytes: i32,
    pub(crate) fetch_partition_max_bytes: i32,
    pub(crate) offset_fetch_batch: usize,
    pub log_format: LogFormat,
    /// Limits of the HTTP server against slow and idle clients.
    pub(crate) http: medic_http::Settings,
    /// Per-partition or per-topic lag series.
    pub(crate) granularity: crate::render::Granularity,
    /// The series budget of one scrape, if any.
    pub(crate) max_series: Option<usize>,
}

/// Parses flags, reads the environment map and the file, merges and validates.
pub fn load<I, T>(args: I, env: &HashMap<String, String>) -> Result<Config, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let (cli, mut errors) = match Cli::try_parse_from(&args) {
        Ok(cli) => (cli, Vec::new()),
        Err(e) if !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            flags_one_by_one(&args)
        }
        Err(e) => return Err(LoadError::Cli(e)),
    };
    let (env_layer, env_errors) = env_layer(env);
    errors.extend(env_errors);
    let config_path = cli
        .config
        .clone()
        .or_else(|| env.get(&format!("{ENV_PREFIX}CONFIG")).map(PathBuf::from));
    let file_layer = match &config_path {
        Some(p) => match read_file(p) {
            Ok(l) => l,
            Err(e) => {
                errors.extend(e);
                Layer::default()
            }
        },
        None => Layer::default(),
    };
    if !errors.is_empty() {
        return Err(LoadError::Invalid(ConfigErrors(errors)));
    }
    let (merged, origins) = merge(cli.layer, env_layer, file_layer, config_path.as_deref());
    validate(merged, &origins, env).map_err(LoadError::Invalid)
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad flags, `--help` or `--version`: clap formats these itself.
    #[error("{0}")]
    Cli(clap::Error),
    #[error(transparent)]
    Invalid(ConfigErrors),
}

/// After a bad command line: each flag on its own, so that every bad one is reported, and the
/// good ones still make a layer.
fn flags_one_by_one(args: &[std::ffi::OsString]) -> (Cli, Vec<String>) {
    let mut cli = Cli {
        config: None,
        layer: Layer::default(),
    };
    let mut errors = Vec::new();
    let mut rest = args.iter().skip(1).peekable();
    while let Some(arg) = rest.next() {
        let mut one = vec![args[0].clone(), arg.clone()];
        let text = arg.to_string_lossy();
        if text.starts_with("--") && !text.contains('=') {
            if let Some(v) = rest.next_if(|v| !v.to_string_lossy().starts_with("--")) {
                one.push(v.clone());
            }
        }
        match Cli::try_parse_from(&one) {
            Ok(c) => {
                cli.config = c.config.or(cli.config);
                cli.layer = merge(c.layer, cli.layer, Layer::default(), None).0;
            }
            Err(e) => {
                let shown = one[1..]
                    .iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>();
                let why = e.render().to_string();
                let why = why
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ");
                errors.push(format!("flag {}: {why}", shown.join(" ")));
            }
        }
    }
    (cli, errors)
}

/// Reads the file. A bad key is reported with the parser's line and column; the other keys
/// are then checked one by one, so that every bad key is reported in one run.
fn read_file(path: &Path) -> Result<Layer, Vec<String>> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
    if text.trim().is_empty() {
        return Ok(Layer::default());
    }
    let first = match serde_yaml::from_str::<Layer>(&text) {
        Ok(layer) => return Ok(layer),
        Err(e) => e.to_string(),
    };
    let mut errors = vec![at(&first)];
    if let Ok(serde_yaml::Value::Mapping(doc)) = serde_yaml::from_str(&text) {
        for (key, value) in doc {
            let name = key.as_str().unwrap_or_default().to_string();
            let mut one = serde_yaml::Mapping::new();
            one.insert(key, value);
            if let Err(e) = serde_yaml::from_value::<Layer>(serde_yaml::Value::Mapping(one)) {
                let why = e.to_string();
                if !first.contains(&why) {
                    errors.push(at(&format!("key {name}: {why}")));
                }
            }
        }
    }
    Err(errors)
}

/// Turns `MEDIC_AGENT_*` variables into a layer, one variable at a time so that an error names
/// the variable. Unknown variables with the prefix are errors: a typo must not pass silently.
fn env_layer(env: &HashMap<String, String>) -> (Layer, Vec<String>) {
    let cmd = Cli::command();
    let known: BTreeMap<String, String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long())
        .map(|long| {
            (
                format!(
                    "{ENV_PREFIX}{}",
                    long.replace('-', "_").to_ascii_uppercase()
                ),
                long.to_string(),
            )
        })
        .collect();
    let mut layer = Layer::default();
    let mut errors = Vec::new();
    let mut vars: Vec<_> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (key, value) in vars {
        let Some(long) = known.get(key) else {
            errors.push(format!("env {key}: unknown setting"));
            continue;
        };
        if long == "config" || long == "help" || long == "version" {
            continue;
        }
        let args = ["medic-agent".to_string(), format!("--{long}={value}")];
        match Cli::command()
            .try_get_matches_from(args)
            .and_then(|m| Cli::from_arg_matches(&m))
        {
            Ok(one) => layer = merge(one.layer, layer, Layer::default(), None).0,
            Err(e) => errors.push(format!(
                "env {key}={value:?}: {}",
                e.kind().as_str().unwrap_or("invalid value")
            )),
        }
    }
    (layer, errors)
}

type Origins = HashMap<&'static str, Origin>;

macro_rules! merge_layers {
    ($flag:ident, $env:ident, $file:ident, $path:ident, $origins:ident; $($f:ident),* $(,)?) => {
        Layer { $( $f: {
            let (v, o) = if $flag.$f.is_some() {
                ($flag.$f, Origin::Flag)
            } else if $env.$f.is_some() {
                ($env.$f, Origin::Env)
            } else if $file.$f.is_some() {
                ($file.$f, $path.map(|p| Origin::File(p.to_path_buf())).unwrap_or(Origin::Default))
            } else {
                (None, Origin::Default)
            };
            $origins.insert(stringify!($f), o);
            v
        } ),* }
    };
}

/// Merges layers, highest precedence first, and remembers where each value came from.
pub(crate) fn merge(flag: Layer, env: Layer, file: Layer, path: Option<&Path>) -> (Layer, Origins) {
    let mut origins = Origins::new();
    let merged = merge_layers!(flag, env, file, path, origins;
        bootstrap_servers, listen, cluster, interval, broker_id, shard_index, shard_count,
        request_timeout,
        group_allow, group_deny, topic_allow, topic_deny,
        security_protocol, sasl_mechanism, sasl_username, sasl_password_file, sasl_password,
        sasl_oauthbearer_token_endpoint_url, sasl_oauthbearer_client_id,
        sasl_oauthbearer_client_secret_file, sasl_oauthbearer_scope, sasl_oauthbearer_ca_file,
        sasl_aws_region,
        tls_ca_file, tls_cert_file, tls_key_file, tls_server_name,
        process_source, process_pid_file, process_cmdline_pattern, process_cgroup_dir,
        log_dirs, proc_root, cgroup_root,
        history_samples, drain_rate_window, stale_after,
        fetch_max_bytes, fetch_partition_max_bytes, offset_fetch_batch, log_format,
        http_header_read_timeout, http_idle_timeout, http_max_connections,
        granularity, max_series,
    );
    (merged, origins)
}

/// Checks every setting and cross-setting rule, collecting all problems.
/// `env` is read for the shard's pod ordinal (POD_NAME, HOSTNAME) only.
pub(crate) fn validate(
    l: Layer,
    origins: &Origins,
    env: &HashMap<String, String>,
) -> Result<Config, ConfigErrors> {
    let mut errs = Vec::new();
    let at = |key: &'static str| {
        origins
            .get(key)
            .cloned()
            .unwrap_or(Origin::Default)
            .describe(key)
    };

    let bootstrap_servers = l.bootstrap_servers.clone().unwrap_or_default();
    if bootstrap_servers.is_empty() {
        errs.push(format!(
            "{}: required (at least one host:port)",
            at("bootstrap_servers")
        ));
    }
    for b in &bootstrap_servers {
        let ok = b
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            errs.push(format!(
                "{} = {b:?}: expected host:port",
                at("bootstrap_servers")
            ));
        }
    }

    let listen_s = l.listen.clone().unwrap_or_else(|| "0.0.0.0:9308".into());
    let listen = listen_s.parse::<SocketAddr>().unwrap_or_else(|e| {
        errs.push(format!("{} = {listen_s:?}: {e}", at("listen")));
        SocketAddr::from(([0, 0, 0, 0], 9308))
    });

    let cluster = l.cluster.clone().unwrap_or_else(|| "kafka".into());
    if cluster.trim().is_empty() {
        errs.push(format!("{}: must not be empty", at("cluster")));
    }

    let interval = l.interval.unwrap_or(Duration::from_secs(10));
    if interval < Duration::from_millis(100) {
        errs.push(format!(
            "{} = {interval:?}: must be at least 100ms",
            at("interval")
        ));
    }
    let request_timeout = l.request_timeout.unwrap_or(Duration::from_secs(10));
    if request_timeout.is_zero() {
        errs.push(format!("{}: must be more than 0", at("request_timeout")));
    }
    let stale_after = l.stale_after.unwrap_or(interval * 3);
    if stale_after < interval {
        errs.push(format!(
            "{} = {stale_after:?}: must be at least the interval ({interval:?})",
            at("stale_after")
        ));
    }

    let mut regexes = |key: &'static str, v: &Option<Vec<String>>| -> Vec<Regex> {
        v.iter()
            .flatten()
            .filter_map(|r| match Regex::new(r) {
                Ok(re) => Some(re),
                Err(e) => {
                    errs.push(format!("{} = {r:?}: invalid regex: {e}", at(key)));
                    None
                }
            })
            .collect()
    };
    let groups = NameFilter {
        allow: regexes("group_allow", &l.group_allow),
        deny: regexes("group_deny", &l.group_deny),
    };
    let topics = NameFilter {
        allow: regexes("topic_allow", &l.topic_allow),
        deny: regexes("topic_deny", &l.topic_deny),
    };

    let security = security(&l, request_timeout, &at, &mut errs);

    let mode = match l.broker_id {
        Some(id) if id < 0 => {
            errs.push(format!("{} = {id}: must be 0 or more", at("broker_id")));
            Mode::Cluster
        }
        Some(id) => Mode::Sidecar { broker_id: id },
        None => Mode::Cluster,
    };
    let shard = crate::shard::resolve(
        l.shard_index,
        l.shard_count,
        l.broker_id.is_some(),
        env,
        &at,
        &mut errs,
    );
    let health = health(&l, &mode, &at, &mut errs);

    let history_samples = l.history_samples.unwrap_or(64);
    if !(3..=10_000).contains(&history_samples) {
        errs.push(format!(
            "{} = {history_samples}: must be between 3 and 10000",
            at("history_samples")
        ));
    }
    let drain_rate_window = l.drain_rate_window.unwrap_or(Duration::from_secs(300));
    if drain_rate_window < interval {
        errs.push(format!(
            "{} = {drain_rate_window:?}: must be at least the interval ({interval:?})",
            at("drain_rate_window")
        ));
    }
    let fetch_max_bytes = l.fetch_max_bytes.unwrap_or(4 << 20);
    let fetch_partition_max_bytes = l.fetch_partition_max_bytes.unwrap_or(64 << 10);
    if fetch_max_bytes < 1024 {
        errs.push(format!(
            "{} = {fetch_max_bytes}: must be at least 1024",
            at("fetch_max_bytes")
        ));
    }
    if fetch_partition_max_bytes < 128 || fetch_partition_max_bytes > fetch_max_bytes.max(128) {
        errs.push(format!(
            "{} = {fetch_partition_max_bytes}: must be between 128 and fetch_max_bytes ({fetch_max_bytes})",
            at("fetch_partition_max_bytes")
        ));
    }
    let offset_fetch_batch = l.offset_fetch_batch.unwrap_or(500);
    if offset_fetch_batch == 0 {
        errs.push(format!("{}: must be at least 1", at("offset_fetch_batch")));
    }
    let log_format = match l.log_format.as_deref().unwrap_or("auto") {
        "auto" => LogFormat::Auto,
        "json" => LogFormat::Json,
        "text" => LogFormat::Text,
        other => {
            errs.push(format!(
                "{} = {other:?}: expected auto, json or text",
                at("log_format")
            ));
            LogFormat::Auto
        }
    };

    let http = medic_http::Settings {
        header_read_timeout: l
            .http_header_read_timeout
            .unwrap_or(medic_http::DEFAULT_HEADER_READ_TIMEOUT),
        idle_timeout: l
            .http_idle_timeout
            .unwrap_or(medic_http::DEFAULT_IDLE_TIMEOUT),
        max_connections: l
            .http_max_connections
            .unwrap_or(medic_http::DEFAULT_MAX_CONNECTIONS),
        shutdown_grace: Duration::from_secs(10),
    };
    for (key, d) in [
        ("http_header_read_timeout", http.header_read_timeout),
        ("http_idle_timeout", http.idle_timeout),
    ] {
        if d < Duration::from_millis(100) {
            errs.push(format!("{} = {d:?}: must be at least 100ms", at(key)));
        }
    }
    if http.max_connections == 0 {
        errs.push(format!(
            "{}: must be at least 1",
            at("http_max_connections")
        ));
    }
    let granularity = match l.granularity.as_deref().unwrap_or("partition") {
        "partition" => crate::render::Granularity::Partition,
        "topic" => crate::render::Granularity::Topic,
        other => {
            errs.push(format!(
                "{} = {other:?}: expected partition or topic",
                at("granularity")
            ));
            crate::render::Granularity::Partition
        }
    };
    if l.max_series == Some(0) {
        errs.push(format!(
            "{} = 0: must be at least 1 (leave it unset for no limit)",
            at("max_series")
        ));
    }

    if !errs.is_empty() {
        return Err(ConfigErrors(errs));
    }
    Ok(Config {
        cluster,
        bootstrap_servers,
        listen,
        interval,
        mode,
        shard,
        request_timeout,
        groups,
        topics,
        security,
        health,
        history_samples,
        drain_rate_window,
        stale_after,
        fetch_max_bytes,
        fetch_partition_max_bytes,
        offset_fetch_batch,
        log_format,
        http,
        granularity,
        max_series: l.max_series,
    })
}

/// The security keys, checked and built by medic-kafka (the same keys as the actuator's `kafka`
/// backend); each problem is named where it was set.
fn security(
    l: &Layer,
    request_timeout: Duration,
    at: &dyn Fn(&'static str) -> String,
    errs: &mut Vec<String>,
) -> Security {
    let settings = SecuritySettings {
        security_protocol: l.security_protocol.clone(),
        tls_ca_file: l.tls_ca_file.clone(),
        tls_cert_file: l.tls_cert_file.clone(),
        tls_key_file: l.tls_key_file.clone(),
        tls_server_name: l.tls_server_name.clone(),
        sasl_mechanism: l.sasl_mechanism.clone(),
        sasl_username: l.sasl_username.clone(),
        sasl_password_file: l.sasl_password_file.clone(),
        sasl_password: l.sasl_password.clone(),
        sasl_oauthbearer_token_endpoint_url: l.sasl_oauthbearer_token_endpoint_url.clone(),
        sasl_oauthbearer_client_id: l.sasl_oauthbearer_client_id.clone(),
        sasl_oauthbearer_client_secret_file: l.sasl_oauthbearer_client_secret_file.clone(),
        sasl_oauthbearer_scope: l.sasl_oauthbearer_scope.clone(),
        sasl_oauthbearer_ca_file: l.sasl_oauthbearer_ca_file.clone(),
        sasl_aws_region: l.sasl_aws_region.clone(),
        token_request_timeout: request_timeout,
    };
    settings.build().unwrap_or_else(|problems| {
        errs.extend(problems.iter().map(|p| p.render(&at(p.key))));
        Security::default()
    })
}

fn health(
    l: &Layer,
    mode: &Mode,
    at: &dyn Fn(&'static str) -> String,
    errs: &mut Vec<String>,
) -> Option<HealthConfig> {
    let source_name = l.process_source.as_deref().unwrap_or("host");
    let source = match source_name {
        "host" => Some(ProcessSource::Host),
        "pid_file" => match &l.process_pid_file {
            Some(f) => Some(ProcessSource::PidFile(f.clone())),
            None => {
                errs.push(format!(
                    "{}: required with process_source=pid_file",
                    at("process_pid_file")
                ));
                None
            }
        },
        "cmdline" => match l.process_cmdline_pattern.as_deref().map(Regex::new) {
            Some(Ok(re)) => Some(ProcessSource::CmdlinePattern(re)),
            Some(Err(e)) => {
                errs.push(format!(
                    "{} = {:?}: invalid regex: {e}",
                    at("process_cmdline_pattern"),
                    l.process_cmdline_pattern.as_deref().unwrap_or_default()
                ));
                None
            }
            None => {
                errs.push(format!(
                    "{}: required with process_source=cmdline",
                    at("process_cmdline_pattern")
                ));
                None
            }
        },
        "cgroup" => match &l.process_cgroup_dir {
            Some(d) => Some(ProcessSource::Cgroup(d.clone())),
            None => {
                errs.push(format!(
                    "{}: required with process_source=cgroup",
                    at("process_cgroup_dir")
                ));
                None
            }
        },
        other => {
            errs.push(format!(
                "{} = {other:?}: expected host, pid_file, cmdline or cgroup",
                at("process_source")
            ));
            None
        }
    };
    match mode {
        Mode::Cluster => {
            let set = l.process_source.is_some() || l.log_dirs.is_some();
            if set {
                errs.push(format!(
                    "{}: broker health needs sidecar mode (set broker_id)",
                    at(if l.process_source.is_some() {
                        "process_source"
                    } else {
                        "log_dirs"
                    })
                ));
            }
            None
        }
        Mode::Sidecar { .. } => {
            let mut cfg = HealthConfig::new(source?, l.log_dirs.clone().unwrap_or_default());
            if let Some(p) = &l.proc_root {
                cfg.proc_root = p.clone();
            }
            if let Some(p) = &l.cgroup_root {
                cfg.cgroup_root = p.clone();
            }
            Some(cfg)
        }
    }
}

#[cfg(test)]
mod tests;
