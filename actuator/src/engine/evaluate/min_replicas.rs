//! `on_autoscaler: raise_min_replicas`: when an HPA or a KEDA ScaledObject scales the policy's
//! Deployment, raise the autoscaler's minimum while the lag alert fires and restore it once
//! the alert resolved and the down cooldown passed (`decide::min_replicas` decides).
//!
//! Each raise or restore goes through the same steps as a scale: pause and dedupe (in the
//! decision), dry run, the audit health check, the cooldown claim on the Deployment (the
//! `kafka-medic.io/last-scale` annotation with the Deployment's resourceVersion; after a 409
//! read and decide again), then one write of the autoscaler: its minimum and the
//! original-minimum annotation together, with the autoscaler's resourceVersion as
//! precondition (after a 409 read it again and write again, up to `conflict_retries` times).

use jiff::Timestamp;

use super::super::{elapsed_within, newest, Engine, TargetRuntime};
use crate::alert::LagAlert;
use crate::audit::{Action, AuditRecord, Outcome};
use crate::backend::kube::{min_field, AutoscalerView, ORIGINAL_MIN_ANNOTATION};
use crate::backend::{Autoscaler, KubeError};
use crate::decide::min_replicas::{decide_min, MinDecision, MinObserved, MinSkip};
use crate::decide::{AlertInput, Direction, LagSource, LastAction, TargetState, Trigger};
use crate::policy::{OnAutoscaler, Policy};
use crate::reason::ReasonCode;
use crate::telemetry;

/// What `evaluate` already worked out before the Kubernetes reads.
pub(in crate::engine) struct MinInput<'a> {
    pub(in crate::engine) policy: &'a Policy,
    pub(in crate::engine) alert: &'a LagAlert,
    pub(in crate::engine) trigger: Trigger,
    pub(in crate::engine) now: Timestamp,
    pub(in crate::engine) lag: Option<u64>,
    pub(in crate::engine) lag_source: LagSource,
    pub(in crate::engine) lag_note: Option<String>,
    pub(in crate::engine) partitions: Option<u32>,
    pub(in crate::engine) broker: Option<String>,
}

impl Engine {
    /// With `on_autoscaler: raise_min_replicas` (and not paused: a paused decision is audited
    /// as usual), look for the autoscaler of the target. `None`: no autoscaler, scale as usual.
    /// `Some`: the record of this evaluation (a raise, a restore, a skip or a failure) and
    /// whether Alertmanager retrying could help.
    pub(in crate::engine) async fn raise_min_if_managed(
        &self,
        input: MinInput<'_>,
        base: &AuditRecord,
        runtime: &mut TargetRuntime,
    ) -> Option<(AuditRecord, bool)> {
        if input.policy.on_autoscaler != OnAutoscaler::RaiseMinReplicas || self.paused() {
            return None;
        }
        let target = &input.policy.deployment;
        match self.kube.autoscaler(target).await {
            Ok(None) => None,
            Ok(Some(autoscaler)) => Some(
                self.raise_min(input, base.clone(), autoscaler, runtime)
                    .await,
            ),
            Err(e) => {
                let mut record = base.clone();
                record.outcome = Outcome::Failed;
                record.reason = Some(ReasonCode::AutoscalerCheckFailed);
                record.message = format!(
                    "not scaling {target} nor raising an autoscaler's minimum: cannot tell whether an autoscaler manages it: {e}"
                );
                Some((record, e.retryable()))
            }
        }
    }

