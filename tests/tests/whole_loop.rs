//! The whole kafka-medic loop on real servers: tansu, medic-agent (sidecar of broker 111),
//! Prometheus loading rules/kafka-medic.rules.yml as it is (short windows come from the
//! actuator's per-group override gauges), Alertmanager configured from
//! rules/alertmanager.example.yml, and medic-actuator scaling a Deployment in a stateful fake
//! Kubernetes API. Only the Kubernetes API is fake; the consumer "Deployment" is a real consumer
//! whose rate follows the fake Deployment's replicas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use medic_e2e::load::Load;
use medic_e2e::observe::{audit_ts, near};
use medic_e2e::scenario::{slow_consumer_spec, start_slow_consumer, wait_for_scale_up, ScaleUp};
use medic_e2e::stack::Stack;
use medic_e2e::wait_until;
use serde_json::Value;

/// `ceil(lag / per_replica)` clamped to the policy's bounds and step, from `from`.
fn expected_replicas(stack: &Stack, from: u32, lag: u64) -> u32 {
    let p = &stack.spec.policy;
    let desired = lag.div_ceil(p.lag_per_replica) as u32;
    desired
        .clamp(p.min_replicas, p.max_replicas)
        .min(from + p.max_step)
}

/// Checks everything about the first scale-up of scenario 1 and returns the replicas set.
fn check_scale_up(stack: &Stack, up: &ScaleUp, from: u32) -> u32 {
    let p = &stack.spec.policy;
    // The rules applied the actuator's overrides, not their defaults (500 offsets, 120s).
    assert_eq!(up.threshold, p.lag_threshold as f64);
    assert_eq!(up.sustain, 8.0);
    // The timer started at the first evaluation after the first scrape above the threshold.
    assert!(
        up.since >= up.t_scrape - 0.001 && up.since - up.t_scrape <= 2.5,
        "since {} vs first scrape above the threshold {}",
        up.since,
        up.t_scrape
    );
    // The alert fired once the window had elapsed, not before.
    assert!(
        up.t_fire >= up.since + up.sustain - 0.001 && up.t_fire <= up.since + up.sustain + 2.5,
        "fired at {} for a timer started at {} with a {}s window",
        up.t_fire,
        up.since,
        up.sustain
    );
    // Nothing was written to the Kubernetes API before the window had elapsed.
    let first_write = stack.kube.patches()[0].unix();
    assert!(
        first_write >= up.since + up.sustain,
        "a PATCH at {first_write} before the sustain window ended at {}\n{}",
        up.since + up.sustain,
        stack.kube.describe()
    );
    // The audit record of the action, read through the API with the token.
    let r = &up.record;
    for (k, v) in [
        ("outcome", "applied"),
        ("action", "scale_up"),
        ("trigger", "webhook"),
        ("alertname", "KafkaConsumerLagPersistent"),
        ("alert_status", "firing"),
        ("cluster", stack.spec.cluster.as_str()),
        ("consumergroup", stack.spec.group.as_str()),
        ("lag_source", "prometheus"),
        ("instance", "e2e-actuator"),
    ] {
        assert_eq!(r[k], v, "audit field {k} in {r}");
    }
    assert_eq!(r["target"], stack.spec.target().as_str());
    assert_eq!(r["dry_run"], false);
    assert_eq!(r["from_replicas"], from);
    // The lag the actuator used is a value Prometheus' recording rule had at that moment.
    let lag = r["lag"].as_u64().expect("lag in the audit record");
    let rule = stack.group_series("cluster_consumergroup:kafka_consumergroup_lag:sum", "5m");
    let t = audit_ts(r);
    assert!(
        rule.iter()
            .any(|(ts, v)| *ts <= t + 0.001 && *ts >= t - 3.0 && *v == lag as f64),
        "lag {lag} used at {t} is not a recent value of the recording rule: {rule:?}"
    );
    assert!(lag as f64 > up.threshold, "lag {lag} at the decision");
    let want = expected_replicas(stack, from, lag);
    assert_eq!(r["to_replicas"], want, "{r}");
    assert_eq!(
        r["desired_replicas"],
        lag.div_ceil(p.lag_per_replica)
            .min(u64::from(p.max_replicas))
    );
    // The PATCH itself, and the claim that came before it.
    assert_eq!(up.patch.replicas(), Some(want));
    assert_eq!(up.patch.content_type, "application/merge-patch+json");
    assert!(up.patch.query.contains("fieldManager=medic-actuator"));
    let claim = stack
        .kube
        .patches()
        .into_iter()
        .find(|w| !w.is_scale_patch())
        .expect("the cooldown claim");
    assert!(claim.at <= up.patch.at);
    assert!(claim.body["metadata"]["resourceVersion"].is_string());
    let ann = stack
        .kube
        .annotation(&stack.spec.namespace, &stack.spec.deployment)
        .expect("cooldown annotation");
    assert_eq!(ann["direction"], "up");
    assert_eq!(ann["from"], from);
    assert_eq!(ann["to"], want);
    assert_eq!(ann["by"], "e2e-actuator");
    assert_eq!(stack.replicas(), want);
    want
}

