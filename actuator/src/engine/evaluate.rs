//! One evaluation of one target: read, decide, claim, scale.

use jiff::Timestamp;

use super::{elapsed_within, newest, Engine, TargetRuntime};
use crate::alert::LagAlert;
use crate::audit::{Action, AuditRecord, Outcome};
use crate::backend::{KubeError, TargetView};
use crate::decide::{
    decide, wanted_replicas, AlertInput, Direction, LagDecision, LagReason, LagSource, LastAction,
    Observed, TargetState, Trigger,
};
use crate::policy::{PartitionCap, Policy, Scaler};
use crate::reason::ReasonCode;
use crate::telemetry;

mod min_replicas;

impl Engine {
    pub(super) async fn lag_for(
        &self,
        alert: &LagAlert,
    ) -> (Option<u64>, LagSource, Option<String>) {
        let mut note = None;
        if let Some(prom) = &self.prom {
            match prom.group_lag(&alert.cluster, &alert.consumergroup).await {
                Ok(Some(v)) => return (Some(v), LagSource::Prometheus, None),
                Ok(None) => note = Some("Prometheus has no lag series for the group".to_string()),
                Err(e) => {
                    self.telemetry
                        .counter(telemetry::PROM_ERRORS, &[])
                        .increment(1);
                    note = Some(e.to_string());
                }
            }
        }
        match alert.lag_annotation {
            Some(v) => (Some(v), LagSource::Annotation, note),
            None => (None, LagSource::None, note),
        }
    }

