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
    let rec = wait_until(Duration::from_secs(10), "the scale-down record", || {
        records_with(stack, |r| {
            r["action"] == "scale_down" && r["outcome"] == "applied"
        })
        .into_iter()
        .next()
    });
    // The cooldown counts from the decision (audit `ts`, also the annotation's `at`).
    assert!(
        audit_ts(&rec) - up_at >= cooldown,
        "scaled down {:.3}s after the scale-up, inside the {cooldown}s cooldown",
        audit_ts(&rec) - up_at
    );
    assert!(down.unix() > audit_ts(&rec));
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
    check_catch_up_and_step_down(&stack, &load, up.t_decide, to);
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

/// Scenario 2: a momentary spike above the threshold, shorter than the sustain window. The
/// timer starts and is reset; nothing fires, nothing reaches the actuator, nothing is patched.
#[test]
fn a_spike_shorter_than_the_sustain_window_causes_no_action() {
    let stack = Stack::start(slow_consumer_spec());
    let b = stack.tansu.bootstrap();
    let (topic, parts) = (stack.spec.topic.clone(), stack.spec.partitions);
    // A consumer that keeps up easily: 60 records/s against 5 produced.
    let mut load = Load::start(&b, &topic, parts, &stack.spec.group, 5.0, 60.0);
    let lag_rule = format!(
        "cluster_consumergroup:kafka_consumergroup_lag:sum{{{}}}",
        stack.group_selector()
    );
    wait_until(
        Duration::from_secs(30),
        "the group's lag in Prometheus",
        || stack.prometheus.value(&lag_rule).filter(|v| *v < 50.0),
    );
    // The spike: 300 records at once, more than twice the threshold of 150.
    let p = medic_e2e::producer(&b);
    for part in 0..parts {
        medic_e2e::produce_burst(&p, &topic, part, 300 / parts as usize);
    }
    wait_until(
        Duration::from_secs(20),
        "Prometheus to see the spike",
        || stack.prometheus.value(&lag_rule).filter(|v| *v > 150.0),
    );
    let above_since = Instant::now();
    wait_until(
        Duration::from_secs(20),
        "the lag back under the threshold",
        || stack.prometheus.value(&lag_rule).filter(|v| *v <= 150.0),
    );
    let above_for = above_since.elapsed();
    // Wait out a whole sustain window (8s) and more after the spike.
    std::thread::sleep(Duration::from_secs(12));
    let peak = stack
        .prometheus
        .value(&format!("max_over_time({lag_rule}[2m])"))
        .unwrap();
    assert!(peak >= 200.0, "Prometheus saw a peak of only {peak}");
    // The timer started, and its run was shorter than the window.
    let since = stack.group_series(
        "cluster_consumergroup:kafka_consumergroup_lag_above_threshold:since",
        "2m",
    );
    assert!(!since.is_empty(), "the sustain timer never started");
    let (first, last) = (since[0], since[since.len() - 1]);
    assert!(
        since.iter().all(|(_, v)| *v == first.1),
        "one run only: {since:?}"
    );
    assert!(
        last.0 - first.1 < 8.0,
        "the run lasted {}s (seen above for {above_for:?})",
        last.0 - first.1
    );
    assert!(stack
        .prometheus
        .query(&format!(
            "cluster_consumergroup:kafka_consumergroup_lag_above_threshold:since{{{}}}",
            stack.group_selector()
        ))
        .is_empty());
    // Never pending, never firing; Alertmanager never got it; the actuator never heard of it.
    assert!(stack
        .prometheus
        .query("count_over_time(ALERTS{alertname=\"KafkaConsumerLagPersistent\"}[5m])")
        .is_empty());
    assert!(stack.am_alerts("KafkaConsumerLagPersistent").is_empty());
    assert!(stack.target_audit().is_empty(), "{}", stack.audit_summary());
    let all = stack.audit(&[]);
    assert!(all.is_empty(), "audit records: {all:?}");
    assert!(
        stack.kube.requests().is_empty(),
        "{}",
        stack.kube.describe()
    );
    assert_eq!(stack.replicas(), 1);
    load.stop();
}

