//! Level-triggered broker alerts. Alertmanager delivers a notification to one actuator replica
//! (behind a Service, any of them), but only the leader acts on brokers. So the leader does not
//! depend on which replica got it: on every re-evaluation round, and promptly after any webhook
//! (a prompt to look now), it reads the firing broker alerts from Prometheus,
//! `ALERTS{alertstate="firing",alertname=~"KafkaBroker.*"}`, turns each series into the
//! [`BrokerAlert`] the webhook path builds, and folds them into the clusters' tracked alerts,
//! where the usual gates, intervals and re-evaluation apply.
//!
//! - Dedupe: a series and a tracked alert are the same alert when their fingerprints are equal
//!   (the series' labels hashed as Alertmanager does) or, failing that (Prometheus's external
//!   labels change the notification's fingerprint), when kind, broker and path are. An alert
//!   first learnt from Prometheus starts when this replica first saw it firing (never earlier
//!   than Alertmanager's startsAt, so a grace period is never shortened), and keeps that start
//!   when its notification arrives: one alert, one episode.
//! - Prometheus confirms what it shows: a tracked alert it has shown firing and shows no more is
//!   dropped, audited like a resolved notification (`cancelled`, or `alert_resolved` while an
//!   action of ours runs on that broker), so a resolution notified to another replica counts too.
//!   An alert only the webhooks brought and Prometheus never showed is kept as before (until its
//!   resolved notification or `alert_ttl`).
//! - When Prometheus cannot be queried, the webhooks received stay the only source: one record
//!   per outage says so (`failed`, `alerts_source_webhook_fallback`), one more when it answers
//!   again; `medic_actuator_broker_alerts_source{source}` shows the source in use.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::{Mutex, Notify};

use super::broker::{code_of, BrokerEngine, ClusterRuntime, ManagedCluster, Tracked};
use super::{Engine, EngineError};
use crate::alert::{broker_alert_from_series, AlertStatus, BrokerAlert};
use crate::audit::{Action, AuditRecord, Outcome};
use crate::decide::Trigger;
use crate::reason::ReasonCode;
use crate::telemetry;

/// How this replica first learnt of a broker alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertOrigin {
    /// An Alertmanager notification (webhook).
    Webhook,
    /// Prometheus's `ALERTS` series.
    Prometheus,
}

/// The engine's part: one look at a time, and the prompt to look now.
#[derive(Default)]
pub(super) struct PromAlerts {
    /// Serialises looks; holds whether the last look could query Prometheus (None: no look yet).
    answered: Mutex<Option<bool>>,
    /// Notified by every webhook.
    prompt: Notify,
}

impl PromAlerts {
    /// Ask the watcher to look at Prometheus now (prompts coalesce while a look runs).
    pub(super) fn nudge(&self) {
        self.prompt.notify_one();
    }
}

/// Whether two broker alerts of one cluster are the same alert.
fn same_alert(a: &BrokerAlert, b: &BrokerAlert) -> bool {
    a.fingerprint == b.fingerprint || (a.kind == b.kind && a.broker == b.broker && a.path == b.path)
}

impl ClusterRuntime {
    /// Remove and return the tracked alert first learnt from Prometheus that `alert` (from a
    /// webhook) is the notification of, if any.
    pub(super) fn take_prometheus_twin(&mut self, alert: &BrokerAlert) -> Option<Tracked> {
        let key = self
            .tracked
            .iter()
            .find(|(_, t)| t.origin == AlertOrigin::Prometheus && same_alert(&t.alert, alert))
            .map(|(k, _)| k.clone())?;
        self.tracked.remove(&key)
    }

