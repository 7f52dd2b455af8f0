//! Another autoscaler owns the Deployment: the actuator does not fight it. A
//! HorizontalPodAutoscaler or KEDA ScaledObject whose scaleTargetRef is the policy's Deployment
//! means no claim, no PATCH, and an audit record `skipped/managed_by_autoscaler` naming it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use jiff::Timestamp;
use medic_actuator::{http::routes, App, Config};
use medic_e2e::fake_kube::FakeKube as Kube;
use serde_json::Value;
use support::process::{write_config, Running};
use support::*;

const HPA_LIST: &str = "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers";

/// The fake API runs on its own runtime (started and dropped outside this one).
fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn kube() -> Kube {
    let k = Kube::start();
    k.add("shop", "orders-consumer", 2);
    k.add("billing", "billing-consumer", 1);
    k
}

async fn app(files: &Files, kube: &Kube) -> App {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        policies_file: Some(files.path("policies.yaml")),
        instance: Some("autoscaler-test".into()),
        ..Config::default()
    };
    c.auth.bearer_token_file = Some(files.path("token"));
    c.audit.path = files.audit_path();
    c.kubernetes.api_url = Some(kube.url());
    c.kubernetes.retry_attempts = 2;
    c.kubernetes.retry_backoff = std::time::Duration::from_millis(5);
    App::build_with_clock(
        c,
        &BTreeMap::new(),
        Arc::new(|| Timestamp::from_second(1_800_000_000).unwrap()),
    )
    .await
    .unwrap()
}

/// POST one firing lag alert for prod/orders (lag 9000: 2 -> 4 replicas unless held).
async fn alert(app: &App, fp: &str) -> (u16, Value) {
    let body = payload(
        "firing",
        vec![lag_alert("firing", fp, "prod", "orders", Some(9000))],
    );
    let resp = warp::test::request()
        .method("POST")
        .path("/api/v1/alerts")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body)
        .reply(&routes(app.api.clone()))
        .await;
    let v: Value = serde_json::from_slice(resp.body()).unwrap_or(Value::Null);
    (resp.status().as_u16(), v["results"][0].clone())
}

fn last_audit(files: &Files) -> Value {
    audit_lines(&files.audit_path())
        .pop()
        .expect("an audit record")
}

fn hpa_lists(kube: &Kube) -> usize {
    kube.autoscaler_lists()
        .iter()
        .filter(|r| r.path == HPA_LIST)
        .count()
}

#[test]
fn a_deployment_with_an_hpa_gets_no_patch_and_an_audited_skip() {
    let files = Files::new();
    let kube = kube();
    kube.add_hpa("shop", "orders-hpa", "Deployment", "orders-consumer");
    run(async {
        let app = app(&files, &kube).await;
        for fp in ["fp1", "fp2"] {
            let (status, result) = alert(&app, fp).await;
            assert_eq!(status, 200, "{result}");
            assert_eq!(result["outcome"], "skipped", "{result}");
            assert_eq!(result["reason"], "managed_by_autoscaler", "{result}");
            let record = last_audit(&files);
            assert_eq!(record["outcome"], "skipped", "{record}");
            assert_eq!(record["reason"], "managed_by_autoscaler", "{record}");
            assert_eq!(record["target"], "shop/orders-consumer", "{record}");
            let message = record["message"].as_str().unwrap();
            assert!(
                message.starts_with(
                    "HorizontalPodAutoscaler shop/orders-hpa scales shop/orders-consumer"
                ),
                "{record}"
            );
        }
    });
    assert!(kube.patches().is_empty(), "{}", kube.describe());
    assert_eq!(kube.annotation("shop", "orders-consumer"), None);
    assert_eq!(kube.replicas("shop", "orders-consumer"), 2);
    // Listed once (the start-up check), then cached for both webhooks.
    assert_eq!(hpa_lists(&kube), 1, "{}", kube.describe());
}

#[test]
fn a_deployment_with_a_scaled_object_gets_no_patch() {
    let files = Files::new();
    let kube = kube();
    kube.add_hpa("shop", "payments-hpa", "Deployment", "payments-consumer");
    kube.add_scaled_object("shop", "orders-so", "orders-consumer");
    run(async {
        let app = app(&files, &kube).await;
        let (status, result) = alert(&app, "fp1").await;
        assert_eq!(status, 200, "{result}");
        assert_eq!(result["reason"], "managed_by_autoscaler", "{result}");
        let record = last_audit(&files);
        assert_eq!(record["reason"], "managed_by_autoscaler", "{record}");
        assert!(
            record["message"]
                .as_str()
                .unwrap()
                .starts_with("ScaledObject shop/orders-so scales shop/orders-consumer"),
            "{record}"
        );
    });
    assert!(kube.patches().is_empty(), "{}", kube.describe());
    assert_eq!(kube.replicas("shop", "orders-consumer"), 2);
}

