//! Periodic work and read-only views: re-evaluation, cooldown gauges, /api/v1/state.

use std::sync::Arc;
use std::time::Duration;

use super::{elapsed_within, BrokerEntry, Engine, EngineError};
use crate::alert::AlertStatus;
use crate::audit::{AuditRecord, Outcome};
use crate::decide::{cooldown_remaining, Direction, Trigger};
use crate::policy::Policy;
use crate::reason::ReasonCode;
use crate::telemetry;

/// Whether a resolved alert's evaluation ends its re-evaluation: someone else manages the
/// Deployment (outside the policy's bounds, or an HPA or KEDA ScaledObject scales it), or it is at
/// the floor the current lag allows *and* that floor is `min_replicas` (with no lag left, the floor is `min_replicas`). A floor above
/// `min_replicas` means the lag is still draining: later rounds step further down, so the alert
/// stays tracked (until `alert_ttl` after its last delivery).
pub(super) fn settles(record: &AuditRecord, policy: &Policy) -> bool {
    match record.reason {
        Some(ReasonCode::OutOfBounds | ReasonCode::ManagedByAutoscaler) => true,
        Some(ReasonCode::AtDesired) => record
            .desired_replicas
            .is_some_and(|d| d <= policy.min_replicas),
        _ => false,
    }
}

impl Engine {
    /// Start the re-evaluation loop on a tracked task: a round every `interval`, until
    /// [`Engine::shutdown`]. A round in progress is never cut short (it may be between a PATCH
    /// and its audit record); shutdown waits for it.
    pub fn start_reevaluation(self: &Arc<Self>, interval: Duration) {
        let engine = self.clone();
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Err(e) = engine.reevaluate().await {
                    tracing::error!(error = %e, "re-evaluation could not be audited");
                }
            }
        });
    }

    /// Re-evaluate every tracked alert once (firing ones, and resolved ones until settled).
    pub async fn reevaluate(&self) -> Result<usize, EngineError> {
        if !self.leadership.is_leader() {
            // Only the leader re-evaluates (lag and broker alerts alike); a follower's rounds
            // are skipped whole.
            tracing::debug!("not the leader: re-evaluation round skipped");
            return Ok(0);
        }
        let mut acted = 0;
        let mut firing = 0usize;
        let mut settling = 0usize;
        let live = self.live();
        for policy in live.policies.all() {
            let Some(runtime) = live.targets.get(&policy.target()) else {
                continue;
            };
            let mut runtime = runtime.lock().await;
            let now = self.now();
            let ttl = self.settings.alert_ttl;
            runtime
                .tracked
                .retain(|_, t| elapsed_within(t.last_seen, now, ttl));
            let pick = runtime
                .tracked
                .values()
                .find(|t| t.alert.status == AlertStatus::Firing)
                .or_else(|| runtime.tracked.values().next())
                .map(|t| t.alert.clone());
            let Some(alert) = pick else {
                continue;
            };
            let (record, _) = self
                .evaluate(policy, &alert, Trigger::Reevaluate, &mut runtime, now)
                .await;
            let code = format!(
                "{}:{}",
                record.outcome.as_str(),
                record.reason.map(ReasonCode::as_str).unwrap_or_default()
            );
            let settled = alert.status == AlertStatus::Resolved && settles(&record, policy);
            if record.outcome != Outcome::Skipped
                || runtime.last_reeval.as_deref() != Some(code.as_str())
            {
                if record.outcome == Outcome::Applied {
                    acted += 1;
                }
                self.write(record).await?;
            }
            runtime.last_reeval = Some(code);
            if settled {
                runtime.tracked.clear();
                runtime.last_reeval = None;
            }
            if runtime
                .tracked
                .values()
                .any(|t| t.alert.status == AlertStatus::Firing)
            {
                firing += 1;
            } else if !runtime.tracked.is_empty() {
                settling += 1;
            }
        }
        // Level-triggered: firing broker alerts from Prometheus's ALERTS join those the webhooks
        // brought before the broker round (prom_alerts.rs).
        self.look_at_prometheus(false).await?;
        acted += self.brokers.reevaluate().await?;
        self.telemetry
            .gauge(telemetry::TRACKED, &[("state", "firing".into())])
            .set(firing as f64);
        self.telemetry
            .gauge(telemetry::TRACKED, &[("state", "settling".into())])
            .set(settling as f64);
        Ok(acted)
    }

    /// Update the cooldown gauges (called before each scrape; skips targets busy right now).
    pub fn refresh_gauges(&self) {
        self.brokers.refresh_gauges();
        let now = self.now();
        let live = self.live();
        for p in live.policies.all() {
            let Some(runtime) = live.targets.get(&p.target()) else {
                continue;
            };
            let Ok(runtime) = runtime.try_lock() else {
                continue;
            };
            for d in [Direction::Up, Direction::Down] {
                let left = cooldown_remaining(runtime.last_action.as_ref(), p, d, now);
                self.telemetry
                    .gauge(
                        telemetry::COOLDOWN,
                        &[("target", p.target()), ("direction", d.as_str().into())],
                    )
                    .set(left.as_secs_f64());
            }
        }
    }

    /// A JSON view of policies, cooldowns, last actions and tracked alerts.
    pub async fn state(&self) -> serde_json::Value {
        let now = self.now();
        let mut targets = Vec::new();
        let live = self.live();
        for p in live.policies.all() {
            let Some(runtime) = live.targets.get(&p.target()) else {
                continue;
            };
            let runtime = runtime.lock().await;
            let tracked: Vec<_> = runtime
                .tracked
                .values()
                .map(|t| {
                    serde_json::json!({
                        "fingerprint": t.alert.fingerprint,
                        "status": t.alert.status,
                        "starts_at": t.alert.starts_at,
                        "last_seen": t.last_seen,
                    })
                })
                .collect();
            targets.push(serde_json::json!({
                "target": p.target(),
                "cluster": p.cluster,
                "consumergroup": p.consumergroup,
                "policy": p,
                "last_action": runtime.last_action,
                "cooldown_remaining_seconds": {
                    "up": cooldown_remaining(runtime.last_action.as_ref(), p, Direction::Up, now).as_secs(),
                    "down": cooldown_remaining(runtime.last_action.as_ref(), p, Direction::Down, now).as_secs(),
                },
                "tracked_alerts": tracked,
            }));
        }
        let brokers: Vec<BrokerEntry> = self
            .holds
            .lock()
            .map(|b| b.values().cloned().collect())
            .unwrap_or_default();
        serde_json::json!({
            "instance": self.settings.instance,
            "now": now,
            "paused": self.paused(),
            "dry_run": self.settings.dry_run,
            "audit_healthy": self.audit.healthy(),
            // 0 means this actuator can do nothing (it also warned so at start-up).
            "policies": live.policies.all().len(),
            "targets": targets,
            "broker_alerts": brokers,
            "broker_remediation": self.brokers.state().await,
            "leader": self.leadership.status(),
        })
    }
}