    /// Fold in the alerts Prometheus shows firing on this cluster: refresh those tracked, track
    /// the others. Returns the alerts tracked for the first time, and the tracked alerts dropped
    /// because Prometheus had shown them firing and shows them no more.
    pub(super) fn fold_in(
        &mut self,
        firing: &[BrokerAlert],
        now: Timestamp,
    ) -> (Vec<BrokerAlert>, Vec<Tracked>) {
        let mut shown = BTreeSet::new();
        let mut new = Vec::new();
        for alert in firing {
            let key = self
                .tracked
                .iter()
                .find(|(_, t)| same_alert(&t.alert, alert))
                .map(|(k, _)| k.clone());
            if let Some(t) = key.as_ref().and_then(|k| self.tracked.get_mut(k)) {
                t.last_seen = now;
                t.confirmed = Some(now);
                shown.insert(t.alert.fingerprint.clone());
                continue;
            }
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
            self.tracked.insert(
                alert.fingerprint.clone(),
                Tracked {
                    alert: alert.clone(),
                    first_seen: now,
                    last_seen: now,
                    origin: AlertOrigin::Prometheus,
                    confirmed: Some(now),
                },
            );
            shown.insert(alert.fingerprint.clone());
            new.push(alert.clone());
        }
        let gone: Vec<String> = self
            .tracked
            .iter()
            .filter(|(k, t)| t.confirmed.is_some() && !shown.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        let gone = gone.iter().filter_map(|k| self.tracked.remove(k)).collect();
        let tracked = &self.tracked;
        self.last_code.retain(|fp, _| tracked.contains_key(fp));
        (new, gone)
    }
}

impl BrokerEngine {
    /// Fold Prometheus's firing alerts of `cluster` in, audit those it no longer shows, and,
    /// with `evaluate_new`, decide at once on those tracked for the first time (a look prompted
    /// by a webhook; a re-evaluation round decides on every tracked alert right after).
    /// Returns the actions started.
    async fn fold_in(
        self: &Arc<Self>,
        cluster: &Arc<ManagedCluster>,
        firing: &[BrokerAlert],
        evaluate_new: bool,
        now: Timestamp,
    ) -> Result<usize, EngineError> {
        let mut runtime = cluster.runtime.lock().await;
        let (new, gone) = runtime.fold_in(firing, now);
        for t in &gone {
            let mut record = self.base(cluster, &t.alert, Trigger::Reevaluate, now);
            record.alert_status = Some(AlertStatus::Resolved);
            let (reason, message) = match &runtime.running {
                Some(r) if r.broker == t.alert.broker => (
                    ReasonCode::AlertResolved,
                    format!(
                        "no longer firing in Prometheus (ALERTS) while {} on broker {} runs (task {}); a started action is not stopped, it ends by itself",
                        r.kind.as_str(),
                        r.broker,
                        r.task_id
                    ),
                ),
                _ => (
                    ReasonCode::Cancelled,
                    "no longer firing in Prometheus (ALERTS): any action still pending for this alert is cancelled".to_string(),
                ),
            };
            record.reason = Some(reason);
            record.message = message;
            self.recorder.write(record).await?;
        }
        let mut acted = 0;
        if evaluate_new {
            for alert in &new {
                let record = self
                    .evaluate(
                        cluster,
                        &mut runtime,
                        alert,
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
        }
        if !new.is_empty() || !gone.is_empty() {
            tracing::info!(
                cluster = %cluster.policy.cluster,
                new = new.len(),
                gone = gone.len(),
                "broker alerts from Prometheus (ALERTS)"
            );
            self.gauges(cluster, &runtime);
        }
        Ok(acted)
    }
}

impl Engine {
    /// Read the firing broker alerts from Prometheus and fold them into the clusters' tracked
    /// alerts (leader only; nothing without a Prometheus URL or a broker policy). A failed query
    /// leaves the webhooks' alerts as they are and is audited once per outage. With
    /// `evaluate_new`, alerts tracked for the first time are decided at once. Returns the
    /// actions started.
    pub(super) async fn look_at_prometheus(
        &self,
        evaluate_new: bool,
    ) -> Result<usize, EngineError> {
        let Some(prom) = &self.prom else {
            return Ok(0);
        };
        if !self.leadership.is_leader() {
            return Ok(0);
        }
        let clusters = self.brokers.clusters();
        if clusters.is_empty() {
            return Ok(0);
        }
        let mut answered = self.prom_alerts.answered.lock().await;
        let answer = prom.firing_broker_alerts().await;
        let now = self.now();
        let series = match answer {
            Ok(series) => series,
            Err(e) => {
                self.telemetry
                    .counter(telemetry::PROM_ERRORS, &[])
                    .increment(1);
                self.source_gauge(false);
                if *answered != Some(false) {
                    tracing::warn!(error = %e, "cannot read the firing broker alerts from Prometheus; using the webhooks received only");
                    let record = AuditRecord {
                        reason: Some(ReasonCode::AlertsSourceWebhookFallback),
                        message: format!(
                            "cannot read the firing broker alerts from Prometheus ({e}); until it answers, broker alerts come from the webhooks this replica received only: an alert notified to another replica is not seen, and a resolved one is dropped by its own notification or alert_ttl"
                        ),
                        dry_run: self.settings.dry_run,
                        ..AuditRecord::new(
                            now,
                            &self.settings.instance,
                            Trigger::Reevaluate,
                            Outcome::Failed,
                            Action::None,
                        )
                    };
                    self.write(record).await?;
                    *answered = Some(false);
                }
                return Ok(0);
            }
        };
        if *answered == Some(false) {
            let record = AuditRecord {
                message: format!(
                    "Prometheus answers again: firing broker alerts come from its ALERTS ({} series) and the webhooks",
                    series.len()
                ),
                dry_run: self.settings.dry_run,
                ..AuditRecord::new(
                    now,
                    &self.settings.instance,
                    Trigger::Reevaluate,
                    Outcome::Applied,
                    Action::None,
                )
            };
            self.write(record).await?;
            tracing::info!("Prometheus answers again: broker alerts from ALERTS and the webhooks");
        }
        *answered = Some(true);
        self.source_gauge(true);
        let mut by_cluster: BTreeMap<String, Vec<BrokerAlert>> = BTreeMap::new();
        for s in &series {
            // The alert starts when this replica first sees it firing (an alert already
            // tracked keeps the start it has). Not ALERTS_FOR_STATE: that is when the rule went
            // *pending*, earlier than Alertmanager's startsAt (the first firing evaluation) by
            // the rule's `for`, and a grace period counted from it would end early (the
            // whole-loop test saw a 20 s grace skipped after KafkaBrokerDown's 1 m `for`). First
            // sight is at most one look after the real start, so a grace is never shortened.
            match broker_alert_from_series(&s.labels, now) {
                Ok(alert) if clusters.contains_key(&alert.cluster) => by_cluster
                    .entry(alert.cluster.clone())
                    .or_default()
                    .push(alert),
                Ok(_) => {}
                Err(why) => tracing::debug!(labels = ?s.labels, "ALERTS series ignored: {why}"),
            }
        }
        let mut acted = 0;
        for (name, cluster) in clusters.iter() {
            let firing = by_cluster.remove(name).unwrap_or_default();
            acted += self
                .brokers
                .fold_in(cluster, &firing, evaluate_new, now)
                .await?;
        }
        Ok(acted)
    }

    fn source_gauge(&self, prometheus: bool) {
        for (source, on) in [("prometheus", prometheus), ("webhook", !prometheus)] {
            self.telemetry
                .gauge(
                    telemetry::BROKER_ALERTS_SOURCE,
                    &[("source", source.into())],
                )
                .set(f64::from(u8::from(on)));
        }
    }

    /// Look at Prometheus's firing broker alerts whenever a webhook arrives (besides every
    /// re-evaluation round), on a tracked task until [`Engine::shutdown`]. Without a Prometheus
    /// URL, nothing to do.
    pub fn start_alert_watch(self: &Arc<Self>) {
        if self.prom.is_none() {
            return;
        }
        let engine = self.clone();
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = engine.prom_alerts.prompt.notified() => {}
                }
                if let Err(e) = engine.look_at_prometheus(true).await {
                    tracing::error!(error = %e, "broker alerts from Prometheus could not be audited");
                }
            }
        });
    }
}
