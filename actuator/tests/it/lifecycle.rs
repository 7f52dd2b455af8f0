//! Cooldowns across restarts and replicas, re-evaluation, pause, broker holds and Kubernetes
//! failures, through `warp::test` against the fake Kubernetes API and Prometheus.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

use crate::support;

use std::sync::atomic::Ordering;

use serde_json::json;
use support::harness::*;
use support::*;

#[tokio::test]
async fn cooldown_survives_a_restart_and_a_second_replica() {
    let files = Files::new();
    let kube = fake_kube();
    let h = harness_with(&files, kube.clone(), |_| {}).await;
    h.prom.set_lag("prod", "orders", 9000.0);
    let (s, _) = h
        .alerts(&payload(
            "firing",
            vec![lag_alert("firing", "fp1", "prod", "orders", None)],
        ))
        .await;
    assert_eq!(s, 200);
    assert_eq!(h.kube.scale_writes().len(), 1);
    drop(h);

    // The same process restarted (same audit log), 30 s later: a *new* alert delivery for the
    // same group is inside the 60 s up cooldown.
    let h2 = harness_with(&files, kube.clone(), |_| {}).await;
    h2.clock.store(T0 + 30, Ordering::SeqCst);
    h2.prom.set_lag("prod", "orders", 9000.0);
    let (s, b) = h2
        .alerts(&payload(
            "firing",
            vec![lag_alert("firing", "fp2", "prod", "orders", None)],
        ))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["results"][0]["reason"], "cooldown");
    assert_eq!(
        kube.scale_writes().len(),
        1,
        "no PATCH after restart inside cooldown"
    );

    // A second replica with its own, empty audit log sees the cooldown in the annotation.
    let other = Files::new();
    let h3 = harness_with(&other, kube.clone(), |c| {
        c.instance = Some("actuator-b".into())
    })
    .await;
    h3.clock.store(T0 + 40, Ordering::SeqCst);
    h3.prom.set_lag("prod", "orders", 9000.0);
    let (s, b) = h3
        .alerts(&payload(
            "firing",
            vec![lag_alert("firing", "fp3", "prod", "orders", None)],
        ))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["results"][0]["reason"], "cooldown");
    let lines = audit_lines(&other.audit_path());
    assert_eq!(
        lines[0]["message"],
        "scale up to 6 held by cooldown, 20s left"
    );
    assert_eq!(kube.scale_writes().len(), 1);

    // After the cooldown the second replica may act, and the annotation records it.
    h3.clock.store(T0 + 61, Ordering::SeqCst);
    let (_, b) = h3
        .alerts(&payload(
            "firing",
            vec![lag_alert("firing", "fp4", "prod", "orders", None)],
        ))
        .await;
    assert_eq!(b["results"][0]["outcome"], "applied");
    assert_eq!(kube.replicas("shop", "orders-consumer"), 6);
    assert_eq!(
        kube.annotation("shop", "orders-consumer").unwrap()["by"],
        "actuator-b"
    );
}

#[tokio::test]
async fn prometheus_down_falls_back_to_the_annotation() {
    let files = Files::new();
    let h = harness_with(&files, fake_kube(), |c| {
        c.prometheus.url = Some("http://127.0.0.1:1".into());
        c.prometheus.timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let (s, _) = h
        .alerts(&payload(
            "firing",
            vec![lag_alert("firing", "fp1", "prod", "orders", Some(2500))],
        ))
        .await;
    assert_eq!(s, 200);
    let r = &audit_lines(&files.audit_path())[0];
    assert_eq!(r["lag"], 2500);
    assert_eq!(r["lag_source"], "annotation");
    assert_eq!(r["to_replicas"], 3);
    // Without annotation and Prometheus, a firing alert cannot be sized.
    h.advance(3600);
    let (s, b) = h
        .alerts(&payload(
            "firing",
            vec![lag_alert("firing", "fp2", "prod", "orders", None)],
        ))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["results"][0]["reason"], "lag_unknown");
    let r = &audit_lines(&files.audit_path())[1];
    assert_eq!(r["lag_source"], "none");
    assert!(
        r["message"].as_str().unwrap().contains("prometheus query"),
        "{r}"
    );
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "medic_actuator_prometheus_errors_total"),
        2.0,
        "{m}"
    );
}