    async fn raise_min(
        &self,
        input: MinInput<'_>,
        mut base: AuditRecord,
        autoscaler: Autoscaler,
        runtime: &mut TargetRuntime,
    ) -> (AuditRecord, bool) {
        let MinInput {
            policy,
            alert,
            trigger,
            now,
            lag,
            lag_source,
            lag_note,
            partitions,
            mut broker,
        } = input;
        let target = &policy.deployment;
        let field = min_field(&autoscaler);
        let key = alert.delivery_key();
        let window = self.settings.dedupe_window;
        let fail = |mut record: AuditRecord, message: String, e: &KubeError| {
            record.outcome = Outcome::Failed;
            record.reason = Some(e.code());
            record.message = message;
            (record, e.retryable())
        };
        // A 404 on the autoscaler is about the autoscaler, not a Deployment.
        let about = |e: &KubeError| match e {
            KubeError::NotFound { .. } => "not found (deleted since it was listed?)".to_string(),
            _ => e.to_string(),
        };
        let mut pending: Option<LastAction> = None;
        let mut conflicts = 0;
        loop {
            let view = match self.kube.read(target).await {
                Ok(v) => v,
                Err(e) => return fail(base, format!("cannot read {target}: {e}"), &e),
            };
            if let (Some(events), Some(uid)) = (&self.events, &view.uid) {
                events.note_uid(&target.to_string(), uid);
            }
            self.telemetry
                .gauge(
                    telemetry::TARGET_REPLICAS,
                    &[("target", target.to_string())],
                )
                .set(f64::from(view.replicas));
            let scaler = match self.kube.read_autoscaler(&autoscaler).await {
                Ok(a) => a,
                Err(e) => {
                    let message = format!(
                        "cannot read {autoscaler} (it scales {target}) to change its {field}: {}",
                        about(&e)
                    );
                    return fail(base, message, &e);
                }
            };
            let original = match scaler.original_min() {
                Ok(o) => o,
                Err(problem) => {
                    // Without the original, a restore could leave the minimum raised for good,
                    // or lower it below what the owner set: change nothing.
                    base.outcome = Outcome::Failed;
                    base.reason = Some(ReasonCode::OriginalMinReplicasInvalid);
                    base.message = format!(
                        "{autoscaler} (it scales {target}): {problem}; not changing its {field} {} (fix or remove the annotation)",
                        scaler.min_replicas
                    );
                    return (base, false);
                }
            };
            let decision = if let Some(claim) = pending
                .as_ref()
                .filter(|c| view.last_action.as_ref() == Some(*c))
            {
                // Our claim landed even though its answer was a conflict: finish the action.
                match claim.direction {
                    Direction::Up => MinDecision::Raise {
                        from: claim.from,
                        to: claim.to,
                        desired: claim.to,
                        original: original.unwrap_or(claim.from),
                        clamped_at: None,
                    },
                    Direction::Down => MinDecision::Restore {
                        from: claim.from,
                        to: claim.to,
                    },
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
                let mut observed = MinObserved {
                    current: scaler.min_replicas,
                    original,
                    max: scaler.max_replicas,
                    replicas: view.replicas,
                    lag,
                    partitions,
                    broker_trouble: broker.clone(),
                };
                let mut d = decide_min(&input, &observed, policy, &state, now);
                if let (MinDecision::Restore { .. }, None, Some(prom)) = (&d, &broker, &self.prom) {
                    // As before a scale-down: a restore waits for broker alerts Prometheus has.
                    if let Ok(Some(name)) = prom.broker_trouble(&alert.cluster).await {
                        broker = Some(name.clone());
                        observed.broker_trouble = Some(name);
                        d = decide_min(&input, &observed, policy, &state, now);
                    }
                }
                d
            };
            let lag_text = match lag {
                Some(l) => format!("lag {l} from {}", lag_source.as_str()),
                None => "no lag figure".into(),
            };
            let (from, to, direction) = match &decision {
                MinDecision::Skip(skip) => {
                    base.reason = Some(skip.code());
                    base.message = skip.message(&autoscaler.to_string(), field, policy);
                    match skip {
                        MinSkip::Cooldown { to, .. } => base.to_replicas = Some(*to),
                        MinSkip::AtDesired { desired, .. } => {
                            base.desired_replicas = Some(*desired);
                            self.desired_gauge(policy, *desired);
                        }
                        _ => {}
                    }
                    if let Some(note) = &lag_note {
                        base.message
                            .push_str(&format!(" (lag source {}: {note})", lag_source.as_str()));
                    }
                    return (base, false);
                }
                MinDecision::Raise {
                    from, to, desired, ..
                } => {
                    base.action = Action::RaiseMinReplicas;
                    base.desired_replicas = Some(*desired);
                    self.desired_gauge(policy, *desired);
                    (*from, *to, Direction::Up)
                }
                MinDecision::Restore { from, to } => {
                    base.action = Action::RestoreMinReplicas;
                    (*from, *to, Direction::Down)
                }
            };
            base.from_replicas = Some(from);
            base.to_replicas = Some(to);
            let what = match &decision {
                MinDecision::Restore { .. } => {
                    format!("{field} of {autoscaler} (it scales {target}) from {from} to its original {to}")
                }
                _ => format!("{field} of {autoscaler} (it scales {target}) from {from} to {to}"),
            };
            let detail = match &decision {
                MinDecision::Raise {
                    desired,
                    original,
                    clamped_at,
                    ..
                } => {
                    let clamp = match clamped_at {
                        Some(max) => format!(", clamped to its maximum {max}"),
                        None => String::new(),
                    };
                    format!(
                        "{clamp} (desired {desired}, {lag_text}); original {original} kept in annotation {ORIGINAL_MIN_ANNOTATION}"
                    )
                }
                _ => format!(
                    " and removed annotation {ORIGINAL_MIN_ANNOTATION} (alert resolved, scale_down_cooldown passed)"
                ),
            };
            let verb = match direction {
                Direction::Up => "raise",
                Direction::Down => "restore",
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
                base.message = format!("dry run: would {verb} {what}{detail}");
                runtime.last_action = Some(claim);
                return (base, false);
            }
            if !self.audit.healthy() {
                base.outcome = Outcome::Failed;
                base.reason = Some(ReasonCode::AuditUnhealthy);
                base.message = format!("not changing {what}: the last audit write failed");
                return (base, true);
            }
            if pending.as_ref() != Some(&claim) || view.last_action.as_ref() != Some(&claim) {
                match self
                    .kube
                    .claim(target, &view.resource_version, &claim)
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
                    Err(e) => {
                        let message = format!(
                            "not changing {field} of {autoscaler}: cannot claim the cooldown of {target}: {e}"
                        );
                        return fail(base, message, &e);
                    }
                }
            }
            // The claim is in place from here on, so the cooldown is consumed whatever the
            // write's fate: better one missed step than two actions inside a cooldown.
            runtime.last_action = Some(claim);
            let change = match &decision {
                MinDecision::Raise { to, original, .. } => Change::Raise {
                    to: *to,
                    original: *original,
                },
                _ => Change::Restore,
            };
            return match self.write_min(&autoscaler, scaler, change).await {
                Ok(Written::Done) => {
                    base.outcome = Outcome::Applied;
                    base.message = format!(
                        "{} {what}{detail}",
                        match direction {
                            Direction::Up => "raised",
                            Direction::Down => "restored",
                        }
                    );
                    tracing::info!(deployment = %target, autoscaler = %autoscaler, from, to, action = base.action.as_str(), "{}", base.message);
                    (base, false)
                }
                Ok(Written::AlreadyRestored) => {
                    base.reason = Some(ReasonCode::ManagedByAutoscaler);
                    base.message = format!(
                        "{autoscaler} scales {target}: it was restored meanwhile by another writer (annotation {ORIGINAL_MIN_ANNOTATION} is gone), its {field} is left as it is"
                    );
                    (base, false)
                }
                Err((writes, e)) => {
                    let mut message = format!("{verb} of {what} failed: {}", about(&e));
                    if writes > 1 {
                        message.push_str(&format!(" ({writes} writes, each after a fresh read)"));
                    }
                    fail(base, message, &e)
                }
            };
        }
    }

