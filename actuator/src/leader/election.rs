//! The election loop: client-go's leader election over one Lease, with local fencing.
//!
//! - A candidate GETs the Lease every `retry_period`. Missing: it POSTs one naming itself. Held
//!   by another replica: it takes over only when the record (its resourceVersion) has not
//!   changed for the Lease's duration **as observed on this replica's own clock** (client-go's
//!   observedTime; the record's renewTime, written by another clock, is never compared with
//!   ours). Empty holder (released) or itself: it takes it at once. A takeover PUTs the record
//!   with `metadata.resourceVersion`, a new acquireTime and renewTime, and leaseTransitions + 1;
//!   a 409 means another replica wrote first.
//! - The leader PUTs a new renewTime every `retry_period` (on the resourceVersion it last wrote;
//!   after a 409 it reads the Lease again). Its deadline counts from the moment the last
//!   successful write was **sent** (the server applied it after that, so every observer's
//!   expiry is later): when it has not renewed for `renew_deadline` it steps down, whether the
//!   API answers errors or nothing at all, and `renew_deadline < lease_duration` means that
//!   happens before any other replica may take over. Every request is bounded by
//!   `request_timeout` and by the time left to the deadline.
//! - Seeing another holder while leading (someone overwrote the Lease) steps down at once.
//! - On shutdown the leader stops acting, then releases the Lease (holder cleared,
//!   leaseDurationSeconds 1) so that another replica takes over at its next attempt.
//!
//! Every change is an audit record (`acquire_leadership`, `lose_leadership`,
//! `release_leadership`, trigger `election`). An acquisition is durable before this replica acts
//! on it (a failed audit write gives the Lease back); a loss or release stops the acting first
//! and is recorded right after.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ElectionInfo, Leadership, LeaseError, LeaseStore};
use crate::audit::{Action, AuditRecord, Outcome};
use crate::decide::Trigger;
use crate::engine::{Clock, EngineError, Recorder};
use crate::telemetry::{self, Telemetry};

/// The resolved election settings.
#[derive(Debug, Clone)]
pub struct ElectionSettings {
    /// This replica's identity (the Lease's holderIdentity while it leads).
    pub identity: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub lease_name: String,
    /// Validity of a Lease not renewed (whole seconds).
    pub lease_duration: Duration,
    /// The leader steps down when it has not renewed for this long.
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry_period: Duration,
    /// Bound of one attempt (GET and write).
    pub request_timeout: Duration,
    /// The audit records' `instance`.
    pub instance: String,
    /// The audit records' `dry_run`.
    pub dry_run: bool,
}

impl ElectionSettings {
    /// `namespace/name`.
    pub fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.lease_name)
    }
}

/// Where leadership changes are recorded (the audit log; a memory in tests).
pub(crate) trait Journal: Send + Sync {
    fn write(&self, record: AuditRecord) -> BoxFuture<'_, Result<u64, EngineError>>;
}

impl Journal for Recorder {
    fn write(&self, record: AuditRecord) -> BoxFuture<'_, Result<u64, EngineError>> {
        Box::pin(Recorder::write(self, record))
    }
}

/// The last version of the Lease this replica saw, and when (on its own clock) it first saw it.
struct Observed {
    lease: Lease,
    at: Instant,
}

/// The result of one attempt.
#[derive(Debug, PartialEq)]
enum Attempt {
    /// This replica holds the Lease: its write was sent at `sent`.
    Holding {
        sent: Instant,
        /// The holder it took the Lease from (none: it was free, missing, or already ours).
        previous: Option<String>,
        transitions: i32,
    },
    /// Another replica holds a Lease that has not expired on this replica's clock.
    HeldBy { holder: String },
}