/// Scenario 4: the broker is killed. The sidecar reports `kafka_broker_up 0`, KafkaBrokerDown
/// fires after its `for: 1m` and reaches the actuator; a lag alert that would scale the
/// group's Deployment down is held (`broker_trouble`) until the broker is back. The cluster's
/// broker policy (log-only backend, `down_grace: 20s`) waits out the grace period, counted from
/// the alert's `startsAt`, before it plans replacing the broker's replicas.
#[test]
fn a_dead_broker_fires_kafka_broker_down_and_holds_scale_downs() {
    let mut spec = slow_consumer_spec();
    // Six replicas for a lag of 300 (100 per replica): the lag alert asks for a scale-down to
    // 3. Its window (75s) ends after KafkaBrokerDown's fixed `for: 1m`.
    spec.initial_replicas = 6;
    spec.policy.sustain = "75s".into();
    spec.broker_policies = log_only_brokers(", down_grace: 20s");
    let mut stack = Stack::start(spec);
    let b = stack.tansu.bootstrap();
    let p = medic_e2e::producer(&b);
    for part in 0..stack.spec.partitions {
        medic_e2e::produce(&p, &stack.spec.topic, part, 150);
    }
    let offsets: Vec<(&str, i32, i64)> = (0..stack.spec.partitions)
        .map(|part| (stack.spec.topic.as_str(), part, 0))
        .collect();
    medic_e2e::commit_offsets(&b, &stack.spec.group, &offsets);
    drop(p);
    let since_rule = format!(
        "cluster_consumergroup:kafka_consumergroup_lag_above_threshold:since{{{}}}",
        stack.group_selector()
    );
    wait_until(Duration::from_secs(30), "the lag timer to start", || {
        stack.prometheus.value(&since_rule)
    });
    // Kill the broker. The agent keeps serving the group's last lag (so the lag alert keeps
    // its timer) and reports the broker down.
    stack.tansu.kill();
    let killed = medic_e2e::http::unix_now();
    let broker_down = "ALERTS{alertname=\"KafkaBrokerDown\",alertstate=\"firing\",cluster=\"e2e\",broker=\"111\"}";
    wait_until(Duration::from_secs(100), "KafkaBrokerDown firing", || {
        stack.prometheus.value(broker_down)
    });
    let up_zero = stack
        .prometheus
        .raw(
            "kafka_broker_up{job=\"medic-agent\",cluster=\"e2e\",broker=\"111\"}",
            "5m",
        )
        .into_iter()
        .flat_map(|(_, s)| s)
        .find(|(ts, v)| *v == 0.0 && *ts >= killed)
        .expect("kafka_broker_up 0 after the kill");
    let fired = stack.alert_samples("KafkaBrokerDown", "firing", "5m")[0].0;
    assert!(
        fired - up_zero.0 >= 60.0 && fired - up_zero.0 <= 63.0,
        "KafkaBrokerDown fired {}s after the first kafka_broker_up 0 (for: 1m)",
        fired - up_zero.0
    );
    let alert = stack
        .prometheus
        .alerts()
        .into_iter()
        .find(|a| a["labels"]["alertname"] == "KafkaBrokerDown" && a["state"] == "firing")
        .expect("KafkaBrokerDown in /api/v1/alerts");
    assert_eq!(alert["labels"]["severity"], "critical");
    let description = alert["annotations"]["description"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        description.contains("kafka_broker_up: 0;") && description.contains("sidecar target up: 1"),
        "{description}"
    );
    // Alertmanager delivered it to the actuator, which holds it as broker trouble.
    let state = wait_until(Duration::from_secs(15), "the actuator to learn it", || {
        let s = stack.actuator_state();
        s["broker_alerts"]
            .as_array()
            .is_some_and(|b| {
                b.iter().any(|e| {
                    e["alertname"] == "KafkaBrokerDown"
                        && e["cluster"] == "e2e"
                        && e["broker"] == "111"
                })
            })
            .then_some(s)
    });
    assert_eq!(
        state["broker_alerts"].as_array().unwrap().len(),
        1,
        "{state}"
    );
    // The lag alert fires later and wants 6 -> 3; the scale-down is held.
    let held = wait_until(Duration::from_secs(60), "the held scale-down", || {
        records_with(&stack, |r| r["reason"] == "broker_trouble")
            .into_iter()
            .next()
    });
    assert_eq!(held["outcome"], "skipped");
    assert_eq!(held["trigger"], "webhook");
    assert_eq!(held["alertname"], "KafkaConsumerLagPersistent");
    assert_eq!(held["alert_status"], "firing");
    assert_eq!(held["from_replicas"], 6);
    assert_eq!(held["lag"], 300);
    assert_eq!(
        held["message"],
        "scale-down held while KafkaBrokerDown is active on the cluster"
    );
    assert!(audit_ts(&held) > fired);
    // The broker policy: inside the grace period (20s from startsAt, the time Prometheus fired
    // the alert) it waits...
    let grace = broker_records(&stack, "KafkaBrokerDown");
    let first = &grace[0];
    // The leader learns of the alert from the webhook or, level-triggered, from Prometheus's
    // ALERTS in its re-evaluation round, whichever comes first; either way the start is the
    // firing, never the pending start, so the grace period holds.
    assert!(
        first["trigger"] == "webhook" || first["trigger"] == "reevaluate",
        "{first}"
    );
    assert_eq!(first["outcome"], "skipped");
    assert_eq!(first["reason"], "grace_period");
    let starts = medic_e2e::observe::rfc3339(first["starts_at"].as_str().unwrap());
    assert!(
        near(starts, fired, 2.5),
        "startsAt {starts} vs the first firing evaluation at {fired}"
    );
    let left = 20.0 - (audit_ts(first) - starts);
    let msg = first["message"].as_str().unwrap();
    let said: f64 = msg
        .strip_prefix("broker down for less than the grace period; ")
        .and_then(|m| m.split_once("s left"))
        .map(|(n, _)| n.parse().unwrap())
        .unwrap_or_else(|| panic!("{msg}"));
    assert!(
        near(said, left, 1.5),
        "{msg}: expected about {left:.0}s left"
    );
    // ... and once it has passed, the re-evaluation plans replacing the broker's replicas
    // (log-only: audited, nothing changed).
    let replace = wait_until(
        Duration::from_secs(40),
        "the broker action after the grace",
        || {
            broker_records(&stack, "KafkaBrokerDown")
                .into_iter()
                .find(|r| r["outcome"] != "skipped")
        },
    );
    assert_eq!(replace["outcome"], "dry_run", "{replace}");
    assert_eq!(replace["action"], "replace_replicas");
    assert_eq!(replace["trigger"], "reevaluate");
    assert_eq!(replace["backend"], "log-only");
    let acted = audit_ts(&replace);
    assert!(
        acted >= starts + 20.0 && acted <= starts + 23.0,
        "acted {:.1}s after startsAt with a 20s grace",
        acted - starts
    );
    assert!(broker_records(&stack, "KafkaBrokerDown")
        .iter()
        .filter(|r| audit_ts(r) < starts + 20.0)
        .all(|r| r["outcome"] == "skipped" && r["reason"] == "grace_period"));
    // It stays held at every re-evaluation while the broker is down.
    std::thread::sleep(Duration::from_secs(5));
    assert!(stack.kube.patches().is_empty(), "{}", stack.kube.describe());
    assert_eq!(stack.replicas(), 6);
    assert!(
        stack
            .target_audit()
            .iter()
            .all(|r| r["outcome"] == "skipped" && r["reason"] == "broker_trouble"),
        "{}",
        stack.audit_summary()
    );
    // The broker comes back (empty: tansu keeps its data in memory). KafkaBrokerDown resolves,
    // and only then does the scale-down happen.
    stack.tansu.restart();
    let down = wait_until(Duration::from_secs(60), "the released scale-down", || {
        stack.scale_patches().into_iter().next()
    });
    let last_down = stack
        .alert_samples("KafkaBrokerDown", "firing", "5m")
        .last()
        .unwrap()
        .0;
    assert!(
        down.unix() > last_down,
        "scaled at {} while KafkaBrokerDown was firing until {last_down}",
        down.unix()
    );
    let rec = wait_until(Duration::from_secs(10), "the scale-down record", || {
        records_with(&stack, |r| r["outcome"] == "applied")
            .into_iter()
            .next()
    });
    assert_eq!(rec["action"], "scale_down");
    assert_eq!(rec["from_replicas"], 6);
    let lag = rec["lag"].as_u64().unwrap();
    // Down toward what the lag needs (ceil(lag / 100)), at most max_step (4) at once.
    let p = &stack.spec.policy;
    let want = (lag.div_ceil(p.lag_per_replica) as u32)
        .clamp(p.min_replicas, p.max_replicas)
        .max(6 - p.max_step);
    assert_eq!(rec["to_replicas"], want, "{rec}");
    assert_eq!(
        down.replicas(),
        rec["to_replicas"].as_u64().map(|r| r as u32)
    );
}

