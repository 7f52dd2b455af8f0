//! Broker remediation in the engine: track broker alerts per cluster, run the gates, plan,
//! start the action through the cluster's backend, and audit every step. One async mutex per
//! cluster serialises decisions; a running action (see `executor.rs`) blocks new ones.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock as StdRwLock};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::Mutex;

use super::prom_alerts::AlertOrigin;
use super::{elapsed_within, AlertResult, Clock, EngineError, Recorder};
use crate::alert::{AlertStatus, BrokerAlert, BrokerAlertKind, UnlabelledBrokerAlert};
use crate::audit::{Action, AuditRecord, Outcome, Phase, Recovered};
use crate::backend::remediation::{RemediationBackend, Request};
use crate::broker::action::{
    cluster_size, needs_sizes, plan_action, precheck_alert, ActionSkip, BrokerAction, ClusterLook,
    RuntimeSnapshot,
};
use crate::broker::gate::LastBrokerAction;
use crate::broker::planner::PlanKind;
use crate::broker::policy::{BackendKind, BrokerPolicy};
use crate::decide::Trigger;
use crate::reason::ReasonCode;
use crate::telemetry;

/// The audit action of a plan kind.
pub fn action_of(kind: PlanKind) -> Action {
    match kind {
        PlanKind::MoveLeadership => Action::MoveLeadership,
        PlanKind::MoveReplicas => Action::MoveReplicas,
        PlanKind::ReplaceReplicas => Action::ReplaceReplicas,
    }
}

fn kind_of(action: Action) -> Option<PlanKind> {
    match action {
        Action::MoveLeadership => Some(PlanKind::MoveLeadership),
        Action::MoveReplicas => Some(PlanKind::MoveReplicas),
        Action::ReplaceReplicas => Some(PlanKind::ReplaceReplicas),
        _ => None,
    }
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Tracked {
    #[serde(skip)]
    pub(super) alert: BrokerAlert,
    pub(super) first_seen: Timestamp,
    pub(super) last_seen: Timestamp,
    /// How this replica first learnt of the alert: a webhook, or Prometheus's `ALERTS`.
    pub(super) origin: AlertOrigin,
    /// When Prometheus's `ALERTS` last showed it firing (None: never); such an alert is dropped
    /// once Prometheus no longer shows it (see `prom_alerts.rs`).
    pub(super) confirmed: Option<Timestamp>,
}

/// Our action that is running on a cluster.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Running {
    pub(super) broker: i32,
    pub(super) kind: PlanKind,
    pub(super) task_id: String,
    pub(super) started: Timestamp,
    pub(super) episode: Timestamp,
    /// The action's id in its intent (`recovery.rs`).
    pub(super) id: String,
    /// When it is cancelled if still running.
    pub(super) deadline: Timestamp,
    /// Taken over from its intent: the replica that started it (None: started here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) recovered_from: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct ClusterRuntime {
    pub(super) tracked: BTreeMap<String, Tracked>,
    pub(super) seen: HashMap<String, Timestamp>,
    pub(super) last_by_broker: BTreeMap<i32, LastBrokerAction>,
    pub(super) last_cluster: Option<LastBrokerAction>,
    pub(super) running: Option<Running>,
    pub(super) known_brokers: Option<usize>,
    pub(super) last_code: HashMap<String, String>,
    /// The intent object was read (and an action it records taken over) since start-up or
    /// the last change of leadership (`recovery.rs`).
    pub(super) reconciled: bool,
    /// An action whose end is audited but whose intent could not be removed yet, with the
    /// cooldown entry to record.
    pub(super) uncleared: Option<(String, Option<crate::intent::CooldownEntry>)>,
}