fn holder_of(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

fn version_of(lease: &Lease) -> Option<&str> {
    lease.metadata.resource_version.as_deref()
}

/// The election of one replica. [`Election::run`] drives it until cancelled.
pub struct Election {
    settings: ElectionSettings,
    store: Arc<dyn LeaseStore>,
    journal: Arc<dyn Journal>,
    clock: Clock,
    tx: watch::Sender<bool>,
    info: Arc<Mutex<ElectionInfo>>,
    gauge: metrics::Gauge,
    observed: Option<Observed>,
    last_error: Option<String>,
}

impl Election {
    /// An election that is not running yet, and the view of it the engine consults (not
    /// leading until [`Election::run`] acquires the Lease).
    pub(crate) fn new(
        settings: ElectionSettings,
        store: Arc<dyn LeaseStore>,
        journal: Arc<dyn Journal>,
        telemetry: &Telemetry,
        clock: Clock,
    ) -> (Self, Leadership) {
        let (tx, rx) = watch::channel(false);
        let info = Arc::new(Mutex::new(ElectionInfo {
            identity: settings.identity.clone(),
            lease: settings.lease(),
            holder: None,
            since: None,
        }));
        let gauge = telemetry.gauge(
            telemetry::LEADER,
            &[("instance", settings.identity.clone())],
        );
        gauge.set(0.0);
        let leadership = Leadership::elected(rx, info.clone());
        (
            Self {
                settings,
                store,
                journal,
                clock,
                tx,
                info,
                gauge,
                observed: None,
                last_error: None,
            },
            leadership,
        )
    }

    fn now_wall(&self) -> Timestamp {
        (self.clock)()
    }

    fn set_info(&self, f: impl FnOnce(&mut ElectionInfo)) {
        f(&mut self.info.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// Remember what was read (or written): the observation time moves only when the record
    /// changed.
    fn observe(&mut self, lease: Lease, now: Instant) {
        let same = self
            .observed
            .as_ref()
            .is_some_and(|o| version_of(&o.lease) == version_of(&lease));
        let at = match &self.observed {
            Some(o) if same => o.at,
            _ => now,
        };
        self.observed = Some(Observed { lease, at });
    }

    /// The record this replica writes on top of `current`: renewed if it holds it, taken over
    /// otherwise (new acquireTime, leaseTransitions + 1).
    fn next_record(&self, current: &Lease) -> (Lease, i32) {
        let now = MicroTime(self.now_wall());
        let mut next = current.clone();
        let ours = holder_of(current) == Some(self.settings.identity.as_str());
        let spec = next.spec.get_or_insert_with(LeaseSpec::default);
        if ours {
            spec.acquire_time.get_or_insert_with(|| now.clone());
            spec.lease_transitions.get_or_insert(0);
        } else {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(self.settings.identity.clone());
        spec.lease_duration_seconds = Some(self.lease_seconds());
        spec.renew_time = Some(now);
        let transitions = spec.lease_transitions.unwrap_or(0);
        (next, transitions)
    }

    fn fresh_record(&self) -> Lease {
        let now = MicroTime(self.now_wall());
        Lease {
            metadata: ObjectMeta {
                name: Some(self.settings.lease_name.clone()),
                namespace: Some(self.settings.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.settings.identity.clone()),
                lease_duration_seconds: Some(self.lease_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        }
    }

    /// client-go's tryAcquireOrRenew. `leading`: try the write on the last version first.
    async fn try_acquire_or_renew(&mut self, leading: bool) -> Result<Attempt, LeaseError> {
        let me = self.settings.identity.clone();
        if leading {
            let ours = self
                .observed
                .as_ref()
                .filter(|o| holder_of(&o.lease) == Some(me.as_str()))
                .map(|o| o.lease.clone());
            if let Some(current) = ours {
                let (next, transitions) = self.next_record(&current);
                let sent = Instant::now();
                match self.store.replace(&next).await {
                    Ok(written) => {
                        self.observe(written, Instant::now());
                        return Ok(Attempt::Holding {
                            sent,
                            previous: None,
                            transitions,
                        });
                    }
                    // Someone else wrote since: read what they wrote.
                    Err(LeaseError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let current = self.store.get().await?;
        let now = Instant::now();
        let Some(current) = current else {
            let fresh = self.fresh_record();
            let sent = Instant::now();
            let created = self.store.create(&fresh).await?;
            self.observe(created, Instant::now());
            return Ok(Attempt::Holding {
                sent,
                previous: None,
                transitions: 0,
            });
        };
        self.observe(current.clone(), now);
        let holder = holder_of(&current).map(str::to_string);
        if let Some(h) = holder.as_ref().filter(|h| **h != me) {
            let valid_for = current
                .spec
                .as_ref()
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
                .unwrap_or(self.settings.lease_duration);
            let since = self.observed.as_ref().map_or(now, |o| o.at);
            // While leading, any other holder ends the leadership (it was overwritten).
            if leading || now < since + valid_for {
                return Ok(Attempt::HeldBy { holder: h.clone() });
            }
        }
        let (next, transitions) = self.next_record(&current);
        let sent = Instant::now();
        let written = self.store.replace(&next).await?;
        self.observe(written, Instant::now());
        Ok(Attempt::Holding {
            sent,
            previous: holder.filter(|h| *h != me),
            transitions,
        })
    }

    async fn attempt(&mut self, leading: bool, budget: Duration) -> Result<Attempt, LeaseError> {
        match tokio::time::timeout(budget, self.try_acquire_or_renew(leading)).await {
            Ok(r) => r,
            Err(_) => Err(LeaseError::Unavailable(format!(
                "no answer within {}",
                humantime::format_duration(budget)
            ))),
        }
    }

    fn note_error(&mut self, e: &LeaseError) {
        let text = e.to_string();
        if self.last_error.as_deref() != Some(text.as_str()) {
            tracing::warn!(lease = %self.settings.lease(), error = %text, "leader election: the Lease could not be read or written");
            self.last_error = Some(text);
        }
    }

    fn note_holder(&mut self, holder: &str) {
        self.last_error = None;
        let changed = {
            let mut info = self.info.lock().unwrap_or_else(|e| e.into_inner());
            let changed = info.holder.as_deref() != Some(holder);
            info.holder = Some(holder.to_string());
            changed
        };
        if changed {
            tracing::info!(lease = %self.settings.lease(), holder, "leader election: another replica leads");
        }
    }

    fn record(&self, ts: Timestamp, action: Action, message: String) -> AuditRecord {
        AuditRecord {
            message,
            dry_run: self.settings.dry_run,
            ..AuditRecord::new(
                ts,
                &self.settings.instance,
                Trigger::Election,
                Outcome::Applied,
                action,
            )
        }
    }

    /// The Lease is ours: audit, then act. `false` when this replica must not lead on it.
    async fn become_leader(
        &mut self,
        sent: Instant,
        previous: Option<String>,
        transitions: i32,
    ) -> bool {
        self.last_error = None;
        let lease = self.settings.lease();
        let from = previous
            .map(|p| format!(", taken over from {p}"))
            .unwrap_or_default();
        let acquired = self.now_wall();
        let record = self.record(
            acquired,
            Action::AcquireLeadership,
            format!(
                "acquired the Lease {lease} as {} (leaseTransitions {transitions}{from}); this replica now acts on brokers and runs the re-evaluation",
                self.settings.identity
            ),
        );
        if let Err(e) = self.journal.write(record).await {
            tracing::error!(lease = %lease, error = %e, "leader election: the acquisition could not be audited; giving the Lease back");
            self.give_back().await;
            return false;
        }
        let deadline = sent + self.settings.renew_deadline;
        if Instant::now() >= deadline {
            let message = format!(
                "not leading on the Lease {lease}: recording the acquisition took longer than renew_deadline {}",
                humantime::format_duration(self.settings.renew_deadline)
            );
            let now = self.now_wall();
            self.set_info(|i| i.since = Some(now));
            if let Err(e) = self
                .journal
                .write(self.record(now, Action::LoseLeadership, message))
                .await
            {
                tracing::error!(error = %e, "leader election: the step-down could not be audited");
            }
            return false;
        }
        let identity = self.settings.identity.clone();
        self.set_info(|i| {
            i.holder = Some(identity);
            i.since = Some(acquired);
        });
        self.gauge.set(1.0);
        self.tx.send_replace(true);
        tracing::info!(lease = %lease, identity = %self.settings.identity, transitions, "leader election: acquired the Lease; leading");
        true
    }

    /// Stop acting at once, then record why.
    async fn step_down(&mut self, why: String, holder: Option<String>) {
        self.tx.send_replace(false);
        self.gauge.set(0.0);
        let now = self.now_wall();
        self.set_info(|i| {
            i.holder = holder;
            i.since = Some(now);
        });
        tracing::warn!(lease = %self.settings.lease(), reason = %why, "leader election: stepped down; not acting until the Lease is acquired again");
        let record = self.record(
            now,
            Action::LoseLeadership,
            format!(
                "stepped down from the Lease {}: {why}; no broker action or re-evaluation starts here until it is acquired again",
                self.settings.lease()
            ),
        );
        if let Err(e) = self.journal.write(record).await {
            tracing::error!(error = %e, "leader election: the step-down could not be audited");
        }
    }

    /// Write the Lease free (holder cleared, leaseDurationSeconds 1): another replica takes it at
    /// its next attempt. After a 409, read it once more and release only if still ours.
    async fn release_lease(&mut self) -> Result<bool, LeaseError> {
        let me = self.settings.identity.clone();
        for _ in 0..2 {
            let Some(current) = self
                .observed
                .as_ref()
                .filter(|o| holder_of(&o.lease) == Some(me.as_str()))
                .map(|o| o.lease.clone())
            else {
                return Ok(false);
            };
            let now = MicroTime(self.now_wall());
            let mut next = current;
            let spec = next.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            match self.store.replace(&next).await {
                Ok(written) => {
                    self.observe(written, Instant::now());
                    return Ok(true);
                }
                Err(LeaseError::Conflict(_)) => {
                    if let Some(fresh) = self.store.get().await? {
                        self.observe(fresh, Instant::now());
                    } else {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Best effort: free the Lease this replica will not lead on.
    async fn give_back(&mut self) {
        let budget = self.settings.request_timeout;
        match tokio::time::timeout(budget, self.release_lease()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "leader election: could not give the Lease back; it expires after its duration")
            }
            Err(_) => tracing::warn!(
                "leader election: giving the Lease back timed out; it expires after its duration"
            ),
        }
    }

    /// Shutdown while leading: stop acting, record it, free the Lease.
    async fn release(&mut self) {
        self.tx.send_replace(false);
        self.gauge.set(0.0);
        let now = self.now_wall();
        self.set_info(|i| {
            i.holder = None;
            i.since = Some(now);
        });
        let record = self.record(
            now,
            Action::ReleaseLeadership,
            format!(
                "released the Lease {} on shutdown: stopped acting, and its holder is cleared so another replica takes over at its next attempt",
                self.settings.lease()
            ),
        );
        if let Err(e) = self.journal.write(record).await {
            tracing::error!(error = %e, "leader election: the release could not be audited");
        }
        let budget = self.settings.request_timeout;
        match tokio::time::timeout(budget, self.release_lease()).await {
            Ok(Ok(true)) => {
                tracing::info!(lease = %self.settings.lease(), "leader election: released the Lease")
            }
            Ok(Ok(false)) => tracing::info!(lease = %self.settings.lease(), "leader election: the Lease was no longer ours; nothing to release"),
            Ok(Err(e)) => tracing::warn!(error = %e, "leader election: could not release the Lease; another replica takes over when it expires"),
            Err(_) => tracing::warn!("leader election: releasing the Lease timed out; another replica takes over when it expires"),
        }
    }

    /// Run for leadership until `stop` is cancelled; then release the Lease if held.
    pub async fn run(mut self, stop: CancellationToken) {
        let retry = self.settings.retry_period;
        let renew_deadline = self.settings.renew_deadline;
        tracing::info!(
            lease = %self.settings.lease(),
            identity = %self.settings.identity,
            lease_duration = ?self.settings.lease_duration,
            renew_deadline = ?renew_deadline,
            retry_period = ?retry,
            "leader election: running for the Lease"
        );
        // While leading: when the last successful write was sent.
        let mut renewed: Option<Instant> = None;
        let mut next = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(next) => {}
            }
            let Some(last) = renewed else {
                let budget = self.settings.request_timeout;
                match self.attempt(false, budget).await {
                    Ok(Attempt::Holding {
                        sent,
                        previous,
                        transitions,
                    }) => {
                        if self.become_leader(sent, previous, transitions).await {
                            renewed = Some(sent);
                            next = sent + retry;
                            continue;
                        }
                    }
                    Ok(Attempt::HeldBy { holder }) => self.note_holder(&holder),
                    Err(e) => self.note_error(&e),
                }
                next = Instant::now() + retry;
                continue;
            };
            let deadline = last + renew_deadline;
            let now = Instant::now();
            if now >= deadline {
                let why = format!(
                    "not renewed for renew_deadline {} (last error: {})",
                    humantime::format_duration(renew_deadline),
                    self.last_error.as_deref().unwrap_or("none")
                );
                self.step_down(why, None).await;
                renewed = None;
                next = Instant::now() + retry;
                continue;
            }
            let budget = self.settings.request_timeout.min(deadline - now);
            match self.attempt(true, budget).await {
                Ok(Attempt::Holding { sent, .. }) => {
                    self.last_error = None;
                    renewed = Some(sent);
                    next = sent + retry;
                }
                Ok(Attempt::HeldBy { holder }) => {
                    self.step_down(
                        format!("the Lease was overwritten: {holder} holds it now"),
                        Some(holder),
                    )
                    .await;
                    renewed = None;
                    next = Instant::now() + retry;
                }
                Err(e) => {
                    self.note_error(&e);
                    next = (Instant::now() + retry).min(deadline);
                }
            }
        }
        if renewed.is_some() {
            self.release().await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
