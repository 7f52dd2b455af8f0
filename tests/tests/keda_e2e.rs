//! KEDA's External Scaler on the whole loop: tansu, medic-agent, Prometheus with
//! rules/kafka-medic.rules.yml as it is, Alertmanager from rules/alertmanager.example.yml, and
//! medic-actuator serving the External Scaler (`keda.listen`) for a `scaler: keda` policy. A
//! tonic client stands in for KEDA. Only the Kubernetes API is fake, and it must see no request
//! on the Deployment at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use medic_actuator::keda::proto::external_scaler_client::ExternalScalerClient;
use medic_actuator::keda::proto::{GetMetricSpecResponse, GetMetricsRequest, ScaledObjectRef};
use medic_e2e::http::unix_now;
use medic_e2e::load::Load;
use medic_e2e::observe::audit_ts;
use medic_e2e::stack::{Stack, StackSpec};
use medic_e2e::{free_port, wait_for_port, wait_until};
use serde_json::Value;
use tonic::transport::Channel;

/// The metric the External Scaler names (actuator/README.md, "With KEDA").
const METRIC: &str = "kafka_medic_consumergroup_lag";
/// The policy's sustain window, seconds: long enough that the spike of phase 1 stays well
/// inside it on a loaded machine, short enough for the test's wall time.
const SUSTAIN: f64 = 12.0;
/// A generous bound on a StreamIsActive push after the change's audit record (the push itself
/// takes milliseconds; see the printed figures).
const PUSH_BOUND: f64 = 2.0;
/// Records of the spike (written by a producer of their own, outside the load driver).
const BURST: u64 = 400;

/// What the stream reader saw: each message with its arrival (Unix seconds), then how the
/// stream ended (`Ok` for a clean end, `Err` with the status otherwise).
#[derive(Default)]
struct Pushes {
    messages: Vec<(bool, f64)>,
    end: Option<Result<(), String>>,
}

/// A tonic client standing in for KEDA, with one open StreamIsActive.
struct Keda {
    rt: tokio::runtime::Runtime,
    client: ExternalScalerClient<Channel>,
    so: ScaledObjectRef,
    pushes: Arc<Mutex<Pushes>>,
}

impl Keda {
    fn connect(port: u16, cluster: &str, group: &str) -> Keda {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(ExternalScalerClient::connect(format!(
                "http://127.0.0.1:{port}"
            )))
            .unwrap();
        let so = ScaledObjectRef {
            name: format!("{group}-so"),
            namespace: "shop".into(),
            scaler_metadata: HashMap::from([
                ("cluster".to_string(), cluster.to_string()),
                ("consumergroup".to_string(), group.to_string()),
            ]),
        };
        let mut stream = rt
            .block_on(client.clone().stream_is_active(so.clone()))
            .unwrap()
            .into_inner();
        let pushes = Arc::new(Mutex::new(Pushes::default()));
        let seen = pushes.clone();
        rt.spawn(async move {
            loop {
                let next = stream.message().await;
                let at = unix_now();
                let mut p = seen.lock().unwrap();
                match next {
                    Ok(Some(m)) => p.messages.push((m.result, at)),
                    Ok(None) => {
                        p.end = Some(Ok(()));
                        return;
                    }
                    Err(s) => {
                        p.end = Some(Err(format!("{s:?}")));
                        return;
                    }
                }
            }
        });
        Keda {
            rt,
            client,
            so,
            pushes,
        }
    }

    fn is_active(&self) -> bool {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.is_active(self.so.clone()))
            .unwrap()
            .into_inner()
            .result
    }

    fn metric_spec(&self) -> GetMetricSpecResponse {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.get_metric_spec(self.so.clone()))
            .unwrap()
            .into_inner()
    }

    /// GetMetrics: the single value, checked for name and float/int agreement.
    fn metric(&self) -> i64 {
        let mut c = self.client.clone();
        let m = self
            .rt
            .block_on(c.get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(self.so.clone()),
                metric_name: METRIC.into(),
            }))
            .unwrap()
            .into_inner();
        assert_eq!(m.metric_values.len(), 1, "{m:?}");
        let v = &m.metric_values[0];
        assert_eq!(v.metric_name, METRIC);
        assert_eq!(v.metric_value_float, v.metric_value as f64, "{v:?}");
        v.metric_value
    }

    fn messages(&self) -> Vec<(bool, f64)> {
        self.pushes.lock().unwrap().messages.clone()
    }

    /// Waits for the `n`th message (1-based) and returns it.
    fn wait_message(&self, n: usize, timeout: Duration, what: &str) -> (bool, f64) {
        wait_until(timeout, what, || self.messages().get(n - 1).copied())
    }
}