    fn desired_gauge(&self, policy: &Policy, desired: u32) {
        self.telemetry
            .gauge(telemetry::TARGET_DESIRED, &[("target", policy.target())])
            .set(f64::from(desired));
    }

    /// Write the decided minimum and annotation; after a 409 read the autoscaler again and
    /// write again (never lowering a minimum someone else raised higher, keeping an original
    /// someone else remembered), up to `conflict_retries` times. An error comes with the
    /// number of writes made.
    async fn write_min(
        &self,
        autoscaler: &Autoscaler,
        mut scaler: AutoscalerView,
        change: Change,
    ) -> Result<Written, (u32, KubeError)> {
        let mut writes = 0;
        loop {
            let (min, original) = match change {
                Change::Raise { to, original } => {
                    let kept = scaler.original_min().ok().flatten().unwrap_or(original);
                    let to = to.min(scaler.max_replicas).max(scaler.min_replicas);
                    (to, Some(kept))
                }
                Change::Restore => match scaler.original_min().ok().flatten() {
                    Some(original) => (original, None),
                    None => return Ok(Written::AlreadyRestored),
                },
            };
            writes += 1;
            match self
                .kube
                .set_autoscaler_min(autoscaler, &scaler.resource_version, min, original)
                .await
            {
                Ok(()) => return Ok(Written::Done),
                Err(KubeError::Conflict { .. }) if writes <= self.settings.conflict_retries => {
                    tracing::info!(%autoscaler, writes, "autoscaler write conflicted; reading it again");
                    scaler = self
                        .kube
                        .read_autoscaler(autoscaler)
                        .await
                        .map_err(|e| (writes, e))?;
                }
                Err(e) => return Err((writes, e)),
            }
        }
    }
}

/// The write a decision asks for.
#[derive(Clone, Copy)]
enum Change {
    /// Minimum to `to`, annotation `original` (or the one already there).
    Raise { to: u32, original: u32 },
    /// Minimum back to the annotation's value, annotation removed.
    Restore,
}

/// How a write ended.
enum Written {
    /// The minimum and the annotation were written.
    Done,
    /// A restore found the annotation gone (another replica restored first): nothing written.
    AlreadyRestored,
}
