//! Two real Alertmanagers (HA pair, as Debian's prometheus-alertmanager) deliver the same alert
//! to the real medic-actuator binary with a bearer token from `credentials_file`: one PATCH, the
//! second delivery audited as a duplicate; then the resolved notifications arrive and are audited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

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
        Self::start_with(
            files,
            name,
            &format!(
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
    }

    fn start_with(files: &Files, name: &str, config_text: &str) -> Self {
        let dir = files.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("alertmanager.yml");
        std::fs::write(&config, config_text).unwrap();
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

    async fn post_alerts(&self, c: &reqwest::Client, alerts: &Value) {
        let r = c
            .post(format!("{}/api/v2/alerts", self.url))
            .json(alerts)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", self.dump());
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

/// The bodies the capture server received, in order.
async fn received(hook: &wiremock::MockServer) -> Vec<Vec<u8>> {
    hook.received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.body)
        .collect()
}

/// Where the recorded Alertmanager payloads live (read by `src/alert.rs`'s tests).
fn recordings() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/alertmanager")
}

/// A payload with what changes from run to run (Alertmanager's own URL and port) blanked.
fn stable(body: &[u8]) -> Value {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    v["externalURL"] = json!("<alertmanager>");
    v
}

/// The alerts of the recordings, as Prometheus would post them: the lag alert on its own group,
/// and four alerts of cluster `east` (three broker alerts and one the actuator ignores) grouped
/// in one notification. `ends` set resolves them.
fn recorded_alerts(ends: Option<&str>) -> (Value, Value) {
    const STARTS: &str = "2026-11-22T03:32:35.536Z";
    let alert = |labels: Value, annotations: Value| {
        let mut a = json!({
            "labels": labels,
            "annotations": annotations,
            "startsAt": STARTS,
            "generatorURL": "http://prometheus:9090/graph?g0.expr=medic&g0.tab=1",
        });
        if let Some(e) = ends {
            a["endsAt"] = json!(e);
        }
        a
    };
    let lag = json!([alert(
        json!({"alertname": "KafkaConsumerLagPersistent", "cluster": "prod", "consumergroup": "orders", "severity": "warning"}),
        json!({"summary": "Consumer group orders lags", "description": "lag 9000 offsets", "runbook_url": "https://example.com/runbook#kafkaconsumerlagpersistent", "lag_offsets": "9000"}),
    )]);
    let mut brokers = vec![alert(
        json!({"alertname": "KafkaBrokerDown", "cluster": "east", "broker": "1", "severity": "critical"}),
        json!({"summary": "Broker 1 is down", "runbook_url": "https://example.com/runbook#kafkabrokerdown"}),
    )];
    if ends.is_none() {
        brokers.extend([
            alert(
                json!({"alertname": "KafkaBrokerOverloaded", "cluster": "east", "broker": "2", "severity": "warning"}),
                json!({"summary": "Broker 2 is overloaded", "runbook_url": "https://example.com/runbook#kafkabrokeroverloaded"}),
            ),
            alert(
                json!({"alertname": "KafkaBrokerDiskPressure", "cluster": "east", "broker": "3", "path": "/var/lib/kafka/data", "severity": "warning"}),
                json!({"summary": "Broker 3 disk fills", "runbook_url": "https://example.com/runbook#kafkabrokerdiskpressure"}),
            ),
            alert(
                json!({"alertname": "KafkaMedicMassFailure", "cluster": "east", "severity": "critical"}),
                json!({"summary": "Many brokers failing", "runbook_url": "https://example.com/runbook#kafkamedicmassfailure"}),
            ),
        ]);
    }
    (lag, Value::Array(brokers))
}

/// The payloads under `tests/data/alertmanager/` are what the real Alertmanager sends for these
/// alerts: firing and resolved, a single alert and a group of four, a group with one alert
/// resolved. The test fails when Alertmanager's output drifts from the recordings. To record
/// them again (e.g. after an Alertmanager upgrade), run
/// `RECORD=1 cargo test -p medic-actuator --test it alertmanager::recorded_payloads`
/// and commit the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_payloads_are_what_alertmanager_sends() {
    use wiremock::matchers::{method, path};
    let record = std::env::var_os("RECORD").is_some_and(|v| v == "1");
    let files = Files::new();
    let hook = wiremock::MockServer::start().await;
    wiremock::Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&hook)
        .await;
    let am = Alertmanager::start_with(
        &files,
        "am",
        &format!(
            r#"route:
  receiver: medic
  group_by: [alertname, cluster, consumergroup, broker]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - receiver: medic
      matchers: ['cluster="east"']
      group_by: [cluster]
receivers:
  - name: medic
    webhook_configs:
      - url: {}/hook
        send_resolved: true
"#,
            hook.uri()
        ),
    );
    let c = client();
    am.wait_ready(&c).await;
    // Waits for a notification matching `pick`; its raw body.
    let wait = |what: &'static str, pick: fn(&Value) -> bool| {
        let hook = &hook;
        let am = &am;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let bodies = received(hook).await;
                if let Some(b) = bodies.iter().find(|b| pick(&stable(b))) {
                    return b.clone();
                }
                let seen: Vec<String> = bodies
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect();
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {what}; received: {seen:#?}\n{}",
                    am.dump()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let count = |v: &Value, status: &str| {
        v["alerts"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|x| x["status"] == status).count())
    };

    let (lag, brokers) = recorded_alerts(None);
    am.post_alerts(&c, &lag).await;
    am.post_alerts(&c, &brokers).await;
    let lag_firing = wait("the lag alert firing", |v| {
        v["commonLabels"]["consumergroup"] == "orders" && v["status"] == "firing"
    })
    .await;
    let brokers_firing = wait("the four east alerts firing", |v| {
        v["groupLabels"]["cluster"] == "east"
            && v["alerts"].as_array().is_some_and(|a| a.len() == 4)
    })
    .await;
    // Resolve the lag alert and broker 1's: endsAt in the past.
    let (lag, brokers) = recorded_alerts(Some("2026-11-22T03:34:35.536Z"));
    am.post_alerts(&c, &lag).await;
    am.post_alerts(&c, &brokers).await;
    let lag_resolved = wait("the lag alert resolved", |v| {
        v["commonLabels"]["consumergroup"] == "orders" && v["status"] == "resolved"
    })
    .await;
    let brokers_one_resolved = wait("the east group with broker 1 resolved", |v| {
        v["groupLabels"]["cluster"] == "east"
            && v["alerts"].as_array().is_some_and(|a| {
                a.iter().filter(|x| x["status"] == "resolved").count() == 1 && a.len() == 4
            })
    })
    .await;
    let got = [
        ("lag-firing.json", lag_firing),
        ("lag-resolved.json", lag_resolved),
        ("brokers-grouped-firing.json", brokers_firing),
        ("brokers-grouped-one-resolved.json", brokers_one_resolved),
    ];
    // What the recordings are meant to show, checked whether recording or not.
    let v = stable(&got[3].1);
    assert_eq!(
        (count(&v, "firing"), count(&v, "resolved")),
        (3, 1),
        "{v:#}"
    );
    assert_eq!(
        v["status"], "firing",
        "a group with one firing alert is firing"
    );
    let dir = recordings();
    for (name, body) in &got {
        let file = dir.join(name);
        if record {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&file, body).unwrap();
            continue;
        }
        let want = std::fs::read(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (RECORD=1 records it)", file.display()));
        assert_eq!(
            stable(body),
            stable(&want),
            "{} differs from what Alertmanager sends now; if the change is expected, re-record with RECORD=1",
            file.display()
        );
    }
}
