//! Configuration changes without a restart, on the real binary: a ConfigMap-style update of the
//! policy file (a new directory and a `..data` symlink swap) takes effect on the next webhook; a
//! file that does not validate is rejected whole (the old policies keep acting, /healthz shows
//! the error, the counter and the audit say so); SIGHUP reloads too, and a setting that needs a
//! restart is refused, not ignored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support;
use support::configmap::ConfigMapDir;
use support::process::*;
use support::*;

/// The policy file: orders scales shop/orders-consumer with no cooldowns (so every webhook may
/// act) and `max_step`/`max_replicas` as given; billing as `billing_step` says.
fn policies(max_replicas: u32, max_step: u32, billing_step: u32) -> String {
    format!(
        r#"policies:
  - cluster: prod
    consumergroup: orders
    deployment: {{namespace: shop, name: orders-consumer}}
    max_replicas: {max_replicas}
    lag_per_replica: 1000
    max_step: {max_step}
    scale_up_cooldown: 0s
    scale_down_cooldown: 0s
  - cluster: prod
    consumergroup: billing
    deployment: {{namespace: billing, name: billing-consumer}}
    max_step: {billing_step}
"#
    )
}

/// The config file, in the same volume as the policies (as the chart mounts them).
fn actuator_yaml(files: &Files, cm: &Path, kube_url: &str, extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\npolicies_file: {}\ninstance: reload-test\nauth: {{bearer_token_file: {}}}\naudit: {{path: {}, max_bytes: 65536, max_files: 100}}\nkubernetes: {{api_url: \"{kube_url}\", retry_backoff: 10ms}}\nreevaluate_interval: 1h\n{extra}",
        cm.join("policies.yaml").display(),
        files.path("token").display(),
        files.audit_path().display(),
    )
}

struct Setup {
    files: Files,
    kube: FakeKube,
    _kube_server: wiremock::MockServer,
    cm: ConfigMapDir,
    config: String,
    run: Running,
}

async fn start(extra: &str, max_replicas: u32, max_step: u32) -> Setup {
    let files = Files::new();
    let kube = FakeKube::default();
    kube.add("shop", "orders-consumer", 1);
    let kube_server = kube.start().await;
    let dir = files.path("configmap");
    let config = actuator_yaml(&files, &dir, &kube_server.uri(), extra);
    let cm = ConfigMapDir::new(
        &dir,
        &[
            ("actuator.yaml", &config),
            ("policies.yaml", &policies(max_replicas, max_step, 3)),
        ],
    );
    let run = Running::start(&cm.path("actuator.yaml"));
    Setup {
        files,
        kube,
        _kube_server: kube_server,
        cm,
        config,
        run,
    }
}

impl Setup {
    fn update(&mut self, config: &str, policies: &str) {
        self.cm
            .update(&[("actuator.yaml", config), ("policies.yaml", policies)]);
    }

    /// A firing lag alert with a lag of 9000 (desired: 9 replicas); a new fingerprint each time.
    async fn webhook(&self, fp: &str) -> Value {
        let (s, b) = post(
            &client(),
            &self.run,
            payload(
                "firing",
                vec![lag_alert("firing", fp, "prod", "orders", Some(9000))],
            ),
        )
        .await
        .unwrap();
        assert_eq!(s, 200, "{b}\n{}", self.run.dump());
        b
    }

    fn patches(&self) -> Vec<u64> {
        self.kube
            .scale_writes()
            .iter()
            .map(|w| w.body["spec"]["replicas"].as_u64().unwrap())
            .collect()
    }

    fn reload_records(&self) -> Vec<Value> {
        audit_lines(&self.files.audit_path())
            .into_iter()
            .filter(|r| r["action"] == "config_reload")
            .collect()
    }

    fn pid(&self) -> u32 {
        self.run.child.id()
    }
}

fn get(addr: &str, path: &str) -> (u16, String) {
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let r = medic_e2e::http::request(port, "GET", path, &[], b"").unwrap();
    (r.status, r.body)
}

/// Waits (off the async workers) until /healthz reports `result` as the last reload's, `count`
/// times counted; returns the /healthz body.
async fn wait_reload(run: &Running, result: &'static str, count: u64) -> Value {
    let addr = run.addr.clone();
    let dump = run.dump();
    tokio::task::spawn_blocking(move || {
        medic_e2e::wait_until(
            Duration::from_secs(60),
            &format!("reload #{count} {result}\n{dump}"),
            || {
                let (_, metrics) = get(&addr, "/metrics");
                let n = medic_e2e::sample(
                    &metrics,
                    &format!("medic_actuator_config_reload_total{{result=\"{result}\"}}"),
                )?;
                if n < count as f64 {
                    return None;
                }
                let (status, body) = get(&addr, "/healthz");
                assert_eq!(status, 200, "{body}");
                let v: Value = serde_json::from_str(&body).unwrap();
                (v["config"]["last_result"] == result).then_some(v)
            },
        )
    })
    .await
    .unwrap()
}

async fn reloads(run: &Running, result: &str) -> f64 {
    let m = client()
        .get(run.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    medic_e2e::sample(
        &m,
        &format!("medic_actuator_config_reload_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_update_takes_effect_on_the_next_webhook_without_a_restart() {
    let mut s = start("config_watch_interval: 100ms\n", 3, 1).await;
    let pid = s.pid();
    // max_step 1: 1 -> 2.
    let b = s.webhook("a1").await;
    assert_eq!(b["results"][0]["outcome"], "applied", "{b}");
    assert_eq!(s.patches(), vec![2]);

    // The ConfigMap changes: max_replicas 3 -> 5, max_step 1 -> 3.
    let config = s.config.clone();
    s.update(&config, &policies(5, 3, 3));
    let health = wait_reload(&s.run, "applied", 1).await;
    assert!(health["config"]["last_error"].is_null(), "{health}");
    assert_eq!(health["status"], "ok");

    // The next webhook scales with the new values: 2 -> min(2 + 3, 5) = 5 (the old ones: 3).
    let b = s.webhook("a2").await;
    assert_eq!(b["results"][0]["outcome"], "applied", "{b}");
    assert_eq!(s.patches(), vec![2, 5]);
    assert_eq!(s.pid(), pid);
    assert!(s.run.child.try_wait().unwrap().is_none(), "still running");

    let records = s.reload_records();
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    for (field, want) in [
        ("trigger", "reload"),
        ("outcome", "applied"),
        (
            "message",
            "policies reloaded after a change of the files: policy shop/orders-consumer: max_replicas: 3 -> 5, max_step: 1 -> 3",
        ),
    ] {
        assert_eq!(r[field], want, "{field}: {r:#}");
    }
    assert!(r.get("reason").is_none(), "{r:#}");
    // The record comes before the decision that used the new policies.
    let lines = audit_lines(&s.files.audit_path());
    let applied_at = lines
        .iter()
        .position(|l| l["action"] == "config_reload")
        .unwrap();
    let scaled_to_5 = lines
        .iter()
        .position(|l| l["to_replicas"] == 5 && l["outcome"] == "applied")
        .unwrap();
    assert!(applied_at < scaled_to_5, "{lines:#?}");
    assert_eq!(reloads(&s.run, "rejected").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_policy_file_is_rejected_whole_and_the_old_policies_keep_acting() {
    let mut s = start("config_watch_interval: 100ms\n", 10, 1).await;
    s.webhook("a1").await;
    assert_eq!(s.patches(), vec![2]);

    // A valid change for orders (max_step 3) next to an invalid one for billing: nothing of
    // it applies.
    let config = s.config.clone();
    s.update(&config, &policies(10, 3, 0));
    let health = wait_reload(&s.run, "rejected", 1).await;
    assert_eq!(health["status"], "ok", "the process works on: {health}");
    let error = health["config"]["last_error"].as_str().unwrap();
    let problem = format!(
        "policies_file {}: policies[1].max_step: 0 must be at least 1",
        s.cm.path("policies.yaml").display()
    );
    assert!(error.contains(&problem), "{error}");
    assert!(health["config"]["last_applied"].is_null(), "{health}");

    // The old policies act: max_step 1, so 2 -> 3 (with the rejected file it would be 5).
    let b = s.webhook("a2").await;
    assert_eq!(b["results"][0]["outcome"], "applied", "{b}");
    assert_eq!(s.patches(), vec![2, 3]);

    let records = s.reload_records();
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert_eq!(
        (&r["trigger"], &r["outcome"], &r["reason"]),
        (&"reload".into(), &"failed".into(), &"config_invalid".into()),
        "{r:#}"
    );
    let message = r["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "reload after a change of the files rejected, the policies in force stay: invalid configuration"
        ) && message.contains(&problem),
        "{message}"
    );
    assert_eq!(reloads(&s.run, "rejected").await, 1.0);
    assert_eq!(reloads(&s.run, "applied").await, 0.0);
    assert!(
        s.run.dump().contains(&problem)
            && s.run
                .dump()
                .contains("rejected; the policies in force stay"),
        "the error is logged\n{}",
        s.run.dump()
    );

    // Fixed: applied, and /healthz no longer shows an error.
    s.update(&config, &policies(10, 3, 3));
    let health = wait_reload(&s.run, "applied", 1).await;
    assert!(health["config"]["last_error"].is_null(), "{health}");
    let b = s.webhook("a3").await;
    assert_eq!(b["results"][0]["outcome"], "applied", "{b}");
    assert_eq!(s.patches(), vec![2, 3, 6]);
}

fn hangup(run: &Running) {
    let st = Command::new("kill")
        .args(["-HUP", &run.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_setting_that_needs_a_restart_is_refused() {
    // No watcher: only SIGHUP reloads.
    let mut s = start("config_watch_interval: 0s\n", 10, 1).await;
    s.webhook("a1").await;
    assert_eq!(s.patches(), vec![2]);

    let config = s.config.clone();
    s.update(&config, &policies(10, 3, 3));
    hangup(&s.run);
    wait_reload(&s.run, "applied", 1).await;
    let b = s.webhook("a2").await;
    assert_eq!(b["results"][0]["outcome"], "applied", "{b}");
    assert_eq!(s.patches(), vec![2, 5]);
    assert_eq!(
        s.reload_records()[0]["message"],
        "policies reloaded on SIGHUP: policy shop/orders-consumer: max_step: 1 -> 3"
    );

    // A setting read at start only, with a policy change: refused whole, named, not ignored.
    let changed = config.replace("max_files: 100", "max_files: 50") + "body_limit_bytes: 2048\n";
    s.update(&changed, &policies(10, 1, 3));
    hangup(&s.run);
    let health = wait_reload(&s.run, "rejected", 1).await;
    let error = health["config"]["last_error"].as_str().unwrap();
    assert_eq!(
        error,
        "only the policy file's content changes at runtime; these settings need a restart: audit.max_files: 100 -> 50; body_limit_bytes: 1048576 -> 2048"
    );
    let r = s.reload_records().last().cloned().unwrap();
    assert_eq!(r["reason"], "restart_required", "{r:#}");
    assert_eq!(r["outcome"], "failed");
    assert_eq!(
        r["message"],
        format!("reload on SIGHUP rejected, the policies in force stay: {error}")
    );
    // Still max_step 3: 5 -> 8.
    s.webhook("a3").await;
    assert_eq!(s.patches(), vec![2, 5, 8]);

    // Back to the running settings and policies: unchanged, no record, no error.
    s.update(&config, &policies(10, 3, 3));
    hangup(&s.run);
    let health = wait_reload(&s.run, "unchanged", 1).await;
    assert!(health["config"]["last_error"].is_null(), "{health}");
    assert_eq!(s.reload_records().len(), 2, "{:#?}", s.reload_records());
    assert_eq!(
        (
            reloads(&s.run, "applied").await,
            reloads(&s.run, "rejected").await,
            reloads(&s.run, "unchanged").await
        ),
        (1.0, 1.0, 1.0)
    );
}
