//! Read-only views of broker remediation: gauges (mass failure, alerting brokers, running,
//! cluster interval) and the `broker_remediation` part of `/api/v1/state`.

use std::time::Duration;

use super::broker::{BrokerEngine, ClusterRuntime, ManagedCluster};
use crate::broker::gate::is_mass_failure;
use crate::telemetry;

impl BrokerEngine {
    pub(super) fn mass_gauge(
        &self,
        cluster: &ManagedCluster,
        alerting: usize,
        brokers: Option<usize>,
    ) {
        let labels = [("cluster", cluster.policy.cluster.clone())];
        self.recorder
            .telemetry
            .gauge(telemetry::BROKERS_ALERTING, &labels)
            .set(alerting as f64);
        if let Some(n) = brokers {
            let mass = is_mass_failure(alerting, n, cluster.policy.mass_failure_share);
            self.recorder
                .telemetry
                .gauge(telemetry::MASS_FAILURE, &labels)
                .set(f64::from(u8::from(mass)));
        }
    }

    pub(super) fn gauges(&self, cluster: &ManagedCluster, runtime: &ClusterRuntime) {
        let labels = [("cluster", cluster.policy.cluster.clone())];
        self.recorder
            .telemetry
            .gauge(telemetry::REMEDIATION_RUNNING, &labels)
            .set(f64::from(u8::from(runtime.running.is_some())));
        let left = runtime
            .last_cluster
            .as_ref()
            .map(|l| {
                let elapsed =
                    Duration::try_from(self.now().duration_since(l.at)).unwrap_or(Duration::ZERO);
                cluster.policy.cluster_cooldown.saturating_sub(elapsed)
            })
            .unwrap_or(Duration::ZERO);
        self.recorder
            .telemetry
            .gauge(telemetry::BROKER_COOLDOWN, &labels)
            .set(left.as_secs_f64());
        if runtime.tracked.is_empty() {
            self.recorder
                .telemetry
                .gauge(telemetry::BROKERS_ALERTING, &labels)
                .set(0.0);
            self.recorder
                .telemetry
                .gauge(telemetry::MASS_FAILURE, &labels)
                .set(0.0);
        }
    }

    /// Cooldown and running gauges (before a scrape; skips clusters busy right now).
    pub(super) fn refresh_gauges(&self) {
        for cluster in self.clusters().values() {
            if let Ok(runtime) = cluster.runtime.try_lock() {
                self.gauges(cluster, &runtime);
            }
        }
    }

    /// The state view of broker remediation.
    pub(super) async fn state(&self) -> serde_json::Value {
        let mut out = Vec::new();
        let clusters = self.clusters();
        for cluster in clusters.values() {
            let runtime = cluster.runtime.lock().await;
            let tracked: Vec<_> = runtime
                .tracked
                .values()
                .map(|t| {
                    serde_json::json!({
                        "alertname": t.alert.kind.alertname(),
                        "broker": t.alert.broker.to_string(),
                        "path": t.alert.path,
                        "fingerprint": t.alert.fingerprint,
                        "status": t.alert.status,
                        "starts_at": t.alert.starts_at,
                        "last_seen": t.last_seen,
                        "origin": t.origin,
                        "confirmed_by_prometheus": t.confirmed,
                    })
                })
                .collect();
            out.push(serde_json::json!({
                "cluster": cluster.policy.cluster,
                "backend": cluster.backend.kind().as_str(),
                "dry_run": self.dry_run(cluster),
                "policy": cluster.policy,
                "running": runtime.running,
                "last_action": runtime.last_cluster,
                "last_action_by_broker": runtime.last_by_broker.values().collect::<Vec<_>>(),
                "known_brokers": runtime.known_brokers,
                "alerting_brokers": runtime.alerting(),
                "tracked_alerts": tracked,
            }));
        }
        serde_json::Value::Array(out)
    }
}
