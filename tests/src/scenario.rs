//! Scenario 1 up to the scale-up, shared by the end-to-end test and the reaction-time
//! benchmark: a slow consumer falls behind, and the timeline of what each server saw until the
//! scale PATCH reached the fake Kubernetes API.

use std::time::Duration;

use serde_json::Value;

use crate::fake_kube::KubeRequest;
use crate::http::wait_until;
use crate::load::Load;
use crate::observe::{audit_ts, rfc3339};
use crate::stack::{Stack, StackSpec};

/// Records/s one consumer replica reads.
pub const PER_REPLICA: f64 = 15.0;
/// Records/s produced while the consumer falls behind.
pub const SURGE: f64 = 40.0;

/// The defaults of [`StackSpec`]: threshold 150 offsets, sustain 8s, 100 offsets per replica.
pub fn slow_consumer_spec() -> StackSpec {
    StackSpec::default()
}

/// Starts the load of scenario 1: producing at [`SURGE`] records/s, consuming at
/// [`PER_REPLICA`] × the Deployment's replicas.
pub fn start_slow_consumer(stack: &Stack) -> Load {
    let mut load = Load::start(
        &stack.tansu.bootstrap(),
        &stack.spec.topic,
        stack.spec.partitions,
        &stack.spec.group,
        SURGE,
        0.0,
    );
    load.follow_replicas(
        stack
            .kube
            .replicas_reader(&stack.spec.namespace, &stack.spec.deployment),
        PER_REPLICA,
    );
    load
}

/// What each part saw, in Unix seconds, from the lag crossing its threshold to the scale PATCH.
#[derive(Debug, Clone)]
pub struct ScaleUp {
    /// The group's lag threshold and sustain window, as Prometheus' rules applied them.
    pub threshold: f64,
    pub sustain: f64,
    /// The driver's own lag (produced − committed) first went above the threshold.
    pub t_true: Option<f64>,
    /// The agent collection whose result was first above it
    /// (`medic_agent_last_success_timestamp_seconds` of that scrape).
    pub t_collected: Option<f64>,
    /// The first scrape of the agent with the group's lag above the threshold.
    pub t_scrape: f64,
    /// The lag of that scrape.
    pub scrape_lag: f64,
    /// The rule evaluation that started the sustain timer (the `...:since` value).
    pub since: f64,
    /// The first evaluation with `ALERTS{alertstate="firing"}`.
    pub t_fire: f64,
    /// Alertmanager's `startsAt` and `updatedAt` (when it received the alert).
    pub am_starts: f64,
    pub am_received: f64,
    /// The actuator's decision (`ts` of its audit record).
    pub t_decide: f64,
    /// The scale PATCH's arrival at the fake API.
    pub t_patch: f64,
    /// The audit record of the scale-up.
    pub record: Value,
    /// The scale PATCH.
    pub patch: KubeRequest,
}

impl ScaleUp {
    /// From the moment the sustain window elapsed (first scrape above + sustain) to the PATCH.
    pub fn overhead(&self) -> f64 {
        self.t_patch - (self.t_scrape + self.sustain)
    }
}

/// Waits (up to `timeout`) for the first scale PATCH, then reads back the timeline.
pub fn wait_for_scale_up(stack: &Stack, load: &Load, timeout: Duration) -> ScaleUp {
    let patch = wait_until(timeout, "a scale PATCH", || {
        stack.scale_patches().into_iter().next()
    });
    let record = wait_until(
        Duration::from_secs(10),
        "the audit record of the scale-up",
        || {
            stack
                .audit(&[
                    ("target", &stack.spec.target()),
                    ("outcome", "applied"),
                    ("action", "scale_up"),
                ])
                .into_iter()
                .next()
        },
    );
    let threshold = stack
        .prometheus
        .value(&format!(
            "cluster_consumergroup:medic_consumergroup_lag_threshold:effective{{{}}}",
            stack.group_selector()
        ))
        .expect("the effective threshold");
    let sustain = stack
        .prometheus
        .value(&format!(
            "cluster_consumergroup:medic_consumergroup_lag_sustain_seconds:effective{{{}}}",
            stack.group_selector()
        ))
        .expect("the effective sustain window");
    let (t_scrape, scrape_lag) = stack
        .lag_scrapes("5m")
        .into_iter()
        .find(|(_, v)| *v > threshold)
        .expect("a scrape above the threshold");
    let t_collected = stack
        .prometheus
        .raw(
            &format!(
                "medic_agent_last_success_timestamp_seconds{{job=\"medic-agent\",cluster=\"{}\"}}",
                stack.spec.cluster
            ),
            "5m",
        )
        .into_iter()
        .flat_map(|(_, s)| s)
        .find(|(ts, _)| (ts - t_scrape).abs() < 0.001)
        .map(|(_, v)| v);
    let since = stack
        .group_series(
            "cluster_consumergroup:kafka_consumergroup_lag_above_threshold:since",
            "5m",
        )
        .first()
        .map(|(_, v)| *v)
        .expect("the since series");
    let t_fire = stack
        .alert_samples("KafkaConsumerLagPersistent", "firing", "5m")
        .first()
        .map(|(ts, _)| *ts)
        .expect("ALERTS firing");
    let am = stack
        .am_alerts("KafkaConsumerLagPersistent")
        .into_iter()
        .find(|a| a["labels"]["consumergroup"] == stack.spec.group.as_str())
        .expect("the alert in Alertmanager");
    let t_true = load.first_above(threshold as u64).map(|t| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    });
    ScaleUp {
        threshold,
        sustain,
        t_true,
        t_collected,
        t_scrape,
        scrape_lag,
        since,
        t_fire,
        am_starts: rfc3339(am["startsAt"].as_str().expect("startsAt")),
        am_received: rfc3339(am["updatedAt"].as_str().expect("updatedAt")),
        t_decide: audit_ts(&record),
        t_patch: patch.unix(),
        record,
        patch,
    }
}
