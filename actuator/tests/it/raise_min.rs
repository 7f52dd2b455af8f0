//! `on_autoscaler: raise_min_replicas` (issue 13, "When an HPA already owns the Deployment"):
//! the HPA's `minReplicas` (a ScaledObject's `minReplicaCount`) is raised while the lag alert
//! fires and restored once it resolved and the down cooldown passed, with the original kept in
//! an annotation on the autoscaler. Through `warp::test` against the fake Kubernetes API
//! (Deployments, and the strict autoscaler fake of `support/fake_autoscalers.rs` on the same
//! server) and the fake Prometheus, with a movable clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use jiff::Timestamp;
use medic_actuator::{App, Config};
use serde_json::{json, Value};
use support::fake_autoscalers::{FakeAutoscalers, HPAS, ORIGINAL, SCALED_OBJECTS};
use support::harness::{config, fake_kube, metric, Harness, T0};
use support::*;

const POLICIES: &str = r#"policies:
  - cluster: prod
    consumergroup: orders
    deployment: {namespace: shop, name: orders-consumer}
    min_replicas: 1
    max_replicas: 10
    lag_per_replica: 1000
    scale_up_cooldown: 1m
    scale_down_cooldown: 5m
    max_step: 2
    on_autoscaler: raise_min_replicas
  - cluster: prod
    consumergroup: billing
    deployment: {namespace: billing, name: billing-consumer}
"#;

const HPA_PATH: &str = "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers/orders-hpa";
const SO_PATH: &str = "/apis/keda.sh/v1alpha1/namespaces/shop/scaledobjects/orders-so";

fn files() -> Files {
    let f = Files::new();
    std::fs::write(f.path("policies.yaml"), POLICIES).unwrap();
    f
}

/// An actuator on `kube` with the autoscalers served next to the Deployments (mounted before
/// the start-up check lists them).
async fn start(
    files: &Files,
    kube: FakeKube,
    autoscalers: &FakeAutoscalers,
    tweak: impl FnOnce(&mut Config),
) -> Harness {
    let kube_server = kube.start().await;
    autoscalers.mount(&kube_server).await;
    let prom = FakeProm::default();
    let prom_server = prom.start().await;
    let mut c = config(files, &kube_server, Some(&prom_server));
    tweak(&mut c);
    let clock = Arc::new(AtomicI64::new(T0));
    let c2 = clock.clone();
    let app = App::build_with_clock(
        c,
        &BTreeMap::new(),
        Arc::new(move || Timestamp::from_second(c2.load(Ordering::SeqCst)).unwrap()),
    )
    .await
    .unwrap();
    Harness {
        app,
        kube,
        _kube_server: kube_server,
        prom,
        _prom_server: prom_server,
        clock,
    }
}

/// One lag alert for prod/orders (or `group`), answered: (status, its result).
async fn post(h: &Harness, status: &str, fp: &str, group: &str) -> (u16, Value) {
    let (code, body) = h
        .alerts(&payload(
            status,
            vec![lag_alert(status, fp, "prod", group, None)],
        ))
        .await;
    (code, body["results"][0].clone())
}

fn last_audit(files: &Files) -> Value {
    audit_lines(&files.audit_path()).pop().expect("a record")
}

/// The merge patch the actuator must send: minimum and annotation together, with the
/// resourceVersion it read as precondition.
fn patch_body(rv: u64, field: &str, min: u32, original: Option<&str>) -> Value {
    json!({
        "metadata": {"resourceVersion": rv.to_string(), "annotations": {ORIGINAL: original}},
        "spec": {field: min},
    })
}

const RAISED_2_TO_4: &str = "raised minReplicas of HorizontalPodAutoscaler shop/orders-hpa (it scales shop/orders-consumer) from 2 to 4 (desired 4, lag 3500 from prometheus); original 2 kept in annotation kafka-medic.io/original-min-replicas";
const RESTORED_4_TO_2: &str = "restored minReplicas of HorizontalPodAutoscaler shop/orders-hpa (it scales shop/orders-consumer) from 4 to its original 2 and removed annotation kafka-medic.io/original-min-replicas (alert resolved, scale_down_cooldown passed)";

