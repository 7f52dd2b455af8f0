//! The snapshot a scrape serves, and the health verdict derived from it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;

use crate::lag::LagReport;

/// What the HTTP server serves: the last successful lag report (maybe stale), the broker's
/// health from the last collection, and how the last attempt went.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub report: Arc<LagReport>,
    pub lag_text: Arc<String>,
    pub(crate) broker_text: String,
    /// Unix seconds of the last successful collection.
    pub(crate) last_success: Option<f64>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
}

/// The snapshot, swapped whole by the collector and read by every scrape.
#[derive(Debug, Default)]
pub struct SnapshotCell(RwLock<Arc<Snapshot>>);

impl SnapshotCell {
    pub fn load(&self) -> Arc<Snapshot> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(crate) fn store(&self, s: Snapshot) {
        let s = Arc::new(s);
        match self.0.write() {
            Ok(mut g) => *g = s,
            Err(p) => *p.into_inner() = s,
        }
    }
}

/// The `/healthz` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Health {
    pub(crate) status: &'static str,
    pub(crate) healthy: bool,
    pub(crate) cluster: String,
    pub(crate) mode: String,
    pub(crate) last_success: Option<f64>,
    pub(crate) snapshot_age_seconds: Option<f64>,
    pub last_error: Option<String>,
    /// Why the agent is unhealthy, in words.
    pub(crate) reason: Option<String>,
}

/// Healthy while the last attempt succeeded and the last success is at most `stale_after` old.
pub(crate) fn health(
    s: &Snapshot,
    now: f64,
    stale_after: Duration,
    cluster: &str,
    mode: &str,
) -> Health {
    let age = s.last_success.map(|t| (now - t).max(0.0));
    let reason = match (s.last_success, &s.last_error, age) {
        (None, None, _) => Some("no collection has completed yet".to_string()),
        (None, Some(e), _) => Some(format!("no collection has succeeded yet; last error: {e}")),
        (Some(_), Some(e), Some(a)) => Some(format!(
            "the last collection failed ({e}); serving a snapshot {a:.0}s old"
        )),
        (Some(_), None, Some(a)) if a > stale_after.as_secs_f64() => Some(format!(
            "the last successful collection is {a:.0}s old (more than {}s)",
            stale_after.as_secs()
        )),
        _ => None,
    };
    Health {
        status: if reason.is_none() { "ok" } else { "unhealthy" },
        healthy: reason.is_none(),
        cluster: cluster.to_string(),
        mode: mode.to_string(),
        last_success: s.last_success,
        snapshot_age_seconds: age,
        last_error: s.last_error.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_verdicts() {
        let stale = Duration::from_secs(30);
        let fresh = Snapshot {
            last_success: Some(100.0),
            ..Default::default()
        };
        let h = health(&fresh, 110.0, stale, "c", "cluster");
        assert!(h.healthy && h.reason.is_none() && h.snapshot_age_seconds == Some(10.0));

        let old = health(&fresh, 200.0, stale, "c", "cluster");
        assert_eq!(
            old.reason.as_deref(),
            Some("the last successful collection is 100s old (more than 30s)")
        );

        let failed = Snapshot {
            last_error: Some("cannot read cluster metadata".into()),
            ..fresh.clone()
        };
        let h = health(&failed, 105.0, stale, "c", "cluster");
        assert!(!h.healthy);
        assert_eq!(h.reason.as_deref(), Some("the last collection failed (cannot read cluster metadata); serving a snapshot 5s old"));

        let never = health(&Snapshot::default(), 1.0, stale, "c", "cluster");
        assert_eq!(
            never.reason.as_deref(),
            Some("no collection has completed yet")
        );
    }
}
