//! The production Kubernetes client (no `kubernetes.api_url`: KUBECONFIG or in-cluster) gets
//! the same settings as the tested one: kube's own retry off, so the API sees exactly
//! `kubernetes.retry_attempts` attempts per request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const DEPLOY: &str = "/apis/apps/v1/namespaces/shop/deployments/orders-consumer";
const SCALE: &str = "/apis/apps/v1/namespaces/shop/deployments/orders-consumer/scale";
const ATTEMPTS: usize = 3;

/// The actuator binary with KUBECONFIG set, its log captured; killed on drop.
struct Actuator {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
    cmd: String,
}

impl Actuator {
    fn start(config: &std::path::Path, kubeconfig: &std::path::Path) -> Self {
        let bin = env!("CARGO_BIN_EXE_medic-actuator");
        let cmd = format!(
            "KUBECONFIG={} {bin} --config {} --log-format json",
            kubeconfig.display(),
            config.display()
        );
        let mut child = Command::new(bin)
            .args([
                "--config",
                &config.display().to_string(),
                "--log-format",
                "json",
            ])
            .env("KUBECONFIG", kubeconfig)
            // Never the in-cluster config of a CI pod this may run in.
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("medic-actuator listening") {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        let _ = tx.send(v["fields"]["addr"].as_str().unwrap_or("").to_string());
                    }
                }
                l.lock().unwrap().push(line);
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd} did not start listening; log:\n{}",
                log.lock().unwrap().join("\n")
            );
        };
        Self {
            child,
            addr,
            log,
            cmd,
        }
    }

    fn dump(&self) -> String {
        format!(
            "command: {}\nlog:\n{}",
            self.cmd,
            self.log.lock().unwrap().join("\n")
        )
    }
}

impl Drop for Actuator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let run = Actuator::start(&config, &kubeconfig);

    // kube's own retry (if on) would keep the request going for minutes: bound the wait and
    // judge by what the API saw.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let answer = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .post(format!("http://{}/api/v1/alerts", run.addr))
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
