//! The engine: reads the world, calls `decide`, carries the decision out, audits it.
//!
//! Per-target serialisation: every target has one async mutex, held from the first read to the
//! fsync of the audit record, so two deliveries of one alert can never both act.

mod broker;
mod broker_view;
mod evaluate;
mod executor;
mod periodic;
mod prom_alerts;
mod recovery;
mod reload;

pub use prom_alerts::AlertOrigin;
pub(crate) use reload::leaf_changes;
pub use reload::{policy_changes, ReloadStatus};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, RwLock as StdRwLock};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::alert::{
    Alert, AlertStatus, BrokerAlert, BrokerAlertKind, LagAlert, UnlabelledBrokerAlert, LAG_ALERT,
};
use crate::audit::{Action, AuditError, AuditLog, AuditRecord, Outcome, Recovered};
use crate::backend::remediation::RemediationBackend;
use crate::backend::{MetricsApi, ScaleApi};
use crate::decide::{Direction, LagSource, LastAction, Trigger};
use crate::policy::Policies;
use crate::reason::ReasonCode;
use crate::telemetry::{self, Telemetry};

/// Most alerts tracked per target (fingerprints); the oldest is forgotten beyond it.
pub(crate) const MAX_TRACKED_PER_TARGET: usize = 64;
/// Most deliveries remembered for dedupe per target or cluster, and for alerts without a policy.
pub(crate) const MAX_SEEN: usize = 4096;
/// Most firing broker alerts remembered for holding scale-downs.
pub(crate) const MAX_BROKER_HOLDS: usize = 1024;

/// The keys to forget so that a map keeps at most `cap` entries: those with the oldest `at`.
pub(crate) fn oldest<'a, K: Clone + Ord + 'a, V: 'a>(
    entries: impl ExactSizeIterator<Item = (&'a K, &'a V)>,
    cap: usize,
    at: impl Fn(&V) -> Timestamp,
) -> Vec<K> {
    let over = entries.len().saturating_sub(cap);
    if over == 0 {
        return Vec::new();
    }
    let mut ages: Vec<(Timestamp, K)> = entries.map(|(k, v)| (at(v), k.clone())).collect();
    ages.sort();
    ages.into_iter().take(over).map(|(_, k)| k).collect()
}

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
    /// The task deciding the alerts ended without an answer (it panicked, or the process is
    /// stopping).
    #[error("the decision task ended without an answer: {0}")]
    Task(String),
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
    pub reason: Option<ReasonCode>,
    /// Audit sequence number.
    pub seq: u64,
    /// Whether Alertmanager retrying could help (kube unavailable or conflicting).
    #[serde(skip)]
    pub retryable: bool,
    /// Broker alerts: the cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Broker alerts: the broker label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
}

/// Writes audit records and counts them in the metrics.
pub(crate) struct Recorder {
    pub(crate) audit: AuditLog,
    pub(crate) telemetry: Arc<Telemetry>,
}