#[tokio::test]
async fn broker_alerts_hold_scale_downs_and_resolved_never_scales_up() {
    let files = Files::new();
    let kube = fake_kube();
    kube.add("shop", "orders-consumer", 6);
    let h = harness_with(&files, kube, |_| {}).await;
    h.prom.set_lag("prod", "orders", 100.0);
    // A broker alert and the lag alert's resolution arrive in one grouped payload.
    let body = payload(
        "resolved",
        vec![
            lag_alert("resolved", "fpL", "prod", "orders", Some(100)),
            broker_alert("firing", "fpK", "KafkaBrokerDown", "prod"),
        ],
    );
    let (s, b) = h.alerts(&body).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["results"][0]["reason"], "broker_trouble");
    assert!(h.kube.scale_writes().is_empty());
    // Broker resolved: the next resolved delivery steps down by max_step.
    let (s, b) = h
        .alerts(&payload(
            "resolved",
            vec![
                broker_alert("resolved", "fpK", "KafkaBrokerDown", "prod"),
                lag_alert("resolved", "fpL2", "prod", "orders", None),
            ],
        ))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["results"][0]["action"], "scale_down");
    assert_eq!(h.kube.replicas("shop", "orders-consumer"), 4);
    // A broker alert known only to Prometheus (ALERTS) holds too.
    *h.prom.broker_alert.lock().unwrap() = Some("KafkaBrokerOverloaded".into());
    h.advance(3600);
    let (_, b) = h
        .alerts(&payload(
            "resolved",
            vec![lag_alert("resolved", "fpL3", "prod", "orders", None)],
        ))
        .await;
    assert_eq!(b["results"][0]["reason"], "broker_trouble");
    // A resolved alert with high lag does not scale up.
    *h.prom.broker_alert.lock().unwrap() = None;
    h.prom.set_lag("prod", "orders", 50_000.0);
    let (_, b) = h
        .alerts(&payload(
            "resolved",
            vec![lag_alert("resolved", "fpL4", "prod", "orders", None)],
        ))
        .await;
    assert_eq!(b["results"][0]["reason"], "at_desired");
    assert_eq!(h.kube.replicas("shop", "orders-consumer"), 4);
}

#[tokio::test]
async fn pause_and_resume_are_authenticated_audited_and_obeyed() {
    let files = Files::new();
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    h.prom.set_lag("prod", "orders", 9000.0);
    let (s, _) = h.request("POST", "/api/v1/pause", None, b"").await;
    assert_eq!(s, 401);
    let auth = format!("Bearer {TOKEN}");
    let (s, b) = h.request("POST", "/api/v1/pause", Some(&auth), b"").await;
    assert_eq!((s, b), (200, json!({"paused": true, "seq": 1})));
    let (_, b) = h
        .alerts(&payload(
            "firing",
            vec![lag_alert("firing", "fp1", "prod", "orders", None)],
        ))
        .await;
    assert_eq!(b["results"][0]["reason"], "paused");
    assert!(h.kube.writes().is_empty());
    let (_, state) = h.request("GET", "/api/v1/state", Some(&auth), b"").await;
    assert_eq!(state["paused"], true);

    // The pause survives a restart (replayed from the audit log).
    drop(h);
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    h.prom.set_lag("prod", "orders", 9000.0);
    let (_, b) = h
        .alerts(&payload(
            "firing",
            vec![lag_alert("firing", "fp2", "prod", "orders", None)],
        ))
        .await;
    assert_eq!(b["results"][0]["reason"], "paused");
    let (s, _) = h.request("POST", "/api/v1/resume", Some(&auth), b"").await;
    assert_eq!(s, 200);
    let (_, b) = h
        .alerts(&payload(
            "firing",
            vec![lag_alert("firing", "fp3", "prod", "orders", None)],
        ))
        .await;
    assert_eq!(b["results"][0]["outcome"], "applied");
    let actions: Vec<_> = audit_lines(&files.audit_path())
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, vec!["pause", "none", "none", "resume", "scale_up"]);
}

