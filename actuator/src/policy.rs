//! The policy file: (cluster, consumergroup) -> Deployment and scaling limits.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::broker::policy::BrokerPolicy;

/// Errors loading or validating the policy file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML did not parse or had unknown or mistyped keys.
    #[error("policy file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key, line and column).
        message: String,
    },
    /// Values that parsed but make no sense; every problem is listed.
    #[error("policy file {path} is invalid:\n  - {}", problems.join("\n  - "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// One line per problem, naming the key and value.
        problems: Vec<String>,
    },
}

/// The Deployment a policy scales.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRef {
    /// Namespace of the Deployment.
    pub namespace: String,
    /// Name of the Deployment.
    pub name: String,
}

impl fmt::Display for DeploymentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Cap the desired replicas at the number of partitions the group consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionCap {
    /// `auto`: count the group's partitions in Prometheus
    /// (`count(kafka_consumergroup_lag{cluster,consumergroup})`).
    Auto,
    /// A fixed number of partitions.
    Fixed(u32),
}

impl Serialize for PartitionCap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PartitionCap::Auto => s.serialize_str("auto"),
            PartitionCap::Fixed(n) => s.serialize_u32(*n),
        }
    }
}

fn de_partition_cap<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<PartitionCap>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u32),
        S(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::N(n)) => Ok(Some(PartitionCap::Fixed(n))),
        Some(Raw::S(s)) if s == "auto" => Ok(Some(PartitionCap::Auto)),
        Some(Raw::S(s)) => Err(serde::de::Error::custom(format!(
            "partition_cap must be \"auto\" or a number, got {s:?}"
        ))),
    }
}

fn default_min() -> u32 {
    1
}
fn default_max() -> u32 {
    10
}
fn default_lag_per_replica() -> u64 {
    1000
}
fn default_up() -> Duration {
    Duration::from_secs(60)
}
fn default_down() -> Duration {
    Duration::from_secs(300)
}
fn default_step() -> u32 {
    2
}

/// One scaling policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The `cluster` label of the alert.
    pub cluster: String,
    /// The `consumergroup` label of the alert.
    pub consumergroup: String,
    /// The Deployment to scale; the only one this policy may ever touch.
    pub deployment: DeploymentRef,
    /// Lowest replica count the actuator will set (default 1).
    #[serde(default = "default_min")]
    pub min_replicas: u32,
    /// Highest replica count the actuator will set (default 10).
    #[serde(default = "default_max")]
    pub max_replicas: u32,
    /// Offsets of lag one replica is expected to handle: desired = ceil(lag / this) (default 1000).
    #[serde(default = "default_lag_per_replica")]
    pub lag_per_replica: u64,
    /// Minimum time after any action before scaling up (humantime, default 1m).
    #[serde(default = "default_up", with = "humantime_serde")]
    pub scale_up_cooldown: Duration,
    /// Minimum time after any action before scaling down (humantime, default 5m).
    #[serde(default = "default_down", with = "humantime_serde")]
    pub scale_down_cooldown: Duration,
    /// Largest change of replicas in one action (default 2).
    #[serde(default = "default_step")]
    pub max_step: u32,
    /// Optional cap at the partition count: `auto` or a number.
    #[serde(
        default,
        deserialize_with = "de_partition_cap",
        skip_serializing_if = "Option::is_none"
    )]
    pub partition_cap: Option<PartitionCap>,
    /// Optional per-group alert threshold in offsets, exported as
    /// `medic_consumergroup_lag_threshold` for the alert rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_threshold: Option<u64>,
    /// Optional per-group sustain window, exported as `medic_consumergroup_lag_sustain_seconds`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub sustain: Option<Duration>,
    /// Who scales the Deployment: `actuator` (default) or `keda` (the actuator never PATCHes
    /// it and answers KEDA's External Scaler calls instead).
    #[serde(default, skip_serializing_if = "Scaler::is_actuator")]
    pub scaler: Scaler,
    /// What to do when a HorizontalPodAutoscaler or KEDA ScaledObject already scales the
    /// Deployment: `refuse` (default: leave it alone) or `raise_min_replicas`.
    #[serde(
        default,
        deserialize_with = "de_on_autoscaler",
        skip_serializing_if = "OnAutoscaler::is_refuse"
    )]
    pub on_autoscaler: OnAutoscaler,
    /// Optional seconds of lag (the oldest unconsumed message's age) one replica is expected to
    /// handle: the target of KEDA's `metric: lag_seconds`, which needs it (above 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds_per_replica: Option<f64>,
}

