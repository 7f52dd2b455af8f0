//! The HTTP API through `warp::test`, against a stateful fake Kubernetes API and a fake
//! Prometheus (both wiremock), asserting status, body and side effects.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

use crate::support;

use serde_json::{json, Value};
use support::harness::*;
use support::*;

#[tokio::test]
async fn firing_alert_scales_through_the_scale_subresource_and_audits_first() {
    let files = Files::new();
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    h.prom.set_lag("prod", "orders", 3500.0);
    let (status, body) = h
        .alerts(&payload(
            "firing",
            vec![lag_alert("firing", "fp1", "prod", "orders", Some(9999))],
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["outcome"], "applied");
    assert_eq!(body["results"][0]["action"], "scale_up");
    assert_eq!(body["results"][0]["target"], "shop/orders-consumer");
    assert_eq!(body["results"][0]["seq"], 1);

    // Exactly two writes: the cooldown claim (with the resourceVersion precondition) then the scale.
    let writes = h.kube.writes();
    assert_eq!(writes.len(), 2, "{writes:#?}");
    assert_eq!(
        writes[0].path,
        "/apis/apps/v1/namespaces/shop/deployments/orders-consumer"
    );
    // kube writes this query as "&fieldManager=..." (an empty first pair); the API server
    // ignores the empty pair, so compare the pairs.
    assert_eq!(
        writes[0].query.trim_start_matches('&'),
        "fieldManager=medic-actuator"
    );
    assert_eq!(writes[0].content_type, "application/merge-patch+json");
    assert_eq!(writes[0].body["metadata"]["resourceVersion"], "100");
    let claim: Value = serde_json::from_str(
        writes[0].body["metadata"]["annotations"][ANNOTATION]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claim,
        json!({"at": "2027-01-15T08:00:00Z", "direction": "up", "from": 2, "to": 4,
               "alert": "fp1:firing:2026-11-22T03:32:35.536Z", "by": "actuator-test"})
    );
    assert_eq!(
        writes[1].path,
        "/apis/apps/v1/namespaces/shop/deployments/orders-consumer/scale"
    );
    assert_eq!(
        writes[1].query.trim_start_matches('&'),
        "fieldManager=medic-actuator"
    );
    assert_eq!(writes[1].content_type, "application/merge-patch+json");
    assert_eq!(writes[1].body, json!({"spec": {"replicas": 4}}));
    assert_eq!(h.kube.replicas("shop", "orders-consumer"), 4);

    let lines = audit_lines(&files.audit_path());
    assert_eq!(lines.len(), 1);
    let r = &lines[0];
    assert_eq!(r["seq"], 1);
    assert_eq!(r["outcome"], "applied");
    assert_eq!(r["action"], "scale_up");
    assert_eq!(r["fingerprint"], "fp1");
    assert_eq!(r["target"], "shop/orders-consumer");
    assert_eq!(r["from_replicas"], 2);
    assert_eq!(r["to_replicas"], 4);
    assert_eq!(r["desired_replicas"], 4);
    assert_eq!(
        r["lag"], 3500,
        "fresh lag from Prometheus, not the annotation's 9999"
    );
    assert_eq!(r["lag_source"], "prometheus");
    assert_eq!(r["dry_run"], false);
    assert_eq!(r["trigger"], "webhook");
    assert_eq!(r["ts"], "2027-01-15T08:00:00Z");

    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "medic_actuator_webhooks_total{result=\"ok\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "medic_actuator_actions_total{action=\"scale_up\",outcome=\"applied\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "medic_actuator_cooldown_remaining_seconds{target=\"shop/orders-consumer\",direction=\"up\"}"), 60.0, "{m}");
    assert_eq!(metric(&m, "medic_actuator_cooldown_remaining_seconds{target=\"shop/orders-consumer\",direction=\"down\"}"), 300.0);
    assert_eq!(
        metric(
            &m,
            "medic_actuator_target_replicas{target=\"shop/orders-consumer\"}"
        ),
        4.0,
        "replicas as set by the actuator: {m}"
    );
    assert_eq!(
        metric(
            &m,
            "medic_actuator_target_desired_replicas{target=\"shop/orders-consumer\"}"
        ),
        4.0,
        "ceil(3500 / 1000): {m}"
    );
    assert_eq!(
        metric(
            &m,
            "medic_consumergroup_lag_threshold{cluster=\"prod\",consumergroup=\"orders\"}"
        ),
        5000.0
    );
    assert_eq!(
        metric(
            &m,
            "medic_consumergroup_lag_sustain_seconds{cluster=\"prod\",consumergroup=\"orders\"}"
        ),
        120.0
    );
    assert!(m.contains("medic_actuator_kube_request_duration_seconds_bucket{verb=\"patch\",resource=\"deployments/scale\",code=\"200\""), "{m}");
}

#[tokio::test]
async fn bad_requests_change_nothing_and_are_counted() {
    let files = Files::new();
    let h = harness_with(&files, fake_kube(), |c| c.body_limit_bytes = 4096).await;
    let good = payload(
        "firing",
        vec![lag_alert("firing", "fp1", "prod", "orders", Some(5000))],
    );
    let auth = format!("Bearer {TOKEN}");
    let big = vec![b' '; 5000];
    let cases: Vec<(&str, Option<&str>, Vec<u8>, u16, &str, &str)> = vec![
        (
            "no auth",
            None,
            good.clone(),
            401,
            "unauthorized",
            "missing or invalid credentials",
        ),
        (
            "wrong token",
            Some("Bearer nope"),
            good.clone(),
            401,
            "unauthorized",
            "missing or invalid credentials",
        ),
        (
            "malformed",
            Some(&auth),
            b"{\"version\":\"4\",".to_vec(),
            400,
            "bad_request",
            "malformed webhook payload: EOF while parsing a value at line 1 column 15",
        ),
        (
            "version 3",
            Some(&auth),
            br#"{"version":"3","status":"firing","alerts":[]}"#.to_vec(),
            400,
            "bad_request",
            "unsupported webhook payload version \"3\", expected \"4\"",
        ),
        (
            "missing alerts",
            Some(&auth),
            br#"{"version":"4","status":"firing"}"#.to_vec(),
            400,
            "bad_request",
            "malformed webhook payload: missing field `alerts`",
        ),
        (
            "missing label",
            Some(&auth),
            payload(
                "firing",
                vec![
                    json!({"status":"firing","labels":{"alertname":"KafkaConsumerLagPersistent","cluster":"prod"},"startsAt":"2026-11-22T03:32:35Z","fingerprint":"x"}),
                ],
            ),
            400,
            "bad_request",
            "alerts[0] (KafkaConsumerLagPersistent): missing label `consumergroup`",
        ),
        (
            "too large",
            Some(&auth),
            big,
            413,
            "payload_too_large",
            "request body is larger than the limit of 4096 bytes",
        ),
    ];
    for (name, a, body, want_status, code, message) in &cases {
        let (status, resp) = h.request("POST", "/api/v1/alerts", *a, body).await;
        assert_eq!(status, *want_status, "{name}: {resp}");
        assert_eq!(resp, json!({"error": code, "message": message}), "{name}");
    }
    assert_eq!(h.kube.reads(), 0, "nothing read");
    assert!(h.kube.writes().is_empty(), "nothing written");
    assert!(
        audit_lines(&files.audit_path()).is_empty(),
        "nothing audited"
    );
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "medic_actuator_webhooks_total{result=\"unauthorized\"}"),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "medic_actuator_webhooks_total{result=\"bad_request\"}"),
        4.0
    );
    assert_eq!(
        metric(
            &m,
            "medic_actuator_webhooks_total{result=\"payload_too_large\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&m, "medic_actuator_webhooks_total{result=\"ok\"}"),
        0.0
    );

    // Other endpoints: 404 and 405 in the same JSON shape; /api/v1/* needs auth.
    let (s, b) = h.request("GET", "/nope", None, b"").await;
    assert_eq!(
        (s, b),
        (
            404,
            json!({"error": "not_found", "message": "no such endpoint"})
        )
    );
    let (s, b) = h.request("GET", "/api/v1/state", None, b"").await;
    assert_eq!((s, b["error"].clone()), (401, json!("unauthorized")));
    let (s, b) = h
        .request("GET", "/api/v1/audit?colour=red", Some(&auth), b"")
        .await;
    assert_eq!(s, 400);
    assert_eq!(b["message"], "unknown query parameter \"colour\"; expected target, action, outcome, reason, cluster, broker, since, until, limit");
}