impl ClusterRuntime {
    /// Track a firing alert (keeping when it was first heard of) and return it as tracked: an
    /// alert first learnt from Prometheus keeps the start it was tracked with (one alert, one
    /// episode; see `prom_alerts.rs`).
    pub(super) fn track(&mut self, alert: &BrokerAlert, now: Timestamp) -> BrokerAlert {
        let twin = self.take_prometheus_twin(alert);
        let mut alert = alert.clone();
        if let Some(t) = &twin {
            alert.starts_at = t.alert.starts_at;
        }
        let alert = &alert;
        if !self.tracked.contains_key(&alert.fingerprint) {
            let dropped = super::oldest(
                self.tracked.iter(),
                super::MAX_TRACKED_PER_TARGET - 1,
                |t: &Tracked| t.last_seen,
            );
            for k in &dropped {
                self.tracked.remove(k);
            }
            if !dropped.is_empty() {
                tracing::warn!(
                    cluster = %alert.cluster,
                    limit = super::MAX_TRACKED_PER_TARGET,
                    "too many firing broker alerts on one cluster: forgot the oldest"
                );
            }
            self.forget_codes();
        }
        let previous = self.tracked.get(&alert.fingerprint).or(twin.as_ref());
        let first_seen = previous
            .filter(|t| t.alert.starts_at == alert.starts_at)
            .map(|t| t.first_seen)
            .unwrap_or(now);
        let (origin, confirmed) = previous
            .map(|t| (t.origin, t.confirmed))
            .unwrap_or((AlertOrigin::Webhook, None));
        self.tracked.insert(
            alert.fingerprint.clone(),
            Tracked {
                alert: alert.clone(),
                first_seen,
                last_seen: now,
                origin,
                confirmed,
            },
        );
        alert.clone()
    }

    /// Forget the last audited code of alerts no longer tracked.
    fn forget_codes(&mut self) {
        let tracked = &self.tracked;
        self.last_code.retain(|fp, _| tracked.contains_key(fp));
    }

    pub(super) fn remember_action(&mut self, last: LastBrokerAction) {
        if self.last_cluster.as_ref().is_none_or(|l| l.at <= last.at) {
            self.last_cluster = Some(last.clone());
        }
        let newer = self
            .last_by_broker
            .get(&last.broker)
            .is_none_or(|l| l.at <= last.at);
        if newer {
            self.last_by_broker.insert(last.broker, last);
        }
    }

    /// Firing broker alerts: (broker, kind).
    fn firing(&self) -> Vec<(i32, BrokerAlertKind)> {
        self.tracked
            .values()
            .filter(|t| t.alert.status == AlertStatus::Firing)
            .map(|t| (t.alert.broker, t.alert.kind))
            .collect()
    }

    /// Distinct brokers with a firing alert.
    pub(super) fn alerting(&self) -> BTreeSet<i32> {
        self.firing()
            .into_iter()
            .map(|(broker, _)| broker)
            .collect()
    }
}

/// One cluster with broker remediation.
pub(super) struct ManagedCluster {
    pub(super) policy: BrokerPolicy,
    pub(super) backend: Arc<dyn RemediationBackend>,
    /// Shared with the entry a reload puts in its place, so a running action's end lands in
    /// the runtime in force.
    pub(super) runtime: Arc<Mutex<ClusterRuntime>>,
}

/// The clusters with broker remediation, by name.
pub(super) type ClusterMap = BTreeMap<String, Arc<ManagedCluster>>;

/// Settings shared with the lag side.
pub(super) struct BrokerSettings {
    pub(super) instance: String,
    pub(super) dry_run: bool,
    pub(super) dedupe_window: Duration,
    pub(super) alert_ttl: Duration,
}

/// Broker remediation for every cluster with a `brokers:` policy.
pub(super) struct BrokerEngine {
    pub(super) recorder: Arc<Recorder>,
    pub(super) clock: Clock,
    pub(super) settings: BrokerSettings,
    pub(super) paused: Arc<AtomicBool>,
    /// Swapped by a reload (`reload.rs`); read through [`BrokerEngine::clusters`].
    pub(super) clusters: StdRwLock<Arc<ClusterMap>>,
    /// Runtimes of clusters a reload removed, given back if one adds them again.
    pub(super) retired: std::sync::Mutex<BTreeMap<String, Arc<Mutex<ClusterRuntime>>>>,
    /// Set by [`super::Engine::with_leadership`]; unset: this replica always leads.
    pub(super) leadership: std::sync::OnceLock<crate::leader::Leadership>,
    /// Set by [`super::Engine::with_intent_store`]; unset: no durable intent (`recovery.rs`).
    pub(super) intents: std::sync::OnceLock<Arc<dyn crate::intent::IntentStore>>,
}

/// What a re-evaluation compares to decide whether a skip is worth a new record.
pub(super) fn code_of(record: &AuditRecord) -> String {
    format!(
        "{}:{}",
        record.outcome.as_str(),
        record.reason.map(ReasonCode::as_str).unwrap_or_default()
    )
}

