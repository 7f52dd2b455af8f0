//! Reaction time of the whole loop: scenario 1 of the end-to-end tests (a slow consumer falls
//! behind), run several times on real servers; for each run, the time from the moment the
//! sustain window has elapsed to the scale PATCH reaching the fake Kubernetes API, broken down
//! by where it went. Timestamps come from each server's own API: the agent's scrape samples,
//! the rules' `since` series and `ALERTS` in Prometheus, Alertmanager's `updatedAt`, the
//! actuator's audit `ts`, and the fake API's arrival time.
//!
//! Usage: medic-reaction-bench [--runs N]   (default 5; `cargo run --release -p medic-e2e --bin medic-reaction-bench`)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use medic_e2e::scenario::{slow_consumer_spec, start_slow_consumer, wait_for_scale_up, ScaleUp};
use medic_e2e::stack::Stack;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// (name, what it covers, value of one run).
type Part = (&'static str, &'static str, fn(&ScaleUp) -> f64);

const PARTS: &[Part] = &[
    (
        "rule evaluation",
        "first scrape above + window -> first ALERTS firing sample",
        |u| u.t_fire - (u.t_scrape + u.sustain),
    ),
    (
        "Prometheus -> Alertmanager",
        "ALERTS firing -> Alertmanager updatedAt",
        |u| u.am_received - u.t_fire,
    ),
    (
        "Alertmanager (group_wait)",
        "updatedAt -> actuator decision (audit ts)",
        |u| u.t_decide - u.am_received,
    ),
    ("actuator", "decision -> scale PATCH at the fake API", |u| {
        u.t_patch - u.t_decide
    }),
    (
        "= overhead",
        "first scrape above + window -> scale PATCH",
        ScaleUp::overhead,
    ),
];

const BEFORE: &[Part] = &[
    (
        "agent collection",
        "driver's lag above -> collection that saw it",
        |u| u.t_collected.unwrap_or(f64::NAN) - u.t_true.unwrap_or(f64::NAN),
    ),
    ("scrape", "collection -> first scrape above", |u| {
        u.t_scrape - u.t_collected.unwrap_or(f64::NAN)
    }),
];

/// Seconds of a duration written like `1s` or `500ms`.
fn secs(d: &str) -> f64 {
    match d.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().expect("a duration") / 1000.0,
        None => d.trim_end_matches('s').parse().expect("a duration"),
    }
}

fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("nproc {nproc}, CPU \"{cpu}\", kernel {kernel}")
}

fn main() {
    let runs: usize = arg("--runs").and_then(|s| s.parse().ok()).unwrap_or(5);
    let spec = slow_consumer_spec();
    println!(
        "reaction time: {runs} runs of scenario 1 (threshold {} offsets, sustain {}; agent, scrape and rule intervals {}; group_wait {})",
        spec.policy.lag_threshold, spec.policy.sustain, spec.interval, spec.waits.group_wait
    );
    println!("machine: {}\n", machine());
    let mut results = Vec::new();
    for i in 0..runs {
        let stack = Stack::start(slow_consumer_spec());
        let mut load = start_slow_consumer(&stack);
        let up = wait_for_scale_up(&stack, &load, Duration::from_secs(120));
        load.stop();
        println!(
            "run {}: lag {} at the decision, 1 -> {} replicas; overhead {:.2}s (rule {:.2}, to AM {:.2}, AM {:.2}, actuator {:.3}); from the driver's crossing + window {:.2}s",
            i + 1,
            up.record["lag"],
            up.record["to_replicas"],
            up.overhead(),
            PARTS[0].2(&up),
            PARTS[1].2(&up),
            PARTS[2].2(&up),
            PARTS[3].2(&up),
            up.t_patch - (up.t_true.unwrap_or(f64::NAN) + up.sustain)
        );
        results.push(up);
        drop(stack);
    }
    println!("\n| part | from -> to | median (s) | max (s) |\n|---|---|---|---|");
    for (name, what, f) in BEFORE.iter().chain(PARTS) {
        let v: Vec<f64> = results.iter().map(f).collect();
        println!("| {name} | {what} | {:.3} | {:.3} |", median(&v), max(&v));
    }
    let total: Vec<f64> = results
        .iter()
        .map(|u| u.t_patch - (u.t_true.unwrap_or(f64::NAN) + u.sustain))
        .collect();
    println!(
        "| from the driver's crossing | driver's lag above + window -> scale PATCH | {:.3} | {:.3} |",
        median(&total),
        max(&total)
    );
    let target = 2.0 * secs(&spec.interval) + secs(&spec.waits.group_wait);
    let worst = max(&results.iter().map(ScaleUp::overhead).collect::<Vec<_>>());
    println!(
        "\ntarget: overhead <= 2 scrape intervals + group_wait = {target:.1}s; worst run {worst:.2}s: {}",
        if worst <= target { "met" } else { "NOT met" }
    );
}
