//! `leader_election.*`: the settings of the Lease election, their checks, and the values they
//! resolve to at start-up (identity and namespace from the environment).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Leader election through a `coordination.k8s.io/v1` Lease (off unless `enabled`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaderElectionConfig {
    /// Run for leadership; off: this replica always leads (one replica only).
    pub enabled: bool,
    /// Name of the Lease object.
    pub lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else the client's namespace: the
    /// ServiceAccount's in-cluster, the kubeconfig context's, or `default`).
    pub namespace: Option<String>,
    /// This replica's identity in the Lease (default: $POD_NAME, else $HOSTNAME). Must be
    /// unique per replica.
    pub identity: Option<String>,
    /// How long a Lease not renewed stays valid; another replica takes over only after the
    /// record has not changed for this long on its own clock. Whole seconds.
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    /// The leader steps down when it has not renewed for this long (below lease_duration, so
    /// it stops before its Lease can expire).
    #[serde(with = "humantime_serde")]
    pub renew_deadline: Duration,
    /// Time between attempts to acquire or renew.
    #[serde(with = "humantime_serde")]
    pub retry_period: Duration,
}

/// Default `leader_election.lease_name`.
pub const DEFAULT_LEASE_NAME: &str = "medic-actuator";

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            lease_name: DEFAULT_LEASE_NAME.into(),
            namespace: None,
            identity: None,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// Whether `s` is a lowercase RFC 1123 label (`allow_dot`: subdomain) of at most `max` bytes.
fn rfc1123(s: &str, max: usize, allow_dot: bool) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (allow_dot && b == b'.')
        })
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

impl LeaderElectionConfig {
    /// Every problem with the settings, each naming its key (checked whether or not the
    /// election is enabled: a bad value is wrong either way).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !rfc1123(&self.lease_name, 253, true) {
            p.push(format!(
                "leader_election.lease_name: {:?} is not a valid Lease name (lowercase RFC 1123 subdomain)",
                self.lease_name
            ));
        }
        if let Some(ns) = &self.namespace {
            if !rfc1123(ns, 63, false) {
                p.push(format!(
                    "leader_election.namespace: {ns:?} is not a valid namespace (lowercase RFC 1123 label)"
                ));
            }
        }
        if let Some(id) = &self.identity {
            if id.trim().is_empty() {
                p.push("leader_election.identity: must not be empty (each replica needs a unique identity)".into());
            }
        }
        let (lease, renew, retry) = (self.lease_duration, self.renew_deadline, self.retry_period);
        if lease < Duration::from_secs(1) || lease.subsec_nanos() != 0 {
            p.push(format!(
                "leader_election.lease_duration: {} must be a whole number of seconds, at least 1s (it is written as the Lease's leaseDurationSeconds)",
                human(lease)
            ));
        } else if lease.as_secs() > i32::MAX as u64 {
            p.push(format!(
                "leader_election.lease_duration: {} is too long for the Lease's leaseDurationSeconds",
                human(lease)
            ));
        }
        if renew >= lease {
            p.push(format!(
                "leader_election.renew_deadline: {} must be shorter than leader_election.lease_duration {}: the leader must step down before its Lease can expire and another replica takes over",
                human(renew),
                human(lease)
            ));
        }
        if retry.is_zero() {
            p.push("leader_election.retry_period: 0s must be positive".into());
        } else if retry >= renew {
            p.push(format!(
                "leader_election.retry_period: {} must be shorter than leader_election.renew_deadline {}: the leader needs more than one attempt to renew before it steps down",
                human(retry),
                human(renew)
            ));
        }
        p
    }

    /// The identity: the setting, else `$POD_NAME`, else `$HOSTNAME`.
    pub fn identity(&self, env: &BTreeMap<String, String>) -> Result<String, String> {
        self.identity
            .clone()
            .or_else(|| env.get("POD_NAME").cloned())
            .or_else(|| env.get("HOSTNAME").cloned())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                "leader_election.identity: not set, and neither POD_NAME nor HOSTNAME is in the environment; each replica needs a unique identity".to_string()
            })
    }

    /// The namespace: the setting, else `$POD_NAMESPACE`, else `client_default` (the Kubernetes
    /// client's own: in-cluster ServiceAccount, kubeconfig context, or `default`).
    pub fn namespace(&self, env: &BTreeMap<String, String>, client_default: &str) -> String {
        self.namespace
            .clone()
            .or_else(|| {
                env.get("POD_NAMESPACE")
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| client_default.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_client_go_s_and_valid() {
        let c = LeaderElectionConfig::default();
        assert!(!c.enabled);
        assert_eq!(c.lease_name, "medic-actuator");
        assert_eq!(
            (c.lease_duration, c.renew_deadline, c.retry_period),
            (
                Duration::from_secs(15),
                Duration::from_secs(10),
                Duration::from_secs(2)
            )
        );
        assert_eq!(c.problems(), Vec::<String>::new());
    }

    #[test]
    fn identity_and_namespace_come_from_the_environment() {
        let c = LeaderElectionConfig::default();
        let e = env(&[("HOSTNAME", "host-a"), ("POD_NAME", "pod-a")]);
        assert_eq!(c.identity(&e).unwrap(), "pod-a");
        assert_eq!(
            c.identity(&env(&[("HOSTNAME", "host-a")])).unwrap(),
            "host-a"
        );
        assert_eq!(
            c.identity(&env(&[("POD_NAME", "  ")])).unwrap_err(),
            "leader_election.identity: not set, and neither POD_NAME nor HOSTNAME is in the environment; each replica needs a unique identity"
        );
        let set = LeaderElectionConfig {
            identity: Some("me".into()),
            namespace: Some("ops".into()),
            ..LeaderElectionConfig::default()
        };
        assert_eq!(set.identity(&e).unwrap(), "me");
        let ns = env(&[("POD_NAMESPACE", "medic")]);
        assert_eq!(set.namespace(&ns, "default"), "ops");
        assert_eq!(c.namespace(&ns, "default"), "medic");
        assert_eq!(
            c.namespace(&BTreeMap::new(), "from-kubeconfig"),
            "from-kubeconfig"
        );
    }
}