fn records_with(stack: &Stack, f: impl Fn(&Value) -> bool) -> Vec<Value> {
    stack.target_audit().into_iter().filter(|r| f(r)).collect()
}

/// The consumer catches up (production drops to a trickle), the alert resolves, and replicas
/// step down to the floor after the scale-down cooldown.
fn check_catch_up_and_step_down(stack: &Stack, load: &Load, up_at: f64, up_to: u32) {
    load.produce_rate.set(8.0);
    let resolved = wait_until(Duration::from_secs(60), "the resolved notification", || {
        records_with(stack, |r| {
            r["alert_status"] == "resolved" && r["trigger"] == "webhook"
        })
        .into_iter()
        .next()
    });
    // Prometheus no longer has the alert, and Alertmanager has it resolved.
    assert!(stack
        .prometheus
        .query("ALERTS{alertname=\"KafkaConsumerLagPersistent\"}")
        .is_empty());
    let down = wait_until(Duration::from_secs(60), "the scale-down PATCH", || {
        stack
            .scale_patches()
            .into_iter()
            .find(|p| p.replicas() < Some(up_to))
    });
    let p = &stack.spec.policy;
    let cooldown: f64 = p.scale_down_cooldown.trim_end_matches('s').parse().unwrap();
    assert!(
        down.unix() - up_at >= cooldown,
        "scaled down {:.1}s after the scale-up, inside the {cooldown}s cooldown",
        down.unix() - up_at
    );
    let rec = wait_until(Duration::from_secs(10), "the scale-down record", || {
        records_with(stack, |r| {
            r["action"] == "scale_down" && r["outcome"] == "applied"
        })
        .into_iter()
        .next()
    });
    assert_eq!(rec["from_replicas"], up_to);
    assert_eq!(rec["to_replicas"], down.replicas().unwrap());
    assert!(audit_ts(&rec) >= audit_ts(&resolved) || rec["alert_status"] == "firing");
    // It keeps stepping until it reaches the floor; the group has caught up, so that is
    // min_replicas.
    wait_until(
        Duration::from_secs(60),
        "replicas back at min_replicas",
        || (stack.replicas() == p.min_replicas).then_some(()),
    );
    let lag_now = stack
        .prometheus
        .value(&format!(
            "cluster_consumergroup:kafka_consumergroup_lag:sum{{{}}}",
            stack.group_selector()
        ))
        .unwrap();
    assert!(
        lag_now < p.lag_threshold as f64,
        "lag {lag_now} after catching up"
    );
}

/// Scenario 1: a slow consumer falls behind. No action before the sustain window; then one
/// scale-up to ceil(lag / lag_per_replica) with the lag Prometheus had; an audit line; the
/// consumer catches up, the alert resolves, and replicas step back down after the cooldown.
#[test]
fn slow_consumer_is_scaled_up_once_then_down_after_the_cooldown() {
    let started = Instant::now();
    let stack = Stack::start(slow_consumer_spec());
    let mut load = start_slow_consumer(&stack);
    let up = wait_for_scale_up(&stack, &load, Duration::from_secs(90));
    let to = check_scale_up(&stack, &up, 1);
    assert!(to >= 2);
    // One scale-up only, although the alert keeps firing and is re-evaluated every second.
    std::thread::sleep(Duration::from_secs(3));
    let ups: Vec<_> = stack
        .scale_patches()
        .into_iter()
        .filter(|p| p.replicas() > Some(1))
        .collect();
    assert_eq!(ups.len(), 1, "{}", stack.kube.describe());
    check_catch_up_and_step_down(&stack, &load, up.t_patch, to);
    let replicas: Vec<_> = stack
        .scale_patches()
        .iter()
        .map(|p| p.replicas().unwrap())
        .collect();
    assert_eq!(replicas.first(), Some(&to));
    assert_eq!(replicas.last(), Some(&1));
    assert!(
        replicas.windows(2).skip(1).all(|w| w[1] < w[0]),
        "after the scale-up only steps down: {replicas:?}"
    );
    load.stop();
    eprintln!(
        "scenario 1 took {:.0}s; overhead {:.2}s; audit:\n{}",
        started.elapsed().as_secs_f64(),
        up.overhead(),
        stack.audit_summary()
    );
    let _ = near;
}