#[tokio::test]
async fn kube_failures_are_audited_and_answered_by_retry_value() {
    let files = Files::new();
    let kube = fake_kube();
    let h = harness_with(&files, kube.clone(), |_| {}).await;
    h.prom.set_lag("prod", "orders", 9000.0);
    // 403 on the scale subresource: audited naming the RBAC verb, answered 200 (retry is useless).
    kube.state
        .lock()
        .unwrap()
        .scale_faults
        .push_back((403, "Forbidden"));
    let (s, b) = h
        .alerts(&payload(
            "firing",
            vec![lag_alert("firing", "fp1", "prod", "orders", None)],
        ))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["results"][0]["reason"], "kube_forbidden");
    let r = &audit_lines(&files.audit_path())[0];
    assert_eq!(r["outcome"], "failed");
    assert!(
        r["message"].as_str().unwrap().starts_with("forbidden: missing RBAC permission: verb \"patch\" on resource \"deployments/scale\" in namespace \"shop\""),
        "{r}"
    );
    // 5xx that outlasts the bounded backoff: 503 so Alertmanager retries; the retry is not a duplicate.
    h.advance(3600);
    kube.state
        .lock()
        .unwrap()
        .scale_faults
        .extend([(503, "ServiceUnavailable"), (503, "ServiceUnavailable")]);
    let body = payload(
        "firing",
        vec![lag_alert("firing", "fp2", "prod", "orders", None)],
    );
    let (s, b) = h.alerts(&body).await;
    assert_eq!(s, 503, "{b}");
    assert_eq!(b["error"], "unavailable");
    assert_eq!(
        audit_lines(&files.audit_path())[1]["reason"],
        "kube_unavailable"
    );
    h.advance(3600);
    let (s, b) = h.alerts(&body).await;
    assert_eq!(s, 200);
    assert_eq!(b["results"][0]["outcome"], "applied");
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "medic_actuator_webhooks_total{result=\"unavailable\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "medic_actuator_decision_reasons_total{reason=\"kube_forbidden\"}"
        ),
        1.0
    );
    assert_eq!(metric(&m, "medic_actuator_kube_requests_total{verb=\"patch\",resource=\"deployments/scale\",code=\"503\"}"), 2.0, "{m}");
}

#[tokio::test]
async fn a_conflicting_claim_is_retried_on_a_fresh_read() {
    let files = Files::new();
    let kube = fake_kube();
    kube.state.lock().unwrap().claim_races = 1;
    let h = harness_with(&files, kube.clone(), |_| {}).await;
    h.prom.set_lag("prod", "orders", 9000.0);
    let (s, b) = h
        .alerts(&payload(
            "firing",
            vec![lag_alert("firing", "fp1", "prod", "orders", None)],
        ))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["results"][0]["outcome"], "applied");
    let claims: Vec<_> = kube
        .writes()
        .into_iter()
        .filter(|w| !w.path.ends_with("/scale"))
        .collect();
    assert_eq!(claims.len(), 2);
    assert_eq!(claims[0].body["metadata"]["resourceVersion"], "100");
    assert_eq!(
        claims[1].body["metadata"]["resourceVersion"], "101",
        "second claim uses the fresh read"
    );
    assert_eq!(kube.scale_writes().len(), 1);
}