    /// Read, decide, act. Returns the audit record (not yet written) and whether a failure is
    /// worth a retry by Alertmanager.
    pub(super) async fn evaluate(
        &self,
        policy: &Policy,
        alert: &LagAlert,
        trigger: Trigger,
        runtime: &mut TargetRuntime,
        now: Timestamp,
    ) -> (AuditRecord, bool) {
        let target = policy.deployment.clone();
        if policy.scaler == Scaler::Keda {
            // KEDA scales this Deployment from the External Scaler's answers: never read nor
            // PATCH it here, only say so.
            let record = AuditRecord {
                target: Some(target.to_string()),
                reason: Some(ReasonCode::ScaledByKeda),
                message: format!(
                    "the policy says scaler: keda; KEDA scales {target} from the External Scaler's answers, the actuator does not change its replicas"
                ),
                ..self.alert_record(alert, trigger, Outcome::Skipped, Action::None)
            };
            return (record, false);
        }
        let key = alert.delivery_key();
        let window = self.settings.dedupe_window;
        runtime
            .seen
            .retain(|_, at| elapsed_within(*at, now, window));
        let (lag, lag_source, lag_note) = self.lag_for(alert).await;
        self.telemetry
            .counter(
                telemetry::LAG_SOURCE,
                &[("source", lag_source.as_str().into())],
            )
            .increment(1);
        let partitions = match (policy.partition_cap, &self.prom) {
            (Some(PartitionCap::Fixed(n)), _) => Some(n),
            (Some(PartitionCap::Auto), Some(prom)) => prom
                .group_partitions(&alert.cluster, &alert.consumergroup)
                .await
                .ok()
                .flatten(),
            _ => None,
        };
        let mut broker = self.broker_from_webhooks(&alert.cluster, now);
        let mut base = AuditRecord {
            target: Some(target.to_string()),
            lag,
            lag_source,
            // The decision's time: the claim's `at` in the cooldown annotation is the same
            // instant, so cooldowns read from the audit log and from the annotation agree.
            ts: now,
            ..self.alert_record(alert, trigger, Outcome::Skipped, Action::None)
        };
        let fail = |mut record: AuditRecord, e: &KubeError| {
            record.outcome = Outcome::Failed;
            record.reason = Some(e.code());
            record.message = e.to_string();
            (record, e.retryable())
        };
        // `on_autoscaler: raise_min_replicas`: an HPA or ScaledObject on the Deployment gets its
        // minimum raised instead (evaluate/min_replicas.rs).
        let input = min_replicas::MinInput {
            policy,
            alert,
            trigger,
            now,
            lag,
            lag_source,
            lag_note: lag_note.clone(),
            partitions,
            broker: broker.clone(),
        };
        if let Some(done) = self.raise_min_if_managed(input, &base, runtime).await {
            return done;
        }
        let mut pending: Option<LastAction> = None;
        let mut conflicts = 0;
        loop {
            let view: TargetView = match self.kube.read(&target).await {
                Ok(v) => v,
                Err(e) => return fail(base, &e),
            };
            base.from_replicas = Some(view.replicas);
            if let (Some(events), Some(uid)) = (&self.events, &view.uid) {
                events.note_uid(&target.to_string(), uid);
            }
            self.telemetry
                .gauge(
                    telemetry::TARGET_REPLICAS,
                    &[("target", target.to_string())],
                )
                .set(f64::from(view.replicas));
            let decision = if let Some(claim) = pending
                .as_ref()
                .filter(|c| view.last_action.as_ref() == Some(*c))
            {
                // Our claim landed even though its answer was a conflict: finish the action.
                LagDecision::Scale {
                    from: claim.from,
                    to: claim.to,
                    desired: claim.to,
                    direction: claim.direction,
                }
            } else {
                let last = newest(runtime.last_action.clone(), view.last_action.clone());
                let seen_recently = runtime.seen.contains_key(&key)
                    || view
                        .last_action
                        .as_ref()
                        .is_some_and(|l| l.alert == key && elapsed_within(l.at, now, window));
                let state = TargetState {
                    last_action: last,
                    paused: self.paused(),
                    seen_recently,
                };
                let input = AlertInput {
                    status: alert.status,
                    trigger,
                };
                let mut observed = Observed {
                    replicas: view.replicas,
                    lag,
                    lag_source,
                    partitions,
                    broker_trouble: broker.clone(),
                };
                if let Some(want) = wanted_replicas(alert.status, &observed, policy) {
                    self.telemetry
                        .gauge(telemetry::TARGET_DESIRED, &[("target", target.to_string())])
                        .set(f64::from(want));
                }
                let mut d = decide(&input, &observed, policy, &state, now);
                if let (
                    LagDecision::Scale {
                        direction: Direction::Down,
                        ..
                    },
                    None,
                    Some(prom),
                ) = (&d, &broker, &self.prom)
                {
                    // Only a scale-down needs to know about broker alerts Prometheus has.
                    if let Ok(Some(name)) = prom.broker_trouble(&alert.cluster).await {
                        broker = Some(name.clone());
                        observed.broker_trouble = Some(name);
                        d = decide(&input, &observed, policy, &state, now);
                    }
                }
                if matches!(d, LagDecision::Scale { .. }) {
                    // Another autoscaler owns the Deployment: do not fight it. A failed lookup
                    // does not allow scaling either.
                    match self.kube.autoscaler(&target).await {
                        Ok(None) => {}
                        Ok(Some(a)) => {
                            d = LagDecision::Skip(LagReason::ManagedByAutoscaler {
                                autoscaler: a.to_string(),
                            })
                        }
                        Err(e) => {
                            base.outcome = Outcome::Failed;
                            // No scaling; retryable if the API was unavailable, and a 403 names
                            // the missing RBAC verb.
                            base.reason = Some(ReasonCode::AutoscalerCheckFailed);
                            base.message = format!(
                                "not scaling {target}: cannot tell whether an autoscaler manages it: {e}"
                            );
                            return (base, e.retryable());
                        }
                    }
                }
                d
            };
            let (from, to, desired, direction) = match decision {
                LagDecision::Scale {
                    from,
                    to,
                    desired,
                    direction,
                } => (from, to, desired, direction),
                LagDecision::Skip(reason) => {
                    base.reason = Some(reason.code());
                    base.message = reason.message(policy);
                    match &reason {
                        LagReason::Cooldown { to, .. } => base.to_replicas = Some(*to),
                        LagReason::AtDesired { desired } => base.desired_replicas = Some(*desired),
                        _ => {}
                    }
                    if let Some(note) = &lag_note {
                        base.message
                            .push_str(&format!(" (lag source {}: {note})", lag_source.as_str()));
                    }
                    return (base, false);
                }
            };
            base.from_replicas = Some(from);
            base.to_replicas = Some(to);
            base.desired_replicas = Some(desired);
            base.action = match direction {
                Direction::Up => Action::ScaleUp,
                Direction::Down => Action::ScaleDown,
            };
            let lag_text = match lag {
                Some(l) => format!("lag {l} from {}", lag_source.as_str()),
                None => "no lag figure".into(),
            };
            let claim = LastAction {
                at: now,
                direction,
                from,
                to,
                alert: key.clone(),
                by: self.settings.instance.clone(),
            };
            if self.settings.dry_run {
                base.outcome = Outcome::DryRun;
                base.message = format!("dry run: would scale {target} from {from} to {to} (desired {desired}, {lag_text})");
                runtime.last_action = Some(claim);
                return (base, false);
            }
            if !self.audit.healthy() {
                // The record of this action might not become durable: do not act, and ask
                // Alertmanager to retry (writing this record probes the disk again).
                base.outcome = Outcome::Failed;
                base.reason = Some(ReasonCode::AuditUnhealthy);
                base.message = format!(
                    "not scaling {target} from {from} to {to}: the last audit write failed"
                );
                return (base, true);
            }
            if pending.as_ref() != Some(&claim) || view.last_action.as_ref() != Some(&claim) {
                match self
                    .kube
                    .claim(&target, &view.resource_version, &claim)
                    .await
                {
                    Ok(()) => {}
                    Err(KubeError::Conflict { .. })
                        if conflicts < self.settings.conflict_retries =>
                    {
                        conflicts += 1;
                        tracing::info!(%target, conflicts, "cooldown claim conflicted; reading again");
                        pending = Some(claim);
                        continue;
                    }
                    Err(e) => return fail(base, &e),
                }
            }
            return match self.kube.scale(&target, to).await {
                Ok(()) => {
                    runtime.last_action = Some(claim);
                    self.telemetry
                        .gauge(
                            telemetry::TARGET_REPLICAS,
                            &[("target", target.to_string())],
                        )
                        .set(f64::from(to));
                    base.outcome = Outcome::Applied;
                    base.message = format!(
                        "scaled {target} from {from} to {to} (desired {desired}, {lag_text})"
                    );
                    tracing::info!(deployment = %target, from, to, desired, lag, lag_source = lag_source.as_str(), "scaled");
                    (base, false)
                }
                Err(e) => {
                    // The claim is in place, so the cooldown is consumed: better one missed step
                    // than two actions inside a cooldown.
                    runtime.last_action = Some(claim);
                    fail(base, &e)
                }
            };
        }
    }
}
