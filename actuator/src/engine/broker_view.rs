//! Read-only views of broker remediation: gauges (mass failure, alerting brokers, running,
//! cluster interval) and the `broker_remediation` part of `/api/v1/state`.

use std::time::Duration;

use super::broker::{BrokerEngine, ClusterCtl, ClusterRuntime};
use crate::broker::gate::is_mass_failure;
use crate::telemetry;

impl BrokerEngine {
    pub(super) fn mass_gauge(&self, ctl: &ClusterCtl, alerting: usize, brokers: Option<usize>) {
        let cluster = [("cluster", ctl.policy.cluster.clone())];
        self.rec
            .telemetry
            .gauge(telemetry::BROKERS_ALERTING, &cluster)
            .set(alerting as f64);
        if let Some(n) = brokers {
            let mass = is_mass_failure(alerting, n, ctl.policy.mass_failure_share);
            self.rec
                .telemetry
                .gauge(telemetry::MASS_FAILURE, &cluster)
                .set(f64::from(u8::from(mass)));
        }
    }

    pub(super) fn gauges(&self, ctl: &ClusterCtl, rt: &ClusterRuntime) {
        let cluster = [("cluster", ctl.policy.cluster.clone())];
        self.rec
            .telemetry
            .gauge(telemetry::REMEDIATION_RUNNING, &cluster)
            .set(f64::from(u8::from(rt.running.is_some())));
        let left = rt
            .last_cluster
            .as_ref()
            .map(|l| {
                let elapsed =
                    Duration::try_from(self.now().duration_since(l.at)).unwrap_or(Duration::ZERO);
                ctl.policy.cluster_cooldown.saturating_sub(elapsed)
            })
            .unwrap_or(Duration::ZERO);
        self.rec
            .telemetry
            .gauge(telemetry::BROKER_COOLDOWN, &cluster)
            .set(left.as_secs_f64());
        if rt.tracked.is_empty() {
            self.rec
                .telemetry
                .gauge(telemetry::BROKERS_ALERTING, &cluster)
                .set(0.0);
            self.rec
                .telemetry
                .gauge(telemetry::MASS_FAILURE, &cluster)
                .set(0.0);
        }
    }

    /// Cooldown and running gauges (before a scrape; skips clusters busy right now).
    pub(super) fn refresh_gauges(&self) {
        for ctl in self.clusters.values() {
            if let Ok(rt) = ctl.rt.try_lock() {
                self.gauges(ctl, &rt);
            }
        }
    }

    /// The state view of broker remediation.
    pub(super) async fn state(&self) -> serde_json::Value {
        let mut out = Vec::new();
        for ctl in self.clusters.values() {
            let rt = ctl.rt.lock().await;
            let tracked: Vec<_> = rt
                .tracked
                .values()
                .map(|t| {
                    serde_json::json!({
                        "alertname": t.alert.alertname,
                        "broker": t.alert.broker,
                        "path": t.alert.path,
                        "fingerprint": t.alert.fingerprint,
                        "status": t.alert.status,
                        "starts_at": t.alert.starts_at,
                        "last_seen": t.last_seen,
                    })
                })
                .collect();
            out.push(serde_json::json!({
                "cluster": ctl.policy.cluster,
                "backend": ctl.backend.kind().as_str(),
                "dry_run": self.dry_run(ctl),
                "policy": ctl.policy,
                "running": rt.running,
                "last_action": rt.last_cluster,
                "last_action_by_broker": rt.last_by_broker.values().collect::<Vec<_>>(),
                "known_brokers": rt.known_brokers,
                "alerting_brokers": rt.alerting(),
                "tracked_alerts": tracked,
            }));
        }
        serde_json::Value::Array(out)
    }
}
