//! The engine: reads the world, calls `decide`, carries the decision out, audits it.
//!
//! Per-target serialisation: every target has one async mutex, held from the first read to the
//! fsync of the audit record, so two deliveries of one alert can never both act.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::alert::{Alert, AlertStatus, BrokerAlert, LagAlert, LAG_ALERT};
use crate::audit::{Action, AuditError, AuditLog, AuditRecord, Outcome, Recovered};
use crate::backend::{KubeError, MetricsApi, ScaleApi, TargetView};
use crate::decide::{
    cooldown_remaining, decide, AlertInput, Decision, Direction, LagSource, LastAction, Observed,
    Reason, TargetState, Trigger,
};
use crate::policy::{PartitionCap, Policies, Policy};
use crate::telemetry::{self, Telemetry};

/// A clock, so tests can move time.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Engine settings taken from the config.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Instance name for audit records and the annotation.
    pub instance: String,
    /// Decide and audit, never patch.
    pub dry_run: bool,
    /// Duplicate window.
    pub dedupe_window: Duration,
    /// Forget firing alerts not refreshed for this long.
    pub alert_ttl: Duration,
    /// Fresh reads after a 409.
    pub conflict_retries: u32,
}

/// Failures that change the webhook's answer.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The audit record could not be made durable.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// The result of evaluating one alert.
#[derive(Debug, Clone, Serialize)]
pub struct AlertResult {
    /// Alertmanager's fingerprint.
    pub fingerprint: String,
    /// The Deployment, if a policy matched.
    pub target: Option<String>,
    /// applied, skipped, failed, dry_run.
    pub outcome: Outcome,
    /// scale_up, scale_down or none.
    pub action: Action,
    /// The reason code for skipped and failed.
    pub reason: Option<String>,
    /// Audit sequence number.
    pub seq: u64,
    /// Whether Alertmanager retrying could help (kube unavailable or conflicting).
    #[serde(skip)]
    pub retryable: bool,
}

#[derive(Debug, Clone)]
struct Tracked {
    alert: LagAlert,
    last_seen: Timestamp,
}

