//! Which groups' `KafkaConsumerLagPersistent` alert fires, from the webhooks the actuator
//! receives and from Prometheus's `ALERTS` (level-triggered), with a watch channel that wakes
//! `StreamIsActive` on every change.
//!
//! Per group, the firing deliveries are kept by fingerprint with the time last seen; what
//! `ALERTS` shows is one more entry, [`FROM_ALERTS`], refreshed by every poll that shows it. A
//! group is active while any entry is fresh (seen within `alert_ttl`). A poll that no longer
//! shows a group `ALERTS` had shown drops all its entries (resolved, even if the resolved
//! notification went to another replica); a group only the webhooks brought is left to them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

use crate::alert::AlertStatus;
use crate::engine::oldest;

/// Most firing fingerprints remembered per group (Alertmanager sends one per label set).
const MAX_PER_GROUP: usize = 64;

/// The entry of a group that Prometheus's `ALERTS` shows firing (Alertmanager's fingerprints
/// are 16 hex digits, so it never clashes with one).
pub const FROM_ALERTS: &str = "prometheus:ALERTS";

/// (cluster, consumergroup).
pub type GroupKey = (String, String);

/// Groups' entries as they were before a change, to put back with [`Activity::restore`].
pub type Saved = Vec<(GroupKey, Option<HashMap<String, Timestamp>>)>;

#[derive(Default)]
struct State {
    /// Fingerprint -> last seen, per group.
    firing: HashMap<GroupKey, HashMap<String, Timestamp>>,
    /// Webhook deliveries noted so far.
    deliveries: u64,
    /// The value of `deliveries` at each group's last delivery (groups with a policy only).
    touched: HashMap<GroupKey, u64>,
}

/// The firing lag alerts per group.
pub struct Activity {
    ttl: Duration,
    state: Mutex<State>,
    changes: watch::Sender<u64>,
}

fn fresh(seen: Timestamp, now: Timestamp, ttl: Duration) -> bool {
    let ttl = SignedDuration::try_from(ttl).unwrap_or(SignedDuration::MAX);
    now.duration_since(seen) < ttl
}