#[tokio::test]
async fn alerts_never_touch_deployments_outside_the_policy_file() {
    let files = Files::new();
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let mut a = lag_alert("firing", "fp9", "prod", "unknown-group", Some(90000));
    a["labels"]["namespace"] = json!("kube-system");
    a["labels"]["deployment"] = json!("coredns");
    let (status, body) = h.alerts(&payload("firing", vec![a])).await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["reason"], "no_policy");
    assert_eq!(h.kube.reads(), 0);
    assert!(h.kube.writes().is_empty());
    assert_eq!(h.kube.replicas("kube-system", "coredns"), 2);
    let lines = audit_lines(&files.audit_path());
    assert_eq!(lines[0]["outcome"], "skipped");
    assert_eq!(lines[0]["reason"], "no_policy");
    assert_eq!(lines[0]["consumergroup"], "unknown-group");
    assert!(lines[0].get("target").is_none());
}

#[tokio::test]
async fn duplicate_deliveries_act_once_and_concurrent_ones_too() {
    let files = Files::new();
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    h.prom.set_lag("prod", "orders", 9000.0);
    h.prom.set_lag("prod", "billing", 9000.0);
    let body = payload(
        "firing",
        vec![lag_alert("firing", "fpA", "prod", "orders", None)],
    );
    let (s1, _) = h.alerts(&body).await;
    h.advance(120); // past the up cooldown: only dedupe can stop the second delivery
    let (s2, b2) = h.alerts(&body).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(b2["results"][0]["reason"], "duplicate");
    assert_eq!(h.kube.scale_writes().len(), 1);

    // Two Alertmanagers deliver the same billing alert at the same moment.
    let body = payload(
        "firing",
        vec![lag_alert("firing", "fpB", "prod", "billing", None)],
    );
    let (a, b) = tokio::join!(h.alerts(&body), h.alerts(&body));
    assert_eq!((a.0, b.0), (200, 200));
    let mut reasons = vec![
        a.1["results"][0]["outcome"].clone(),
        b.1["results"][0]["reason"].clone(),
        a.1["results"][0]["reason"].clone(),
        b.1["results"][0]["outcome"].clone(),
    ];
    reasons.sort_by_key(|v| v.to_string());
    let billing: Vec<_> = h
        .kube
        .scale_writes()
        .into_iter()
        .filter(|w| w.path.contains("billing"))
        .collect();
    assert_eq!(
        billing.len(),
        1,
        "one PATCH for two concurrent deliveries: {reasons:?}"
    );
    assert_eq!(billing[0].body, json!({"spec": {"replicas": 4}}));
    let outcomes: Vec<String> = audit_lines(&files.audit_path())
        .iter()
        .filter(|r| r["fingerprint"] == "fpB")
        .map(|r| {
            format!(
                "{}/{}",
                r["outcome"].as_str().unwrap(),
                r["reason"].as_str().unwrap_or("-")
            )
        })
        .collect();
    let mut sorted = outcomes.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec!["applied/-", "skipped/duplicate"],
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn dry_run_audits_but_never_patches() {
    let files = Files::new();
    let h = harness_with(&files, fake_kube(), |c| c.dry_run = true).await;
    h.prom.set_lag("prod", "orders", 9000.0);
    let (s, b) = h
        .alerts(&payload(
            "firing",
            vec![lag_alert("firing", "fp1", "prod", "orders", None)],
        ))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["results"][0]["outcome"], "dry_run");
    assert!(h.kube.writes().is_empty());
    let r = &audit_lines(&files.audit_path())[0];
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["to_replicas"], 4);
    assert_eq!(r["message"], "dry run: would scale shop/orders-consumer from 2 to 4 (desired 9, lag 9000 from prometheus)");
}