/// Scenario 5: the actuator is killed (SIGKILL) and restarted in the middle of scenario 1,
/// right after its scale-up. Alertmanager re-sends the same alert to the new process: it is a
/// duplicate, the scale-up cooldown (from the Deployment's annotation and the audit log) still
/// holds, and no second action happens inside it.
#[test]
fn an_actuator_restart_in_the_middle_causes_no_double_action() {
    let mut spec = slow_consumer_spec();
    spec.policy.max_step = 2;
    spec.policy.scale_up_cooldown = "20s".into();
    // Re-send a firing group every 4s, so the restarted actuator hears the alert again.
    spec.waits.repeat_interval = "4s".into();
    let mut stack = Stack::start(spec);
    let load = start_slow_consumer(&stack);
    let up = wait_for_scale_up(&stack, &load, Duration::from_secs(90));
    let first_to = check_scale_up(&stack, &up, 1);
    assert_eq!(first_to, 3, "max_step 2 from 1: {}", up.record);
    let first_seq = up.record["seq"].as_u64().unwrap();
    let annotation = stack
        .kube
        .annotation(&stack.spec.namespace, &stack.spec.deployment)
        .unwrap();
    // Crash and restart.
    stack.actuator.restart();
    assert!(
        medic_e2e::wait_for_port(stack.actuator_port, Duration::from_secs(20)),
        "medic-actuator did not come back\n{}",
        stack.actuator.describe()
    );
    let restarted = medic_e2e::http::unix_now();
    // The repeat of the same alert reaches the new process and is a duplicate.
    let dup = wait_until(Duration::from_secs(15), "the re-sent alert", || {
        records_with(&stack, |r| {
            r["trigger"] == "webhook"
                && audit_ts(r) >= restarted
                && r["fingerprint"] == up.record["fingerprint"]
                && r["alert_status"] == "firing"
        })
        .into_iter()
        .next()
    });
    assert!(dup["seq"].as_u64().unwrap() > first_seq);
    assert_eq!(dup["outcome"], "skipped", "{dup}");
    if dup["starts_at"] == up.record["starts_at"] {
        assert_eq!(dup["reason"], "duplicate", "{dup}");
    } else {
        // On a loaded machine the alert can resolve and fire again (a new startsAt, so a new
        // delivery) around the restart: still no second action inside the cooldown.
        assert!(
            dup["reason"] == "cooldown" || dup["reason"] == "duplicate",
            "{dup}"
        );
    }
    // While the cooldown lasts, no PATCH at all, and the annotation is the one of the first
    // action.
    let cooldown_end = up.t_decide + 20.0;
    while medic_e2e::http::unix_now() < cooldown_end - 0.5 {
        assert_eq!(stack.scale_patches().len(), 1, "{}", stack.kube.describe());
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        stack
            .kube
            .annotation(&stack.spec.namespace, &stack.spec.deployment)
            .unwrap(),
        annotation
    );
    assert_eq!(stack.kube.patches().len(), 2, "{}", stack.kube.describe());
    let audit = stack.target_audit();
    let applied_ups = audit
        .iter()
        .filter(|r| r["outcome"] == "applied" && r["action"] == "scale_up")
        .filter(|r| audit_ts(r) < cooldown_end)
        .count();
    assert_eq!(applied_ups, 1, "{}", stack.audit_summary());
    let seqs: Vec<u64> = audit.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] > w[0]),
        "sequence continues after the restart: {seqs:?}"
    );
    // Every action, before and after the restart, respects the cooldowns.
    load.produce_rate.set(8.0);
    wait_until(Duration::from_secs(90), "replicas back at 1", || {
        (stack.replicas() == 1).then_some(())
    });
    // Cooldowns count from the decision (the audit `ts`, which is also the annotation's `at`).
    let actions: Vec<Value> = stack
        .target_audit()
        .into_iter()
        .filter(|r| r["outcome"] == "applied")
        .collect();
    assert_eq!(
        actions.len(),
        stack.scale_patches().len(),
        "{}",
        stack.audit_summary()
    );
    for w in actions.windows(2) {
        let cooldown = if w[1]["action"] == "scale_up" {
            20.0
        } else {
            15.0
        };
        let gap = audit_ts(&w[1]) - audit_ts(&w[0]);
        assert!(
            gap >= cooldown,
            "two actions {gap:.3}s apart\n{}",
            stack.audit_summary()
        );
    }
}

