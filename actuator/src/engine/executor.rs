//! The background half of a broker action: poll the backend until the action ends, cancel it
//! at its deadline (`reassignment_timeout` after its start), then free the cluster, audit the
//! end (`phase: completed`) and, once that is durable, remove the action's intent and record
//! its end in the cooldowns (`recovery.rs`). An action taken over from its intent after a
//! restart runs here too: polled at once, its end audited with `trigger: recovery`.
//!
//! When the process stops, this task is dropped where it is, and when this replica stops
//! leading it stops following: the intent stays either way, so the next leader takes the
//! action over.

use std::sync::Arc;
use std::time::Duration;

use super::broker::{BrokerEngine, ManagedCluster, Running};
use crate::alert::BrokerAlert;
use crate::audit::{Outcome, Phase};
use crate::backend::remediation::{BackendError, Progress};
use crate::broker::gate::LastBrokerAction;
use crate::decide::Trigger;
use crate::reason::ReasonCode;

impl BrokerEngine {
    /// Poll `run` to its end and audit it. Runs as its own task.
    pub(super) async fn execute(
        self: Arc<Self>,
        cluster: Arc<ManagedCluster>,
        run: Running,
        alert: BrokerAlert,
    ) {
        let policy = &cluster.policy;
        let started = tokio::time::Instant::now();
        // Until the deadline recorded with the action (for one taken over, possibly passed).
        let limit =
            Duration::try_from(run.deadline.duration_since(self.now())).unwrap_or(Duration::ZERO);
        let recovered = run.recovered_from.is_some();
        let mut detail: String;
        let mut polls = 0u32;
        let (outcome, reason, message) = loop {
            // One taken over is looked at once at once: it may have ended while nobody watched.
            if !(recovered && polls == 0) {
                tokio::time::sleep(policy.poll_interval).await;
            }
            if !self.is_leader() {
                // Another replica leads now: it takes the action over from its intent, which
                // stays as it is. This one stops following it, and audits nothing.
                let mut runtime = cluster.runtime.lock().await;
                if runtime.running.as_ref().is_some_and(|r| r.id == run.id) {
                    runtime.running = None;
                }
                runtime.reconciled = false;
                self.gauges(&cluster, &runtime);
                tracing::warn!(cluster = %policy.cluster, task = %run.task_id, "no longer the leader: leaving the broker action to the new leader");
                return;
            }
            polls += 1;
            let unwatched = if recovered && polls == 1 {
                "ended while no actuator was watching; "
            } else {
                ""
            };
            match cluster.backend.poll(&run.task_id).await {
                Ok(Progress::Done(d)) => {
                    break (Outcome::Applied, None, format!("{unwatched}completed: {d}"))
                }
                Ok(Progress::Failed(e)) => {
                    break (
                        Outcome::Failed,
                        Some(e.code()),
                        format!("{unwatched}failed: {e}"),
                    )
                }
                Ok(Progress::Running(d)) => detail = d,
                Err(e @ BackendError::Unavailable(_)) => {
                    tracing::warn!(cluster = %policy.cluster, task = %run.task_id, error = %e, "polling a broker action failed; trying again");
                    detail = format!("last poll failed: {e}");
                }
                Err(e) => {
                    break (
                        Outcome::Failed,
                        Some(e.code()),
                        format!("polling failed: {e}"),
                    )
                }
            }
            if started.elapsed() >= limit {
                let cancel = match cluster.backend.cancel(&run.task_id).await {
                    Ok(m) => m,
                    Err(e) => format!("cancelling failed too: {e}; stop it by hand"),
                };
                let why = if recovered {
                    format!("still running at its deadline {}", run.deadline)
                } else {
                    format!(
                        "still running after reassignment_timeout {}",
                        humantime::format_duration(policy.reassignment_timeout)
                    )
                };
                break (
                    Outcome::Failed,
                    Some(ReasonCode::ReassignmentTimeout),
                    format!("{why} ({polls} polls; {detail}); {cancel}"),
                );
            }
        };
        let mut runtime = cluster.runtime.lock().await;
        let now = (self.clock)();
        runtime.running = None;
        let last = LastBrokerAction {
            at: now,
            broker: run.broker,
            kind: run.kind,
            episode: run.episode,
        };
        runtime.remember_action(last.clone());
        let trigger = if recovered {
            Trigger::Recovery
        } else {
            Trigger::Executor
        };
        let mut record = self.base(&cluster, &alert, trigger, now);
        record.action = super::broker::action_of(run.kind);
        record.outcome = outcome;
        record.reason = reason;
        record.phase = Some(Phase::Completed);
        record.task_id = Some(run.task_id.clone());
        record.message = match &run.recovered_from {
            None => format!(
                "{} on broker {} (task {}, started {}) {message}",
                run.kind.as_str(),
                run.broker,
                run.task_id,
                run.started
            ),
            Some(from) => format!(
                "recovered by {}: {} on broker {} (task {}, started {} by {from}) {message}",
                self.settings.instance,
                run.kind.as_str(),
                run.broker,
                run.task_id,
                run.started
            ),
        };
        tracing::info!(cluster = %policy.cluster, broker = run.broker, action = run.kind.as_str(), outcome = outcome.as_str(), recovered, "broker remediation ended");
        self.gauges(&cluster, &runtime);
        match self.recorder.write(record).await {
            Ok(_) => {
                // Only now, with the end durable, does the intent go.
                self.clear_intent(&cluster, &mut runtime, &run.id, Some(&last))
                    .await;
            }
            Err(e) => {
                // The intent stays: the next reconciliation takes the action over again and
                // audits its end then.
                runtime.reconciled = false;
                tracing::error!(error = %e, "the end of a broker action could not be audited; its intent stays");
            }
        }
    }
}