#[test]
fn an_unmanaged_deployment_still_scales_without_keda() {
    let files = Files::new();
    let kube = kube();
    kube.set_keda_installed(false);
    // Neither targets the Deployment shop/orders-consumer.
    kube.add_hpa("shop", "sts-hpa", "StatefulSet", "orders-consumer");
    kube.add_hpa("shop", "payments-hpa", "Deployment", "payments-consumer");
    run(async {
        let app = app(&files, &kube).await;
        let (status, result) = alert(&app, "fp1").await;
        assert_eq!(status, 200, "{result}");
        assert_eq!(result["outcome"], "applied", "{result}");
        assert_eq!(last_audit(&files)["to_replicas"], 4);
    });
    let scales = kube.scale_patches("shop", "orders-consumer");
    assert_eq!(scales.len(), 1, "{}", kube.describe());
    assert_eq!(scales[0].replicas(), Some(4));
    assert_eq!(kube.replicas("shop", "orders-consumer"), 4);
}

#[test]
fn a_forbidden_hpa_list_does_not_scale_and_names_the_rbac_verb() {
    let files = Files::new();
    let kube = kube();
    kube.set_hpa_list_fault(Some(403));
    run(async {
        let app = app(&files, &kube).await;
        let (_, result) = alert(&app, "fp1").await;
        assert_eq!(result["outcome"], "failed", "{result}");
        assert_eq!(result["reason"], "autoscaler_check_failed", "{result}");
        let record = last_audit(&files);
        assert_eq!(record["reason"], "autoscaler_check_failed", "{record}");
        let message = record["message"].as_str().unwrap();
        assert!(
            message.starts_with("not scaling shop/orders-consumer: cannot tell whether an autoscaler manages it: forbidden: missing RBAC permission: verb \"list\" on resource \"horizontalpodautoscalers\" in namespace \"shop\" (group \"autoscaling\")"),
            "{record}"
        );
    });
    assert!(kube.patches().is_empty(), "{}", kube.describe());
}

#[test]
fn an_unavailable_hpa_list_is_retryable_and_not_cached() {
    let files = Files::new();
    let kube = kube();
    kube.set_hpa_list_fault(Some(503));
    run(async {
        let app = app(&files, &kube).await;
        let (status, _) = alert(&app, "fp1").await;
        let record = last_audit(&files);
        assert_eq!(status, 503, "Alertmanager should retry: {record}");
        assert_eq!(record["outcome"], "failed", "{record}");
        assert_eq!(record["reason"], "autoscaler_check_failed", "{record}");
        assert!(
            record["message"]
                .as_str()
                .unwrap()
                .contains("kubernetes API unavailable after 2 attempts: HTTP 503"),
            "{record}"
        );
        assert!(kube.patches().is_empty(), "{}", kube.describe());
        // The API recovers; Alertmanager's retry of the same delivery now scales.
        kube.set_hpa_list_fault(None);
        let (status, result) = alert(&app, "fp1").await;
        assert_eq!(status, 200, "{result}");
        assert_eq!(result["outcome"], "applied", "{result}");
    });
    assert_eq!(kube.scale_patches("shop", "orders-consumer").len(), 1);
}

#[test]
fn start_up_warns_about_each_managed_policy_target() {
    let files = Files::new();
    let kube = kube();
    kube.add_hpa("shop", "orders-hpa", "Deployment", "orders-consumer");
    let config = write_config(&files, &kube.url(), "");
    let running = Running::start(&config);
    let log = running.log.lock().unwrap().clone();
    let warnings: Vec<Value> = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["autoscaler"].is_string())
        .collect();
    assert_eq!(warnings.len(), 1, "{}", running.dump());
    let w = &warnings[0];
    assert_eq!(w["level"], "WARN", "{w}");
    assert_eq!(w["fields"]["deployment"], "shop/orders-consumer", "{w}");
    assert_eq!(
        w["fields"]["autoscaler"], "HorizontalPodAutoscaler shop/orders-hpa",
        "{w}"
    );
    drop(running);
}