#[tokio::test]
async fn min_replicas_is_raised_while_firing_and_restored_after_the_down_cooldown() {
    let files = files();
    let scalers = FakeAutoscalers::default();
    scalers.add_hpa("shop", "orders-hpa", "orders-consumer", Some(2), 10);
    let h = start(&files, fake_kube(), &scalers, |_| {}).await;
    h.prom.set_lag("prod", "orders", 3500.0);

    let (code, result) = post(&h, "firing", "fp1", "orders").await;
    assert_eq!(code, 200, "{result}");
    assert_eq!(result["outcome"], "applied", "{result}");
    assert_eq!(result["action"], "raise_min_replicas", "{result}");
    // The HPA: minimum = desired, original remembered, in one PATCH with the precondition.
    assert_eq!(scalers.min(HPAS, "shop", "orders-hpa"), Some(4));
    assert_eq!(
        scalers.original(HPAS, "shop", "orders-hpa").as_deref(),
        Some("2")
    );
    let patches = scalers.patches();
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(patches[0].path, HPA_PATH);
    assert_eq!(
        patches[0].query.trim_start_matches('&'),
        "fieldManager=medic-actuator"
    );
    assert_eq!(patches[0].content_type, "application/merge-patch+json");
    assert_eq!(
        patches[0].body,
        patch_body(500, "minReplicas", 4, Some("2"))
    );
    assert_eq!(patches[0].status, 200);
    // The Deployment: the cooldown claim, no scale.
    assert!(h.kube.scale_writes().is_empty(), "{:?}", h.kube.writes());
    assert_eq!(h.kube.replicas("shop", "orders-consumer"), 2);
    assert_eq!(
        h.kube.annotation("shop", "orders-consumer").unwrap(),
        json!({"at": "2027-01-15T08:00:00Z", "direction": "up", "from": 2, "to": 4,
               "alert": "fp1:firing:2026-11-22T03:32:35.536Z", "by": "actuator-test"})
    );
    let record = last_audit(&files);
    assert_eq!(record["action"], "raise_min_replicas", "{record}");
    assert_eq!(record["outcome"], "applied", "{record}");
    assert_eq!(record["target"], "shop/orders-consumer", "{record}");
    assert_eq!(record["trigger"], "webhook", "{record}");
    assert_eq!(
        (
            &record["from_replicas"],
            &record["to_replicas"],
            &record["desired_replicas"]
        ),
        (&json!(2), &json!(4), &json!(4)),
        "{record}"
    );
    assert_eq!(record["message"], RAISED_2_TO_4, "{record}");
    assert_eq!(
        metric(
            &h.metrics().await,
            "medic_actuator_actions_total{action=\"raise_min_replicas\",outcome=\"applied\"}"
        ),
        1.0
    );

    // Resolved 100 s after the raise: held by the 5 min down cooldown.
    h.prom.set_lag("prod", "orders", 0.0);
    h.clock.store(T0 + 100, Ordering::SeqCst);
    let (code, result) = post(&h, "resolved", "fp1", "orders").await;
    assert_eq!(code, 200, "{result}");
    assert_eq!(result["reason"], "cooldown", "{result}");
    let record = last_audit(&files);
    assert_eq!(
        record["message"],
        "restore of HorizontalPodAutoscaler shop/orders-hpa minReplicas to 2 held by cooldown, 200s left",
        "{record}"
    );
    assert_eq!(record["to_replicas"], 2, "{record}");
    assert_eq!(scalers.patches().len(), 1);
    assert_eq!(scalers.min(HPAS, "shop", "orders-hpa"), Some(4));

    // One second short of it, still held; at 300 s the re-evaluation restores.
    h.clock.store(T0 + 299, Ordering::SeqCst);
    assert_eq!(h.app.api.engine.reevaluate().await.unwrap(), 0);
    assert_eq!(scalers.patches().len(), 1);
    h.clock.store(T0 + 300, Ordering::SeqCst);
    assert_eq!(h.app.api.engine.reevaluate().await.unwrap(), 1);
    assert_eq!(scalers.min(HPAS, "shop", "orders-hpa"), Some(2));
    assert_eq!(scalers.original(HPAS, "shop", "orders-hpa"), None);
    let patches = scalers.patches();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert_eq!(patches[1].body, patch_body(501, "minReplicas", 2, None));
    assert_eq!(patches[1].status, 200);
    let record = last_audit(&files);
    assert_eq!(record["action"], "restore_min_replicas", "{record}");
    assert_eq!(record["outcome"], "applied", "{record}");
    assert_eq!(record["trigger"], "reevaluate", "{record}");
    assert_eq!(
        (&record["from_replicas"], &record["to_replicas"]),
        (&json!(4), &json!(2)),
        "{record}"
    );
    assert_eq!(record["message"], RESTORED_4_TO_2, "{record}");
    assert_eq!(
        h.kube.annotation("shop", "orders-consumer").unwrap()["direction"],
        "down"
    );
    assert_eq!(
        metric(
            &h.metrics().await,
            "medic_actuator_actions_total{action=\"restore_min_replicas\",outcome=\"applied\"}"
        ),
        1.0
    );

    // The next round settles the alert on "nothing to restore", then nothing more happens.
    h.clock.store(T0 + 330, Ordering::SeqCst);
    h.app.api.engine.reevaluate().await.unwrap();
    let record = last_audit(&files);
    assert_eq!(record["reason"], "managed_by_autoscaler", "{record}");
    assert_eq!(
        record["message"],
        "HorizontalPodAutoscaler shop/orders-hpa scales shop/orders-consumer: its minReplicas 2 is not raised by kafka-medic, nothing to restore",
        "{record}"
    );
    let (_, state) = h
        .request(
            "GET",
            "/api/v1/state",
            Some(&format!("Bearer {TOKEN}")),
            b"",
        )
        .await;
    let orders = state["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "shop/orders-consumer")
        .unwrap();
    assert_eq!(orders["tracked_alerts"], json!([]), "{orders}");
    let lines = audit_lines(&files.audit_path()).len();
    h.clock.store(T0 + 900, Ordering::SeqCst);
    h.app.api.engine.reevaluate().await.unwrap();
    assert_eq!(audit_lines(&files.audit_path()).len(), lines);
    assert_eq!(scalers.patches().len(), 2);
}

#[tokio::test]
async fn raising_again_steps_by_max_step_and_keeps_the_first_original() {
    let files = files();
    let scalers = FakeAutoscalers::default();
    scalers.add_hpa("shop", "orders-hpa", "orders-consumer", Some(2), 10);
    let h = start(&files, fake_kube(), &scalers, |_| {}).await;
    // lag 9000 wants 9; one action moves at most max_step 2 above the replicas (2).
    h.prom.set_lag("prod", "orders", 9000.0);
    let (_, result) = post(&h, "firing", "fp1", "orders").await;
    assert_eq!(result["outcome"], "applied", "{result}");
    assert_eq!(scalers.min(HPAS, "shop", "orders-hpa"), Some(4));
    // Inside the up cooldown: nothing.
    h.clock.store(T0 + 30, Ordering::SeqCst);
    h.app.api.engine.reevaluate().await.unwrap();
    assert_eq!(last_audit(&files)["reason"], "cooldown");
    assert_eq!(
        last_audit(&files)["message"],
        "raise of HorizontalPodAutoscaler shop/orders-hpa minReplicas to 6 held by cooldown, 30s left"
    );
    h.clock.store(T0 + 60, Ordering::SeqCst);
    assert_eq!(h.app.api.engine.reevaluate().await.unwrap(), 1);
    assert_eq!(scalers.min(HPAS, "shop", "orders-hpa"), Some(6));
    assert_eq!(
        scalers.original(HPAS, "shop", "orders-hpa").as_deref(),
        Some("2"),
        "the first original stays"
    );
    let patches = scalers.patches();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert_eq!(
        patches[1].body,
        patch_body(501, "minReplicas", 6, Some("2"))
    );
    let record = last_audit(&files);
    assert_eq!(
        record["message"],
        "raised minReplicas of HorizontalPodAutoscaler shop/orders-hpa (it scales shop/orders-consumer) from 4 to 6 (desired 9, lag 9000 from prometheus); original 2 kept in annotation kafka-medic.io/original-min-replicas",
        "{record}"
    );
    // Less lag while it fires: the minimum is never lowered before the alert resolves.
    h.prom.set_lag("prod", "orders", 1000.0);
    h.clock.store(T0 + 500, Ordering::SeqCst);
    assert_eq!(h.app.api.engine.reevaluate().await.unwrap(), 0);
    assert_eq!(last_audit(&files)["reason"], "at_desired");
    assert_eq!(scalers.min(HPAS, "shop", "orders-hpa"), Some(6));
    assert_eq!(scalers.patches().len(), 2);
}

#[tokio::test]
async fn a_new_actuator_restores_the_original_from_the_annotation() {
    let scalers = FakeAutoscalers::default();
    scalers.add_hpa("shop", "orders-hpa", "orders-consumer", Some(2), 10);
    let kube = fake_kube();
    let first = files();
    let h = start(&first, kube.clone(), &scalers, |_| {}).await;
    h.prom.set_lag("prod", "orders", 3500.0);
    let (_, result) = post(&h, "firing", "fp1", "orders").await;
    assert_eq!(result["action"], "raise_min_replicas", "{result}");
    assert_eq!(scalers.min(HPAS, "shop", "orders-hpa"), Some(4));
    drop(h);

    // Another actuator (new engine, new API server, its own empty audit log) on the same
    // cluster: the only place the original 2 is kept is the HPA's annotation.
    let second = files();
    let h2 = start(&second, kube.clone(), &scalers, |c| {
        c.instance = Some("actuator-b".into())
    })
    .await;
    h2.prom.set_lag("prod", "orders", 0.0);
    // Inside the down cooldown (read from the Deployment's claim): held.
    h2.clock.store(T0 + 120, Ordering::SeqCst);
    let (_, result) = post(&h2, "resolved", "fp1", "orders").await;
    assert_eq!(result["reason"], "cooldown", "{result}");
    assert_eq!(scalers.patches().len(), 1);
    h2.clock.store(T0 + 301, Ordering::SeqCst);
    assert_eq!(h2.app.api.engine.reevaluate().await.unwrap(), 1);
    assert_eq!(scalers.min(HPAS, "shop", "orders-hpa"), Some(2));
    assert_eq!(scalers.original(HPAS, "shop", "orders-hpa"), None);
    let patches = scalers.patches();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert_eq!(patches[1].body, patch_body(501, "minReplicas", 2, None));
    let lines = audit_lines(&second.audit_path());
    let record = lines.last().unwrap();
    assert_eq!(record["instance"], "actuator-b", "{record}");
    assert_eq!(record["action"], "restore_min_replicas", "{record}");
    assert_eq!(record["message"], RESTORED_4_TO_2, "{record}");
    assert_eq!(
        kube.annotation("shop", "orders-consumer").unwrap()["by"],
        "actuator-b"
    );
}

#[tokio::test]
async fn a_scaled_object_gets_its_min_replica_count_raised_and_restored() {
    let files = files();
    let scalers = FakeAutoscalers::default();
    // No minReplicaCount: KEDA's default 0 (scale to zero).
    scalers.add_scaled_object("shop", "orders-so", "orders-consumer", None, Some(20));
    let h = start(&files, fake_kube(), &scalers, |_| {}).await;
    h.prom.set_lag("prod", "orders", 1500.0);
    let (_, result) = post(&h, "firing", "fp1", "orders").await;
    assert_eq!(result["outcome"], "applied", "{result}");
    assert_eq!(scalers.min(SCALED_OBJECTS, "shop", "orders-so"), Some(2));
    assert_eq!(
        scalers
            .original(SCALED_OBJECTS, "shop", "orders-so")
            .as_deref(),
        Some("0")
    );
    let patches = scalers.patches();
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(patches[0].path, SO_PATH);
    assert_eq!(patches[0].content_type, "application/merge-patch+json");
    assert_eq!(
        patches[0].body,
        patch_body(500, "minReplicaCount", 2, Some("0"))
    );
    assert_eq!(
        last_audit(&files)["message"],
        "raised minReplicaCount of ScaledObject shop/orders-so (it scales shop/orders-consumer) from 0 to 2 (desired 2, lag 1500 from prometheus); original 0 kept in annotation kafka-medic.io/original-min-replicas"
    );

    h.prom.set_lag("prod", "orders", 0.0);
    h.clock.store(T0 + 300, Ordering::SeqCst);
    let (_, result) = post(&h, "resolved", "fp1", "orders").await;
    assert_eq!(result["action"], "restore_min_replicas", "{result}");
    assert_eq!(result["outcome"], "applied", "{result}");
    assert_eq!(scalers.min(SCALED_OBJECTS, "shop", "orders-so"), Some(0));
    assert_eq!(scalers.original(SCALED_OBJECTS, "shop", "orders-so"), None);
    assert_eq!(
        scalers.patches()[1].body,
        patch_body(501, "minReplicaCount", 0, None)
    );
    assert_eq!(
        last_audit(&files)["message"],
        "restored minReplicaCount of ScaledObject shop/orders-so (it scales shop/orders-consumer) from 2 to its original 0 and removed annotation kafka-medic.io/original-min-replicas (alert resolved, scale_down_cooldown passed)"
    );
    assert!(h.kube.scale_writes().is_empty(), "{:?}", h.kube.writes());
}

#[tokio::test]
async fn a_raise_is_clamped_to_the_hpa_max_replicas_and_says_so() {
    let files = files();
    let scalers = FakeAutoscalers::default();
    scalers.add_hpa("shop", "orders-hpa", "orders-consumer", Some(2), 3);
    let h = start(&files, fake_kube(), &scalers, |_| {}).await;
    h.prom.set_lag("prod", "orders", 9000.0);
    let (_, result) = post(&h, "firing", "fp1", "orders").await;
    assert_eq!(result["outcome"], "applied", "{result}");
    assert_eq!(scalers.min(HPAS, "shop", "orders-hpa"), Some(3));
    assert_eq!(
        scalers.patches()[0].body,
        patch_body(500, "minReplicas", 3, Some("2"))
    );
    let record = last_audit(&files);
    assert_eq!(
        (&record["to_replicas"], &record["desired_replicas"]),
        (&json!(3), &json!(9)),
        "{record}"
    );
    assert_eq!(
        record["message"],
        "raised minReplicas of HorizontalPodAutoscaler shop/orders-hpa (it scales shop/orders-consumer) from 2 to 3, clamped to its maximum 3 (desired 9, lag 9000 from prometheus); original 2 kept in annotation kafka-medic.io/original-min-replicas",
        "{record}"
    );
    // After the up cooldown: at the maximum, nothing more to raise.
    h.clock.store(T0 + 61, Ordering::SeqCst);
    assert_eq!(h.app.api.engine.reevaluate().await.unwrap(), 0);
    let record = last_audit(&files);
    assert_eq!(record["reason"], "at_desired", "{record}");
    assert_eq!(
        record["message"],
        "HorizontalPodAutoscaler shop/orders-hpa minReplicas is 3, at its maximum 3 (desired 9 clamped to it)",
        "{record}"
    );
    assert_eq!(scalers.patches().len(), 1);
}

#[tokio::test]
async fn a_conflict_on_the_hpa_is_read_again_and_retried_a_bounded_number_of_times() {
    let files = files();
    let scalers = FakeAutoscalers::default();
    scalers.add_hpa("shop", "orders-hpa", "orders-consumer", Some(2), 10);
    let h = start(&files, fake_kube(), &scalers, |_| {}).await;
    h.prom.set_lag("prod", "orders", 3500.0);
    // The HPA controller updates the object twice between our read and our write.
    scalers.race_writes(2);
    let (code, result) = post(&h, "firing", "fp1", "orders").await;
    assert_eq!(code, 200, "{result}");
    assert_eq!(result["outcome"], "applied", "{result}");
    let patches = scalers.patches();
    let seen: Vec<(u16, Value)> = patches
        .iter()
        .map(|p| (p.status, p.body["metadata"]["resourceVersion"].clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (409, json!("500")),
            (409, json!("501")),
            (200, json!("502"))
        ],
        "each write carries the resourceVersion of a fresh read"
    );
    assert_eq!(
        patches[2].body,
        patch_body(502, "minReplicas", 4, Some("2"))
    );
    // One read to decide, one after each conflict.
    assert_eq!(scalers.object_reads().len(), 3);
    assert_eq!(scalers.min(HPAS, "shop", "orders-hpa"), Some(4));
    assert_eq!(last_audit(&files)["message"], RAISED_2_TO_4);

    // A conflict that never ends: 1 + conflict_retries (3) writes, then failed, retryable.
    let files = self::files();
    let scalers = FakeAutoscalers::default();
    scalers.add_hpa("shop", "orders-hpa", "orders-consumer", Some(2), 10);
    let h = start(&files, fake_kube(), &scalers, |_| {}).await;
    h.prom.set_lag("prod", "orders", 3500.0);
    scalers.race_writes(100);
    let (code, body) = h
        .alerts(&payload(
            "firing",
            vec![lag_alert("firing", "fp1", "prod", "orders", None)],
        ))
        .await;
    assert_eq!(code, 503, "Alertmanager should retry: {body}");
    assert_eq!(body["error"], "unavailable", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("alert fp1 on shop/orders-consumer: kube_conflict (audited as seq "),
        "{body}"
    );
    assert_eq!(scalers.patches().len(), 4);
    assert!(scalers.patches().iter().all(|p| p.status == 409));
    assert_eq!(scalers.min(HPAS, "shop", "orders-hpa"), Some(2));
    assert_eq!(scalers.original(HPAS, "shop", "orders-hpa"), None);
    let record = last_audit(&files);
    assert_eq!(record["action"], "raise_min_replicas", "{record}");
    assert_eq!(record["outcome"], "failed", "{record}");
    assert_eq!(record["reason"], "kube_conflict", "{record}");
    assert_eq!(
        record["message"],
        "raise of minReplicas of HorizontalPodAutoscaler shop/orders-hpa (it scales shop/orders-consumer) from 2 to 4 failed: conflict on horizontalpodautoscalers shop/orders-hpa: Operation cannot be fulfilled on horizontalpodautoscalers \"orders-hpa\": the object has been modified; please apply your changes to the latest version and try again (4 writes, each after a fresh read)",
        "{record}"
    );
    assert_eq!(
        metric(
            &h.metrics().await,
            "medic_actuator_actions_total{action=\"raise_min_replicas\",outcome=\"failed\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn a_refused_write_is_audited_failed_with_the_kube_reason() {
    let files = files();
    let scalers = FakeAutoscalers::default();
    scalers.add_hpa("shop", "orders-hpa", "orders-consumer", Some(2), 10);
    scalers.set_write_fault(Some(403));
    let h = start(&files, fake_kube(), &scalers, |_| {}).await;
    h.prom.set_lag("prod", "orders", 3500.0);
    let (code, result) = post(&h, "firing", "fp1", "orders").await;
    assert_eq!(code, 200, "a retry cannot help: {result}");
    assert_eq!(result["outcome"], "failed", "{result}");
    assert_eq!(result["reason"], "kube_forbidden", "{result}");
    let record = last_audit(&files);
    assert_eq!(
        record["message"],
        "raise of minReplicas of HorizontalPodAutoscaler shop/orders-hpa (it scales shop/orders-consumer) from 2 to 4 failed: forbidden: missing RBAC permission: verb \"patch\" on resource \"horizontalpodautoscalers\" in namespace \"shop\" (group \"autoscaling\"): injected 403 on horizontalpodautoscalers \"orders-hpa\"",
        "{record}"
    );
    assert_eq!(scalers.min(HPAS, "shop", "orders-hpa"), Some(2));
}

#[tokio::test]
async fn dry_run_audits_the_raise_and_writes_nothing() {
    let files = files();
    let scalers = FakeAutoscalers::default();
    scalers.add_hpa("shop", "orders-hpa", "orders-consumer", Some(2), 10);
    let h = start(&files, fake_kube(), &scalers, |c| c.dry_run = true).await;
    h.prom.set_lag("prod", "orders", 3500.0);
    let (code, result) = post(&h, "firing", "fp1", "orders").await;
    assert_eq!(code, 200, "{result}");
    assert_eq!(result["outcome"], "dry_run", "{result}");
    assert_eq!(result["action"], "raise_min_replicas", "{result}");
    let record = last_audit(&files);
    assert_eq!(record["dry_run"], true, "{record}");
    assert_eq!(
        record["message"],
        format!("dry run: would raise {}", &RAISED_2_TO_4["raised ".len()..]),
        "{record}"
    );
    assert!(scalers.patches().is_empty(), "{:?}", scalers.patches());
    assert!(
        h.kube.writes().is_empty(),
        "no claim: {:?}",
        h.kube.writes()
    );
    assert_eq!(scalers.min(HPAS, "shop", "orders-hpa"), Some(2));
    assert_eq!(scalers.original(HPAS, "shop", "orders-hpa"), None);
    // The in-memory cooldown holds the next dry run, as for a scale.
    h.clock.store(T0 + 30, Ordering::SeqCst);
    h.app.api.engine.reevaluate().await.unwrap();
    assert_eq!(last_audit(&files)["reason"], "cooldown");
}

#[tokio::test]
async fn duplicates_and_pause_are_skipped_as_for_a_scale() {
    let files = files();
    let scalers = FakeAutoscalers::default();
    scalers.add_hpa("shop", "orders-hpa", "orders-consumer", Some(2), 10);
    let h = start(&files, fake_kube(), &scalers, |_| {}).await;
    h.prom.set_lag("prod", "orders", 9000.0);
    let (_, result) = post(&h, "firing", "fp1", "orders").await;
    assert_eq!(result["outcome"], "applied", "{result}");
    // The same delivery again (an Alertmanager retry, or its HA peer), after the up cooldown.
    h.clock.store(T0 + 61, Ordering::SeqCst);
    let (_, result) = post(&h, "firing", "fp1", "orders").await;
    assert_eq!(result["reason"], "duplicate", "{result}");
    let (code, _) = h
        .request(
            "POST",
            "/api/v1/pause",
            Some(&format!("Bearer {TOKEN}")),
            b"",
        )
        .await;
    assert_eq!(code, 200);
    let (_, result) = post(&h, "firing", "fp2", "orders").await;
    assert_eq!(result["reason"], "paused", "{result}");
    assert_eq!(last_audit(&files)["message"], "actuator is paused");
    assert_eq!(scalers.patches().len(), 1, "{:?}", scalers.patches());
    assert_eq!(scalers.min(HPAS, "shop", "orders-hpa"), Some(4));
}

#[tokio::test]
async fn an_unparsable_original_changes_nothing() {
    let files = files();
    let scalers = FakeAutoscalers::default();
    scalers.add_hpa("shop", "orders-hpa", "orders-consumer", Some(2), 10);
    scalers.annotate(HPAS, "shop", "orders-hpa", ORIGINAL, "two");
    let h = start(&files, fake_kube(), &scalers, |_| {}).await;
    h.prom.set_lag("prod", "orders", 9000.0);
    let (code, result) = post(&h, "firing", "fp1", "orders").await;
    assert_eq!(code, 200, "{result}");
    assert_eq!(result["outcome"], "failed", "{result}");
    assert_eq!(
        result["reason"], "original_min_replicas_invalid",
        "{result}"
    );
    assert_eq!(
        last_audit(&files)["message"],
        "HorizontalPodAutoscaler shop/orders-hpa (it scales shop/orders-consumer): annotation kafka-medic.io/original-min-replicas is \"two\", not a replica count; not changing its minReplicas 2 (fix or remove the annotation)"
    );
    assert!(scalers.patches().is_empty());
    assert!(
        h.kube.writes().is_empty(),
        "no claim: {:?}",
        h.kube.writes()
    );
}

#[tokio::test]
async fn refuse_the_default_never_reads_nor_writes_the_autoscaler() {
    let files = files();
    let scalers = FakeAutoscalers::default();
    scalers.add_hpa("billing", "billing-hpa", "billing-consumer", Some(1), 10);
    let h = start(&files, fake_kube(), &scalers, |_| {}).await;
    h.prom.set_lag("prod", "billing", 9000.0);
    let (code, result) = post(&h, "firing", "fp9", "billing").await;
    assert_eq!(code, 200, "{result}");
    assert_eq!(result["reason"], "managed_by_autoscaler", "{result}");
    assert!(
        last_audit(&files)["message"]
            .as_str()
            .unwrap()
            .starts_with("HorizontalPodAutoscaler billing/billing-hpa scales billing/billing-consumer: not changing its replicas"),
        "{}",
        last_audit(&files)
    );
    assert!(scalers.patches().is_empty());
    assert!(
        scalers.object_reads().is_empty(),
        "{:?}",
        scalers.requests()
    );
    assert!(h.kube.writes().is_empty(), "{:?}", h.kube.writes());
    assert_eq!(scalers.min(HPAS, "billing", "billing-hpa"), Some(1));
}

#[tokio::test]
async fn raise_min_replicas_without_an_autoscaler_scales_the_deployment() {
    let files = files();
    let scalers = FakeAutoscalers::default();
    // An HPA in the namespace, on another Deployment.
    scalers.add_hpa("shop", "payments-hpa", "payments-consumer", Some(2), 10);
    let h = start(&files, fake_kube(), &scalers, |_| {}).await;
    h.prom.set_lag("prod", "orders", 3500.0);
    let (_, result) = post(&h, "firing", "fp1", "orders").await;
    assert_eq!(result["action"], "scale_up", "{result}");
    assert_eq!(result["outcome"], "applied", "{result}");
    assert_eq!(h.kube.replicas("shop", "orders-consumer"), 4);
    assert!(scalers.patches().is_empty());
    assert_eq!(scalers.min(HPAS, "shop", "payments-hpa"), Some(2));
}

#[tokio::test]
async fn a_conflicting_cooldown_claim_is_read_and_decided_again() {
    let files = files();
    let scalers = FakeAutoscalers::default();
    scalers.add_hpa("shop", "orders-hpa", "orders-consumer", Some(2), 10);
    let kube = fake_kube();
    // Another writer changes the Deployment between our read and our claim.
    kube.state.lock().unwrap().claim_races = 1;
    let h = start(&files, kube, &scalers, |_| {}).await;
    h.prom.set_lag("prod", "orders", 3500.0);
    let (_, result) = post(&h, "firing", "fp1", "orders").await;
    assert_eq!(result["outcome"], "applied", "{result}");
    let claims: Vec<Value> = h
        .kube
        .writes()
        .iter()
        .map(|w| w.body["metadata"]["resourceVersion"].clone())
        .collect();
    assert_eq!(
        claims,
        vec![json!("100"), json!("101")],
        "{:?}",
        h.kube.writes()
    );
    assert_eq!(scalers.patches().len(), 1, "{:?}", scalers.patches());
    assert_eq!(scalers.min(HPAS, "shop", "orders-hpa"), Some(4));
    assert_eq!(last_audit(&files)["message"], RAISED_2_TO_4);
}

#[tokio::test]
async fn an_autoscaler_deleted_since_it_was_listed_is_audited_not_found() {
    let files = files();
    let scalers = FakeAutoscalers::default();
    scalers.add_hpa("shop", "orders-hpa", "orders-consumer", Some(2), 10);
    // The start-up check lists it (cached for autoscaler_cache_ttl), then it is deleted.
    let h = start(&files, fake_kube(), &scalers, |_| {}).await;
    scalers.remove(HPAS, "shop", "orders-hpa");
    h.prom.set_lag("prod", "orders", 3500.0);
    let (code, result) = post(&h, "firing", "fp1", "orders").await;
    assert_eq!(code, 200, "{result}");
    assert_eq!(result["outcome"], "failed", "{result}");
    assert_eq!(result["reason"], "kube_not_found", "{result}");
    assert_eq!(
        last_audit(&files)["message"],
        "cannot read HorizontalPodAutoscaler shop/orders-hpa (it scales shop/orders-consumer) to change its minReplicas: not found (deleted since it was listed?)"
    );
    let reads = scalers.object_reads();
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!((reads[0].path.as_str(), reads[0].status), (HPA_PATH, 404));
    assert!(scalers.patches().is_empty());
    assert!(
        h.kube.writes().is_empty(),
        "no claim: {:?}",
        h.kube.writes()
    );
}
