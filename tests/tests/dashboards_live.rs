//! The Grafana dashboards on live data (issue 13). Grafana cannot run here, so this starts the
//! whole loop (tansu, medic-agent, Prometheus with `rules/` as they are, Alertmanager,
//! medic-actuator, the fake Kubernetes API, a producer and a slow consumer), lets the lag grow
//! until `KafkaConsumerLagPersistent` fires and the actuator scales the consumer up, and then
//! runs `dashboards/tests/check_dashboards_live.py` against that Prometheus: every panel target,
//! annotation and template-variable query of every dashboard, with the variables substituted,
//! must return data or be in `dashboards/tests/live-allowlist.yaml` with its reason; then the
//! checker's self-test breaks the dashboards in several ways and expects each break reported.
//!
//! Ignored by `cargo test`: `scripts/test-dashboards.sh` runs it
//! (`cargo test -p medic-e2e --test dashboards_live -- --ignored --nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use medic_e2e::http::unix_now;
use medic_e2e::repo_root;
use medic_e2e::scenario::{slow_consumer_spec, start_slow_consumer, wait_for_scale_up};
use medic_e2e::stack::Stack;

/// How long the checker may poll for panels whose data needs a few more scrapes (rates over
/// `$__rate_interval`, histogram quantiles) before it reports them empty.
const WAIT_FOR_DATA_SECS: u32 = 90;

/// Runs the checker with `extra` arguments; (success, stdout and stderr).
fn checker(stack: &Stack, start: f64, extra: &[&str]) -> (bool, String) {
    let script = repo_root().join("dashboards/tests/check_dashboards_live.py");
    let url = format!("http://127.0.0.1:{}", stack.prometheus.port);
    let start = format!("{start:.3}");
    let target = stack.spec.target();
    let vars = [
        format!("cluster={}", stack.spec.cluster),
        format!("consumergroup={}", stack.spec.group),
        format!("topic={}", stack.spec.topic),
        format!("broker={}", medic_e2e::Tansu::NODE_ID),
        format!("target={target}"),
    ];
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .args(["--prometheus", &url, "--start", &start])
        .args(["--scrape-interval", &stack.spec.interval]);
    for v in &vars {
        cmd.args(["--var", v]);
    }
    cmd.args(extra);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
#[ignore = "run by scripts/test-dashboards.sh: cargo test -p medic-e2e --test dashboards_live -- --ignored"]
fn every_dashboard_query_returns_data_on_the_live_loop() {
    let t0 = Instant::now();
    let mut spec = slow_consumer_spec();
    // The consumer may only go from 1 to 2 replicas (30 records/s against 40 produced), so the
    // lag keeps growing and the alert keeps firing while the queries run; the re-evaluations
    // after the scale-up are then skipped (at the maximum, in the cooldown), which the
    // "skipped decisions" panels show.
    spec.policy.max_replicas = 2;
    // Alertmanager re-sends the firing alert every few seconds, so the webhook counters and
    // latency histogram move more than once (a rate needs two samples of a counter).
    spec.waits.repeat_interval = "3s".into();
    let start = unix_now();
    let stack = Stack::start(spec);
    let load = start_slow_consumer(&stack);
    let up = wait_for_scale_up(&stack, &load, Duration::from_secs(150));
    eprintln!(
        "{:.1}s: the actuator scaled {} up (audit: {} -> {}), lag {:.0}; the alert fired at +{:.1}s",
        t0.elapsed().as_secs_f64(),
        stack.spec.target(),
        up.record["from_replicas"],
        up.record["to_replicas"],
        up.scrape_lag,
        up.t_fire - start
    );

    let wait = WAIT_FOR_DATA_SECS.to_string();
    let (ok, out) = checker(&stack, start, &["--wait", &wait]);
    eprintln!("{out}");
    assert!(
        ok,
        "a dashboard query failed on live data (see above)\naudit:\n{}",
        stack.audit_summary()
    );
    eprintln!("{:.1}s: every query checked", t0.elapsed().as_secs_f64());

    let (ok, out) = checker(&stack, start, &["--self-test"]);
    eprintln!("{out}");
    assert!(ok, "the live checker missed a deliberate break (see above)");
    eprintln!(
        "{:.1}s: self-test done; stopping the servers",
        t0.elapsed().as_secs_f64()
    );
    drop(load);
    drop(stack);
}