/// The labels of a broker alert that go into its audit records.
struct AlertLabels<'a> {
    kind: BrokerAlertKind,
    status: AlertStatus,
    fingerprint: &'a str,
    starts_at: Timestamp,
    broker: Option<String>,
    path: Option<&'a str>,
}

fn skipped(mut record: AuditRecord, code: ReasonCode, message: String) -> AuditRecord {
    record.reason = Some(code);
    record.message = message;
    record
}

impl BrokerEngine {
    pub(super) fn new(
        recorder: Arc<Recorder>,
        clock: Clock,
        settings: BrokerSettings,
        paused: Arc<AtomicBool>,
        policies: &[BrokerPolicy],
        backends: BTreeMap<String, Arc<dyn RemediationBackend>>,
        recovered: &Recovered,
    ) -> Self {
        let mut clusters = BTreeMap::new();
        for policy in policies {
            let Some(backend) = backends.get(&policy.cluster) else {
                continue;
            };
            let mut runtime = ClusterRuntime::default();
            // Replay: last actions per broker and cluster (intervals survive a restart).
            for r in &recovered.records {
                if r.cluster.as_deref() != Some(policy.cluster.as_str()) {
                    continue;
                }
                let (Some(kind), Some(broker)) = (
                    kind_of(r.action),
                    r.broker.as_deref().and_then(|b| b.parse().ok()),
                ) else {
                    continue;
                };
                let counts = matches!(
                    (r.phase, r.outcome),
                    (Some(Phase::Completed), _)
                        | (Some(Phase::Started), Outcome::Applied | Outcome::DryRun)
                );
                if counts {
                    let episode = r
                        .starts_at
                        .as_deref()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(r.ts);
                    runtime.remember_action(LastBrokerAction {
                        at: r.ts,
                        broker,
                        kind,
                        episode,
                    });
                }
            }
            let labels = [("cluster", policy.cluster.clone())];
            recorder
                .telemetry
                .gauge(telemetry::MASS_FAILURE, &labels)
                .set(0.0);
            recorder
                .telemetry
                .gauge(telemetry::REMEDIATION_RUNNING, &labels)
                .set(0.0);
            clusters.insert(
                policy.cluster.clone(),
                Arc::new(ManagedCluster {
                    policy: policy.clone(),
                    backend: backend.clone(),
                    runtime: Arc::new(Mutex::new(runtime)),
                }),
            );
        }
        recorder
            .telemetry
            .gauge(telemetry::BROKER_POLICIES, &[])
            .set(clusters.len() as f64);
        Self {
            recorder,
            clock,
            settings,
            paused,
            clusters: StdRwLock::new(Arc::new(clusters)),
            retired: std::sync::Mutex::new(BTreeMap::new()),
            leadership: std::sync::OnceLock::new(),
            intents: std::sync::OnceLock::new(),
        }
    }

    /// Whether this replica may start broker actions (it holds the leader Lease, or leader
    /// election is off).
    pub(super) fn is_leader(&self) -> bool {
        self.leadership
            .get()
            .is_none_or(crate::leader::Leadership::is_leader)
    }