/// What a policy does when another autoscaler (an HPA or a KEDA ScaledObject) scales its
/// Deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnAutoscaler {
    /// Leave the Deployment alone: `skipped/managed_by_autoscaler` (the behaviour before the
    /// option existed).
    #[default]
    Refuse,
    /// While the lag alert fires, raise the autoscaler's `spec.minReplicas` (ScaledObject:
    /// `spec.minReplicaCount`) to the desired count; restore the original (kept in an
    /// annotation on the autoscaler) once the alert resolved and the down cooldown passed.
    RaiseMinReplicas,
}

impl OnAutoscaler {
    fn is_refuse(&self) -> bool {
        *self == OnAutoscaler::Refuse
    }

    /// The policy file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnAutoscaler::Refuse => "refuse",
            OnAutoscaler::RaiseMinReplicas => "raise_min_replicas",
        }
    }
}

fn de_on_autoscaler<'de, D: serde::Deserializer<'de>>(d: D) -> Result<OnAutoscaler, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "refuse" => Ok(OnAutoscaler::Refuse),
        "raise_min_replicas" => Ok(OnAutoscaler::RaiseMinReplicas),
        _ => Err(serde::de::Error::custom(format!(
            "on_autoscaler must be \"refuse\" or \"raise_min_replicas\", got {s:?}"
        ))),
    }
}

/// Who scales a policy's Deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scaler {
    /// The actuator PATCHes the scale subresource (today's behaviour).
    #[default]
    Actuator,
    /// A KEDA ScaledObject with an `external`/`external-push` trigger pointing at the
    /// actuator's gRPC port scales it; the actuator's lag decisions are `scaled_by_keda`.
    Keda,
}

impl Scaler {
    fn is_actuator(&self) -> bool {
        *self == Scaler::Actuator
    }
}

impl Policy {
    /// The target key, `namespace/name`.
    pub fn target(&self) -> String {
        self.deployment.to_string()
    }
}

/// The policy file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// The policies.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// Broker remediation, one entry per cluster (issue 5).
    #[serde(default)]
    pub brokers: Vec<BrokerPolicy>,
}

/// Validated policies with lookup by (cluster, consumergroup).
#[derive(Debug, Clone, Default)]
pub struct Policies {
    list: Vec<Policy>,
    by_group: HashMap<(String, String), usize>,
    brokers: Vec<BrokerPolicy>,
}

fn valid_dns_label(s: &str, max: usize, allow_dot: bool) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (allow_dot && b == b'.')
        })
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

