//! Which groups' `KafkaConsumerLagPersistent` alert fires, from the webhooks the actuator
//! receives, with a watch channel that wakes `StreamIsActive` on every change.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

use crate::alert::AlertStatus;
use crate::engine::oldest;

/// Most firing fingerprints remembered per group (Alertmanager sends one per label set).
const MAX_PER_GROUP: usize = 64;

/// (cluster, consumergroup).
pub type GroupKey = (String, String);

/// The firing lag alerts per group.
pub struct Activity {
    ttl: Duration,
    firing: Mutex<HashMap<GroupKey, HashMap<String, Timestamp>>>,
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
            firing: Mutex::new(HashMap::new()),
            changes: watch::Sender::new(0),
        }
    }

    /// Record one lag alert delivery; returns the group's new state when it changed. The
    /// caller audits the change and then calls [`Activity::publish`].
    pub fn note(
        &self,
        key: &GroupKey,
        fingerprint: &str,
        status: AlertStatus,
        now: Timestamp,
    ) -> Option<bool> {
        let mut firing = self.firing.lock().ok()?;
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
    pub fn checkpoint(
        &self,
        keys: &[GroupKey],
    ) -> Vec<(GroupKey, Option<HashMap<String, Timestamp>>)> {
        let Ok(firing) = self.firing.lock() else {
            return Vec::new();
        };
        keys.iter()
            .map(|k| (k.clone(), firing.get(k).cloned()))
            .collect()
    }

    /// Put back what [`Activity::checkpoint`] saved.
    pub fn restore(&self, saved: Vec<(GroupKey, Option<HashMap<String, Timestamp>>)>) {
        let Ok(mut firing) = self.firing.lock() else {
            return;
        };
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

    /// Whether the group's persistent-lag alert fires (a delivery within the TTL).
    pub fn is_active(&self, key: &GroupKey, now: Timestamp) -> bool {
        self.firing.lock().is_ok_and(|f| {
            f.get(key)
                .is_some_and(|f| f.values().any(|s| fresh(*s, now, self.ttl)))
        })
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
