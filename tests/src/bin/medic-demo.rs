//! The kafka-medic demo: the whole loop on this machine. A tansu broker with medic-agent as its
//! sidecar, Prometheus loading rules/kafka-medic.rules.yml, Alertmanager configured from
//! rules/alertmanager.example.yml, and medic-actuator in dry-run mode against a fake Kubernetes
//! API served from this process. A producer writes 20 records/s with a burst of 300 at t=20s;
//! the consumer group `billing` reads 12 records/s. Every two seconds it prints what the rules
//! see (lag, lag seconds, the sustain timer, the alert) and every actuator decision as the audit
//! API returns it. Ctrl-C, SIGTERM or SIGHUP stops everything it started (each server is killed
//! and reaped) and the process exits 0.
//!
//! With `--live` the actuator patches the fake API for real and the consumer's rate follows the
//! Deployment's replicas (12 records/s each), so the loop closes: scale-up, catch-up, resolved,
//! scale-down after the cooldown.
//!
//! Usage: medic-demo [--agent PATH] [--actuator PATH] [--seconds N] [--live]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use medic_e2e::load::Load;
use medic_e2e::stack::{PolicySpec, Stack, StackSpec};
use serde_json::Value;

const PER_REPLICA: f64 = 12.0;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn spec(live: bool) -> StackSpec {
    StackSpec {
        cluster: "demo".into(),
        group: "billing".into(),
        topic: "orders".into(),
        partitions: 3,
        namespace: "shop".into(),
        deployment: "billing-consumer".into(),
        initial_replicas: 1,
        policy: PolicySpec {
            min_replicas: 1,
            max_replicas: 6,
            lag_per_replica: 100,
            scale_up_cooldown: "30s".into(),
            scale_down_cooldown: "60s".into(),
            max_step: 3,
            lag_threshold: 200,
            sustain: "20s".into(),
        },
        dry_run: !live,
        agent_bin: arg("--agent").map(PathBuf::from),
        actuator_bin: arg("--actuator").map(PathBuf::from),
        ..StackSpec::default()
    }
}

/// One line per audit record: the decision as the actuator wrote it.
fn decision_line(t: u64, r: &Value) -> String {
    let outcome = r["outcome"].as_str().unwrap_or("?");
    let what = match (outcome, r["reason"].as_str()) {
        ("dry_run", _) => String::new(),
        (o, Some(reason)) => format!("{o} ({reason}): "),
        (o, None) => format!("{o}: "),
    };
    format!(
        "{t:>5}  >> actuator ({}, {}) {what}{}",
        r["trigger"].as_str().unwrap_or("-"),
        r["alert_status"].as_str().unwrap_or("-"),
        r["message"].as_str().unwrap_or("")
    )
}

fn main() {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    // The `termination` feature makes this handler take SIGTERM and SIGHUP as well as SIGINT, so
    // `kill -TERM` goes through the same shutdown (and the drops that stop the servers) as Ctrl-C.
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst))
        .expect("install the SIGINT/SIGTERM/SIGHUP handler");
    let seconds: u64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(120);
    let live = std::env::args().any(|a| a == "--live");
    let spec = spec(live);
    let p = spec.policy.clone();

    println!("starting tansu, medic-agent, Prometheus, Alertmanager, medic-actuator and a fake Kubernetes API on 127.0.0.1 ...");
    let stack = Stack::start(spec);
    println!(
        "  medic-agent     http://127.0.0.1:{}/metrics   (sidecar of broker 111)",
        stack.agent_port
    );
    println!(
        "  Prometheus      http://127.0.0.1:{}/alerts    (rules/kafka-medic.rules.yml as is)",
        stack.prometheus.port
    );
    println!(
        "  Alertmanager    http://127.0.0.1:{}           (rules/alertmanager.example.yml)",
        stack.alertmanager.port
    );
    println!(
        "  medic-actuator  http://127.0.0.1:{}/metrics   ({}, audit: GET /api/v1/audit with the bearer token)",
        stack.actuator_port,
        if live { "live against the fake API" } else { "dry run" }
    );
    println!(
        "policy: group {:?} -> Deployment {}; min_replicas {}, max_replicas {}, max_step {}; threshold {} offsets for {}; {} offsets per replica; cooldowns up {} / down {}",
        stack.spec.group,
        stack.spec.target(),
        p.min_replicas,
        p.max_replicas,
        p.max_step,
        p.lag_threshold,
        p.sustain,
        p.lag_per_replica,
        p.scale_up_cooldown,
        p.scale_down_cooldown
    );
    println!(
        "load: 20 records/s with a burst of 300 at t=20s; the consumer reads {}\n",
        if live {
            format!("{PER_REPLICA} records/s per replica")
        } else {
            format!("{PER_REPLICA} records/s")
        }
    );

    let mut load = Load::start(
        &stack.tansu.bootstrap(),
        &stack.spec.topic,
        stack.spec.partitions,
        &stack.spec.group,
        20.0,
        PER_REPLICA,
    );
    if live {
        load.follow_replicas(
            stack
                .kube
                .replicas_reader(&stack.spec.namespace, &stack.spec.deployment),
            PER_REPLICA,
        );
    }
    let sel = stack.group_selector();
    let prom = &stack.prometheus;
    let value = |q: String| prom.try_value(&q);
    println!(
        "{:>5}  {:>8}  {:>11}  {:>9}  {:>12}  {:>8}  {:>8}",
        "t(s)", "lag", "lag seconds", "drain (s)", "above for", "alert", "replicas"
    );
    let started = Instant::now();
    let mut burst_done = false;
    let mut last_seq = 0;
    let deadline = started + Duration::from_secs(seconds);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let tick = Instant::now();
        while !stop.load(Ordering::SeqCst) && tick.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let t = started.elapsed().as_secs();
        if !burst_done && t >= 20 {
            burst_done = true;
            let producer = medic_e2e::producer(&stack.tansu.bootstrap());
            for part in 0..stack.spec.partitions {
                medic_e2e::produce_burst(&producer, &stack.spec.topic, part, 100);
            }
            println!("{t:>5}  -- burst: 300 records");
        }
        let fmt = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
        let lag = value(format!(
            "cluster_consumergroup:kafka_consumergroup_lag:sum{{{sel}}}"
        ));
        let secs = value(format!(
            "cluster_consumergroup:kafka_consumergroup_lag_seconds:max{{{sel}}}"
        ));
        let drain = value(format!("max(kafka_consumergroup_drain_seconds{{{sel}}})"));
        let timer = value(format!(
            "time() - cluster_consumergroup:kafka_consumergroup_lag_above_threshold:since{{{sel}}}"
        ));
        let firing = value(format!(
            "ALERTS{{alertname=\"KafkaConsumerLagPersistent\",alertstate=\"firing\",{sel}}}"
        ))
        .is_some();
        println!(
            "{t:>5}  {:>8}  {:>11}  {:>9}  {:>12}  {:>8}  {:>8}",
            fmt(lag, 0),
            fmt(secs, 1),
            fmt(drain, 0),
            timer.map_or("-".into(), |v| format!("{v:.0}s/{}", p.sustain)),
            if firing { "firing" } else { "-" },
            stack.replicas()
        );
        if let Ok(records) = stack.try_audit(&[]) {
            for r in records {
                let seq = r["seq"].as_u64().unwrap_or(0);
                if seq > last_seq {
                    last_seq = seq;
                    println!("{}", decision_line(t, &r));
                }
            }
        }
    }
    println!("\nstopping ...");
    load.stop();
    drop(stack);
    println!("stopped: broker, agent, Prometheus, Alertmanager, actuator, fake API, producer and consumer.");
}
