//! What the servers of a [`Stack`] saw, read back through their own APIs: raw scrape samples
//! and rule results from Prometheus, alerts from Alertmanager, records from the actuator's audit
//! API, requests from the fake Kubernetes API.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::stack::Stack;

/// Unix seconds of an RFC 3339 timestamp.
pub fn rfc3339(s: &str) -> f64 {
    let t: jiff::Timestamp = s
        .parse()
        .unwrap_or_else(|e| panic!("not an RFC 3339 timestamp {s:?}: {e}"));
    t.as_millisecond() as f64 / 1000.0
}

/// An audit record's `ts` in Unix seconds.
pub fn audit_ts(rec: &Value) -> f64 {
    rfc3339(
        rec["ts"]
            .as_str()
            .unwrap_or_else(|| panic!("no ts in {rec}")),
    )
}

/// `a` ≈ `b` within `eps`.
pub fn near(a: f64, b: f64, eps: f64) -> bool {
    (a - b).abs() <= eps
}

impl Stack {
    /// The group's total lag at every scrape of the agent over the last `range`:
    /// (scrape timestamp, sum over partitions of `kafka_consumergroup_lag`), oldest first.
    pub fn lag_scrapes(&self, range: &str) -> Vec<(f64, f64)> {
        let mut by_ts: BTreeMap<i64, f64> = BTreeMap::new();
        for (_, samples) in self.prometheus.raw(
            &format!("kafka_consumergroup_lag{{{}}}", self.group_selector()),
            range,
        ) {
            for (ts, v) in samples {
                *by_ts.entry((ts * 1000.0).round() as i64).or_default() += v;
            }
        }
        by_ts
            .into_iter()
            .map(|(ms, v)| (ms as f64 / 1000.0, v))
            .collect()
    }

    /// Raw samples of a series of the group (a recording rule, or anything with the group's
    /// `cluster` and `consumergroup` labels) over the last `range`, oldest first. Panics if
    /// more than one series matches.
    pub fn group_series(&self, name: &str, range: &str) -> Vec<(f64, f64)> {
        let mut r = self
            .prometheus
            .raw(&format!("{name}{{{}}}", self.group_selector()), range);
        assert!(r.len() <= 1, "more than one {name} series: {r:?}");
        r.pop().map(|(_, s)| s).unwrap_or_default()
    }

    /// Samples of `ALERTS{alertname, alertstate}` for the stack's cluster over `range`.
    pub fn alert_samples(&self, alertname: &str, state: &str, range: &str) -> Vec<(f64, f64)> {
        self.prometheus
            .raw(
                &format!(
                    "ALERTS{{alertname=\"{alertname}\",alertstate=\"{state}\",cluster=\"{}\"}}",
                    self.spec.cluster
                ),
                range,
            )
            .into_iter()
            .flat_map(|(_, s)| s)
            .collect()
    }

    /// Alertmanager's alerts with this name (any state).
    pub fn am_alerts(&self, alertname: &str) -> Vec<Value> {
        self.alertmanager
            .alerts()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == alertname)
            .collect()
    }

    /// One line per audit record of the target, for failure messages.
    pub fn audit_summary(&self) -> String {
        self.target_audit()
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {} {}->{} lag={} {}",
                    r["ts"].as_str().unwrap_or(""),
                    r["trigger"].as_str().unwrap_or(""),
                    r["alert_status"].as_str().unwrap_or("-"),
                    r["outcome"].as_str().unwrap_or(""),
                    r["reason"]
                        .as_str()
                        .unwrap_or(r["action"].as_str().unwrap_or("")),
                    r["from_replicas"],
                    r["to_replicas"],
                    r["lag"],
                    r["message"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