#[tokio::test]
async fn firing_alerts_are_reevaluated_and_resolved_ones_settle() {
    let files = Files::new();
    let kube = fake_kube();
    let h = harness_with(&files, kube.clone(), |_| {}).await;
    h.prom.set_lag("prod", "orders", 9000.0);
    h.alerts(&payload(
        "firing",
        vec![lag_alert("firing", "fp1", "prod", "orders", None)],
    ))
    .await;
    assert_eq!(kube.replicas("shop", "orders-consumer"), 4);
    let engine = h.app.api.engine.clone();
    h.advance(30);
    assert_eq!(engine.reevaluate().await.unwrap(), 0, "inside cooldown");
    h.advance(31);
    assert_eq!(engine.reevaluate().await.unwrap(), 1);
    assert_eq!(kube.replicas("shop", "orders-consumer"), 6);
    h.prom.set_lag("prod", "orders", 20_000.0);
    h.advance(61);
    engine.reevaluate().await.unwrap();
    assert_eq!(kube.replicas("shop", "orders-consumer"), 8);
    // Resolved: steps down every scale_down_cooldown until what the lag needs (lag 1500 -> 2).
    h.prom.set_lag("prod", "orders", 1500.0);
    h.advance(301);
    h.alerts(&payload(
        "resolved",
        vec![lag_alert("resolved", "fp1", "prod", "orders", None)],
    ))
    .await;
    assert_eq!(kube.replicas("shop", "orders-consumer"), 6);
    for _ in 0..3 {
        h.advance(301);
        engine.reevaluate().await.unwrap();
    }
    assert_eq!(kube.replicas("shop", "orders-consumer"), 2);
    // At 2 the lag still needs 2 (above min_replicas 1): the alert stays tracked, and when the
    // lag is gone the next round steps down to the floor, min_replicas, and settles.
    h.advance(301);
    engine.reevaluate().await.unwrap();
    assert_eq!(kube.replicas("shop", "orders-consumer"), 2);
    h.prom.set_lag("prod", "orders", 0.0);
    h.advance(301);
    engine.reevaluate().await.unwrap();
    assert_eq!(kube.replicas("shop", "orders-consumer"), 1);
    h.advance(301);
    engine.reevaluate().await.unwrap();
    let (_, state) = h
        .request(
            "GET",
            "/api/v1/state",
            Some(&format!("Bearer {TOKEN}")),
            b"",
        )
        .await;
    let t = state["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "shop/orders-consumer")
        .unwrap()
        .clone();
    assert_eq!(t["tracked_alerts"], json!([]), "settled: no longer tracked");
    assert_eq!(t["last_action"]["to"], 1);
    // Repeated identical skips during re-evaluation are audited once, not every interval.
    let reevals: Vec<_> = audit_lines(&files.audit_path())
        .into_iter()
        .filter(|r| r["trigger"] == "reevaluate")
        .collect();
    let skipped = reevals.iter().filter(|r| r["outcome"] == "skipped").count();
    // cooldown once, at_desired at 2 (lag still draining), at_desired at 1 (settled).
    assert_eq!(skipped, 3, "{reevals:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_request_in_flight_finish_and_audit() {
    let files = Files::new();
    let kube = fake_kube();
    kube.state.lock().unwrap().delay = std::time::Duration::from_millis(400);
    let h = harness_with(&files, kube.clone(), |_| {}).await;
    h.prom.set_lag("prod", "orders", 9000.0);
    let app = std::sync::Arc::new(h.app);
    let listener = app.bind().await.unwrap();
    let url = format!("http://{}/api/v1/alerts", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_app = app.clone();
    let server = tokio::spawn(async move {
        server_app
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let body = payload(
        "firing",
        vec![lag_alert("firing", "fp1", "prod", "orders", None)],
    );
    let request =
        tokio::spawn(async move { client.post(url).bearer_auth(TOKEN).body(body).send().await });
    // Shut down while the decision waits on the (slow) Kubernetes API.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    // serve() returns only after the request in flight was decided, applied and audited.
    server.await.unwrap().unwrap();
    let lines = audit_lines(&files.audit_path());
    assert_eq!(
        lines.len(),
        1,
        "serve() returned before the in-flight decision was audited"
    );
    assert_eq!(lines[0]["outcome"], "applied");
    assert_eq!(kube.replicas("shop", "orders-consumer"), 4);
    let resp = request
        .await
        .unwrap()
        .expect("answered despite the shutdown");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["results"][0]["outcome"], "applied");
}

/// Poll `f` until it gives a value, or fail after `secs` (the machine may be loaded).
async fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_does_not_lose_the_audit_of_an_applied_scale() {
    let files = Files::new();
    let kube = fake_kube();
    // The API applies every request at once and answers 3 s later; the client gives up after 1 s.
    kube.state.lock().unwrap().delay = std::time::Duration::from_secs(3);
    let h = harness_with(&files, kube.clone(), |c| {
        c.kubernetes.request_timeout = std::time::Duration::from_secs(20);
        // No re-evaluation round may stand in for the webhook's own record.
        c.reevaluate_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    h.prom.set_lag("prod", "orders", 9000.0);
    let app = std::sync::Arc::new(h.app);
    let listener = app.bind().await.unwrap();
    let url = format!("http://{}/api/v1/alerts", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_app = app.clone();
    let server = tokio::spawn(async move {
        server_app
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(1))
        .build()
        .unwrap();
    let body = payload(
        "firing",
        vec![lag_alert("firing", "fp1", "prod", "orders", None)],
    );
    let err = client
        .post(url)
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await
        .expect_err("the client hangs up before the slow API answers");
    assert!(err.is_timeout(), "{err}");
    // The PATCH landed; its audit record must follow, even though nobody waits for the answer.
    let rec = wait_for(60, "the audit record of the applied scale-up", || {
        audit_lines(&files.audit_path())
            .into_iter()
            .find(|r| r["outcome"] == "applied" && r["trigger"] == "webhook")
    })
    .await;
    assert_eq!(rec["action"], "scale_up");
    assert_eq!(rec["from_replicas"], 2);
    assert_eq!(rec["to_replicas"], 4);
    assert_eq!(rec["trigger"], "webhook");
    assert_eq!(kube.replicas("shop", "orders-consumer"), 4);
    assert_eq!(kube.scale_writes().len(), 1);
    // The counter follows the record (it is incremented once the append returns).
    let counted = "medic_actuator_actions_total{action=\"scale_up\",outcome=\"applied\"} 1\n";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let resp = warp::test::request()
            .path("/metrics")
            .reply(&medic_actuator::http::routes(app.api.clone()))
            .await;
        let metrics = String::from_utf8(resp.body().to_vec()).unwrap();
        if metrics.contains(counted) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let state = app.api.engine.state().await;
    let t = state["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "shop/orders-consumer")
        .unwrap()
        .clone();
    assert_eq!(t["last_action"]["to"], 4, "{t:#}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_resolved_alert_keeps_stepping_down_while_the_lag_drains() {
    let files = Files::new();
    let kube = fake_kube();
    let h = harness_with(&files, kube.clone(), |_| {}).await;
    let engine = h.app.api.engine.clone();
    // Resolved at 2 replicas with lag 1310 and 1000 per replica: the lag still needs 2.
    h.prom.set_lag("prod", "orders", 1310.0);
    let (status, body) = h
        .alerts(&payload(
            "resolved",
            vec![lag_alert("resolved", "fp1", "prod", "orders", None)],
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["reason"], "at_desired", "{body:#}");
    assert_eq!(kube.replicas("shop", "orders-consumer"), 2);
    h.advance(60);
    engine.reevaluate().await.unwrap();
    assert_eq!(
        kube.replicas("shop", "orders-consumer"),
        2,
        "lag still 1310"
    );
    // The lag drains: the next round steps down to what it needs (the floor, min_replicas 1).
    h.prom.set_lag("prod", "orders", 40.0);
    h.advance(301);
    assert_eq!(engine.reevaluate().await.unwrap(), 1);
    assert_eq!(kube.replicas("shop", "orders-consumer"), 1);
    // At min_replicas the alert settles: no longer tracked, nothing more audited.
    h.advance(301);
    engine.reevaluate().await.unwrap();
    let state = engine.state().await;
    let t = state["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "shop/orders-consumer")
        .unwrap()
        .clone();
    assert_eq!(t["tracked_alerts"], json!([]), "settled at min_replicas");
    let lines = audit_lines(&files.audit_path());
    let downs: Vec<_> = lines
        .iter()
        .filter(|r| r["action"] == "scale_down" && r["outcome"] == "applied")
        .collect();
    assert_eq!(downs.len(), 1, "{lines:#?}");
    assert_eq!(downs[0]["trigger"], "reevaluate");
    assert_eq!(downs[0]["to_replicas"], 1);
}
