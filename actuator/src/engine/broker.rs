//! Broker remediation in the engine: track broker alerts per cluster, run the gates, plan,
//! start the action through the cluster's backend, and audit every step. One async mutex per
//! cluster serialises decisions; a running action (see `executor.rs`) blocks new ones.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::Mutex;

use super::{elapsed_within, AlertResult, Clock, EngineError, Recorder};
use crate::alert::{AlertStatus, BrokerAlert};
use crate::audit::{Action, AuditRecord, Outcome, Phase, Recovered};
use crate::backend::remediation::{RemediationBackend, Request};
use crate::broker::gate::{
    decide_broker, precheck, AlertKind, BrokerInput, BrokerObserved, ClusterState, LastBrokerAction,
};
use crate::broker::planner::{plan_leadership, plan_moves, PlanKind};
use crate::broker::policy::{BackendKind, BrokerPolicy};
use crate::broker::{verify, ClusterModel};
use crate::decide::{Decision, Reason, Trigger};
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
}

/// Our action that is running on a cluster.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Running {
    pub(super) broker: i32,
    pub(super) kind: PlanKind,
    pub(super) task_id: String,
    pub(super) started: Timestamp,
    pub(super) episode: Timestamp,
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
}

impl ClusterRuntime {
    /// Track a firing alert (keeping when it was first heard of).
    fn track(&mut self, alert: &BrokerAlert, now: Timestamp) {
        if !self.tracked.contains_key(&alert.fingerprint) {
            let dropped = super::cap_oldest(
                &mut self.tracked,
                super::MAX_TRACKED_PER_TARGET - 1,
                |t: &Tracked| t.last_seen,
            );
            if dropped > 0 {
                tracing::warn!(
                    cluster = %alert.cluster,
                    limit = super::MAX_TRACKED_PER_TARGET,
                    "too many firing broker alerts on one cluster: forgot the oldest"
                );
            }
            self.forget_codes();
        }
        let first_seen = self
            .tracked
            .get(&alert.fingerprint)
            .filter(|t| t.alert.starts_at == alert.starts_at)
            .map(|t| t.first_seen)
            .unwrap_or(now);
        self.tracked.insert(
            alert.fingerprint.clone(),
            Tracked {
                alert: alert.clone(),
                first_seen,
                last_seen: now,
            },
        );
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

    /// Distinct brokers with a firing alert.
    pub(super) fn alerting(&self) -> BTreeSet<i32> {
        self.tracked
            .values()
            .filter(|t| t.alert.status == AlertStatus::Firing)
            .filter_map(|t| t.alert.broker.as_deref()?.parse().ok())
            .collect()
    }
}

/// One cluster with broker remediation.
pub(super) struct ClusterCtl {
    pub(super) policy: BrokerPolicy,
    pub(super) backend: Arc<dyn RemediationBackend>,
    pub(super) rt: Mutex<ClusterRuntime>,
}

/// Settings shared with the lag side.
pub(super) struct BrokerSettings {
    pub(super) instance: String,
    pub(super) dry_run: bool,
    pub(super) dedupe_window: Duration,
    pub(super) alert_ttl: Duration,
}

/// Broker remediation for every cluster with a `brokers:` policy.
pub(super) struct BrokerEngine {
    pub(super) rec: Arc<Recorder>,
    pub(super) clock: Clock,
    pub(super) settings: BrokerSettings,
    pub(super) paused: Arc<AtomicBool>,
    pub(super) clusters: BTreeMap<String, Arc<ClusterCtl>>,
}

fn code_of(rec: &AuditRecord) -> String {
    format!(
        "{}:{}",
        rec.outcome.as_str(),
        rec.reason.clone().unwrap_or_default()
    )
}

impl BrokerEngine {
    pub(super) fn new(
        rec: Arc<Recorder>,
        clock: Clock,
        settings: BrokerSettings,
        paused: Arc<AtomicBool>,
        policies: &[BrokerPolicy],
        backends: BTreeMap<String, Arc<dyn RemediationBackend>>,
        recovered: &Recovered,
    ) -> Self {
        let mut clusters = BTreeMap::new();
        for p in policies {
            let Some(backend) = backends.get(&p.cluster) else {
                continue;
            };
            let mut rt = ClusterRuntime::default();
            // Replay: last actions per broker and cluster (intervals survive a restart).
            for r in &recovered.records {
                if r.cluster.as_deref() != Some(p.cluster.as_str()) {
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
                    rt.remember_action(LastBrokerAction {
                        at: r.ts,
                        broker,
                        kind,
                        episode,
                    });
                }
            }
            rec.telemetry
                .gauge(telemetry::MASS_FAILURE, &[("cluster", p.cluster.clone())])
                .set(0.0);
            rec.telemetry
                .gauge(
                    telemetry::REMEDIATION_RUNNING,
                    &[("cluster", p.cluster.clone())],
                )
                .set(0.0);
            clusters.insert(
                p.cluster.clone(),
                Arc::new(ClusterCtl {
                    policy: p.clone(),
                    backend: backend.clone(),
                    rt: Mutex::new(rt),
                }),
            );
        }
        rec.telemetry
            .gauge(telemetry::BROKER_POLICIES, &[])
            .set(clusters.len() as f64);
        Self {
            rec,
            clock,
            settings,
            paused,
            clusters,
        }
    }