#[tokio::test]
async fn audit_endpoint_filters_by_target_action_outcome_and_time() {
    let files = Files::new();
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    h.prom.set_lag("prod", "orders", 9000.0);
    h.prom.set_lag("prod", "billing", 9000.0);
    h.alerts(&payload(
        "firing",
        vec![lag_alert("firing", "a1", "prod", "orders", None)],
    ))
    .await;
    h.advance(10);
    h.alerts(&payload(
        "firing",
        vec![lag_alert("firing", "b1", "prod", "billing", None)],
    ))
    .await;
    h.advance(10);
    h.alerts(&payload(
        "firing",
        vec![lag_alert("firing", "a2", "prod", "orders", None)],
    ))
    .await;
    let auth = format!("Bearer {TOKEN}");
    let get = |q: &'static str| {
        let auth = auth.clone();
        let h = &h;
        async move {
            h.request("GET", &format!("/api/v1/audit{q}"), Some(&auth), b"")
                .await
        }
    };
    let fps = |b: &Value| -> Vec<String> {
        b["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["fingerprint"].as_str().unwrap().to_string())
            .collect()
    };
    let (s, b) = get("?target=shop/orders-consumer").await;
    assert_eq!(s, 200);
    assert_eq!(fps(&b), vec!["a1", "a2"]);
    let (_, b) = get("?action=scale_up&outcome=applied").await;
    assert_eq!(fps(&b), vec!["a1", "b1"]);
    let (_, b) = get("?reason=cooldown").await;
    assert_eq!(fps(&b), vec!["a2"]);
    let (_, b) = get("?since=2027-01-15T08:00:05Z&until=2027-01-15T08:00:15Z").await;
    assert_eq!(fps(&b), vec!["b1"]);
    let (_, b) = get("?limit=1").await;
    assert_eq!(
        (fps(&b), b["truncated"].clone()),
        (vec!["a2".to_string()], json!(true))
    );
    let (s, b) = get("?action=explode").await;
    assert_eq!(s, 400);
    assert_eq!(
        b["message"],
        "action=\"explode\" is not a valid action (scale_up, scale_down, none, pause, resume, move_leadership, move_replicas, replace_replicas, acquire_leadership, lose_leadership, release_leadership, config_reload)"
    );
    let (s, b) = get("?since=yesterday").await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = get("?limit=3").await;
    assert_eq!(s, 200);
    assert_eq!(
        (fps(&b), b["truncated"].clone()),
        (
            vec!["a1".to_string(), "b1".into(), "a2".into()],
            json!(false)
        )
    );
}

