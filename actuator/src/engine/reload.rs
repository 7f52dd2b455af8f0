//! Policy reloads in the engine (`crate::reload` decides when and audits): what changed, the
//! backends a new policy file needs, and the swap itself.
//!
//! The swap keeps what the process knows about targets and clusters that are still there:
//! a lag target (a Deployment) keeps its last action, remembered deliveries and tracked alerts
//! (tracked alerts are dropped when the target now belongs to another consumer group); a broker
//! cluster keeps its runtime (tracked alerts, last actions, the running action) and, when its
//! connection did not change, its backend. A decision in progress finishes with the policies it
//! started with. Removed targets and clusters are no longer acted on (an action already running
//! on a removed cluster runs to its end and is audited); new ones start empty. A cluster that is
//! removed and added back gets its runtime back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;

use super::broker::{BrokerEngine, ClusterRuntime, ManagedCluster};
use super::{Engine, EngineError, Live, TargetRuntime};
use crate::audit::{Action, AuditRecord, Outcome};
use crate::backend::remediation::RemediationBackend;
use crate::broker::policy::BrokerPolicy;
use crate::decide::Trigger;
use crate::policy::Policies;
use crate::reason::ReasonCode;
use crate::telemetry;

/// The last configuration reloads, as `/healthz` shows them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    /// When the last reload was attempted.
    pub last_reload: Option<Timestamp>,
    /// Its result: `applied`, `rejected` or `unchanged`.
    pub last_result: Option<&'static str>,
    /// Why it was rejected (None when the last reload was not rejected).
    pub last_error: Option<String>,
    /// When a reload last changed the policies.
    pub last_applied: Option<Timestamp>,
}

