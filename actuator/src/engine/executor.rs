//! The background half of a broker action: poll the backend until the action ends, cancel it
//! after `reassignment_timeout`, then free the cluster and audit the end (`phase: completed`).

use std::sync::Arc;

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
        let mut detail: String;
        let mut polls = 0u32;
        let (outcome, reason, message) = loop {
            tokio::time::sleep(policy.poll_interval).await;
            polls += 1;
            match cluster.backend.poll(&run.task_id).await {
                Ok(Progress::Done(d)) => break (Outcome::Applied, None, format!("completed: {d}")),
                Ok(Progress::Failed(e)) => {
                    break (Outcome::Failed, Some(e.code()), format!("failed: {e}"))
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
            if started.elapsed() >= policy.reassignment_timeout {
                let cancel = match cluster.backend.cancel(&run.task_id).await {
                    Ok(m) => m,
                    Err(e) => format!("cancelling failed too: {e}; stop it by hand"),
                };
                break (
                    Outcome::Failed,
                    Some(ReasonCode::ReassignmentTimeout),
                    format!(
                        "still running after reassignment_timeout {} ({polls} polls; {detail}); {cancel}",
                        humantime::format_duration(policy.reassignment_timeout)
                    ),
                );
            }
        };
        let mut runtime = cluster.runtime.lock().await;
        let now = (self.clock)();
        runtime.running = None;
        runtime.remember_action(LastBrokerAction {
            at: now,
            broker: run.broker,
            kind: run.kind,
            episode: run.episode,
        });
        let mut record = self.base(&cluster, &alert, Trigger::Executor, now);
        record.action = super::broker::action_of(run.kind);
        record.outcome = outcome;
        record.reason = reason;
        record.phase = Some(Phase::Completed);
        record.task_id = Some(run.task_id.clone());
        record.message = format!(
            "{} on broker {} (task {}, started {}) {message}",
            run.kind.as_str(),
            run.broker,
            run.task_id,
            run.started
        );
        tracing::info!(cluster = %policy.cluster, broker = run.broker, action = run.kind.as_str(), outcome = outcome.as_str(), "broker remediation ended");
        self.gauges(&cluster, &runtime);
        if let Err(e) = self.recorder.write(record).await {
            tracing::error!(error = %e, "the end of a broker action could not be audited");
        }
    }
}