impl Policies {
    /// Load and validate a policy file. A file with no policy at all is valid, and logs a warning
    /// (see [`Policies::empty_warning`]).
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let policies = Self::parse(&text, path)?;
        if let Some(warning) = policies.empty_warning() {
            tracing::warn!(path = %path.display(), policies = 0, "{warning}");
        }
        Ok(policies)
    }

    /// True when there is neither a scaling policy nor broker remediation.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty() && self.brokers.is_empty()
    }

    /// The start-up warning for a policy file that makes the actuator do nothing.
    pub fn empty_warning(&self) -> Option<&'static str> {
        self.is_empty().then_some(
            "the policy file has no policies and no brokers: medic-actuator will change nothing, every lag alert is audited as skipped (no_policy)",
        )
    }

    /// Parse and validate policy YAML; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let file: PolicyFile = serde_yaml::from_str(text).map_err(|e| PolicyError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::with_brokers(file.policies, file.brokers).map_err(|problems| PolicyError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Validate scaling and broker policies together, reporting every problem at once.
    pub fn with_brokers(
        list: Vec<Policy>,
        brokers: Vec<BrokerPolicy>,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, b) in brokers.iter().enumerate() {
            let at = format!("brokers[{i}]");
            problems.extend(b.problems(&at));
            if let Some(prev) = seen.insert(b.cluster.as_str(), i) {
                problems.push(format!(
                    "{at}: cluster {:?} already has broker remediation at brokers[{prev}]",
                    b.cluster
                ));
            }
        }
        match Self::new(list) {
            Ok(p) if problems.is_empty() => Ok(Self { brokers, ..p }),
            Ok(_) => Err(problems),
            Err(mut scaling) => {
                scaling.extend(problems);
                Err(scaling)
            }
        }
    }

    /// Validate a list of policies, reporting every problem at once.
    pub fn new(list: Vec<Policy>) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut by_group = HashMap::new();
        let mut by_target: BTreeMap<String, usize> = BTreeMap::new();
        for (i, p) in list.iter().enumerate() {
            let at = format!("policies[{i}]");
            if p.cluster.is_empty() {
                problems.push(format!("{at}.cluster: must not be empty"));
            }
            if p.consumergroup.is_empty() {
                problems.push(format!("{at}.consumergroup: must not be empty"));
            }
            if !valid_dns_label(&p.deployment.namespace, 63, false) {
                problems.push(format!(
                    "{at}.deployment.namespace: {:?} is not a valid namespace (lowercase RFC 1123 label)",
                    p.deployment.namespace
                ));
            }
            if !valid_dns_label(&p.deployment.name, 253, true) {
                problems.push(format!(
                    "{at}.deployment.name: {:?} is not a valid Deployment name (lowercase RFC 1123 subdomain)",
                    p.deployment.name
                ));
            }
            if p.max_replicas == 0 {
                problems.push(format!("{at}.max_replicas: 0 must be at least 1"));
            }
            if p.min_replicas > p.max_replicas {
                problems.push(format!(
                    "{at}.min_replicas: {} is greater than max_replicas {}",
                    p.min_replicas, p.max_replicas
                ));
            }
            if p.lag_per_replica == 0 {
                problems.push(format!("{at}.lag_per_replica: 0 must be at least 1"));
            }
            if p.max_step == 0 {
                problems.push(format!("{at}.max_step: 0 must be at least 1"));
            }
            if p.partition_cap == Some(PartitionCap::Fixed(0)) {
                problems.push(format!(
                    "{at}.partition_cap: 0 must be at least 1 or \"auto\""
                ));
            }
            if p.lag_threshold == Some(0) {
                problems.push(format!("{at}.lag_threshold: 0 must be at least 1"));
            }
            if p.sustain == Some(Duration::ZERO) {
                problems.push(format!("{at}.sustain: 0s must be positive"));
            }
            if let Some(s) = p.lag_seconds_per_replica {
                if !(s.is_finite() && s > 0.0) {
                    problems.push(format!(
                        "{at}.lag_seconds_per_replica: {s} must be a number above 0"
                    ));
                }
            }
            if p.on_autoscaler == OnAutoscaler::RaiseMinReplicas && p.scaler == Scaler::Keda {
                problems.push(format!(
                    "{at}.on_autoscaler: raise_min_replicas does not go with scaler: keda (KEDA scales that Deployment from the External Scaler's answers; the actuator changes nothing on it)"
                ));
            }
            let key = (p.cluster.clone(), p.consumergroup.clone());
            if let Some(prev) = by_group.insert(key, i) {
                problems.push(format!(
                    "{at}: cluster {:?} consumergroup {:?} already has a policy at policies[{prev}]",
                    p.cluster, p.consumergroup
                ));
            }
            if let Some(prev) = by_target.insert(p.target(), i) {
                problems.push(format!(
                    "{at}.deployment: {} is already scaled by policies[{prev}]; one Deployment, one policy",
                    p.target()
                ));
            }
        }
        if problems.is_empty() {
            Ok(Self {
                list,
                by_group,
                brokers: Vec::new(),
            })
        } else {
            Err(problems)
        }
    }

    /// The policy for (cluster, consumergroup), if any.
    pub fn get(&self, cluster: &str, consumergroup: &str) -> Option<&Policy> {
        self.by_group
            .get(&(cluster.to_string(), consumergroup.to_string()))
            .and_then(|&i| self.list.get(i))
    }

    /// All policies in file order.
    pub fn all(&self) -> &[Policy] {
        &self.list
    }

    /// Broker remediation policies in file order.
    pub fn brokers(&self) -> &[BrokerPolicy] {
        &self.brokers
    }

    /// The broker remediation policy of `cluster`, if any.
    pub fn broker(&self, cluster: &str) -> Option<&BrokerPolicy> {
        self.brokers.iter().find(|b| b.cluster == cluster)
    }

    /// The policy scaling `target` (`namespace/name`).
    pub fn by_target(&self, target: &str) -> Option<&Policy> {
        self.list.iter().find(|p| p.target() == target)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
policies:
  - cluster: prod
    consumergroup: orders
    deployment: {namespace: shop, name: orders-consumer}
    max_replicas: 12
    scale_up_cooldown: 30s
    partition_cap: auto
    lag_threshold: 5000
    sustain: 2m
  - cluster: prod
    consumergroup: billing
    deployment: {namespace: shop, name: billing}
    partition_cap: 6
"#;

    #[test]
    fn parses_with_defaults_and_lookup() {
        let p = Policies::parse(GOOD, Path::new("p.yaml")).unwrap();
        let o = p.get("prod", "orders").unwrap();
        assert_eq!(o.min_replicas, 1);
        assert_eq!(o.max_replicas, 12);
        assert_eq!(o.lag_per_replica, 1000);
        assert_eq!(o.scale_up_cooldown, Duration::from_secs(30));
        assert_eq!(o.scale_down_cooldown, Duration::from_secs(300));
        assert_eq!(o.max_step, 2);
        assert_eq!(o.partition_cap, Some(PartitionCap::Auto));
        assert_eq!(o.sustain, Some(Duration::from_secs(120)));
        assert_eq!(o.target(), "shop/orders-consumer");
        let b = p.get("prod", "billing").unwrap();
        assert_eq!(b.partition_cap, Some(PartitionCap::Fixed(6)));
        assert_eq!(b.max_replicas, 10);
        assert!(p.get("prod", "nope").is_none());
        assert!(p.get("staging", "orders").is_none());
        assert_eq!(
            p.by_target("shop/billing").unwrap().consumergroup,
            "billing"
        );
    }

    #[test]
    fn reports_every_problem_with_key_and_value() {
        let bad = r#"
policies:
  - cluster: prod
    consumergroup: orders
    deployment: {namespace: Shop, name: orders}
    min_replicas: 5
    max_replicas: 3
    lag_per_replica: 0
    max_step: 0
  - cluster: prod
    consumergroup: orders
    deployment: {namespace: shop, name: orders}
"#;
        let err = Policies::parse(bad, Path::new("/etc/p.yaml")).unwrap_err();
        let PolicyError::Invalid { path, problems } = &err else {
            panic!("{err}")
        };
        assert_eq!(path, Path::new("/etc/p.yaml"));
        assert_eq!(
            problems,
            &vec![
                "policies[0].deployment.namespace: \"Shop\" is not a valid namespace (lowercase RFC 1123 label)".to_string(),
                "policies[0].min_replicas: 5 is greater than max_replicas 3".into(),
                "policies[0].lag_per_replica: 0 must be at least 1".into(),
                "policies[0].max_step: 0 must be at least 1".into(),
                "policies[1]: cluster \"prod\" consumergroup \"orders\" already has a policy at policies[0]".into(),
            ]
        );
        assert!(err
            .to_string()
            .starts_with("policy file /etc/p.yaml is invalid:"));
    }

    #[test]
    fn unknown_keys_and_bad_cap_are_rejected() {
        let err = Policies::parse(
            "policies:\n  - cluster: a\n    consumergroup: b\n    deployment: {namespace: a, name: b}\n    max_replica: 3\n",
            Path::new("p.yaml"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `max_replica`"),
            "{err}"
        );
        let err = Policies::parse(
            "policies:\n  - cluster: a\n    consumergroup: b\n    deployment: {namespace: a, name: b}\n    partition_cap: lots\n",
            Path::new("p.yaml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"lots\""), "{err}");
    }

    #[test]
    fn broker_section_is_validated_with_the_rest() {
        let y = "policies:\n  - {cluster: a, consumergroup: g1, deployment: {namespace: n, name: d}, max_step: 0}\nbrokers:\n  - {cluster: a, backend: log-only, expected_brokers: 3}\n  - {cluster: a, backend: kafka}\n";
        let err = Policies::parse(y, Path::new("p.yaml")).unwrap_err();
        let PolicyError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(
            problems,
            &vec![
                "policies[0].max_step: 0 must be at least 1".to_string(),
                "brokers[1].kafka: required with backend kafka".into(),
                "brokers[1].expected_brokers: required with backend kafka without kafka metadata (the mass-failure guard needs the cluster size)".into(),
                "brokers[1]: cluster \"a\" already has broker remediation at brokers[0]".into(),
            ]
        );
        let ok = Policies::parse(
            "brokers:\n  - {cluster: a, backend: log-only, expected_brokers: 3, dry_run: true}\n",
            Path::new("p.yaml"),
        )
        .unwrap();
        assert!(ok.broker("a").unwrap().dry_run);
        assert!(ok.broker("b").is_none());
        assert!(ok.all().is_empty());
    }

    #[test]
    fn the_example_policy_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies.yaml");
        let p = Policies::load(&path).unwrap();
        assert_eq!(p.all().len(), 2);
        let kinds: Vec<&str> = p.brokers().iter().map(|b| b.backend.as_str()).collect();
        assert_eq!(kinds, vec!["kafka", "cruise-control", "log-only"]);
        let k = p.broker("prod-eu1").unwrap();
        assert_eq!(k.throttle_bytes_per_second, Some(52_428_800));
        assert_eq!(k.kafka.as_ref().unwrap().bootstrap_servers.len(), 2);
        assert!(!p.broker("prod-us1").unwrap().reads_metadata());
    }

    #[test]
    fn an_empty_policy_file_is_valid_but_warned_about() {
        let empty = Policies::parse("policies: []\n", Path::new("p.yaml")).unwrap();
        assert!(empty.is_empty());
        assert_eq!(
            empty.empty_warning(),
            Some("the policy file has no policies and no brokers: medic-actuator will change nothing, every lag alert is audited as skipped (no_policy)")
        );
        let good = Policies::parse(GOOD, Path::new("p.yaml")).unwrap();
        assert!(!good.is_empty());
        assert_eq!(good.empty_warning(), None);
    }

    #[test]
    fn one_deployment_one_policy() {
        let y = "policies:\n  - {cluster: a, consumergroup: g1, deployment: {namespace: n, name: d}}\n  - {cluster: a, consumergroup: g2, deployment: {namespace: n, name: d}}\n";
        let err = Policies::parse(y, Path::new("p.yaml")).unwrap_err();
        assert!(
            err.to_string()
                .contains("policies[1].deployment: n/d is already scaled by policies[0]"),
            "{err}"
        );
    }
}
