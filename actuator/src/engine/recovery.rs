//! Durable intent of broker actions, and their recovery after a crash or a change of leader.
//!
//! - Before an action starts, its intent is written to the cluster's ConfigMap (see
//!   `crate::intent`) with a resourceVersion precondition: if it cannot be written, nothing is
//!   sent to the cluster. It is updated once the backend accepted the action, and its `action`
//!   entry is removed (the cooldowns kept and updated) once the end is audited.
//! - The cooldowns of actions on the cluster and each broker come from the same object, so they
//!   hold across replicas and restarts (merged with what this replica knows, the newer wins).
//! - Reconciliation: before this replica may start any broker action on a cluster (after
//!   start-up, and each time it becomes the leader) it reads the object; an action it records
//!   that nobody here follows is taken over: the backend is told about it (`resume`), and the
//!   executor follows it to its end or its deadline (cancelling it then), removes the throttle
//!   the intent records and audits the end as recovered by this replica.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio_util::sync::CancellationToken;

use super::broker::{BrokerEngine, ClusterRuntime, ManagedCluster, Running};
use super::Engine;
use crate::alert::{AlertStatus, BrokerAlert, BrokerAlertKind};
use crate::audit::{Outcome, Phase};
use crate::backend::remediation::Request;
use crate::backend::KubeError;
use crate::broker::gate::LastBrokerAction;
use crate::broker::planner::PlanKind;
use crate::decide::Trigger;
use crate::intent::{
    ActionIntent, ClusterIntent, CooldownEntry, IntentAlert, IntentMove, IntentPhase, IntentStore,
    Stored,
};
use crate::reason::ReasonCode;

/// Makes action ids unique within a process (with the instance and the start time: across
/// processes too).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Fresh reads after a 409 on an update of our own intent (the action's progress, its end).
const WRITE_ATTEMPTS: u32 = 4;
/// First and longest delay between reconciliation attempts that failed.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Why an action does not start: the intent could not be read or written, or it shows
/// another action or a newer cooldown.
#[derive(Debug)]
pub(super) struct NotClaimed {
    pub(super) outcome: Outcome,
    pub(super) code: ReasonCode,
    pub(super) message: String,
}

/// The alert an intent names, as the audit records of the action want it.
fn alert_of(a: &ActionIntent) -> BrokerAlert {
    let kind = BrokerAlertKind::from_alertname(&a.alert.alertname).unwrap_or(match a.kind {
        PlanKind::MoveLeadership => BrokerAlertKind::Overloaded,
        PlanKind::MoveReplicas => BrokerAlertKind::DiskPressure,
        PlanKind::ReplaceReplicas => BrokerAlertKind::Down,
    });
    BrokerAlert {
        kind,
        fingerprint: a.alert.fingerprint.clone(),
        status: AlertStatus::Firing,
        cluster: a.cluster.clone(),
        broker: a.broker,
        path: a.alert.path.clone(),
        starts_at: a.alert.starts_at,
    }
}

