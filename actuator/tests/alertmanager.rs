//! Two real Alertmanagers (HA pair, as Debian's prometheus-alertmanager) deliver the same alert
//! to the real medic-actuator binary with a bearer token from `credentials_file`: one PATCH, the
//! second delivery audited as a duplicate; then the resolved notifications arrive and are audited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::process::*;
use support::*;

struct Alertmanager {
    child: Child,
    url: String,
    log: std::path::PathBuf,
    cmd: String,
}

impl Alertmanager {
    fn start(files: &Files, name: &str, webhook: &str) -> Self {
        let dir = files.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                r#"route:
  receiver: medic
  group_by: [alertname, cluster, consumergroup]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: medic
    webhook_configs:
      - url: {webhook}
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: {}
"#,
                files.path("token").display()
            ),
        )
        .unwrap();
        // A free port: bind 0, read it, release it for Alertmanager.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("alertmanager.log");
        let args = [
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".to_string(),
        ];
        let cmd = format!("prometheus-alertmanager {}", args.join(" "));
        let child = Command::new("prometheus-alertmanager")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{cmd}: {e} (scripts/install-deps.sh installs prometheus-alertmanager)")
            });
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            cmd,
        }
    }

    fn dump(&self) -> String {
        format!(
            "command: {}\nlog:\n{}",
            self.cmd,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    async fn wait_ready(&self, c: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = c.get(format!("{}/-/ready", self.url)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "alertmanager not ready\n{}",
                self.dump()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn post_alert(&self, c: &reqwest::Client, starts: &str, ends: &str, lag: u64) {
        let body = json!([{
            "labels": {"alertname": "KafkaConsumerLagPersistent", "cluster": "prod", "consumergroup": "orders", "severity": "warning"},
            "annotations": {"summary": "lag", "description": "lag", "runbook_url": "http://r", "lag_offsets": lag.to_string()},
            "startsAt": starts,
            "endsAt": ends,
            "generatorURL": "http://prometheus/graph"
        }]);
        let r = c
            .post(format!("{}/api/v2/alerts", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", self.dump());
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for<F: Fn(&[Value]) -> bool>(
    files: &Files,
    what: &str,
    ok: F,
    dumps: &dyn Fn() -> String,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = audit_lines(&files.audit_path());
        if ok(&lines) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; audit: {lines:#?}\n{}",
            dumps()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_real_alertmanagers_deliver_once_and_resolve() {
    let files = Files::new();
    let kube = FakeKube::default();
    kube.add("shop", "orders-consumer", 2);
    let server = kube.start().await;
    let actuator = Running::start(&write_config(&files, &server.uri(), ""));
    let webhook = actuator.url("/api/v1/alerts");
    let am1 = Alertmanager::start(&files, "am1", &webhook);
    let am2 = Alertmanager::start(&files, "am2", &webhook);
    let c = client();
    am1.wait_ready(&c).await;
    am2.wait_ready(&c).await;
    let dumps = || format!("{}\n{}\n{}", actuator.dump(), am1.dump(), am2.dump());

    // Prometheus would send the same alert, with the same startsAt, to both Alertmanagers.
    let starts = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(60))
        .unwrap();
    let ends = starts
        .checked_add(jiff::SignedDuration::from_secs(3600))
        .unwrap();
    am1.post_alert(&c, &starts.to_string(), &ends.to_string(), 9000)
        .await;
    am2.post_alert(&c, &starts.to_string(), &ends.to_string(), 9000)
        .await;
    let lines = wait_for(&files, "two firing deliveries", |l| l.len() >= 2, &dumps).await;
    let mut outcomes: Vec<String> = lines
        .iter()
        .take(2)
        .map(|r| {
            format!(
                "{}/{}",
                r["outcome"].as_str().unwrap(),
                r["reason"].as_str().unwrap_or("-")
            )
        })
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        vec!["applied/-", "skipped/duplicate"],
        "{}",
        dumps()
    );
    assert_eq!(
        lines[0]["fingerprint"], lines[1]["fingerprint"],
        "same alert from both"
    );
    assert_eq!(lines[0]["lag_source"], "annotation");
    assert_eq!(kube.scale_writes().len(), 1);
    assert_eq!(
        kube.scale_writes()[0].body,
        json!({"spec": {"replicas": 4}})
    );

    // The alert ends: both send resolved. The first is a scale-down held by the 5 m down
    // cooldown, the second a duplicate of it; nothing is patched.
    let now = jiff::Timestamp::now().to_string();
    am1.post_alert(&c, &starts.to_string(), &now, 100).await;
    am2.post_alert(&c, &starts.to_string(), &now, 100).await;
    let lines = wait_for(
        &files,
        "two resolved deliveries",
        |l| l.iter().filter(|r| r["alert_status"] == "resolved").count() >= 2,
        &dumps,
    )
    .await;
    let mut resolved: Vec<String> = lines
        .iter()
        .filter(|r| r["alert_status"] == "resolved")
        .map(|r| r["reason"].as_str().unwrap_or("-").to_string())
        .collect();
    resolved.sort();
    assert_eq!(resolved, vec!["cooldown", "duplicate"], "{}", dumps());
    assert_eq!(kube.scale_writes().len(), 1);
    assert_eq!(kube.replicas("shop", "orders-consumer"), 4);
}