impl Recorder {
    pub(crate) async fn write(&self, record: AuditRecord) -> Result<u64, EngineError> {
        let labels = [
            ("action", record.action.as_str().to_string()),
            ("outcome", record.outcome.as_str().to_string()),
        ];
        let broker_labels = match (&record.cluster, &record.broker, &record.backend) {
            (Some(c), _, Some(_)) => Some([
                ("cluster", c.clone()),
                ("action", record.action.as_str().to_string()),
                ("outcome", record.outcome.as_str().to_string()),
            ]),
            _ => None,
        };
        let reason = record.reason;
        match self.audit.append(vec![record]).await {
            Ok(seqs) => {
                self.telemetry
                    .counter(telemetry::ACTIONS, &labels)
                    .increment(1);
                if let Some(l) = broker_labels {
                    self.telemetry
                        .counter(telemetry::BROKER_ACTIONS, &l)
                        .increment(1);
                }
                if let Some(r) = reason {
                    self.telemetry
                        .counter(telemetry::REASONS, &[("reason", r.as_str().into())])
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

/// What holding scale-downs needs of a broker alert (labelled or not).
struct BrokerHold<'a> {
    kind: BrokerAlertKind,
    fingerprint: &'a str,
    status: AlertStatus,
    cluster: &'a str,
    broker: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct BrokerEntry {
    fingerprint: String,
    cluster: String,
    alertname: String,
    broker: Option<String>,
    last_seen: Timestamp,
}

/// The policies in force and the runtime of each of their targets, swapped whole by a reload
/// (see `reload.rs`): one snapshot is used from the start of a decision to its end.
pub(crate) struct Live {
    pub(crate) policies: Arc<Policies>,
    targets: HashMap<String, Arc<Mutex<TargetRuntime>>>,
}

/// The engine.
pub struct Engine {
    /// Policies and per-target runtime, swapped by a reload.
    live: StdRwLock<Arc<Live>>,
    kube: Arc<dyn ScaleApi>,
    prom: Option<Arc<dyn MetricsApi>>,
    audit: AuditLog,
    telemetry: Arc<Telemetry>,
    settings: EngineSettings,
    paused: Arc<AtomicBool>,
    /// Firing broker alerts that hold scale-downs, by fingerprint.
    holds: StdMutex<HashMap<String, BrokerEntry>>,
    /// Deliveries of alerts that match no policy, for dedupe (bounded).
    unmatched: StdMutex<HashMap<String, Timestamp>>,
    /// Decisions in progress: they outlive the webhook connection, and shutdown waits for them.
    tasks: tokio_util::task::TaskTracker,
    /// Cancelled by [`Engine::shutdown`]: periodic work stops between rounds, never inside one.
    stop: tokio_util::sync::CancellationToken,
    clock: Clock,
    recorder: Arc<Recorder>,
    brokers: Arc<broker::BrokerEngine>,
    /// Whether this replica leads (broker remediation and periodic work run only then).
    leadership: crate::leader::Leadership,
    /// The last configuration reloads (shown in /healthz).
    reload_status: StdMutex<ReloadStatus>,
    /// Firing broker alerts from Prometheus's `ALERTS` (level-triggered), see `prom_alerts.rs`.
    prom_alerts: prom_alerts::PromAlerts,
    /// Kubernetes Events of scale actions (`backend/kube_events.rs`); none without Kubernetes.
    events: Option<Arc<crate::backend::kube_events::ScaleEvents>>,
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
        backends: BTreeMap<String, Arc<dyn RemediationBackend>>,
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
            let Some(runtime) = r.target.as_ref().and_then(|t| runtimes.get_mut(t)) else {
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
                runtime.last_action = newest(
                    runtime.last_action.take(),
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
                    runtime.seen.insert(key, r.ts);
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
        let recorder = Arc::new(Recorder {
            audit: audit.clone(),
            telemetry: telemetry.clone(),
        });
        let paused = Arc::new(AtomicBool::new(paused));
        let brokers = Arc::new(broker::BrokerEngine::new(
            recorder.clone(),
            clock.clone(),
            broker::BrokerSettings {
                instance: settings.instance.clone(),
                dry_run: settings.dry_run,
                dedupe_window: settings.dedupe_window,
                alert_ttl: settings.alert_ttl,
            },
            paused.clone(),
            policies.brokers(),
            backends,
            recovered,
        ));
        Self {
            live: StdRwLock::new(Arc::new(Live {
                policies: Arc::new(policies),
                targets,
            })),
            kube,
            prom,
            audit,
            telemetry,
            settings,
            paused,
            holds: StdMutex::new(HashMap::new()),
            unmatched: StdMutex::new(HashMap::new()),
            tasks: tokio_util::task::TaskTracker::new(),
            stop: tokio_util::sync::CancellationToken::new(),
            clock,
            recorder,
            brokers,
            leadership: crate::leader::Leadership::always(),
            reload_status: StdMutex::new(ReloadStatus::default()),
            prom_alerts: prom_alerts::PromAlerts::default(),
            events: None,
        }
    }

    /// Replace the leadership view (leader election on). Call before the engine is shared.
    pub fn with_leadership(mut self, leadership: crate::leader::Leadership) -> Self {
        let _ = self.brokers.leadership.set(leadership.clone());
        self.leadership = leadership;
        self
    }

    /// This replica's leadership.
    pub fn leadership(&self) -> &crate::leader::Leadership {
        &self.leadership
    }

    /// The current time from the engine's clock.
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The policies in force (a reload swaps them; the snapshot returned stays as it is).
    pub fn policies(&self) -> Arc<Policies> {
        self.live().policies.clone()
    }

    /// The policies and target runtimes in force.
    pub(crate) fn live(&self) -> Arc<Live> {
        match self.live.read() {
            Ok(live) => live.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
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
        let record = AuditRecord {
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
        let seq = self.write(record).await?;
        Ok(seq)
    }

    async fn write(&self, record: AuditRecord) -> Result<u64, EngineError> {
        // A durable scale record also becomes a Kubernetes Event (queued, never awaited).
        let event = match &self.events {
            Some(ev) if crate::backend::kube_events::is_scale(&record) => {
                Some((ev.clone(), record.clone()))
            }
            _ => None,
        };
        let seq = self.recorder.write(record).await?;
        if let Some((ev, record)) = event {
            ev.offer(&record);
        }
        Ok(seq)
    }

    /// Report every scale action as a Kubernetes Event on its Deployment. Call before the
    /// engine is shared.
    pub fn with_scale_events(
        mut self,
        events: Arc<crate::backend::kube_events::ScaleEvents>,
    ) -> Self {
        self.events = Some(events);
        self
    }

    /// The Kubernetes Events of scale actions, if on.
    pub fn scale_events(&self) -> Option<&Arc<crate::backend::kube_events::ScaleEvents>> {
        self.events.as_ref()
    }

    /// Decide one webhook's alerts on a task of their own and wait for the answer. The task
    /// outlives the caller: when the HTTP client gives up (Alertmanager's notify timeout), the
    /// decision still runs to its end and its audit record is written, so every PATCH that was
    /// sent has its record. [`Engine::shutdown`] waits for such tasks.
    pub async fn submit(
        self: &Arc<Self>,
        alerts: Vec<Alert>,
    ) -> Result<Vec<AlertResult>, EngineError> {
        let engine = self.clone();
        let task = self
            .tasks
            .spawn(async move { engine.handle_alerts(&alerts).await });
        match task.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "a decision task ended without an answer");
                Err(EngineError::Task(e.to_string()))
            }
        }
    }

    /// Run `work` as a tracked task: [`Engine::shutdown`] waits for it.
    pub fn spawn_tracked<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(work)
    }

    /// Stop taking new work and wait up to `grace` for the decisions in progress (their PATCHes
    /// and audit records). Returns how many were still running when the grace ran out.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.stop.cancel();
        self.tasks.close();
        match tokio::time::timeout(grace, self.tasks.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tasks.len(),
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
                Alert::UnlabelledBroker(b) => ("broker", b.status.as_str()),
                Alert::Other { .. } => ("other", "any"),
            };
            self.telemetry
                .counter(
                    telemetry::ALERTS,
                    &[("kind", kind.into()), ("status", status.into())],
                )
                .increment(1);
            match a {
                Alert::Broker(b) => self.note_broker(
                    BrokerHold {
                        kind: b.kind,
                        fingerprint: &b.fingerprint,
                        status: b.status,
                        cluster: &b.cluster,
                        broker: Some(b.broker.to_string()),
                    },
                    now,
                ),
                Alert::UnlabelledBroker(b) => self.note_broker(
                    BrokerHold {
                        kind: b.kind,
                        fingerprint: &b.fingerprint,
                        status: b.status,
                        cluster: &b.cluster,
                        broker: b.label.clone(),
                    },
                    now,
                ),
                Alert::Lag(_) | Alert::Other { .. } => {}
            }
        }
        let lag: Vec<&LagAlert> = alerts
            .iter()
            .filter_map(|a| match a {
                Alert::Lag(l) => Some(l),
                _ => None,
            })
            .collect();
        let broker: Vec<&BrokerAlert> = alerts
            .iter()
            .filter_map(|a| match a {
                Alert::Broker(b) => Some(b),
                _ => None,
            })
            .collect();
        let unlabelled: Vec<&UnlabelledBrokerAlert> = alerts
            .iter()
            .filter_map(|a| match a {
                Alert::UnlabelledBroker(b) => Some(b),
                _ => None,
            })
            .collect();
        let brokers = self.brokers.handle_all(&broker, &unlabelled);
        let lag = futures::future::join_all(lag.iter().map(|l| self.handle_lag(l)));
        let (lag, brokers) = futures::future::join(lag, brokers).await;
        // Lag results first, as before issue 5; broker results (clusters with a broker
        // policy only) after them.
        let mut results: Vec<AlertResult> = lag.into_iter().collect::<Result<_, _>>()?;
        results.extend(brokers?);
        // Any webhook is a prompt to look at Prometheus's firing broker alerts now.
        self.prom_alerts.nudge();
        Ok(results)
    }

    fn note_broker(&self, b: BrokerHold<'_>, now: Timestamp) {
        if !b.kind.holds_scale_down() {
            return;
        }
        // Only a cluster with a lag policy has a scale-down to hold; anything else would be
        // memory spent on alerts that can never lead to an action or a hold.
        if !self.policies().all().iter().any(|p| p.cluster == b.cluster) {
            return;
        }
        let Ok(mut holds) = self.holds.lock() else {
            return;
        };
        match b.status {
            AlertStatus::Firing => {
                let ttl = self.settings.alert_ttl;
                holds.retain(|_, e| elapsed_within(e.last_seen, now, ttl));
                if !holds.contains_key(b.fingerprint) {
                    let dropped = oldest(holds.iter(), MAX_BROKER_HOLDS - 1, |e: &BrokerEntry| {
                        e.last_seen
                    });
                    for k in &dropped {
                        holds.remove(k);
                    }
                    if !dropped.is_empty() {
                        tracing::warn!(
                            dropped = dropped.len(),
                            limit = MAX_BROKER_HOLDS,
                            "too many firing broker alerts: forgot the oldest"
                        );
                    }
                }
                holds.insert(
                    b.fingerprint.to_string(),
                    BrokerEntry {
                        fingerprint: b.fingerprint.to_string(),
                        cluster: b.cluster.to_string(),
                        alertname: b.kind.alertname().to_string(),
                        broker: b.broker,
                        last_seen: now,
                    },
                );
            }
            AlertStatus::Resolved => {
                holds.remove(b.fingerprint);
            }
        }
    }

    fn broker_from_webhooks(&self, cluster: &str, now: Timestamp) -> Option<String> {
        let mut holds = self.holds.lock().ok()?;
        let ttl = self.settings.alert_ttl;
        holds.retain(|_, e| elapsed_within(e.last_seen, now, ttl));
        holds
            .values()
            .find(|e| e.cluster == cluster)
            .map(|e| e.alertname.clone())
    }

    async fn handle_lag(&self, alert: &LagAlert) -> Result<AlertResult, EngineError> {
        let live = self.live();
        let Some(policy) = live.policies.get(&alert.cluster, &alert.consumergroup) else {
            // Dedupe like any other delivery: a re-sent alert is audited `duplicate`, and what
            // is remembered for that is bounded by the window and a count.
            let now = self.now();
            let key = alert.delivery_key();
            let duplicate = match self.unmatched.lock() {
                Ok(mut seen) => {
                    let window = self.settings.dedupe_window;
                    seen.retain(|_, at| elapsed_within(*at, now, window));
                    let dup = seen.contains_key(&key);
                    if !dup {
                        for k in oldest(seen.iter(), MAX_SEEN - 1, |at: &Timestamp| *at) {
                            seen.remove(&k);
                        }
                        seen.insert(key, now);
                    }
                    dup
                }
                Err(_) => false,
            };
            let reason = if duplicate {
                ReasonCode::Duplicate
            } else {
                ReasonCode::NoPolicy
            };
            let record = AuditRecord {
                reason: Some(reason),
                message: format!(
                    "{}no policy for cluster {:?} consumergroup {:?}; nothing touched",
                    if duplicate {
                        "this alert delivery was already handled: "
                    } else {
                        ""
                    },
                    alert.cluster,
                    alert.consumergroup
                ),
                lag: alert.lag_annotation,
                lag_source: if alert.lag_annotation.is_some() {
                    LagSource::Annotation
                } else {
                    LagSource::None
                },
                ..self.alert_record(alert, Trigger::Webhook, Outcome::Skipped, Action::None)
            };
            let seq = self.write(record).await?;
            return Ok(AlertResult {
                fingerprint: alert.fingerprint.clone(),
                target: None,
                outcome: Outcome::Skipped,
                action: Action::None,
                reason: Some(reason),
                seq,
                retryable: false,
                cluster: None,
                broker: None,
            });
        };
        let target = policy.target();
        let Some(runtime) = live.targets.get(&target) else {
            return Err(EngineError::Audit(AuditError::Stopped));
        };
        let mut runtime = runtime.lock().await;
        let now = self.now();
        // Firing alerts are re-evaluated on the interval; resolved ones until the target settles.
        if !runtime.tracked.contains_key(&alert.fingerprint) {
            for k in oldest(
                runtime.tracked.iter(),
                MAX_TRACKED_PER_TARGET - 1,
                |t: &Tracked| t.last_seen,
            ) {
                runtime.tracked.remove(&k);
            }
        }
        runtime.tracked.insert(
            alert.fingerprint.clone(),
            Tracked {
                alert: alert.clone(),
                last_seen: now,
            },
        );
        let (record, retryable) = self
            .evaluate(policy, alert, Trigger::Webhook, &mut runtime, now)
            .await;
        let outcome = record.outcome;
        let action = record.action;
        let reason = record.reason;
        let seq = self.write(record).await?;
        // Only final answers count as "handled": a retryable failure must be retried.
        if !retryable && outcome != Outcome::Failed {
            for k in oldest(runtime.seen.iter(), MAX_SEEN - 1, |at: &Timestamp| *at) {
                runtime.seen.remove(&k);
            }
            runtime.seen.insert(alert.delivery_key(), now);
        }
        Ok(AlertResult {
            fingerprint: alert.fingerprint.clone(),
            target: Some(target),
            outcome,
            action,
            reason,
            seq,
            retryable,
            cluster: None,
            broker: None,
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
}