/// The External Scaler's audit records (trigger `keda`) of the stack's target.
fn keda_records(stack: &Stack) -> Vec<Value> {
    stack
        .target_audit()
        .into_iter()
        .filter(|r| r["trigger"] == "keda")
        .collect()
}

/// The webhook records of the stack's target with this alert status.
fn webhook_records(stack: &Stack, status: &str) -> Vec<Value> {
    stack
        .target_audit()
        .into_iter()
        .filter(|r| r["trigger"] == "webhook" && r["alert_status"] == status)
        .collect()
}

/// The record of an activity change made by a webhook: trigger keda, applied, no action, the
/// alert's fields and fingerprint.
fn check_change_record(stack: &Stack, r: &Value, status: &str, now: &str) {
    for (k, v) in [
        ("trigger", "keda"),
        ("outcome", "applied"),
        ("action", "none"),
        ("alertname", "KafkaConsumerLagPersistent"),
        ("alert_status", status),
        ("cluster", stack.spec.cluster.as_str()),
        ("consumergroup", stack.spec.group.as_str()),
        ("instance", "e2e-actuator"),
    ] {
        assert_eq!(r[k], v, "audit field {k} in {r}");
    }
    assert_eq!(r["target"], stack.spec.target().as_str());
    assert!(r["fingerprint"].is_string(), "not made by a webhook: {r}");
    let msg = r["message"].as_str().unwrap();
    assert!(msg.contains(&format!("is now {now}")), "{msg}");
}

/// A webhook's record of the keda policy: its decision is `scaled_by_keda`, nothing else.
fn check_webhook_record(r: &Value, status: &str) {
    for (k, v) in [
        ("trigger", "webhook"),
        ("alertname", "KafkaConsumerLagPersistent"),
        ("alert_status", status),
        ("outcome", "skipped"),
        ("reason", "scaled_by_keda"),
        ("action", "none"),
    ] {
        assert_eq!(r[k], v, "audit field {k} in {r}");
    }
}

/// One IsActive (and GetMetrics) answer while the persistent lag builds up.
struct Seen {
    answered: f64,
    active: bool,
    metric: i64,
}