    pub(super) fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// The effective dry run of a cluster: global, the cluster's, or the log-only backend.
    pub(super) fn dry_run(&self, ctl: &ClusterCtl) -> bool {
        self.settings.dry_run || ctl.policy.dry_run || ctl.backend.kind() == BackendKind::LogOnly
    }

    pub(super) fn base(
        &self,
        ctl: &ClusterCtl,
        alert: &BrokerAlert,
        trigger: Trigger,
        now: Timestamp,
    ) -> AuditRecord {
        AuditRecord {
            alertname: Some(alert.alertname.clone()),
            alert_status: Some(alert.status),
            fingerprint: Some(alert.fingerprint.clone()),
            starts_at: Some(alert.starts_at.clone()),
            cluster: Some(alert.cluster.clone()),
            broker: alert.broker.clone(),
            path: alert.path.clone(),
            backend: Some(ctl.backend.kind().as_str().into()),
            dry_run: self.dry_run(ctl),
            ..AuditRecord::new(
                now,
                &self.settings.instance,
                trigger,
                Outcome::Skipped,
                Action::None,
            )
        }
    }

    /// Handle the broker alerts of one webhook: every firing one is tracked first, so alerts
    /// that arrive together (a mass failure) are counted together; then each is decided.
    pub(super) async fn handle_all(
        self: &Arc<Self>,
        alerts: &[&BrokerAlert],
    ) -> Result<Vec<AlertResult>, EngineError> {
        let now = self.now();
        for a in alerts.iter().filter(|a| a.status == AlertStatus::Firing) {
            if let Some(ctl) = self.clusters.get(&a.cluster) {
                ctl.rt.lock().await.track(a, now);
            }
        }
        let mut out = Vec::new();
        for a in alerts {
            if let Some(r) = self.handle(a).await? {
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
        let Some(ctl) = self.clusters.get(&alert.cluster).cloned() else {
            return Ok(None);
        };
        let mut rt = ctl.rt.lock().await;
        let now = self.now();
        let window = self.settings.dedupe_window;
        rt.seen.retain(|_, at| elapsed_within(*at, now, window));
        let key = alert.delivery_key();
        let seen_recently = rt.seen.contains_key(&key);
        let rec = match alert.status {
            AlertStatus::Firing => {
                rt.track(alert, now);
                self.evaluate(&ctl, &mut rt, alert, Trigger::Webhook, seen_recently, now)
                    .await
            }
            AlertStatus::Resolved => self.resolved(&ctl, &mut rt, alert, seen_recently, now),
        };
        let code = code_of(&rec);
        let result = AlertResult {
            fingerprint: alert.fingerprint.clone(),
            target: None,
            outcome: rec.outcome,
            action: rec.action,
            reason: rec.reason.clone(),
            seq: 0,
            retryable: false,
            cluster: Some(alert.cluster.clone()),
            broker: alert.broker.clone(),
        };
        let failed = rec.outcome == Outcome::Failed;
        let seq = self.rec.write(rec).await?;
        if !failed {
            super::cap_oldest(&mut rt.seen, super::MAX_SEEN - 1, |at: &Timestamp| *at);
            rt.seen.insert(key, now);
        }
        if alert.status == AlertStatus::Firing {
            rt.last_code.insert(alert.fingerprint.clone(), code);
        }
        self.gauges(&ctl, &rt);
        Ok(Some(AlertResult { seq, ..result }))
    }

    fn resolved(
        &self,
        ctl: &ClusterCtl,
        rt: &mut ClusterRuntime,
        alert: &BrokerAlert,
        seen_recently: bool,
        now: Timestamp,
    ) -> AuditRecord {
        let mut rec = self.base(ctl, alert, Trigger::Webhook, now);
        let was_tracked = rt.tracked.remove(&alert.fingerprint).is_some();
        rt.last_code.remove(&alert.fingerprint);
        let broker: Option<i32> = alert.broker.as_deref().and_then(|b| b.parse().ok());
        let (reason, message) = match &rt.running {
            _ if seen_recently => ("duplicate", "this alert delivery was already handled".to_string()),
            Some(r) if Some(r.broker) == broker => (
                "alert_resolved",
                format!(
                    "resolved while {} on broker {} runs (task {}); a started action is not stopped, it ends by itself",
                    r.kind.as_str(),
                    r.broker,
                    r.task_id
                ),
            ),
            _ if was_tracked => (
                "cancelled",
                "resolved: any action still pending for this alert (grace period, cooldown, pause, a running action elsewhere) is cancelled".to_string(),
            ),
            _ => ("alert_resolved", "resolved; nothing was pending".to_string()),
        };
        rec.reason = Some(reason.into());
        rec.message = message;
        rec
    }

    /// Run the gates and, if they pass, plan and start. Returns the record to write.
    pub(super) async fn evaluate(
        self: &Arc<Self>,
        ctl: &Arc<ClusterCtl>,
        rt: &mut ClusterRuntime,
        alert: &BrokerAlert,
        trigger: Trigger,
        seen_recently: bool,
        now: Timestamp,
    ) -> AuditRecord {
        let mut rec = self.base(ctl, alert, trigger, now);
        let skip = |mut rec: AuditRecord, code: &str, message: String| {
            rec.reason = Some(code.into());
            rec.message = message;
            rec
        };
        let Some(broker) = alert.broker.as_deref().and_then(|b| b.parse::<i32>().ok()) else {
            return skip(
                rec,
                "bad_broker_label",
                format!(
                    "the alert's broker label {:?} is not a Kafka broker id",
                    alert.broker
                ),
            );
        };
        let (Some(kind), Ok(starts_at)) = (
            AlertKind::from_alertname(&alert.alertname),
            alert.starts_at.parse::<Timestamp>(),
        ) else {
            return skip(rec, "internal", "not a broker alert".into());
        };
        let policy = &ctl.policy;
        let alerting = rt.alerting();
        let known = match (
            policy.expected_brokers.map(|n| n as usize),
            rt.known_brokers,
        ) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.mass_gauge(ctl, alerting.len(), known);
        let first_seen = rt
            .tracked
            .get(&alert.fingerprint)
            .map(|t| t.first_seen)
            .unwrap_or(now);
        let input = BrokerInput {
            kind,
            trigger,
            broker,
            starts_at,
            seen_recently,
            first_seen,
        };
        let mut state = ClusterState {
            paused: self.paused.load(Ordering::SeqCst),
            running: rt.running.as_ref().map(|r| (r.broker, r.kind)),
            last_cluster: rt.last_cluster.clone(),
            last_broker: rt.last_by_broker.get(&broker).cloned(),
            alerting_brokers: alerting.len(),
            known_brokers: known,
        };
        if let Some(s) = precheck(&input, policy, &state, now) {
            return skip(rec, s.code(), s.message());
        }
        let sizes = kind != AlertKind::Overloaded
            || state
                .last_broker
                .as_ref()
                .is_some_and(|l| l.episode == starts_at);
        let obs = match ctl.backend.observe(sizes).await {
            Ok(o) => o,
            Err(e) => {
                rec.outcome = Outcome::Failed;
                return skip(
                    rec,
                    e.code(),
                    format!("cannot read the cluster's state, so nothing starts: {e}"),
                );
            }
        };
        rt.known_brokers = obs.brokers.or(rt.known_brokers);
        state.known_brokers = None;
        let mut model = obs.model;
        if let Some(m) = model.as_mut() {
            mark_flags(m, rt);
        }
        let observed = BrokerObserved {
            brokers: obs.brokers,
            in_progress: obs.in_progress,
            alive: model.as_ref().map(|m| m.alive(broker)),
            leadership: model.as_ref().map(|m| m.leadership_of(broker)),
        };
        let known = match (policy.expected_brokers.map(|n| n as usize), obs.brokers) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.mass_gauge(ctl, alerting.len(), known);
        let kind = match decide_broker(&input, &observed, policy, &state, now) {
            Decision::Reassign { kind, .. } => kind,
            Decision::Skip(r) => return skip(rec, r.code(), r.message_broker()),
            Decision::Scale { .. } => return skip(rec, "internal", "unexpected scale".into()),
        };
        rec.action = action_of(kind);
        let limits = policy.limits();
        let plan = model.as_ref().map(|m| match kind {
            PlanKind::MoveLeadership => plan_leadership(m, broker, &limits),
            _ => plan_moves(
                m,
                broker,
                (kind == PlanKind::MoveReplicas && input.kind == AlertKind::DiskPressure)
                    .then_some(alert.path.as_deref())
                    .flatten(),
                &limits,
            ),
        });
        if let (Some(plan), Some(m)) = (&plan, &model) {
            rec.plan = serde_json::to_value(plan).ok();
            rec.replica_moves = u32::try_from(plan.replica_moves()).ok();
            rec.leader_moves = u32::try_from(plan.leader_moves()).ok();
            if let Err(e) = verify(m, plan, &limits) {
                rec.outcome = Outcome::Failed;
                return skip(
                    rec,
                    "plan_invalid",
                    format!("the plan broke a safety rule and was not sent: {e}"),
                );
            }
            if plan.changes.is_empty() {
                rec.action = Action::None;
                return skip(
                    rec,
                    "nothing_to_move",
                    format!(
                        "{} on broker {broker}: nothing to do: {}",
                        kind.as_str(),
                        plan.summary()
                    ),
                );
            }
        }
        let what = match &plan {
            Some(p) => p.summary(),
            None if ctl.backend.kind() == BackendKind::CruiseControl => {
                format!("broker {broker} (Cruise Control plans the moves)")
            }
            None => format!("broker {broker} (no partition plan without a kafka connection)"),
        };
        let last = LastBrokerAction {
            at: now,
            broker,
            kind,
            episode: starts_at,
        };
        if self.dry_run(ctl) {
            rec.outcome = Outcome::DryRun;
            rec.phase = Some(Phase::Started);
            rec.message = format!(
                "dry run ({}): would {}: {what}",
                ctl.backend.kind().as_str(),
                kind.as_str()
            );
            rt.remember_action(last);
            return rec;
        }
        if !self.rec.audit.healthy() {
            rec.outcome = Outcome::Failed;
            return skip(
                rec,
                "audit_unhealthy",
                format!(
                    "not starting {}: the last audit write failed",
                    kind.as_str()
                ),
            );
        }
        let exclude: Vec<i32> = alerting.iter().copied().filter(|b| *b != broker).collect();
        let req = Request {
            kind,
            broker,
            plan,
            exclude,
            reason: format!(
                "medic-actuator: {} broker {broker} ({})",
                alert.alertname, alert.cluster
            ),
            limits,
            throttle: policy.throttle_bytes_per_second,
        };
        match ctl.backend.start(&req).await {
            Err(e) => {
                // A failed start consumes the cluster interval, so a broken backend is not
                // hammered every re-evaluation.
                rt.last_cluster = Some(last);
                rec.outcome = Outcome::Failed;
                skip(
                    rec,
                    e.code(),
                    format!("{} on broker {broker} was not started: {e}", kind.as_str()),
                )
            }
            Ok(started) => {
                rec.phase = Some(Phase::Started);
                rec.task_id = Some(started.task_id.clone());
                if let Some(summary) = started.summary {
                    rec.plan = Some(summary);
                }
                let note = started.note.map(|n| format!(" ({n})")).unwrap_or_default();
                if started.proposal_only {
                    rec.outcome = Outcome::DryRun;
                    rec.dry_run = true;
                    rec.message = format!(
                        "{} computed a proposal only (its dry run) for {}: {what}{note}",
                        ctl.backend.kind().as_str(),
                        kind.as_str()
                    );
                    rt.remember_action(last);
                    return rec;
                }
                rec.outcome = Outcome::Applied;
                rec.message = format!(
                    "started {} via {} (task {}): {what}{note}",
                    kind.as_str(),
                    ctl.backend.kind().as_str(),
                    started.task_id
                );
                tracing::info!(cluster = %alert.cluster, broker, action = kind.as_str(), task = %started.task_id, "broker remediation started");
                let running = Running {
                    broker,
                    kind,
                    task_id: started.task_id,
                    started: now,
                    episode: starts_at,
                };
                rt.running = Some(running.clone());
                tokio::spawn(self.clone().execute(ctl.clone(), running, alert.clone()));
                rec
            }
        }
    }

    /// Re-evaluate every firing broker alert, oldest first: an alert still firing when a pause,
    /// an interval or a running action ends is acted on then. Skips are audited only when
    /// their reason changes.
    pub(super) async fn reevaluate(self: &Arc<Self>) -> Result<usize, EngineError> {
        let mut acted = 0;
        for ctl in self.clusters.values() {
            let mut rt = ctl.rt.lock().await;
            let now = self.now();
            let ttl = self.settings.alert_ttl;
            rt.tracked
                .retain(|_, t| elapsed_within(t.last_seen, now, ttl));
            rt.forget_codes();
            let mut alerts: Vec<BrokerAlert> = rt
                .tracked
                .values()
                .filter(|t| t.alert.status == AlertStatus::Firing)
                .map(|t| t.alert.clone())
                .collect();
            alerts.sort_by(|a, b| {
                (&a.starts_at, &a.fingerprint).cmp(&(&b.starts_at, &b.fingerprint))
            });
            for alert in alerts {
                let rec = self
                    .evaluate(ctl, &mut rt, &alert, Trigger::Reevaluate, false, now)
                    .await;
                let code = code_of(&rec);
                if rec.outcome != Outcome::Skipped
                    || rt.last_code.get(&alert.fingerprint) != Some(&code)
                {
                    if rec.outcome == Outcome::Applied {
                        acted += 1;
                    }
                    self.rec.write(rec).await?;
                }
                rt.last_code.insert(alert.fingerprint.clone(), code);
            }
            self.gauges(ctl, &rt);
        }
        Ok(acted)
    }
}

/// Mark the brokers with firing broker alerts in the model: overloaded (or down but still in
/// the metadata) brokers neither lead nor receive replicas; full ones receive none.
fn mark_flags(model: &mut ClusterModel, rt: &ClusterRuntime) {
    for t in rt.tracked.values() {
        if t.alert.status != AlertStatus::Firing {
            continue;
        }
        let Some(id) = t
            .alert
            .broker
            .as_deref()
            .and_then(|b| b.parse::<i32>().ok())
        else {
            continue;
        };
        let Some(b) = model.brokers.get_mut(&id) else {
            continue;
        };
        match AlertKind::from_alertname(&t.alert.alertname) {
            // A live broker whose heartbeat alert fires is treated as overloaded: it neither
            // leads nor receives replicas while the alert lasts.
            Some(AlertKind::Overloaded | AlertKind::Down) => b.overloaded = true,
            Some(AlertKind::DiskPressure) => b.full = true,
            None => {}
        }
    }
}

impl Reason {
    /// The message of a broker gate (no scaling policy needed).
    pub fn message_broker(&self) -> String {
        match self {
            Reason::Broker(b) => b.message(),
            other => other.code().to_string(),
        }
    }
}