impl Activity {
    /// A firing alert not re-sent for `ttl` no longer counts (as the engine's `alert_ttl`).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            state: Mutex::new(State::default()),
            changes: watch::Sender::new(0),
        }
    }

    /// Record one lag alert delivery; returns the group's new state when it changed. The
    /// caller audits the change and then calls [`Activity::publish`]. A resolved delivery also
    /// drops what `ALERTS` showed for the group: it is newer than the last poll, and the next
    /// poll shows the alert again if it still fires.
    pub fn note(
        &self,
        key: &GroupKey,
        fingerprint: &str,
        status: AlertStatus,
        now: Timestamp,
    ) -> Option<bool> {
        let mut state = self.state.lock().ok()?;
        state.deliveries = state.deliveries.wrapping_add(1);
        let delivery = state.deliveries;
        state.touched.insert(key.clone(), delivery);
        let firing = &mut state.firing;
        let ttl = self.ttl;
        let before = firing
            .get(key)
            .is_some_and(|f| f.values().any(|s| fresh(*s, now, ttl)));
        let entry = firing.entry(key.clone()).or_default();
        entry.retain(|_, s| fresh(*s, now, ttl));
        match status {
            AlertStatus::Firing => {
                if !entry.contains_key(fingerprint) {
                    for f in oldest(entry.iter(), MAX_PER_GROUP - 1, |s: &Timestamp| *s) {
                        entry.remove(&f);
                    }
                }
                entry.insert(fingerprint.to_string(), now);
            }
            AlertStatus::Resolved => {
                entry.remove(fingerprint);
                entry.remove(FROM_ALERTS);
            }
        }
        let after = !entry.is_empty();
        if entry.is_empty() {
            firing.remove(key);
        }
        (before != after).then_some(after)
    }

    /// The current entries of `keys`, to put back with [`Activity::restore`] when the audit
    /// record of a change cannot be written (no state change without its record).
    pub fn checkpoint(&self, keys: &[GroupKey]) -> Saved {
        let Ok(state) = self.state.lock() else {
            return Vec::new();
        };
        keys.iter()
            .map(|k| (k.clone(), state.firing.get(k).cloned()))
            .collect()
    }

    /// Put back what [`Activity::checkpoint`] or [`Activity::reconcile`] saved.
    pub fn restore(&self, saved: Saved) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let firing = &mut state.firing;
        for (k, v) in saved {
            match v {
                Some(v) => {
                    firing.insert(k, v);
                }
                None => {
                    firing.remove(&k);
                }
            }
        }
    }

    /// Wake every `StreamIsActive` so it re-reads its group's state.
    pub fn publish(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Whether the group's persistent-lag alert fires (a delivery, or a poll showing it in
    /// `ALERTS`, within the TTL).
    pub fn is_active(&self, key: &GroupKey, now: Timestamp) -> bool {
        self.state.lock().is_ok_and(|s| {
            s.firing
                .get(key)
                .is_some_and(|f| f.values().any(|s| fresh(*s, now, self.ttl)))
        })
    }

    /// The webhook deliveries noted so far: take it before querying `ALERTS` and pass it to
    /// [`Activity::reconcile`], so that a delivery that arrived meanwhile wins over the answer.
    pub fn deliveries(&self) -> u64 {
        self.state.lock().map(|s| s.deliveries).unwrap_or(0)
    }

    /// Fold in one answer of `ALERTS`: `shown` are the groups it shows firing, `groups` those
    /// with a policy (the only ones kept). A group shown gets its [`FROM_ALERTS`] entry
    /// refreshed; a group with such an entry that is not shown loses every entry (`ALERTS` had
    /// shown it firing and shows it no more); a group only the webhooks brought is left as it
    /// is. Groups with a delivery after `since` ([`Activity::deliveries`] before the query) are
    /// left for the next poll. Returns the groups whose state changed with their new state, and
    /// their entries before, to [`Activity::restore`] if the changes cannot be audited; the
    /// caller audits and then calls [`Activity::publish`].
    pub fn reconcile(
        &self,
        groups: &[GroupKey],
        shown: &BTreeSet<GroupKey>,
        since: u64,
        now: Timestamp,
    ) -> (Vec<(GroupKey, bool)>, Saved) {
        let (mut changes, mut saved) = (Vec::new(), Vec::new());
        let Ok(mut state) = self.state.lock() else {
            return (changes, saved);
        };
        let ttl = self.ttl;
        for key in groups {
            if state.touched.get(key).is_some_and(|d| *d > since) {
                continue;
            }
            let before_entries = state.firing.get(key).cloned();
            let active = |e: Option<&HashMap<String, Timestamp>>| {
                e.is_some_and(|f| f.values().any(|s| fresh(*s, now, ttl)))
            };
            let before = active(before_entries.as_ref());
            if shown.contains(key) {
                let entry = state.firing.entry(key.clone()).or_default();
                entry.retain(|_, s| fresh(*s, now, ttl));
                entry.insert(FROM_ALERTS.to_string(), now);
            } else if before_entries
                .as_ref()
                .is_some_and(|e| e.contains_key(FROM_ALERTS))
            {
                state.firing.remove(key);
            } else {
                continue;
            }
            let after = active(state.firing.get(key));
            if before != after {
                changes.push((key.clone(), after));
                saved.push((key.clone(), before_entries));
            }
        }
        (changes, saved)
    }

    /// A receiver that changes on every published change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn changes_are_reported_once_and_expire_with_the_ttl() {
        let a = Activity::new(Duration::from_secs(100));
        let k: GroupKey = ("prod".into(), "orders".into());
        assert_eq!(a.note(&k, "f1", AlertStatus::Firing, t(0)), Some(true));
        assert_eq!(
            a.note(&k, "f1", AlertStatus::Firing, t(10)),
            None,
            "a re-send is no change"
        );
        assert_eq!(a.note(&k, "f2", AlertStatus::Firing, t(10)), None);
        assert_eq!(
            a.note(&k, "f1", AlertStatus::Resolved, t(20)),
            None,
            "f2 still fires"
        );
        assert!(a.is_active(&k, t(20)));
        assert!(!a.is_active(&k, t(111)), "not re-sent within the TTL");
        assert_eq!(a.note(&k, "f2", AlertStatus::Resolved, t(30)), Some(false));
        assert!(!a.is_active(&k, t(30)));
    }

    fn shown(keys: &[&GroupKey]) -> BTreeSet<GroupKey> {
        keys.iter().map(|k| (*k).clone()).collect()
    }

    #[test]
    fn alerts_turn_a_group_on_and_off_and_leave_webhook_only_groups_alone() {
        let a = Activity::new(Duration::from_secs(100));
        let orders: GroupKey = ("prod".into(), "orders".into());
        let billing: GroupKey = ("prod".into(), "billing".into());
        let groups = vec![orders.clone(), billing.clone()];
        // billing only through a webhook; orders only in ALERTS.
        assert_eq!(
            a.note(&billing, "fb", AlertStatus::Firing, t(0)),
            Some(true)
        );
        let since = a.deliveries();
        let (changes, saved) = a.reconcile(&groups, &shown(&[&orders]), since, t(1));
        assert_eq!(changes, vec![(orders.clone(), true)]);
        assert_eq!(saved, vec![(orders.clone(), None)]);
        assert!(a.is_active(&orders, t(1)));
        // Shown again: no change. Not shown by an answering Prometheus: billing stays (ALERTS
        // never showed it), orders goes.
        let (changes, _) = a.reconcile(&groups, &shown(&[&orders]), since, t(2));
        assert!(changes.is_empty());
        let (changes, _) = a.reconcile(&groups, &shown(&[]), since, t(3));
        assert_eq!(changes, vec![(orders.clone(), false)]);
        assert!(!a.is_active(&orders, t(3)));
        assert!(
            a.is_active(&billing, t(3)),
            "a webhook-only group is left to the webhooks"
        );
        // A group ALERTS had shown loses its webhook entries too when it goes.
        let (changes, _) = a.reconcile(&groups, &shown(&[&billing]), since, t(4));
        assert!(changes.is_empty(), "billing was active already");
        let (changes, _) = a.reconcile(&groups, &shown(&[]), since, t(5));
        assert_eq!(changes, vec![(billing.clone(), false)]);
        // Groups without a policy are not kept.
        let stranger: GroupKey = ("prod".into(), "stranger".into());
        let (changes, _) = a.reconcile(&groups, &shown(&[&stranger]), since, t(6));
        assert!(changes.is_empty());
        assert!(!a.is_active(&stranger, t(6)));
    }

    #[test]
    fn a_delivery_during_the_query_wins_over_its_answer() {
        let a = Activity::new(Duration::from_secs(100));
        let k: GroupKey = ("prod".into(), "orders".into());
        let groups = vec![k.clone()];
        let (changes, _) = a.reconcile(&groups, &shown(&[&k]), a.deliveries(), t(0));
        assert_eq!(changes, vec![(k.clone(), true)]);
        // A poll starts; the resolved notification arrives before its (stale) answer.
        let since = a.deliveries();
        assert_eq!(a.note(&k, "f1", AlertStatus::Resolved, t(1)), Some(false));
        let (changes, _) = a.reconcile(&groups, &shown(&[&k]), since, t(2));
        assert!(changes.is_empty(), "the stale answer is not applied");
        assert!(!a.is_active(&k, t(2)));
        // The next poll applies what Prometheus shows then.
        let (changes, _) = a.reconcile(&groups, &shown(&[&k]), a.deliveries(), t(3));
        assert_eq!(changes, vec![(k.clone(), true)]);
    }

    #[test]
    fn an_alerts_entry_expires_with_the_ttl_like_a_delivery() {
        let a = Activity::new(Duration::from_secs(100));
        let k: GroupKey = ("prod".into(), "orders".into());
        let (_, saved) = a.reconcile(
            std::slice::from_ref(&k),
            &shown(&[&k]),
            a.deliveries(),
            t(0),
        );
        assert!(a.is_active(&k, t(99)));
        assert!(
            !a.is_active(&k, t(100)),
            "not confirmed by a poll within the TTL"
        );
        a.restore(saved);
        assert!(!a.is_active(&k, t(1)), "restored to before the change");
    }

    #[test]
    fn a_restored_checkpoint_undoes_the_change() {
        let a = Activity::new(Duration::from_secs(100));
        let k: GroupKey = ("prod".into(), "orders".into());
        let saved = a.checkpoint(std::slice::from_ref(&k));
        assert_eq!(a.note(&k, "f1", AlertStatus::Firing, t(0)), Some(true));
        a.restore(saved);
        assert!(!a.is_active(&k, t(1)), "the unaudited change is undone");
        assert_eq!(
            a.note(&k, "f1", AlertStatus::Firing, t(2)),
            Some(true),
            "the retry is a change again, so it gets its record"
        );
    }
}