/// The deadline of an action started `at` with `timeout`: `at + timeout`, saturating.
pub(super) fn deadline(at: Timestamp, timeout: Duration) -> Timestamp {
    SignedDuration::try_from(timeout)
        .ok()
        .and_then(|d| at.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

impl BrokerEngine {
    /// The intent store, for a cluster whose actions really change it (none in dry run: a
    /// dry-run cooldown lives in memory and in the audit log, as before).
    pub(super) fn intent_store(&self, cluster: &ManagedCluster) -> Option<Arc<dyn IntentStore>> {
        if self.dry_run(cluster) {
            return None;
        }
        self.intents.get().cloned()
    }

    /// Reconcile the cluster once before anything may start on it (after start-up, after each
    /// change of leadership, after a write found the object changed).
    pub(super) async fn ensure_reconciled(
        self: &Arc<Self>,
        cluster: &Arc<ManagedCluster>,
        runtime: &mut ClusterRuntime,
    ) -> Result<(), NotClaimed> {
        let Some(store) = self.intent_store(cluster) else {
            return Ok(());
        };
        if runtime.reconciled {
            return Ok(());
        }
        self.reconcile(cluster, runtime, store.as_ref())
            .await
            .map_err(|e| NotClaimed {
                outcome: Outcome::Failed,
                code: e.code(),
                message: format!(
                    "cannot reconcile the intent of broker actions in ConfigMap {} (read it, and take over an action it records), so nothing starts on the cluster until that succeeds: {e}",
                    store.location(&cluster.policy.cluster)
                ),
            })
    }

    /// Read the cluster's intent object: take its cooldowns, finish the removal of an intent
    /// whose end is audited, and take over an action nobody here follows.
    pub(super) async fn reconcile(
        self: &Arc<Self>,
        cluster: &Arc<ManagedCluster>,
        runtime: &mut ClusterRuntime,
        store: &dyn IntentStore,
    ) -> Result<(), KubeError> {
        let name = cluster.policy.cluster.clone();
        if let Some((id, cooldown)) = runtime.uncleared.take() {
            if let Err(e) = self.release(store, &name, &id, cooldown.clone()).await {
                runtime.uncleared = Some((id, cooldown));
                return Err(e);
            }
        }
        let Some(stored) = store.read(&name).await? else {
            runtime.reconciled = true;
            return Ok(());
        };
        for last in stored.intent.cooldowns.entries() {
            runtime.remember_action(last);
        }
        match stored.intent.action.clone() {
            None => {}
            Some(a) if runtime.running.as_ref().is_some_and(|r| r.id == a.id) => {}
            Some(a) if runtime.running.is_some() => {
                // Never two at once: ours holds the cluster; the other is looked at once ours
                // has ended (its claim of the object then fails and reconciles again).
                tracing::error!(
                    cluster = %name,
                    recorded = %a.id,
                    by = %a.by,
                    "the intent records another action than the one this replica follows"
                );
            }
            Some(a) => self.adopt(cluster, runtime, store, a, &stored).await?,
        }
        runtime.reconciled = true;
        self.gauges(cluster, runtime);
        Ok(())
    }

    /// Take over an action recorded by a process that no longer follows it.
    async fn adopt(
        self: &Arc<Self>,
        cluster: &Arc<ManagedCluster>,
        runtime: &mut ClusterRuntime,
        store: &dyn IntentStore,
        mut a: ActionIntent,
        stored: &Stored,
    ) -> Result<(), KubeError> {
        let name = cluster.policy.cluster.clone();
        let now = self.now();
        let alert = alert_of(&a);
        let resumed = if a.backend != cluster.backend.kind() {
            Err((
                ReasonCode::BackendUnsupported,
                format!(
                    "it was started through the {} backend, and the cluster's backend is now {}",
                    a.backend.as_str(),
                    cluster.backend.kind().as_str()
                ),
            ))
        } else {
            cluster
                .backend
                .resume(&a)
                .await
                .map_err(|e| (e.code(), e.to_string()))
        };
        let task_id = match resumed {
            Ok(t) => t,
            Err((code, why)) => {
                // Nobody can follow it: audit that, with what it left behind, and drop it.
                let left = a
                    .throttle
                    .as_ref()
                    .and_then(|t| serde_json::to_string(t).ok())
                    .map(|t| format!("; the throttle it recorded is left for an operator: {t}"))
                    .unwrap_or_default();
                let mut record = self.base(cluster, &alert, Trigger::Recovery, now);
                record.action = super::broker::action_of(a.kind);
                record.outcome = Outcome::Failed;
                record.reason = Some(code);
                record.phase = Some(Phase::Completed);
                record.task_id = a.task_id.clone();
                record.message = format!(
                    "recovered by {}: {} on broker {} (action {}, started {} by {}) cannot be followed: {why}{left}",
                    self.settings.instance,
                    a.kind.as_str(),
                    a.broker,
                    a.id,
                    a.started_at,
                    a.by
                );
                let last = LastBrokerAction {
                    at: now,
                    broker: a.broker,
                    kind: a.kind,
                    episode: a.alert.starts_at,
                };
                runtime.remember_action(last.clone());
                if let Err(e) = self.recorder.write(record).await {
                    tracing::error!(error = %e, "the end of a recovered broker action could not be audited; its intent stays");
                    return Ok(());
                }
                let cooldown = CooldownEntry::of(&last, &self.settings.instance);
                self.release(store, &name, &a.id, Some(cooldown)).await?;
                return Ok(());
            }
        };
        // Claim the takeover (a 409: another replica changed it since the read).
        a.recovered_by = Some(self.settings.instance.clone());
        a.recovered_at = Some(now);
        a.updated_at = now;
        let intent = ClusterIntent {
            action: Some(a.clone()),
            cooldowns: stored.intent.cooldowns.clone(),
        };
        store.write(&name, &intent, Some(&stored.version)).await?;
        let from = match a.phase {
            IntentPhase::Started => a.by.clone(),
            IntentPhase::Starting => format!(
                "{}, which stopped before the backend confirmed the start",
                a.by
            ),
        };
        tracing::warn!(
            cluster = %name,
            broker = a.broker,
            action = a.kind.as_str(),
            id = %a.id,
            task = %task_id,
            started_by = %a.by,
            deadline = %a.deadline,
            "taking over a broker action recorded in its intent: following it to its end"
        );
        let running = Running {
            broker: a.broker,
            kind: a.kind,
            task_id,
            started: a.started_at,
            episode: a.alert.starts_at,
            id: a.id.clone(),
            deadline: a.deadline,
            recovered_from: Some(from),
        };
        runtime.running = Some(running.clone());
        self.gauges(cluster, runtime);
        tokio::spawn(self.clone().execute(cluster.clone(), running, alert));
        Ok(())
    }

    /// Record an action's intent before anything is sent to the cluster. `Ok(None)` when no
    /// store applies (dry run, or none configured). `recheck` runs the gates again once the
    /// object's cooldowns were taken in (another replica may have acted since).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn claim(
        &self,
        cluster: &ManagedCluster,
        runtime: &mut ClusterRuntime,
        alert: &BrokerAlert,
        request: &Request,
        now: Timestamp,
        recheck: impl Fn(&ClusterRuntime) -> Option<(ReasonCode, String)>,
    ) -> Result<Option<ActionIntent>, NotClaimed> {
        let Some(store) = self.intent_store(cluster) else {
            return Ok(None);
        };
        let name = cluster.policy.cluster.clone();
        let what = format!("{} on broker {}", request.kind.as_str(), request.broker);
        let location = store.location(&name);
        let failed = |code: ReasonCode, message: String| NotClaimed {
            outcome: Outcome::Failed,
            code,
            message,
        };
        let throttle = cluster.backend.throttle_plan(request).map_err(|e| {
            failed(
                e.code(),
                format!("not starting {what}: its throttle could not be planned: {e}"),
            )
        })?;
        let stored = store.read(&name).await.map_err(|e| {
            failed(
                e.code(),
                format!(
                    "not starting {what}: the intent of broker actions could not be read from ConfigMap {location}, and nothing acts without it: {e}"
                ),
            )
        })?;
        if let Some(s) = &stored {
            for last in s.intent.cooldowns.entries() {
                runtime.remember_action(last);
            }
            if let Some(other) = &s.intent.action {
                // Someone else's action (or one nobody follows): reconcile before anything new.
                runtime.reconciled = false;
                return Err(NotClaimed {
                    outcome: Outcome::Skipped,
                    code: ReasonCode::RemediationInProgress,
                    message: format!(
                        "not starting {what}: ConfigMap {location} records action {} ({} on broker {}, started {} by {}, phase {}); it is followed to its end first",
                        other.id,
                        other.kind.as_str(),
                        other.broker,
                        other.started_at,
                        other.by,
                        other.phase.as_str()
                    ),
                });
            }
            if let Some((code, message)) = recheck(runtime) {
                return Err(NotClaimed {
                    outcome: Outcome::Skipped,
                    code,
                    message: format!("{message} (from ConfigMap {location})"),
                });
            }
        }
        let moves = request
            .plan
            .iter()
            .flat_map(|p| &p.changes)
            .map(|c| IntentMove {
                topic: c.topic.clone(),
                partition: c.partition,
                from: c.from.clone(),
                to: c.to.clone(),
            })
            .collect();
        let action = ActionIntent {
            id: format!(
                "{}-{}-{}",
                self.settings.instance,
                now.as_millisecond(),
                NEXT_ID.fetch_add(1, Ordering::Relaxed)
            ),
            task_id: None,
            cluster: name.clone(),
            broker: request.broker,
            kind: request.kind,
            backend: cluster.backend.kind(),
            phase: IntentPhase::Starting,
            by: self.settings.instance.clone(),
            started_at: now,
            deadline: deadline(now, cluster.policy.reassignment_timeout),
            alert: IntentAlert {
                alertname: alert.kind.alertname().to_string(),
                fingerprint: alert.fingerprint.clone(),
                starts_at: alert.starts_at,
                path: alert.path.clone(),
            },
            moves,
            throttle,
            recovered_by: None,
            recovered_at: None,
            updated_at: now,
        };
        let intent = ClusterIntent {
            action: Some(action.clone()),
            cooldowns: stored
                .as_ref()
                .map(|s| s.intent.cooldowns.clone())
                .unwrap_or_default(),
        };
        let version = stored.as_ref().map(|s| s.version.as_str());
        match store.write(&name, &intent, version).await {
            Ok(_) => Ok(Some(action)),
            Err(e @ KubeError::Conflict { .. }) => {
                runtime.reconciled = false;
                Err(NotClaimed {
                    outcome: Outcome::Skipped,
                    code: e.code(),
                    message: format!(
                        "not starting {what}: ConfigMap {location} was changed by someone else since it was read (another replica acting, or recording an action's end), so this one does not act; it is read again first: {e}"
                    ),
                })
            }
            Err(e) => Err(failed(
                e.code(),
                format!(
                    "not starting {what}: its intent could not be written to ConfigMap {location}, and nothing acts without it: {e}"
                ),
            )),
        }
    }

    /// The backend accepted the action: record its task and phase. Returns a note for the
    /// audit record when that failed (the action runs anyway; a takeover then follows it from
    /// its plan).
    pub(super) async fn mark_started(
        &self,
        cluster: &ManagedCluster,
        intent: Option<&ActionIntent>,
        task_id: &str,
    ) -> String {
        let (Some(store), Some(a)) = (self.intent_store(cluster), intent) else {
            return String::new();
        };
        let now = self.now();
        let task = task_id.to_string();
        let result = self
            .update_action(store.as_ref(), &cluster.policy.cluster, &a.id, |a| {
                a.phase = IntentPhase::Started;
                a.task_id = Some(task.clone());
                a.updated_at = now;
            })
            .await;
        match result {
            Ok(()) => String::new(),
            Err(e) => {
                tracing::error!(cluster = %cluster.policy.cluster, id = %a.id, error = %e, "could not record the start of a broker action in its intent");
                format!(
                    "; its intent in ConfigMap {} could not be updated with the task ({e}): it still names the plan, from which a takeover follows it",
                    store.location(&cluster.policy.cluster)
                )
            }
        }
    }

    /// Remove the intent of an action that ended (after its end is audited) or never started,
    /// and record its end in the cooldowns. A failure is kept in the runtime and retried before
    /// the next action; the returned note says so.
    pub(super) async fn clear_intent(
        &self,
        cluster: &ManagedCluster,
        runtime: &mut ClusterRuntime,
        id: &str,
        end: Option<&LastBrokerAction>,
    ) -> String {
        let Some(store) = self.intent_store(cluster) else {
            return String::new();
        };
        let cooldown = end.map(|l| CooldownEntry::of(l, &self.settings.instance));
        match self
            .release(
                store.as_ref(),
                &cluster.policy.cluster,
                id,
                cooldown.clone(),
            )
            .await
        {
            Ok(()) => String::new(),
            Err(e) => {
                tracing::error!(cluster = %cluster.policy.cluster, id, error = %e, "could not remove the intent of a broker action; retried before the next action");
                runtime.uncleared = Some((id.to_string(), cooldown));
                runtime.reconciled = false;
                format!(
                    "; its intent could not be removed from ConfigMap {} ({e}); that is retried before the next action",
                    store.location(&cluster.policy.cluster)
                )
            }
        }
    }

    /// Read, change the action `id` with `f`, write back; fresh reads after a 409.
    async fn update_action(
        &self,
        store: &dyn IntentStore,
        cluster: &str,
        id: &str,
        f: impl Fn(&mut ActionIntent),
    ) -> Result<(), KubeError> {
        let mut last = None;
        for _ in 0..WRITE_ATTEMPTS {
            let Some(mut s) = store.read(cluster).await? else {
                return Err(gone(cluster, id, "the ConfigMap no longer exists"));
            };
            match s.intent.action.as_mut() {
                Some(a) if a.id == id => f(a),
                Some(a) => {
                    return Err(gone(
                        cluster,
                        id,
                        &format!("it now records action {} by {}", a.id, a.by),
                    ))
                }
                None => return Err(gone(cluster, id, "it records no action")),
            }
            match store.write(cluster, &s.intent, Some(&s.version)).await {
                Ok(_) => return Ok(()),
                Err(e @ KubeError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| gone(cluster, id, "conflicts")))
    }

    /// Remove the action `id` (if it is still the one recorded) and remember `cooldown`; fresh
    /// reads after a 409. An object that is gone is created again for the cooldown.
    async fn release(
        &self,
        store: &dyn IntentStore,
        cluster: &str,
        id: &str,
        cooldown: Option<CooldownEntry>,
    ) -> Result<(), KubeError> {
        let mut last = None;
        for _ in 0..WRITE_ATTEMPTS {
            let stored = store.read(cluster).await?;
            let (mut intent, version) = match stored {
                Some(s) => (s.intent, Some(s.version)),
                None => (ClusterIntent::default(), None),
            };
            let ours = intent.action.as_ref().is_some_and(|a| a.id == id);
            if ours {
                intent.action = None;
            }
            if let Some(c) = &cooldown {
                intent.cooldowns.remember(c.clone());
            }
            if !ours && cooldown.is_none() {
                return Ok(());
            }
            match store.write(cluster, &intent, version.as_deref()).await {
                Ok(_) => return Ok(()),
                Err(e @ KubeError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| gone(cluster, id, "conflicts")))
    }

    /// Reconcile every cluster with an intent store, retrying (with a growing delay) those
    /// that fail, until all are done, this replica stops leading, or `stop`.
    async fn reconcile_all(self: &Arc<Self>, stop: &CancellationToken) {
        let mut delay = RETRY_FIRST;
        loop {
            let mut failed = 0usize;
            for cluster in self.clusters().values() {
                let Some(store) = self.intent_store(cluster) else {
                    continue;
                };
                let mut runtime = cluster.runtime.lock().await;
                if runtime.reconciled {
                    continue;
                }
                if let Err(e) = self.reconcile(cluster, &mut runtime, store.as_ref()).await {
                    failed += 1;
                    tracing::warn!(
                        cluster = %cluster.policy.cluster,
                        configmap = %store.location(&cluster.policy.cluster),
                        error = %e,
                        retry_in = ?delay,
                        "cannot reconcile the intent of broker actions; nothing starts on the cluster until it is read"
                    );
                }
            }
            if failed == 0 || !self.is_leader() {
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// Mark every cluster to be reconciled before its next action.
    async fn forget_reconciled(&self) {
        for cluster in self.clusters().values() {
            cluster.runtime.lock().await.reconciled = false;
        }
    }
}

fn gone(cluster: &str, id: &str, why: &str) -> KubeError {
    KubeError::Conflict {
        resource: "configmaps",
        target: format!("intent of cluster {cluster}"),
        message: format!("action {id} is no longer recorded: {why}"),
    }
}

impl Engine {
    /// Use `store` for the intent of broker actions (and their cooldowns). Call before the
    /// engine is shared; without it, cooldowns come from the local audit log only and an
    /// action running when the process stops is not followed by anyone.
    pub fn with_intent_store(self, store: Arc<dyn IntentStore>) -> Self {
        let _ = self.brokers.intents.set(store);
        self
    }

    /// Reconcile the intents of broker actions each time this replica becomes the leader (at
    /// once without leader election), before it may start any: actions a stopped process left
    /// running are taken over and followed to their end. On losing leadership every cluster is
    /// marked to be read again. Runs until [`Engine::shutdown`].
    pub fn start_broker_recovery(self: &Arc<Self>) {
        if self.brokers.intents.get().is_none() {
            return;
        }
        let brokers = self.brokers.clone();
        let mut rx = self.leadership.subscribe();
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            loop {
                let leading = *rx.borrow_and_update();
                if leading {
                    brokers.forget_reconciled().await;
                    brokers.reconcile_all(&stop).await;
                } else {
                    brokers.forget_reconciled().await;
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    changed = rx.changed() => {
                        if changed.is_err() {
                            // Leadership can no longer change (no election): nothing more to do.
                            break;
                        }
                    }
                }
            }
        });
    }
}