#[derive(Debug, Default)]
struct TargetRuntime {
    last_action: Option<LastAction>,
    seen: HashMap<String, Timestamp>,
    tracked: BTreeMap<String, Tracked>,
    last_reeval: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct BrokerEntry {
    cluster: String,
    alertname: String,
    broker: Option<String>,
    last_seen: Timestamp,
}

/// The engine.
pub struct Engine {
    policies: Policies,
    kube: Arc<dyn ScaleApi>,
    prom: Option<Arc<dyn MetricsApi>>,
    audit: AuditLog,
    telemetry: Arc<Telemetry>,
    settings: EngineSettings,
    paused: AtomicBool,
    targets: HashMap<String, Arc<Mutex<TargetRuntime>>>,
    brokers: StdMutex<HashMap<String, BrokerEntry>>,
    clock: Clock,
}

fn elapsed_within(since: Timestamp, now: Timestamp, window: Duration) -> bool {
    let w = SignedDuration::try_from(window).unwrap_or(SignedDuration::MAX);
    now.duration_since(since) < w
}

fn newest(a: Option<LastAction>, b: Option<LastAction>) -> Option<LastAction> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.at > a.at { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn delivery_key_of(r: &AuditRecord) -> Option<String> {
    Some(format!(
        "{}:{}:{}",
        r.fingerprint.as_ref()?,
        r.alert_status?.as_str(),
        r.starts_at.as_ref()?
    ))
}

impl Engine {
    /// Build the engine and seed its memory from the audit log that was read back at open.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        policies: Policies,
        kube: Arc<dyn ScaleApi>,
        prom: Option<Arc<dyn MetricsApi>>,
        audit: AuditLog,
        recovered: &Recovered,
        telemetry: Arc<Telemetry>,
        settings: EngineSettings,
        paused_by_config: bool,
        clock: Clock,
    ) -> Self {
        let mut runtimes: HashMap<String, TargetRuntime> = policies
            .all()
            .iter()
            .map(|p| (p.target(), TargetRuntime::default()))
            .collect();
        let now = clock();
        let mut paused = false;
        for r in &recovered.records {
            match r.action {
                Action::Pause => paused = true,
                Action::Resume => paused = false,
                _ => {}
            }
            let Some(rt) = r.target.as_ref().and_then(|t| runtimes.get_mut(t)) else {
                continue;
            };
            let acted =
                r.outcome == Outcome::Applied || (settings.dry_run && r.outcome == Outcome::DryRun);
            let direction = match r.action {
                Action::ScaleUp => Some(Direction::Up),
                Action::ScaleDown => Some(Direction::Down),
                _ => None,
            };
            if let (true, Some(direction), Some(from), Some(to)) =
                (acted, direction, r.from_replicas, r.to_replicas)
            {
                rt.last_action = newest(
                    rt.last_action.take(),
                    Some(LastAction {
                        at: r.ts,
                        direction,
                        from,
                        to,
                        alert: delivery_key_of(r).unwrap_or_default(),
                        by: r.instance.clone(),
                    }),
                );
            }
            if r.trigger == Trigger::Webhook
                && r.outcome != Outcome::Failed
                && elapsed_within(r.ts, now, settings.dedupe_window)
            {
                if let Some(key) = delivery_key_of(r) {
                    rt.seen.insert(key, r.ts);
                }
            }
        }
        let targets = runtimes
            .into_iter()
            .map(|(k, v)| (k, Arc::new(Mutex::new(v))))
            .collect();
        let paused = paused_by_config || paused;
        telemetry
            .gauge(telemetry::PAUSED, &[])
            .set(f64::from(u8::from(paused)));
        telemetry
            .gauge(telemetry::DRY_RUN, &[])
            .set(f64::from(u8::from(settings.dry_run)));
        telemetry
            .gauge(telemetry::POLICIES, &[])
            .set(policies.all().len() as f64);
        telemetry
            .gauge(telemetry::AUDIT_TORN, &[])
            .set(recovered.torn_bytes as f64);
        for p in policies.all() {
            let labels = [
                ("cluster", p.cluster.clone()),
                ("consumergroup", p.consumergroup.clone()),
            ];
            if let Some(t) = p.lag_threshold {
                telemetry
                    .gauge(telemetry::LAG_THRESHOLD, &labels)
                    .set(t as f64);
            }
            if let Some(s) = p.sustain {
                telemetry
                    .gauge(telemetry::LAG_SUSTAIN, &labels)
                    .set(s.as_secs_f64());
            }
        }
        Self {
            policies,
            kube,
            prom,
            audit,
            telemetry,
            settings,
            paused: AtomicBool::new(paused),
            targets,
            brokers: StdMutex::new(HashMap::new()),
            clock,
        }
    }

    /// The current time from the engine's clock.
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The policies.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Whether paused.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Whether in dry-run mode.
    pub fn dry_run(&self) -> bool {
        self.settings.dry_run
    }

    /// Turn the pause switch on or off; audited before it returns.
    pub async fn set_paused(&self, on: bool) -> Result<u64, EngineError> {
        let was = self.paused.swap(on, Ordering::SeqCst);
        let action = if on { Action::Pause } else { Action::Resume };
        let rec = AuditRecord {
            message: format!(
                "{} via the API (was {})",
                if on { "paused" } else { "resumed" },
                if was { "paused" } else { "running" }
            ),
            dry_run: self.settings.dry_run,
            ..AuditRecord::new(
                self.now(),
                &self.settings.instance,
                Trigger::Api,
                Outcome::Applied,
                action,
            )
        };
        self.telemetry
            .gauge(telemetry::PAUSED, &[])
            .set(f64::from(u8::from(on)));
        let seq = self.write(rec).await?;
        Ok(seq)
    }

    async fn write(&self, rec: AuditRecord) -> Result<u64, EngineError> {
        let labels = [
            ("action", rec.action.as_str().to_string()),
            ("outcome", rec.outcome.as_str().to_string()),
        ];
        let reason = rec.reason.clone();
        match self.audit.append(vec![rec]).await {
            Ok(seqs) => {
                self.telemetry
                    .counter(telemetry::ACTIONS, &labels)
                    .increment(1);
                if let Some(r) = reason {
                    self.telemetry
                        .counter(telemetry::REASONS, &[("reason", r)])
                        .increment(1);
                }
                Ok(seqs.first().copied().unwrap_or(0))
            }
            Err(e) => {
                self.telemetry
                    .counter(telemetry::AUDIT_ERRORS, &[])
                    .increment(1);
                Err(e.into())
            }
        }
    }

    /// Handle the alerts of one webhook: broker alerts first (they hold scale-downs), then lag
    /// alerts, different targets concurrently.
    pub async fn handle_alerts(&self, alerts: &[Alert]) -> Result<Vec<AlertResult>, EngineError> {
        let now = self.now();
        for a in alerts {
            let (kind, status) = match a {
                Alert::Lag(l) => ("lag", l.status.as_str()),
                Alert::Broker(b) => ("broker", b.status.as_str()),
                Alert::Other { .. } => ("other", "any"),
            };
            self.telemetry
                .counter(
                    telemetry::ALERTS,
                    &[("kind", kind.into()), ("status", status.into())],
                )
                .increment(1);
            if let Alert::Broker(b) = a {
                self.note_broker(b, now);
            }
        }
        let lag: Vec<&LagAlert> = alerts
            .iter()
            .filter_map(|a| match a {
                Alert::Lag(l) => Some(l),
                _ => None,
            })
            .collect();
        let results = futures::future::join_all(lag.iter().map(|l| self.handle_lag(l))).await;
        results.into_iter().collect()
    }

    fn note_broker(&self, b: &BrokerAlert, now: Timestamp) {
        let Ok(mut brokers) = self.brokers.lock() else {
            return;
        };
        match b.status {
            AlertStatus::Firing => {
                brokers.insert(
                    b.fingerprint.clone(),
                    BrokerEntry {
                        cluster: b.cluster.clone(),
                        alertname: b.alertname.clone(),
                        broker: b.broker.clone(),
                        last_seen: now,
                    },
                );
            }
            AlertStatus::Resolved => {
                brokers.remove(&b.fingerprint);
            }
        }
    }

    fn broker_from_webhooks(&self, cluster: &str, now: Timestamp) -> Option<String> {
        let mut brokers = self.brokers.lock().ok()?;
        let ttl = self.settings.alert_ttl;
        brokers.retain(|_, e| elapsed_within(e.last_seen, now, ttl));
        brokers
            .values()
            .find(|e| e.cluster == cluster)
            .map(|e| e.alertname.clone())
    }

    async fn handle_lag(&self, alert: &LagAlert) -> Result<AlertResult, EngineError> {
        let Some(policy) = self.policies.get(&alert.cluster, &alert.consumergroup) else {
            let rec = AuditRecord {
                reason: Some("no_policy".into()),
                message: format!(
                    "no policy for cluster {:?} consumergroup {:?}; nothing touched",
                    alert.cluster, alert.consumergroup
                ),
                lag: alert.lag_annotation,
                lag_source: if alert.lag_annotation.is_some() {
                    LagSource::Annotation
                } else {
                    LagSource::None
                },
                ..self.alert_record(alert, Trigger::Webhook, Outcome::Skipped, Action::None)
            };
            let seq = self.write(rec).await?;
            return Ok(AlertResult {
                fingerprint: alert.fingerprint.clone(),
                target: None,
                outcome: Outcome::Skipped,
                action: Action::None,
                reason: Some("no_policy".into()),
                seq,
                retryable: false,
            });
        };
        let target = policy.target();
        let Some(rt) = self.targets.get(&target) else {
            return Err(EngineError::Audit(AuditError::Stopped));
        };
        let mut rt = rt.lock().await;
        let now = self.now();
        // Firing alerts are re-evaluated on the interval; resolved ones until the target settles.
        rt.tracked.insert(
            alert.fingerprint.clone(),
            Tracked {
                alert: alert.clone(),
                last_seen: now,
            },
        );
        let (rec, retryable) = self
            .evaluate(policy, alert, Trigger::Webhook, &mut rt, now)
            .await;
        let outcome = rec.outcome;
        let action = rec.action;
        let reason = rec.reason.clone();
        let seq = self.write(rec).await?;
        // Only final answers count as "handled": a retryable failure must be retried.
        if !retryable && outcome != Outcome::Failed {
            rt.seen.insert(alert.delivery_key(), now);
        }
        Ok(AlertResult {
            fingerprint: alert.fingerprint.clone(),
            target: Some(target),
            outcome,
            action,
            reason,
            seq,
            retryable,
        })
    }

    fn alert_record(
        &self,
        alert: &LagAlert,
        trigger: Trigger,
        outcome: Outcome,
        action: Action,
    ) -> AuditRecord {
        AuditRecord {
            alertname: Some(LAG_ALERT.into()),
            alert_status: Some(alert.status),
            fingerprint: Some(alert.fingerprint.clone()),
            starts_at: Some(alert.starts_at.clone()),
            cluster: Some(alert.cluster.clone()),
            consumergroup: Some(alert.consumergroup.clone()),
            dry_run: self.settings.dry_run,
            ..AuditRecord::new(
                self.now(),
                &self.settings.instance,
                trigger,
                outcome,
                action,
            )
        }
    }

    async fn lag_for(&self, alert: &LagAlert) -> (Option<u64>, LagSource, Option<String>) {
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
    async fn evaluate(
        &self,
        policy: &Policy,
        alert: &LagAlert,
        trigger: Trigger,
        rt: &mut TargetRuntime,
        now: Timestamp,
    ) -> (AuditRecord, bool) {
        let target = policy.deployment.clone();
        let key = alert.delivery_key();
        let window = self.settings.dedupe_window;
        rt.seen.retain(|_, at| elapsed_within(*at, now, window));
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
            ..self.alert_record(alert, trigger, Outcome::Skipped, Action::None)
        };
        let fail = |mut rec: AuditRecord, e: &KubeError| {
            rec.outcome = Outcome::Failed;
            rec.reason = Some(e.code().into());
            rec.message = e.to_string();
            (rec, e.retryable())
        };
        let mut pending: Option<LastAction> = None;
        let mut conflicts = 0;
        loop {
            let view: TargetView = match self.kube.read(&target).await {
                Ok(v) => v,
                Err(e) => return fail(base, &e),
            };
            base.from_replicas = Some(view.replicas);
            let decision = if let Some(claim) = pending
                .as_ref()
                .filter(|c| view.last_action.as_ref() == Some(*c))
            {
                // Our claim landed even though its answer was a conflict: finish the action.
                Decision::Scale {
                    from: claim.from,
                    to: claim.to,
                    desired: claim.to,
                    direction: claim.direction,
                }
            } else {
                let last = newest(rt.last_action.clone(), view.last_action.clone());
                let seen_recently = rt.seen.contains_key(&key)
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
                let mut d = decide(&input, &observed, policy, &state, now);
                if let (
                    Decision::Scale {
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
                d
            };
            let (from, to, desired, direction) = match decision {
                Decision::Scale {
                    from,
                    to,
                    desired,
                    direction,
                } => (from, to, desired, direction),
                Decision::Skip(reason) => {
                    base.reason = Some(reason.code().into());
                    base.message = reason.message(policy);
                    if let Reason::Cooldown { to, .. } = &reason {
                        base.to_replicas = Some(*to);
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
                rt.last_action = Some(claim);
                return (base, false);
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
                    rt.last_action = Some(claim);
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
                    rt.last_action = Some(claim);
                    fail(base, &e)
                }
            };
        }
    }

    /// Re-evaluate every tracked alert once (firing ones, and resolved ones until settled).
    pub async fn reevaluate(&self) -> Result<usize, EngineError> {
        let mut acted = 0;
        let mut firing = 0usize;
        let mut settling = 0usize;
        for policy in self.policies.all() {
            let Some(rt) = self.targets.get(&policy.target()) else {
                continue;
            };
            let mut rt = rt.lock().await;
            let now = self.now();
            let ttl = self.settings.alert_ttl;
            rt.tracked
                .retain(|_, t| elapsed_within(t.last_seen, now, ttl));
            let pick = rt
                .tracked
                .values()
                .find(|t| t.alert.status == AlertStatus::Firing)
                .or_else(|| rt.tracked.values().next())
                .map(|t| t.alert.clone());
            let Some(alert) = pick else {
                continue;
            };
            let (rec, _) = self
                .evaluate(policy, &alert, Trigger::Reevaluate, &mut rt, now)
                .await;
            let code = format!(
                "{}:{}",
                rec.outcome.as_str(),
                rec.reason.clone().unwrap_or_default()
            );
            let settled = alert.status == AlertStatus::Resolved
                && matches!(rec.reason.as_deref(), Some("at_desired" | "out_of_bounds"));
            if rec.outcome != Outcome::Skipped || rt.last_reeval.as_deref() != Some(code.as_str()) {
                if rec.outcome == Outcome::Applied {
                    acted += 1;
                }
                self.write(rec).await?;
            }
            rt.last_reeval = Some(code);
            if settled {
                rt.tracked.clear();
                rt.last_reeval = None;
            }
            if rt
                .tracked
                .values()
                .any(|t| t.alert.status == AlertStatus::Firing)
            {
                firing += 1;
            } else if !rt.tracked.is_empty() {
                settling += 1;
            }
        }
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
        let now = self.now();
        for p in self.policies.all() {
            let Some(rt) = self.targets.get(&p.target()) else {
                continue;
            };
            let Ok(rt) = rt.try_lock() else { continue };
            for d in [Direction::Up, Direction::Down] {
                let left = cooldown_remaining(rt.last_action.as_ref(), p, d, now);
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
        for p in self.policies.all() {
            let Some(rt) = self.targets.get(&p.target()) else {
                continue;
            };
            let rt = rt.lock().await;
            let tracked: Vec<_> = rt
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
                "last_action": rt.last_action,
                "cooldown_remaining_seconds": {
                    "up": cooldown_remaining(rt.last_action.as_ref(), p, Direction::Up, now).as_secs(),
                    "down": cooldown_remaining(rt.last_action.as_ref(), p, Direction::Down, now).as_secs(),
                },
                "tracked_alerts": tracked,
            }));
        }
        let brokers: Vec<BrokerEntry> = self
            .brokers
            .lock()
            .map(|b| b.values().cloned().collect())
            .unwrap_or_default();
        serde_json::json!({
            "instance": self.settings.instance,
            "now": now,
            "paused": self.paused(),
            "dry_run": self.settings.dry_run,
            "audit_healthy": self.audit.healthy(),
            "targets": targets,
            "broker_alerts": brokers,
        })
    }
}