/// `key: before -> after` for each leaf that differs between two JSON values (objects are
/// walked; a missing key is `unset`).
pub(crate) fn leaf_changes(prefix: &str, before: &Value, after: &Value, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for k in keys {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_changes(
                    &key,
                    b.get(k).unwrap_or(&Value::Null),
                    a.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (b, a) if b != a => out.push(format!("{prefix}: {} -> {}", show(b), show(a))),
        _ => {}
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "unset".into(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// Added, removed and changed entries of two keyed lists, each as one line.
fn list_changes<T: Serialize>(
    what: &str,
    before: BTreeMap<String, &T>,
    after: BTreeMap<String, &T>,
    describe: impl Fn(&T) -> String,
) -> Vec<String> {
    let mut out = Vec::new();
    for (key, b) in &before {
        match after.get(key) {
            None => out.push(format!("{what} {key} removed")),
            Some(a) => {
                let mut fields = Vec::new();
                leaf_changes(
                    "",
                    &serde_json::to_value(b).unwrap_or_default(),
                    &serde_json::to_value(a).unwrap_or_default(),
                    &mut fields,
                );
                if !fields.is_empty() {
                    out.push(format!("{what} {key}: {}", fields.join(", ")));
                }
            }
        }
    }
    for (key, a) in &after {
        if !before.contains_key(key) {
            out.push(format!("{what} {key} added ({})", describe(a)));
        }
    }
    out
}

/// What changes from `before` to `after`, one line per policy or broker cluster (empty: the
/// same policies).
pub fn policy_changes(before: &Policies, after: &Policies) -> Vec<String> {
    fn lag(p: &Policies) -> BTreeMap<String, &crate::policy::Policy> {
        p.all().iter().map(|x| (x.target(), x)).collect()
    }
    fn brokers(p: &Policies) -> BTreeMap<String, &BrokerPolicy> {
        p.brokers().iter().map(|b| (b.cluster.clone(), b)).collect()
    }
    let mut out = list_changes("policy", lag(before), lag(after), |p| {
        format!("cluster {} consumergroup {}", p.cluster, p.consumergroup)
    });
    out.extend(list_changes(
        "brokers cluster",
        brokers(before),
        brokers(after),
        |b| format!("backend {}", b.backend.as_str()),
    ));
    out
}

/// Whether a new broker policy can keep the backend built for the old one (same backend and
/// connection settings).
fn same_connection(old: &BrokerPolicy, new: &BrokerPolicy) -> bool {
    old.backend == new.backend && old.kafka == new.kafka && old.cruise_control == new.cruise_control
}

impl BrokerEngine {
    /// Put the clusters of `policies` in force with `backends` (one per cluster), keeping the
    /// runtime of every cluster known before.
    fn install(
        &self,
        policies: &[BrokerPolicy],
        backends: &BTreeMap<String, Arc<dyn RemediationBackend>>,
    ) {
        let old = self.clusters();
        let mut retired = match self.retired.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (name, c) in old.iter() {
            retired.insert(name.clone(), c.runtime.clone());
        }
        let mut clusters = BTreeMap::new();
        for policy in policies {
            let Some(backend) = backends.get(&policy.cluster) else {
                continue;
            };
            let runtime = retired
                .remove(&policy.cluster)
                .unwrap_or_else(|| Arc::new(Mutex::new(ClusterRuntime::default())));
            if !old.contains_key(&policy.cluster) {
                let labels = [("cluster", policy.cluster.clone())];
                for g in [telemetry::MASS_FAILURE, telemetry::REMEDIATION_RUNNING] {
                    self.recorder.telemetry.gauge(g, &labels).set(0.0);
                }
            }
            clusters.insert(
                policy.cluster.clone(),
                Arc::new(ManagedCluster {
                    policy: policy.clone(),
                    backend: backend.clone(),
                    runtime,
                }),
            );
        }
        for name in old.keys().filter(|n| !clusters.contains_key(*n)) {
            let labels = [("cluster", name.clone())];
            for g in [telemetry::MASS_FAILURE, telemetry::BROKERS_ALERTING] {
                self.recorder.telemetry.gauge(g, &labels).set(0.0);
            }
        }
        self.recorder
            .telemetry
            .gauge(telemetry::BROKER_POLICIES, &[])
            .set(clusters.len() as f64);
        match self.clusters.write() {
            Ok(mut c) => *c = Arc::new(clusters),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(clusters),
        }
    }
}

impl Engine {
    /// The token cancelled by [`Engine::shutdown`], for periodic work of other modules.
    pub(crate) fn stop_token(&self) -> tokio_util::sync::CancellationToken {
        self.stop.clone()
    }

    /// What `after` changes from the policies in force (empty: nothing).
    pub(crate) fn policy_changes(&self, after: &Policies) -> Vec<String> {
        policy_changes(&self.policies(), after)
    }

    /// The remediation backend of each broker cluster of `after`: the one in force when its
    /// connection did not change, else a new one (secret and certificate files are read now).
    /// Every backend that cannot be built is an error.
    pub(crate) fn backends_for(
        &self,
        after: &Policies,
    ) -> Result<BTreeMap<String, Arc<dyn RemediationBackend>>, Vec<String>> {
        let old = self.brokers.clusters();
        let mut backends = BTreeMap::new();
        let mut problems = Vec::new();
        for policy in after.brokers() {
            let kept = old
                .get(&policy.cluster)
                .filter(|c| same_connection(&c.policy, policy))
                .map(|c| c.backend.clone());
            let backend = match kept {
                Some(b) => Ok(b),
                None => {
                    crate::backend::build(policy, Some(self.telemetry.kafka_request_observer()))
                }
            };
            match backend {
                Ok(b) => {
                    backends.insert(policy.cluster.clone(), b);
                }
                Err(e) => problems.push(e),
            }
        }
        if problems.is_empty() {
            Ok(backends)
        } else {
            Err(problems)
        }
    }

    /// Put `policies` in force (see the module documentation for what is kept).
    pub(crate) async fn install_policies(
        &self,
        policies: Policies,
        backends: BTreeMap<String, Arc<dyn RemediationBackend>>,
    ) {
        let old = self.live();
        let mut targets = HashMap::new();
        for p in policies.all() {
            let key = p.target();
            let runtime = match old.targets.get(&key) {
                Some(runtime) => {
                    let same_group = old.policies.by_target(&key).is_some_and(|b| {
                        b.cluster == p.cluster && b.consumergroup == p.consumergroup
                    });
                    if !same_group {
                        // Its tracked alerts are another group's: their lag must not scale it.
                        let mut r = runtime.lock().await;
                        r.tracked.clear();
                        r.last_reeval = None;
                    }
                    runtime.clone()
                }
                None => Arc::new(Mutex::new(TargetRuntime::default())),
            };
            targets.insert(key, runtime);
        }
        // Override gauges: a removed override is exported as NaN, which the rules do not take
        // for a valid override (`>= 0`), so the group falls back to the rules' default.
        for p in old.policies.all() {
            let now = policies.get(&p.cluster, &p.consumergroup);
            let labels = [
                ("cluster", p.cluster.clone()),
                ("consumergroup", p.consumergroup.clone()),
            ];
            if p.lag_threshold.is_some() && now.is_none_or(|n| n.lag_threshold.is_none()) {
                self.telemetry
                    .gauge(telemetry::LAG_THRESHOLD, &labels)
                    .set(f64::NAN);
            }
            if p.sustain.is_some() && now.is_none_or(|n| n.sustain.is_none()) {
                self.telemetry
                    .gauge(telemetry::LAG_SUSTAIN, &labels)
                    .set(f64::NAN);
            }
        }
        for p in policies.all() {
            let labels = [
                ("cluster", p.cluster.clone()),
                ("consumergroup", p.consumergroup.clone()),
            ];
            if let Some(t) = p.lag_threshold {
                self.telemetry
                    .gauge(telemetry::LAG_THRESHOLD, &labels)
                    .set(t as f64);
            }
            if let Some(s) = p.sustain {
                self.telemetry
                    .gauge(telemetry::LAG_SUSTAIN, &labels)
                    .set(s.as_secs_f64());
            }
        }
        self.telemetry
            .gauge(telemetry::POLICIES, &[])
            .set(policies.all().len() as f64);
        if let Some(warning) = policies.empty_warning() {
            tracing::warn!("{warning}");
        }
        self.brokers.install(policies.brokers(), &backends);
        let live = Arc::new(Live {
            policies: Arc::new(policies),
            targets,
        });
        match self.live.write() {
            Ok(mut l) => *l = live,
            Err(poisoned) => *poisoned.into_inner() = live,
        }
    }

    /// The audit record of a reload: `applied`, or `failed` with `reason`.
    pub(crate) async fn audit_reload(
        &self,
        outcome: Outcome,
        reason: Option<ReasonCode>,
        message: String,
    ) -> Result<u64, EngineError> {
        let record = AuditRecord {
            reason,
            message,
            dry_run: self.settings.dry_run,
            ..AuditRecord::new(
                self.now(),
                &self.settings.instance,
                Trigger::Reload,
                outcome,
                Action::ConfigReload,
            )
        };
        self.write(record).await
    }

    /// Count a reload attempt (`applied`, `rejected` or `unchanged`) and keep it for `/healthz`.
    pub(crate) fn note_reload(&self, result: &'static str, error: Option<String>) {
        let now = self.now();
        self.telemetry
            .counter(telemetry::CONFIG_RELOADS, &[("result", result.into())])
            .increment(1);
        let mut status = match self.reload_status.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        status.last_reload = Some(now);
        status.last_result = Some(result);
        status.last_error = error;
        if result == "applied" {
            status.last_applied = Some(now);
        }
    }

    /// The `config` part of `/healthz`: the last reload, its result and error.
    pub fn config_status(&self) -> ReloadStatus {
        match self.reload_status.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(y: &str) -> Policies {
        Policies::parse(y, Path::new("p.yaml")).unwrap()
    }

    #[test]
    fn changes_name_each_added_removed_and_changed_setting() {
        let before = parse(
            "policies:\n  - {cluster: prod, consumergroup: orders, deployment: {namespace: shop, name: orders}, max_replicas: 3, lag_threshold: 500}\n  - {cluster: prod, consumergroup: gone, deployment: {namespace: shop, name: gone}}\nbrokers:\n  - {cluster: prod, backend: log-only, expected_brokers: 3}\n",
        );
        let after = parse(
            "policies:\n  - {cluster: prod, consumergroup: orders, deployment: {namespace: shop, name: orders}, max_replicas: 5, scale_up_cooldown: 30s}\n  - {cluster: prod, consumergroup: new, deployment: {namespace: shop, name: new}}\nbrokers:\n  - {cluster: prod, backend: log-only, expected_brokers: 4, settle_time: 0s}\n  - {cluster: east, backend: log-only, expected_brokers: 3}\n",
        );
        assert_eq!(
            policy_changes(&before, &after),
            vec![
                "policy shop/gone removed".to_string(),
                "policy shop/orders: lag_threshold: 500 -> unset, max_replicas: 3 -> 5, scale_up_cooldown: 1m -> 30s".into(),
                "policy shop/new added (cluster prod consumergroup new)".into(),
                "brokers cluster prod: expected_brokers: 3 -> 4, settle_time: 1m -> 0s".into(),
                "brokers cluster east added (backend log-only)".into(),
            ]
        );
        assert!(policy_changes(&after, &after).is_empty());
    }
}