    pub(super) fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// The clusters with broker remediation in force (a reload swaps them).
    pub(super) fn clusters(&self) -> Arc<ClusterMap> {
        match self.clusters.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// One cluster with broker remediation, if it has a policy.
    pub(super) fn cluster(&self, name: &str) -> Option<Arc<ManagedCluster>> {
        self.clusters().get(name).cloned()
    }

    /// The effective dry run of a cluster: global, the cluster's, or the log-only backend.
    pub(super) fn dry_run(&self, cluster: &ManagedCluster) -> bool {
        self.settings.dry_run
            || cluster.policy.dry_run
            || cluster.backend.kind() == BackendKind::LogOnly
    }

    /// A skipped record of a broker alert, with its labels.
    fn record_for(
        &self,
        cluster: &ManagedCluster,
        labels: AlertLabels<'_>,
        trigger: Trigger,
        now: Timestamp,
    ) -> AuditRecord {
        AuditRecord {
            alertname: Some(labels.kind.alertname().into()),
            alert_status: Some(labels.status),
            fingerprint: Some(labels.fingerprint.into()),
            starts_at: Some(labels.starts_at.to_string()),
            cluster: Some(cluster.policy.cluster.clone()),
            broker: labels.broker,
            path: labels.path.map(Into::into),
            backend: Some(cluster.backend.kind().as_str().into()),
            dry_run: self.dry_run(cluster),
            ..AuditRecord::new(
                now,
                &self.settings.instance,
                trigger,
                Outcome::Skipped,
                Action::None,
            )
        }
    }

    pub(super) fn base(
        &self,
        cluster: &ManagedCluster,
        alert: &BrokerAlert,
        trigger: Trigger,
        now: Timestamp,
    ) -> AuditRecord {
        let labels = AlertLabels {
            kind: alert.kind,
            status: alert.status,
            fingerprint: &alert.fingerprint,
            starts_at: alert.starts_at,
            broker: Some(alert.broker.to_string()),
            path: alert.path.as_deref(),
        };
        self.record_for(cluster, labels, trigger, now)
    }

    /// A broker alert whose `broker` label is missing or not a broker id: audited as
    /// `bad_broker_label` on a cluster with a broker policy (`None` elsewhere), never acted on.
    pub(super) async fn unlabelled(
        &self,
        alert: &UnlabelledBrokerAlert,
    ) -> Result<Option<AlertResult>, EngineError> {
        let Some(cluster) = self.cluster(&alert.cluster) else {
            return Ok(None);
        };
        let cluster = &cluster;
        let labels = AlertLabels {
            kind: alert.kind,
            status: alert.status,
            fingerprint: &alert.fingerprint,
            starts_at: alert.starts_at,
            broker: alert.label.clone(),
            path: alert.path.as_deref(),
        };
        let record = skipped(
            self.record_for(cluster, labels, Trigger::Webhook, self.now()),
            ReasonCode::BadBrokerLabel,
            format!(
                "the alert's broker label {:?} is not a Kafka broker id",
                alert.label
            ),
        );
        let seq = self.recorder.write(record).await?;
        Ok(Some(AlertResult {
            fingerprint: alert.fingerprint.clone(),
            target: None,
            outcome: Outcome::Skipped,
            action: Action::None,
            reason: Some(ReasonCode::BadBrokerLabel),
            seq,
            retryable: false,
            cluster: Some(alert.cluster.clone()),
            broker: alert.label.clone(),
        }))
    }

    /// Handle the broker alerts of one webhook: every firing one is tracked first, so alerts
    /// that arrive together (a mass failure) are counted together; then each is decided.
    pub(super) async fn handle_all(
        self: &Arc<Self>,
        alerts: &[&BrokerAlert],
        unlabelled: &[&UnlabelledBrokerAlert],
    ) -> Result<Vec<AlertResult>, EngineError> {
        let now = self.now();
        for alert in alerts.iter().filter(|a| a.status == AlertStatus::Firing) {
            if let Some(cluster) = self.cluster(&alert.cluster) {
                cluster.runtime.lock().await.track(alert, now);
            }
        }
        let mut out = Vec::new();
        for alert in alerts {
            if let Some(r) = self.handle(alert).await? {
                out.push(r);
            }
        }
        for alert in unlabelled {
            if let Some(r) = self.unlabelled(alert).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Handle one broker alert from a webhook. `None` when its cluster has no broker policy
    /// (then it only holds scale-downs, as before issue 5, and is not audited).
    pub(super) async fn handle(
        self: &Arc<Self>,
        alert: &BrokerAlert,
    ) -> Result<Option<AlertResult>, EngineError> {
        let Some(cluster) = self.cluster(&alert.cluster) else {
            return Ok(None);
        };
        let mut runtime = cluster.runtime.lock().await;
        let now = self.now();
        let window = self.settings.dedupe_window;
        runtime
            .seen
            .retain(|_, at| elapsed_within(*at, now, window));
        let key = alert.delivery_key();
        let seen_recently = runtime.seen.contains_key(&key);
        let record = match alert.status {
            AlertStatus::Firing => {
                let alert = runtime.track(alert, now);
                self.evaluate(
                    &cluster,
                    &mut runtime,
                    &alert,
                    Trigger::Webhook,
                    seen_recently,
                    now,
                )
                .await
            }
            AlertStatus::Resolved => {
                self.resolved(&cluster, &mut runtime, alert, seen_recently, now)
            }
        };
        let code = code_of(&record);
        let result = AlertResult {
            fingerprint: alert.fingerprint.clone(),
            target: None,
            outcome: record.outcome,
            action: record.action,
            reason: record.reason,
            seq: 0,
            retryable: false,
            cluster: Some(alert.cluster.clone()),
            broker: Some(alert.broker.to_string()),
        };
        let failed = record.outcome == Outcome::Failed;
        let seq = self.recorder.write(record).await?;
        if !failed {
            for k in super::oldest(
                runtime.seen.iter(),
                super::MAX_SEEN - 1,
                |at: &Timestamp| *at,
            ) {
                runtime.seen.remove(&k);
            }
            runtime.seen.insert(key, now);
        }
        if alert.status == AlertStatus::Firing {
            runtime.last_code.insert(alert.fingerprint.clone(), code);
        }
        self.gauges(&cluster, &runtime);
        Ok(Some(AlertResult { seq, ..result }))
    }

    fn resolved(
        &self,
        cluster: &ManagedCluster,
        runtime: &mut ClusterRuntime,
        alert: &BrokerAlert,
        seen_recently: bool,
        now: Timestamp,
    ) -> AuditRecord {
        let record = self.base(cluster, alert, Trigger::Webhook, now);
        let was_tracked = runtime.tracked.remove(&alert.fingerprint).is_some();
        runtime.last_code.remove(&alert.fingerprint);
        let (reason, message) = match &runtime.running {
            _ if seen_recently => (
                ReasonCode::Duplicate,
                "this alert delivery was already handled".to_string(),
            ),
            Some(r) if r.broker == alert.broker => (
                ReasonCode::AlertResolved,
                format!(
                    "resolved while {} on broker {} runs (task {}); a started action is not stopped, it ends by itself",
                    r.kind.as_str(),
                    r.broker,
                    r.task_id
                ),
            ),
            _ if was_tracked => (
                ReasonCode::Cancelled,
                "resolved: any action still pending for this alert (grace period, cooldown, pause, a running action elsewhere) is cancelled".to_string(),
            ),
            _ => (
                ReasonCode::AlertResolved,
                "resolved; nothing was pending".to_string(),
            ),
        };
        skipped(record, reason, message)
    }

    /// What the engine knows about `alert`'s cluster, for the pure decision.
    fn snapshot(
        &self,
        runtime: &ClusterRuntime,
        alert: &BrokerAlert,
        seen_recently: bool,
        now: Timestamp,
    ) -> RuntimeSnapshot {
        RuntimeSnapshot {
            paused: self.paused.load(Ordering::SeqCst),
            running: runtime.running.as_ref().map(|r| (r.broker, r.kind)),
            last_cluster: runtime.last_cluster.clone(),
            last_by_broker: runtime.last_by_broker.clone(),
            firing: runtime.firing(),
            known_brokers: runtime.known_brokers,
            first_seen: runtime
                .tracked
                .get(&alert.fingerprint)
                .map(|t| t.first_seen)
                .unwrap_or(now),
            seen_recently,
        }
    }

    /// Run the gates and, if they pass, plan and start. Returns the record to write.
    pub(super) async fn evaluate(
        self: &Arc<Self>,
        cluster: &Arc<ManagedCluster>,
        runtime: &mut ClusterRuntime,
        alert: &BrokerAlert,
        trigger: Trigger,
        seen_recently: bool,
        now: Timestamp,
    ) -> AuditRecord {
        let mut record = self.base(cluster, alert, trigger, now);
        if !self.is_leader() {
            // The alert stays tracked: should this replica lead later, its re-evaluation acts.
            return skipped(
                record,
                ReasonCode::NotLeader,
                "this replica does not hold the leader Lease; only the leader acts on brokers"
                    .into(),
            );
        }
        let policy = &cluster.policy;
        let snapshot = self.snapshot(runtime, alert, seen_recently, now);
        let alerting = snapshot.alerting().len();
        self.mass_gauge(
            cluster,
            alerting,
            cluster_size(policy, snapshot.known_brokers),
        );
        if let Some(s) = precheck_alert(policy, &snapshot, alert, trigger, now) {
            return skipped(record, s.code(), s.message());
        }
        // The intent object before anything may start: an action a stopped process left is
        // taken over (and holds this one), and the cooldowns other replicas recorded apply
        // (recovery.rs). A skip above stays valid: reconciling only adds to what holds.
        if let Err(n) = self.ensure_reconciled(cluster, runtime).await {
            record.outcome = n.outcome;
            return skipped(record, n.code, n.message);
        }
        let snapshot = self.snapshot(runtime, alert, seen_recently, now);
        if let Some(s) = precheck_alert(policy, &snapshot, alert, trigger, now) {
            return skipped(record, s.code(), s.message());
        }
        let look = match cluster.backend.observe(needs_sizes(&snapshot, alert)).await {
            Ok(o) => ClusterLook {
                model: o.model,
                in_progress: o.in_progress,
                brokers: o.brokers,
            },
            Err(e) => {
                record.outcome = Outcome::Failed;
                return skipped(
                    record,
                    e.code(),
                    format!("cannot read the cluster's state, so nothing starts: {e}"),
                );
            }
        };
        runtime.known_brokers = look.brokers.or(runtime.known_brokers);
        self.mass_gauge(cluster, alerting, cluster_size(policy, look.brokers));
        let broker = alert.broker;
        let planned = match plan_action(policy, &snapshot, alert, trigger, look, now) {
            BrokerAction::Start(p) => p,
            BrokerAction::Skip(skip) => {
                if let ActionSkip::PlanInvalid { kind, plan, .. }
                | ActionSkip::NothingToMove { kind, plan } = &skip
                {
                    record.plan = serde_json::to_value(plan).ok();
                    record.replica_moves = u32::try_from(plan.replica_moves()).ok();
                    record.leader_moves = u32::try_from(plan.leader_moves()).ok();
                    if matches!(skip, ActionSkip::PlanInvalid { .. }) {
                        record.action = action_of(*kind);
                        record.outcome = Outcome::Failed;
                    }
                }
                return skipped(record, skip.code(), skip.message(broker));
            }
        };
        let kind = planned.kind;
        record.action = action_of(kind);
        if let Some(plan) = &planned.plan {
            record.plan = serde_json::to_value(plan).ok();
            record.replica_moves = u32::try_from(plan.replica_moves()).ok();
            record.leader_moves = u32::try_from(plan.leader_moves()).ok();
        }
        let what = match &planned.plan {
            Some(p) => p.summary(),
            None if cluster.backend.kind() == BackendKind::CruiseControl => {
                format!("broker {broker} (Cruise Control plans the moves)")
            }
            None => format!("broker {broker} (no partition plan without a kafka connection)"),
        };
        let last = LastBrokerAction {
            at: now,
            broker,
            kind,
            episode: alert.starts_at,
        };
        if self.dry_run(cluster) {
            record.outcome = Outcome::DryRun;
            record.phase = Some(Phase::Started);
            record.message = format!(
                "dry run ({}): would {}: {what}",
                cluster.backend.kind().as_str(),
                kind.as_str()
            );
            runtime.remember_action(last);
            return record;
        }
        if !self.recorder.audit.healthy() {
            record.outcome = Outcome::Failed;
            return skipped(
                record,
                ReasonCode::AuditUnhealthy,
                format!(
                    "not starting {}: the last audit write failed",
                    kind.as_str()
                ),
            );
        }
        if !self.is_leader() {
            // Leadership was lost while the cluster was being read: nothing starts.
            record.action = Action::None;
            return skipped(
                record,
                ReasonCode::NotLeader,
                format!(
                    "not starting {} on broker {broker}: this replica stopped leading while it looked at the cluster",
                    kind.as_str()
                ),
            );
        }
        let request = Request {
            kind,
            broker,
            plan: planned.plan,
            exclude: planned.exclude,
            reason: format!(
                "medic-actuator: {} broker {broker} ({})",
                alert.kind.alertname(),
                alert.cluster
            ),
            limits: planned.limits,
            throttle: policy.throttle_bytes_per_second,
        };
        // Nothing acts without a durable record: the intent is written first (recovery.rs).
        let recheck = |rt: &ClusterRuntime| {
            precheck_alert(
                policy,
                &self.snapshot(rt, alert, seen_recently, now),
                alert,
                trigger,
                now,
            )
            .map(|s| (s.code(), s.message()))
        };
        let intent = match self
            .claim(cluster, runtime, alert, &request, now, recheck)
            .await
        {
            Ok(i) => i,
            Err(n) => {
                record.outcome = n.outcome;
                return skipped(record, n.code, n.message);
            }
        };
        let intent_id = intent.as_ref().map(|i| i.id.clone()).unwrap_or_default();
        if !self.is_leader() {
            // Writing the intent can take longer than renew_deadline (its retries through an
            // API outage): leadership lost meanwhile means another replica may lead by now.
            // Nothing starts, and the intent goes (or is taken over by the leader as one that
            // never started).
            let cleared = self.clear_intent(cluster, runtime, &intent_id, None).await;
            record.action = Action::None;
            return skipped(
                record,
                ReasonCode::NotLeader,
                format!(
                    "not starting {} on broker {broker}: this replica stopped leading while its intent was written; the intent is removed and nothing starts{cleared}",
                    kind.as_str()
                ),
            );
        }
        match cluster.backend.start(&request).await {
            Err(e) => {
                // A failed start consumes the cluster interval, so a broken backend is not
                // hammered every re-evaluation.
                runtime.last_cluster = Some(last);
                let cleared = self.clear_intent(cluster, runtime, &intent_id, None).await;
                record.outcome = Outcome::Failed;
                skipped(
                    record,
                    e.code(),
                    format!(
                        "{} on broker {broker} was not started: {e}{cleared}",
                        kind.as_str()
                    ),
                )
            }
            Ok(started) => {
                record.phase = Some(Phase::Started);
                record.task_id = Some(started.task_id.clone());
                if let Some(summary) = started.summary {
                    record.plan = Some(summary);
                }
                let note = started
                    .note
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                if started.proposal_only {
                    let cleared = self.clear_intent(cluster, runtime, &intent_id, None).await;
                    let note = format!("{note}{cleared}");
                    record.outcome = Outcome::DryRun;
                    record.dry_run = true;
                    record.message = format!(
                        "{} computed a proposal only (its dry run) for {}: {what}{note}",
                        cluster.backend.kind().as_str(),
                        kind.as_str()
                    );
                    runtime.remember_action(last);
                    return record;
                }
                let note = format!(
                    "{note}{}",
                    self.mark_started(cluster, intent.as_ref(), &started.task_id)
                        .await
                );
                record.outcome = Outcome::Applied;
                record.message = format!(
                    "started {} via {} (task {}): {what}{note}",
                    kind.as_str(),
                    cluster.backend.kind().as_str(),
                    started.task_id
                );
                tracing::info!(cluster = %alert.cluster, broker, action = kind.as_str(), task = %started.task_id, "broker remediation started");
                let running = Running {
                    broker,
                    kind,
                    task_id: started.task_id,
                    started: now,
                    episode: alert.starts_at,
                    deadline: intent.as_ref().map(|i| i.deadline).unwrap_or_else(|| {
                        super::recovery::deadline(now, policy.reassignment_timeout)
                    }),
                    id: intent_id,
                    recovered_from: None,
                };
                runtime.running = Some(running.clone());
                tokio::spawn(
                    self.clone()
                        .execute(cluster.clone(), running, alert.clone()),
                );
                record
            }
        }
    }

    /// Re-evaluate every firing broker alert, oldest first: an alert still firing when a pause,
    /// an interval or a running action ends is acted on then. Skips are audited only when
    /// their reason changes.
    pub(super) async fn reevaluate(self: &Arc<Self>) -> Result<usize, EngineError> {
        let mut acted = 0;
        let clusters = self.clusters();
        for cluster in clusters.values() {
            let mut runtime = cluster.runtime.lock().await;
            let now = self.now();
            let ttl = self.settings.alert_ttl;
            runtime
                .tracked
                .retain(|_, t| elapsed_within(t.last_seen, now, ttl));
            runtime.forget_codes();
            let mut alerts: Vec<BrokerAlert> = runtime
                .tracked
                .values()
                .filter(|t| t.alert.status == AlertStatus::Firing)
                .map(|t| t.alert.clone())
                .collect();
            alerts.sort_by(|a, b| {
                (&a.starts_at, &a.fingerprint).cmp(&(&b.starts_at, &b.fingerprint))
            });
            for alert in alerts {
                let record = self
                    .evaluate(
                        cluster,
                        &mut runtime,
                        &alert,
                        Trigger::Reevaluate,
                        false,
                        now,
                    )
                    .await;
                let code = code_of(&record);
                if record.outcome != Outcome::Skipped
                    || runtime.last_code.get(&alert.fingerprint) != Some(&code)
                {
                    if record.outcome == Outcome::Applied {
                        acted += 1;
                    }
                    self.recorder.write(record).await?;
                }
                runtime.last_code.insert(alert.fingerprint.clone(), code);
            }
            self.gauges(cluster, &runtime);
        }
        Ok(acted)
    }
}