/// A broker-remediation policy with the log-only backend for the stack's cluster.
fn log_only_brokers(extra: &str) -> String {
    format!(
        "  - {{cluster: e2e, backend: log-only, expected_brokers: 3, settle_time: 0s{extra}}}\n"
    )
}

/// Broker records of the audit log (records about a broker rather than a Deployment).
fn broker_records(stack: &Stack, alertname: &str) -> Vec<Value> {
    stack
        .audit(&[("cluster", "e2e"), ("broker", "111")])
        .into_iter()
        .filter(|r| r["alertname"] == alertname)
        .collect()
}

/// Scenario 3: a CPU-burning process standing in for the broker (medic-agent's process source
/// pointed at it) drives `cluster_broker:kafka_broker_cpu_usage:ratio` above 0.8 and makes
/// `KafkaBrokerOverloaded` pending in Prometheus; the actuator, with the log-only backend, plans
/// moving leadership off the broker and audits it.
///
/// The recording rule is `rate(kafka_broker_cpu_seconds_total[5m]) / cores`, and `rate` divides
/// by the whole 5m range, so a broker busy from the start of the scrapes reaches 0.8 after about
/// 4 minutes of samples: this test takes that long.
///
/// Real: the burner, the agent's CPU reading, the scrape, the recording rule, the pending alert,
/// Alertmanager's routing with the example configuration, the actuator's decision and audit.
/// Simulated: the rule's fixed `for: 10m`. Instead of waiting ten minutes, the test sends the
/// pending alert (its labels and rendered annotations, as Prometheus' `/api/v1/alerts` shows
/// them) to Alertmanager's `/api/v2/alerts` as firing, which is what Prometheus does once `for`
/// has elapsed.
#[test]
fn a_broker_burning_its_cpu_gets_a_leadership_move_planned_by_the_log_only_backend() {
    let burner = medic_e2e::burner::Burner::start();
    let mut spec = slow_consumer_spec();
    spec.broker_process = medic_e2e::stack::BrokerProcess::Args(burner.agent_args());
    spec.broker_policies = log_only_brokers("");
    let stack = Stack::start(spec);
    let ratio_q = "cluster_broker:kafka_broker_cpu_usage:ratio{cluster=\"e2e\",broker=\"111\"}";
    let ratio = wait_until(Duration::from_secs(360), "the CPU ratio above 0.8", || {
        stack.prometheus.value(ratio_q).filter(|r| *r > 0.8)
    });
    assert!(ratio <= 1.1, "CPU ratio {ratio}");
    let cores = stack
        .prometheus
        .value("kafka_broker_cpu_cores{cluster=\"e2e\",broker=\"111\"}")
        .unwrap();
    match &burner.mode {
        medic_e2e::burner::Mode::CgroupV1(_) => {
            assert_eq!(cores, medic_e2e::burner::QUOTA_CORES, "the burner's quota")
        }
        medic_e2e::burner::Mode::Host => assert_eq!(
            cores,
            std::thread::available_parallelism().unwrap().get() as f64
        ),
    }
    let pending = wait_until(
        Duration::from_secs(20),
        "KafkaBrokerOverloaded pending",
        || {
            stack
                .prometheus
                .alerts()
                .into_iter()
                .find(|a| a["labels"]["alertname"] == "KafkaBrokerOverloaded")
        },
    );
    assert_eq!(pending["state"], "pending", "for: 10m: {pending}");
    assert_eq!(
        pending["labels"],
        serde_json::json!({"alertname": "KafkaBrokerOverloaded", "cluster": "e2e", "broker": "111", "severity": "warning"})
    );
    assert!(pending["value"].as_str().unwrap().parse::<f64>().unwrap() > 0.8);
    assert!(stack
        .prometheus
        .query("ALERTS{alertname=\"KafkaBrokerOverloaded\",alertstate=\"firing\"}")
        .is_empty());
    // The simulated step: what Prometheus sends once the 10 minutes have passed.
    let now = jiff::Timestamp::now();
    stack.alertmanager.post_alerts(&serde_json::json!([{
        "labels": pending["labels"],
        "annotations": pending["annotations"],
        "startsAt": now.to_string(),
        "endsAt": (now + jiff::SignedDuration::from_secs(240)).to_string(),
        "generatorURL": format!("http://127.0.0.1:{}/graph", stack.prometheus.port),
    }]));
    let rec = wait_until(Duration::from_secs(15), "the broker decision", || {
        broker_records(&stack, "KafkaBrokerOverloaded")
            .into_iter()
            .next()
    });
    for (k, v) in [
        ("trigger", "webhook"),
        ("alert_status", "firing"),
        ("outcome", "dry_run"),
        ("action", "move_leadership"),
        ("backend", "log-only"),
        ("phase", "started"),
        ("cluster", "e2e"),
        ("broker", "111"),
    ] {
        assert_eq!(rec[k], v, "audit field {k} in {rec}");
    }
    assert_eq!(rec["dry_run"], true);
    assert_eq!(
        rec["message"],
        "dry run (log-only): would move_leadership: broker 111 (no partition plan without a kafka connection)"
    );
    // Re-evaluated every second while it fires, it is not planned again inside the intervals.
    std::thread::sleep(Duration::from_secs(4));
    let all = broker_records(&stack, "KafkaBrokerOverloaded");
    assert_eq!(
        all.iter().filter(|r| r["outcome"] == "dry_run").count(),
        1,
        "{all:#?}"
    );
    assert!(
        all[1..].iter().all(|r| r["outcome"] == "skipped"),
        "{all:#?}"
    );
    let state = stack.actuator_state();
    assert!(
        state["broker_alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["alertname"] == "KafkaBrokerOverloaded" && b["broker"] == "111"),
        "{state}"
    );
    assert_eq!(state["broker_remediation"][0]["backend"], "log-only");
    // Nothing touched a Deployment.
    assert!(
        stack.kube.requests().is_empty(),
        "{}",
        stack.kube.describe()
    );
    drop(stack);
    drop(burner);
}