/// Sends one request with raw header bytes; the status and the JSON body.
async fn raw_request(
    h: &Harness,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> (u16, Value) {
    let mut r = warp::test::request().method(method).path(path).body(body);
    for (k, v) in headers {
        r = r.header(*k, warp::http::HeaderValue::from_bytes(v).unwrap());
    }
    let resp = r
        .reply(&medic_actuator::http::routes(h.app.api.clone()))
        .await;
    let body = serde_json::from_slice(resp.body())
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(resp.body()).into()));
    (resp.status().as_u16(), body)
}

#[tokio::test]
async fn bad_input_gets_a_4xx_never_a_500() {
    let files = Files::new();
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    h.prom.set_lag("prod", "orders", 9000.0);
    let good = payload(
        "firing",
        vec![lag_alert("firing", "fp1", "prod", "orders", None)],
    );
    let bearer = format!("Bearer {TOKEN}");
    let mut not_utf8 = bearer.clone().into_bytes();
    not_utf8.push(0xff);
    let unauthorized =
        json!({"error": "unauthorized", "message": "missing or invalid credentials"});
    let bad = |m: &str| json!({"error": "bad_request", "message": m});
    let limit_msg = |v: &str| {
        bad(&format!(
            "limit={v:?}: must be a whole number from 1 to 1000"
        ))
    };
    let cases: Vec<(&str, &str, &str, Vec<(&str, &[u8])>, &[u8], u16, Value)> = vec![
        (
            "0xff in Authorization, webhook",
            "POST",
            "/api/v1/alerts",
            vec![("authorization", &not_utf8)],
            &good,
            401,
            unauthorized.clone(),
        ),
        (
            "0xff alone in Authorization, audit",
            "GET",
            "/api/v1/audit",
            vec![("authorization", b"\xff")],
            b"",
            401,
            unauthorized.clone(),
        ),
        (
            "Content-Length not a number",
            "POST",
            "/api/v1/alerts",
            vec![
                ("authorization", bearer.as_bytes()),
                ("content-length", b"abc"),
            ],
            &good,
            400,
            bad("Content-Length header \"abc\" is not a number of bytes"),
        ),
        (
            "Content-Length not UTF-8",
            "POST",
            "/api/v1/alerts",
            vec![
                ("authorization", bearer.as_bytes()),
                ("content-length", b"1\xff"),
            ],
            &good,
            400,
            bad("Content-Length header \"1\u{fffd}\" is not a number of bytes"),
        ),
        (
            "version a number",
            "POST",
            "/api/v1/alerts",
            vec![("authorization", bearer.as_bytes())],
            br#"{"version":4,"status":"firing","alerts":[]}"#,
            400,
            bad("webhook payload `version` must be the string \"4\", got the number 4"),
        ),
        (
            "limit=0",
            "GET",
            "/api/v1/audit?limit=0",
            vec![("authorization", bearer.as_bytes())],
            b"",
            400,
            limit_msg("0"),
        ),
        (
            "limit above the cap",
            "GET",
            "/api/v1/audit?limit=10000",
            vec![("authorization", bearer.as_bytes())],
            b"",
            400,
            limit_msg("10000"),
        ),
        (
            "limit not a number",
            "GET",
            "/api/v1/audit?limit=ten",
            vec![("authorization", bearer.as_bytes())],
            b"",
            400,
            limit_msg("ten"),
        ),
        (
            "repeated parameter",
            "GET",
            "/api/v1/audit?limit=1&limit=2",
            vec![("authorization", bearer.as_bytes())],
            b"",
            400,
            bad("query parameter \"limit\" is given more than once; give it once"),
        ),
        (
            "value not UTF-8",
            "GET",
            "/api/v1/audit?target=%ff",
            vec![("authorization", bearer.as_bytes())],
            b"",
            400,
            bad("query parameter \"target\": value \"%ff\" is not UTF-8 once decoded"),
        ),
        (
            "bad percent-encoding",
            "GET",
            "/api/v1/audit?target=%2",
            vec![("authorization", bearer.as_bytes())],
            b"",
            400,
            bad(
                "query parameter \"target\": value \"%2\" has a `%` not followed by two hex digits",
            ),
        ),
    ];
    for (name, method, path, headers, body, want_status, want_body) in &cases {
        let (status, resp) = raw_request(&h, method, path, headers, body).await;
        assert_eq!((status, &resp), (*want_status, want_body), "{name}");
    }
    assert!(h.kube.writes().is_empty(), "nothing written");
    assert!(
        audit_lines(&files.audit_path()).is_empty(),
        "nothing audited"
    );

    // The same requests, well formed, are served.
    let (status, resp) = raw_request(
        &h,
        "POST",
        "/api/v1/alerts",
        &[("authorization", bearer.as_bytes())],
        &good,
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let (status, resp) = raw_request(
        &h,
        "GET",
        "/api/v1/audit?limit=1000&target=shop%2Forders-consumer",
        &[("authorization", bearer.as_bytes())],
        b"",
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["records"][0]["fingerprint"], "fp1");
    assert_eq!(resp["truncated"], false);
}

#[tokio::test]
async fn healthz_and_metrics_pass_promtool() {
    let files = Files::new();
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    h.prom.set_lag("prod", "orders", 9000.0);
    h.alerts(&payload(
        "firing",
        vec![lag_alert("firing", "fp1", "prod", "orders", None)],
    ))
    .await;
    h.request("POST", "/api/v1/alerts", None, b"{}").await;
    let (s, b) = h.request("GET", "/healthz", None, b"").await;
    assert_eq!(
        (s, b),
        (
            200,
            json!({"status": "ok", "audit": "ok", "paused": false, "dry_run": false,
                // Leader election off: this replica always leads.
                "leader": {"enabled": false, "is_leader": true, "holder": null, "identity": null,
                    "lease": null, "since": null},
                // No reload yet.
                "config": {"last_reload": null, "last_result": null, "last_error": null,
                    "last_applied": null}})
        )
    );
    let m = h.metrics().await;
    for name in [
        "medic_actuator_webhooks_total",
        "medic_actuator_alerts_total",
        "medic_actuator_actions_total",
        "medic_actuator_kube_request_duration_seconds",
        "medic_actuator_cooldown_remaining_seconds",
        "medic_actuator_audit_fsync_duration_seconds",
        "medic_actuator_audit_records_total",
        "medic_actuator_webhook_duration_seconds",
        "medic_actuator_build_info",
        "medic_actuator_policies",
    ] {
        assert!(
            m.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{m}"
        );
    }
    let golden = files.path("metrics.txt");
    std::fs::write(&golden, &m).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&golden).unwrap())
        .output()
        .expect("promtool (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\nstdout: {}\nstderr: {}\nmetrics:\n{m}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "",
        "promtool lint warnings"
    );
}
