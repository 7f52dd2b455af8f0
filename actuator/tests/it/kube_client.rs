//! The production Kubernetes client (no `kubernetes.api_url`: KUBECONFIG or in-cluster) gets
//! the same settings as the tested one: kube's own retry off, so the API sees exactly
//! `kubernetes.retry_attempts` attempts per request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::process::Running;
use support::*;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const DEPLOY: &str = "/apis/apps/v1/namespaces/shop/deployments/orders-consumer";
const SCALE: &str = "/apis/apps/v1/namespaces/shop/deployments/orders-consumer/scale";
const ATTEMPTS: usize = 3;

fn unavailable() -> ResponseTemplate {
    ResponseTemplate::new(503).set_body_json(json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "etcd is sad", "reason": "ServiceUnavailable", "code": 503
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubeconfig_client_retries_only_as_configured() {
    let files = Files::new();
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(DEPLOY))
        .respond_with(unavailable())
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(SCALE))
        .respond_with(unavailable())
        .mount(&server)
        .await;
    let kubeconfig = files.path("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{}\"}}\nusers:\n- name: medic\n  user: {{token: not-checked}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: medic, namespace: shop}}\ncurrent-context: fake\n",
            server.uri()
        ),
    )
    .unwrap();
    // No kubernetes.api_url: the client comes from KUBECONFIG, as in production.
    let config = files.path("actuator.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\npolicies_file: {}\ninstance: kubeconfig-test\nauth: {{bearer_token_file: {}}}\naudit: {{path: {}}}\nkubernetes: {{retry_attempts: {ATTEMPTS}, retry_backoff: 10ms, request_timeout: 5s}}\n",
            files.path("policies.yaml").display(),
            files.path("token").display(),
            files.audit_path().display(),
        ),
    )
    .unwrap();
    let run = Running::start_with(&[], &[("KUBECONFIG", kubeconfig.as_path())], &config);

    // kube's own retry (if on) would keep the request going for minutes: bound the wait and
    // judge by what the API saw.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let answer = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .post(run.url("/api/v1/alerts"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(payload(
            "firing",
            vec![lag_alert("firing", "fp1", "prod", "orders", Some(9000))],
        ))
        .send()
        .await;
    let seen = |p: &str| {
        let p = p.to_string();
        let server = &server;
        async move {
            server
                .received_requests()
                .await
                .unwrap_or_default()
                .iter()
                .filter(|r| r.method.as_str() == "GET" && r.url.path() == p)
                .count()
        }
    };
    let (meta, scale) = (seen(DEPLOY).await, seen(SCALE).await);
    // read() sends both GETs at once and stops at the first failure, so the other one may be
    // cut short before its last attempt; neither may exceed the configured attempts.
    assert!(
        meta <= ATTEMPTS && scale <= ATTEMPTS && meta.max(scale) == ATTEMPTS,
        "expected {ATTEMPTS} attempts per request, the API saw {meta} GETs of the Deployment and {scale} of its scale\n{}",
        run.dump()
    );
    let answer = answer.unwrap_or_else(|e| panic!("webhook: {e}\n{}", run.dump()));
    assert_eq!(answer.status().as_u16(), 503, "{}", run.dump());

    // The audit record of the failure (polled: it is durable before the answer, but be lenient).
    let deadline = Instant::now() + Duration::from_secs(30);
    let record = loop {
        let lines = audit_lines(&files.audit_path());
        if let Some(r) = lines.into_iter().find(|r| r["outcome"] == "failed") {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no failed audit record\n{}",
            run.dump()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(record["reason"], "kube_unavailable", "{record}");
    assert_eq!(record["target"], "shop/orders-consumer", "{record}");
    let message = record["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&format!("after {ATTEMPTS} attempts"))
            && message.contains("HTTP 503: etcd is sad"),
        "{record}"
    );
}