/// The whole loop with `scaler: keda`: a spike shorter than the sustain window leaves the
/// scaler inactive with a metric of 0; persistent lag makes it active only once the window has
/// passed, pushed on StreamIsActive as the webhook arrives; GetMetrics is then the lag
/// Prometheus has; the resolution is pushed too; and the Deployment is never read nor PATCHed.
#[test]
fn keda_external_scaler_follows_the_persistent_lag_alert_and_the_deployment_is_never_patched() {
    let started = Instant::now();
    let keda_port = free_port();
    let mut spec = StackSpec::default();
    spec.policy.sustain = format!("{SUSTAIN}s");
    spec.policy_extra = "    scaler: keda\n".into();
    // The actuator also reads Prometheus's ALERTS every `keda.alerts_poll_interval` (15s by
    // default) and would then sometimes make the change before the webhook arrives. This test
    // is about the webhook's push, so the poll runs only once, at start-up (the level-triggered
    // poll is tested in actuator/tests/it/keda.rs).
    spec.actuator_extra =
        format!("keda: {{listen: \"127.0.0.1:{keda_port}\", alerts_poll_interval: 1h}}\n");
    // Alertmanager re-sends the firing alert every 3s: a re-send is no change (no push).
    spec.waits.repeat_interval = "3s".into();
    let mut stack = Stack::start(spec);
    assert!(
        wait_for_port(keda_port, Duration::from_secs(20)),
        "the External Scaler did not listen\n{}",
        stack.actuator.describe()
    );
    let (cluster, group) = (stack.spec.cluster.clone(), stack.spec.group.clone());
    let keda = Keda::connect(keda_port, &cluster, &group);
    let p = stack.spec.policy.clone();
    let threshold = p.lag_threshold as f64;

    // GetMetricSpec: the policy's target per replica.
    let spec = keda.metric_spec();
    assert_eq!(spec.metric_specs.len(), 1, "{spec:?}");
    assert_eq!(spec.metric_specs[0].metric_name, METRIC);
    assert_eq!(spec.metric_specs[0].target_size, p.lag_per_replica as i64);
    assert_eq!(
        spec.metric_specs[0].target_size_float,
        p.lag_per_replica as f64
    );
    // StreamIsActive: the current state first.
    let (first, _) = keda.wait_message(1, Duration::from_secs(10), "the stream's first message");
    assert!(!first, "nothing fires yet");
    assert!(!keda.is_active());
    assert_eq!(keda.metric(), 0);

    // ---- 1. A spike shorter than the sustain window ----
    let b = stack.tansu.bootstrap();
    let (topic, parts) = (stack.spec.topic.clone(), stack.spec.partitions);
    // A consumer that keeps up easily: 100 records/s against 5 produced.
    let mut load = Load::start(&b, &topic, parts, &group, 5.0, 100.0);
    let lag_rule = format!(
        "cluster_consumergroup:kafka_consumergroup_lag:sum{{{}}}",
        stack.group_selector()
    );
    let since_rule = format!(
        "cluster_consumergroup:kafka_consumergroup_lag_above_threshold:since{{{}}}",
        stack.group_selector()
    );
    wait_until(
        Duration::from_secs(60),
        "the group's lag in Prometheus",
        || stack.prometheus.value(&lag_rule).filter(|v| *v < 50.0),
    );
    // The rules apply the keda policy's overrides, as for any policy, once Prometheus has
    // scraped the actuator's policy series (until then the rule's default holds).
    let effective = |what: &str, want: f64| {
        let query = format!(
            "cluster_consumergroup:medic_consumergroup_{what}:effective{{{}}}",
            stack.group_selector()
        );
        wait_until(
            Duration::from_secs(60),
            &format!("the effective {what} to be the policy's {want}"),
            || stack.prometheus.value(&query).filter(|v| *v == want),
        );
    };
    effective("lag_threshold", threshold);
    effective("lag_sustain_seconds", SUSTAIN);
    let producer = medic_e2e::producer(&b);
    for part in 0..parts {
        medic_e2e::produce_burst(&producer, &topic, part, BURST as usize / parts as usize);
    }
    drop(producer);
    let peak = wait_until(
        Duration::from_secs(30),
        "Prometheus to see the spike",
        || stack.prometheus.value(&lag_rule).filter(|v| *v > threshold),
    );
    // Prometheus has the lag above the threshold (for less than the window): inactive, 0.
    assert!(!keda.is_active(), "active during a short spike");
    assert_eq!(keda.metric(), 0, "a metric during a short spike");
    // And so on until the spike is over (lag under the threshold, the timer gone).
    wait_until(
        Duration::from_secs(40),
        "the spike to end (lag under the threshold, no sustain timer)",
        || {
            assert!(!keda.is_active(), "active during a short spike");
            assert_eq!(keda.metric(), 0, "a metric during a short spike");
            let lag = stack.prometheus.value(&lag_rule)?;
            (lag <= threshold && stack.prometheus.query(&since_rule).is_empty()).then_some(())
        },
    );
    let spike_end = unix_now();
    // The timer ran once, for less than the window; the alert never existed anywhere.
    let since = stack.group_series(
        "cluster_consumergroup:kafka_consumergroup_lag_above_threshold:since",
        "2m",
    );
    assert!(!since.is_empty(), "the sustain timer never started");
    let (run_start, run_last) = (since[0].1, since[since.len() - 1].0);
    assert!(
        since.iter().all(|(_, v)| *v == run_start),
        "one run only: {since:?}"
    );
    assert!(
        run_last - run_start < SUSTAIN,
        "the spike's run lasted {}s, not shorter than the {SUSTAIN}s window",
        run_last - run_start
    );
    assert!(
        stack
            .prometheus
            .query("count_over_time(ALERTS{alertname=\"KafkaConsumerLagPersistent\"}[5m])")
            .is_empty(),
        "the alert existed during a short spike"
    );
    assert!(stack.am_alerts("KafkaConsumerLagPersistent").is_empty());
    // Nothing about the group in the audit log (the ALERTS poll's own records, about
    // Prometheus answering or not, name no group).
    let about_group: Vec<Value> = stack
        .audit(&[])
        .into_iter()
        .filter(|r| r["target"].is_string() || r["consumergroup"].is_string())
        .collect();
    assert!(about_group.is_empty(), "{about_group:#?}");
    assert!(!keda.is_active());
    eprintln!(
        "spike: peak seen {peak}, above the threshold for {:.1}s of a {SUSTAIN}s window",
        run_last - run_start
    );

    // ---- 2. Persistent lag: the consumer stops, production goes on ----
    load.consume_rate.set(0.0);
    load.produce_rate.set(40.0);
    let persistent_from = unix_now();
    let mut seen: Vec<Seen> = Vec::new();
    let (up, up_at) = wait_until(
        Duration::from_secs(90),
        "StreamIsActive to push the change",
        || {
            if let Some(m) = keda.messages().get(1).copied() {
                return Some(m);
            }
            let active = keda.is_active();
            let metric = keda.metric();
            seen.push(Seen {
                answered: unix_now(),
                active,
                metric,
            });
            None
        },
    );
    assert!(up, "the second message says active");
    // The run of the sustain timer that fired (one run: the consumer is stopped).
    let run: Vec<(f64, f64)> = stack
        .group_series(
            "cluster_consumergroup:kafka_consumergroup_lag_above_threshold:since",
            "2m",
        )
        .into_iter()
        .filter(|(ts, _)| *ts > spike_end)
        .collect();
    let since0 = run.first().expect("the sustain timer of the lag").1;
    assert!(
        run.iter().all(|(_, v)| *v == since0),
        "one run only: {run:?}"
    );
    assert!(
        since0 >= persistent_from - 1.0,
        "{since0} vs {persistent_from}"
    );
    let window_end = since0 + SUSTAIN;
    // Prometheus fired once the window had elapsed, not before.
    let t_fire = stack.alert_samples("KafkaConsumerLagPersistent", "firing", "5m")[0].0;
    assert!(
        t_fire >= window_end - 0.001 && t_fire <= window_end + 3.0,
        "fired at {t_fire} for a timer started at {since0} with a {SUSTAIN}s window"
    );
    // Every answer given before the window ended was inactive with metric 0, and some were
    // given while the lag was above the threshold inside the window.
    for s in seen.iter().filter(|s| s.answered < window_end) {
        assert!(
            !s.active && s.metric == 0,
            "answered {:.3}s before the window ended: active {} metric {}",
            window_end - s.answered,
            s.active,
            s.metric
        );
    }
    let inside = seen
        .iter()
        .filter(|s| s.answered >= since0 && s.answered < window_end - 1.0)
        .count();
    assert!(
        inside >= 5,
        "only {inside} answers inside the window; IsActive was not exercised"
    );
    // The change was audited, then pushed; the push's delay after the record.
    let rec_up = wait_until(Duration::from_secs(10), "the active record", || {
        keda_records(&stack).into_iter().next()
    });
    check_change_record(&stack, &rec_up, "firing", "active");
    assert!(audit_ts(&rec_up) >= t_fire, "{rec_up}");
    let delay_up = up_at - audit_ts(&rec_up);
    assert!(
        (-0.001..PUSH_BOUND).contains(&delay_up),
        "pushed {delay_up:.3}s after the audit record"
    );
    assert!(keda.is_active(), "true after the window");
    let fired = wait_until(Duration::from_secs(10), "the webhook's record", || {
        webhook_records(&stack, "firing").into_iter().next()
    });
    check_webhook_record(&fired, "firing");
    assert_eq!(fired["fingerprint"], rec_up["fingerprint"]);
    assert!(fired["seq"].as_u64().unwrap() > rec_up["seq"].as_u64().unwrap());

    // GetMetrics while the lag grows: between the values Prometheus had just before and
    // just after (the recording rule only grows while the consumer is stopped).
    let before = stack.prometheus.value(&lag_rule).unwrap();
    let metric = keda.metric() as f64;
    let after = stack.prometheus.value(&lag_rule).unwrap();
    assert!(
        before <= metric && metric <= after && metric > threshold,
        "GetMetrics {metric} while Prometheus went from {before} to {after}"
    );
    // Frozen: production stops too, so the lag holds still above the threshold (the alert
    // keeps firing). Prometheus then has exactly what was produced (the driver's records and
    // the spike's) minus what the group committed, and GetMetrics answers exactly that.
    load.produce_rate.set(0.0);
    let truth = |load: &Load| load.produced() + BURST - load.committed();
    let frozen = wait_until(
        Duration::from_secs(30),
        "the lag to hold still in Prometheus",
        || {
            let v = stack.prometheus.value(&lag_rule)?;
            let lo = stack
                .prometheus
                .value(&format!("min_over_time({lag_rule}[3s])"))?;
            (v == truth(&load) as f64 && lo == v).then_some(v)
        },
    );
    let metric = keda.metric();
    assert_eq!(metric as f64, frozen, "GetMetrics vs Prometheus");
    assert_eq!(stack.prometheus.value(&lag_rule), Some(frozen));
    assert_eq!(metric as u64, truth(&load));
    // Alertmanager's re-send of the firing alert reaches the actuator and is no change.
    let resent = wait_until(Duration::from_secs(20), "a re-sent firing alert", || {
        webhook_records(&stack, "firing").get(1).cloned()
    });
    check_webhook_record(&resent, "firing");
    assert_eq!(resent["fingerprint"], fired["fingerprint"]);
    assert_eq!(keda.messages().len(), 2, "a re-send pushed a message");
    assert_eq!(
        keda_records(&stack).len(),
        1,
        "a re-send was audited as a change"
    );

    // ---- 3. The consumer catches up; the alert resolves ----
    load.consume_rate.set(300.0);
    let (down, down_at) =
        keda.wait_message(3, Duration::from_secs(60), "the push of the resolution");
    assert!(!down, "the third message says inactive");
    let rec_down = wait_until(Duration::from_secs(10), "the inactive record", || {
        keda_records(&stack).get(1).cloned()
    });
    check_change_record(&stack, &rec_down, "resolved", "inactive");
    assert_eq!(rec_down["fingerprint"], fired["fingerprint"]);
    let delay_down = down_at - audit_ts(&rec_down);
    assert!(
        (-0.001..PUSH_BOUND).contains(&delay_down),
        "pushed {delay_down:.3}s after the audit record"
    );
    assert!(!keda.is_active());
    assert_eq!(keda.metric(), 0);
    assert!(stack
        .prometheus
        .query(&format!(
            "ALERTS{{alertname=\"KafkaConsumerLagPersistent\",{}}}",
            stack.group_selector()
        ))
        .is_empty());
    let resolved = wait_until(Duration::from_secs(10), "the resolved record", || {
        webhook_records(&stack, "resolved").into_iter().next()
    });
    check_webhook_record(&resolved, "resolved");
    assert_eq!(resolved["fingerprint"], fired["fingerprint"]);
    load.stop();

    // ---- Never PATCHed, never even read: whatever alerts arrived ----
    assert!(
        stack.kube.requests().is_empty(),
        "{}",
        stack.kube.describe()
    );
    assert!(stack.scale_patches().is_empty());
    assert_eq!(stack.replicas(), stack.spec.initial_replicas);
    let audit = stack.target_audit();
    for r in &audit {
        let change = r["trigger"] == "keda" && r["outcome"] == "applied";
        let skipped = r["outcome"] == "skipped" && r["reason"] == "scaled_by_keda";
        assert!(change || skipped, "{r}\n{}", stack.audit_summary());
        assert_eq!(r["action"], "none", "{r}");
    }
    let webhooks = audit.iter().filter(|r| r["trigger"] == "webhook").count();
    assert!(webhooks >= 3, "{}", stack.audit_summary());

    let summary = stack.audit_summary();
    // The actuator stops (SIGTERM): the stream ends cleanly, and it carried exactly the
    // initial state and the two changes.
    let mut pids: Vec<u32> = [
        stack.agent.pid(),
        stack.tansu.server.pid(),
        stack.prometheus.server.pid(),
        stack.alertmanager.server.pid(),
    ]
    .into_iter()
    .flatten()
    .collect();
    pids.extend(stack.actuator.pid());
    assert_eq!(pids.len(), 5, "every server runs until the end");
    assert_eq!(
        stack.actuator.terminate(Duration::from_secs(20)),
        Some(0),
        "{}",
        stack.actuator.describe()
    );
    let end = wait_until(Duration::from_secs(10), "the stream to end", || {
        keda.pushes.lock().unwrap().end.clone()
    });
    assert_eq!(end, Ok(()), "the stream ends cleanly at shutdown");
    let flags: Vec<bool> = keda.messages().iter().map(|(b, _)| *b).collect();
    assert_eq!(flags, [false, true, false]);
    drop(keda);
    drop(load);
    drop(stack);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still exists after the test"
        );
    }
    eprintln!(
        "StreamIsActive push after the change's audit record: active {:.1} ms, inactive {:.1} ms; lag frozen at {frozen} (GetMetrics {metric}); \
         test took {:.0}s; audit:\n{summary}",
        delay_up * 1000.0,
        delay_down * 1000.0,
        started.elapsed().as_secs_f64()
    );
}
