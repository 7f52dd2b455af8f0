//! Level-triggered broker alerts: the leader reads the firing broker alerts from Prometheus's
//! `ALERTS`, so an alert whose notification went to another replica (or never came) is acted on,
//! one alert seen both ways is one alert, an alert Prometheus stops showing is dropped, and when
//! Prometheus cannot be queried the webhooks are the source and the audit says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::support;
use support::fake_prom_alerts::FakePromAlerts;
use support::harness::*;
use support::process::*;
use support::*;

/// What Alertmanager would call the alert with these labels.
fn fingerprint(labels: &[(&str, &str)]) -> String {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    medic_actuator::alert::fingerprint(&labels)
}

fn tracked(state: &Value) -> Vec<Value> {
    state["broker_remediation"][0]["tracked_alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

// When the rule went pending (ALERTS_FOR_STATE). The alert's start is not this but when the
// leader first saw it firing (T0, 2027-01-15T08:00:00Z): a grace counted from the pending
// start would end early by the rule's `for`.
const ACTIVE_AT: i64 = T0 - 3600; // 2027-01-15T07:00:00Z

#[tokio::test]
async fn alerts_only_prometheus_shows_are_acted_on_merged_with_webhooks_and_dropped_when_gone() {
    let files = Files::new();
    files.add_brokers(
        "  - {cluster: prod, backend: log-only, expected_brokers: 10, cluster_cooldown: 10m, settle_time: 0s}\n",
    );
    let prom = FakePromAlerts::default();
    let prom_server = prom.start().await;
    prom.fire("KafkaBrokerOverloaded", "prod", "2", ACTIVE_AT);
    // Neither is acted on: a cluster without a broker policy, and a broker label that is not
    // a broker id.
    prom.fire("KafkaBrokerDown", "staging", "1", ACTIVE_AT);
    prom.fire("KafkaBrokerDown", "prod", "kafka-0", ACTIVE_AT);
    let uri = prom_server.uri();
    let h = harness_with(&files, fake_kube(), move |c| c.prometheus.url = Some(uri)).await;

    // No webhook at all: the re-evaluation round finds the alert in ALERTS and acts on it.
    h.app.api.engine.reevaluate().await.unwrap();
    let queries = prom.queries();
    assert!(
        queries.contains(&r#"ALERTS{alertstate="firing",alertname=~"KafkaBroker.*"}"#.to_string())
            && queries.contains(&r#"ALERTS_FOR_STATE{alertname=~"KafkaBroker.*"}"#.to_string()),
        "{queries:?}"
    );
    let lines = audit_lines(&files.audit_path());
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let first = &lines[0];
    let fp = fingerprint(&[
        ("alertname", "KafkaBrokerOverloaded"),
        ("broker", "2"),
        ("cluster", "prod"),
        ("severity", "warning"),
    ]);
    for (field, want) in [
        ("trigger", "reevaluate"),
        ("outcome", "dry_run"),
        ("action", "move_leadership"),
        ("alertname", "KafkaBrokerOverloaded"),
        ("cluster", "prod"),
        ("broker", "2"),
        ("starts_at", "2027-01-15T08:00:00Z"),
        ("fingerprint", fp.as_str()),
    ] {
        assert_eq!(first[field], want, "{field}: {first:#}");
    }
    let (_, state) = h
        .request(
            "GET",
            "/api/v1/state",
            Some(&format!("Bearer {TOKEN}")),
            b"",
        )
        .await;
    let t = tracked(&state);
    assert_eq!(t.len(), 1, "{state:#}");
    assert_eq!(t[0]["origin"], "prometheus");
    assert_eq!(t[0]["broker"], "2");
    assert_eq!(t[0]["confirmed_by_prometheus"], "2027-01-15T08:00:00Z");

    // Alertmanager's notification of the same alert reaches this replica later, with its own
    // startsAt (when it fired): the same alert, still one episode, so the cluster interval the
    // first decision started holds it.
    h.advance(60);
    let mut notified = broker_alert_at(
        "firing",
        &fp,
        "KafkaBrokerOverloaded",
        "prod",
        "2",
        "2027-01-15T07:10:00Z",
    );
    notified["labels"]["severity"] = "warning".into();
    // A broker down that only the webhook brought (the Prometheus queried never shows it).
    let down = broker_alert_at(
        "firing",
        "d3",
        "KafkaBrokerDown",
        "prod",
        "3",
        "2027-01-15T07:50:00Z",
    );
    let (s, b) = h.alerts(&payload("firing", vec![notified, down])).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["results"][0]["reason"], "cluster_cooldown", "{b}");
    assert_eq!(b["results"][1]["reason"], "grace_period", "{b}");
    let (_, state) = h
        .request(
            "GET",
            "/api/v1/state",
            Some(&format!("Bearer {TOKEN}")),
            b"",
        )
        .await;
    let t = tracked(&state);
    assert_eq!(t.len(), 2, "one alert per broker: {state:#}");
    let two = t.iter().find(|x| x["broker"] == "2").unwrap();
    assert_eq!(two["starts_at"], "2027-01-15T08:00:00Z");
    assert_eq!(two["fingerprint"], fp.as_str());
    let lines = audit_lines(&files.audit_path());
    assert_eq!(
        lines[1]["starts_at"], "2027-01-15T08:00:00Z",
        "{:#}",
        lines[1]
    );

    // Prometheus stops showing it (resolved, maybe notified to another replica): dropped and
    // audited like a resolution. The webhook-only alert stays.
    prom.clear();
    h.advance(60);
    h.app.api.engine.reevaluate().await.unwrap();
    let lines = audit_lines(&files.audit_path());
    let got: Vec<(String, String, String, String)> = lines
        .iter()
        .map(|r| {
            (
                r["broker"].as_str().unwrap_or("").to_string(),
                r["trigger"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, String, String)> = [
        ("2", "reevaluate", "dry_run", ""),
        ("2", "webhook", "skipped", "cluster_cooldown"),
        ("3", "webhook", "skipped", "grace_period"),
        ("2", "reevaluate", "skipped", "cancelled"),
    ]
    .iter()
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
    .collect();
    assert_eq!(got, want, "{lines:#?}");
    let gone = lines.last().unwrap();
    assert_eq!(gone["alert_status"], "resolved");
    assert_eq!(
        gone["message"],
        "no longer firing in Prometheus (ALERTS): any action still pending for this alert is cancelled"
    );
    let (_, state) = h
        .request(
            "GET",
            "/api/v1/state",
            Some(&format!("Bearer {TOKEN}")),
            b"",
        )
        .await;
    let t = tracked(&state);
    assert_eq!(t.len(), 1, "{state:#}");
    assert_eq!(t[0]["broker"], "3");
    assert_eq!(t[0]["origin"], "webhook");
    let m = h.metrics().await;
    assert_eq!(
        metric(
            &m,
            "medic_actuator_broker_alerts_source{source=\"prometheus\"}"
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn prometheus_down_falls_back_to_the_webhooks_once_per_outage_and_says_so() {
    let files = Files::new();
    files.add_brokers(
        "  - {cluster: prod, backend: log-only, expected_brokers: 10, cluster_cooldown: 10m, settle_time: 0s}\n",
    );
    let prom = FakePromAlerts::default();
    let prom_server = prom.start().await;
    prom.set_down(true);
    let uri = prom_server.uri();
    let h = harness_with(&files, fake_kube(), move |c| c.prometheus.url = Some(uri)).await;
    let overloaded = |status| {
        let mut a = broker_alert_at(
            status,
            "o1",
            "KafkaBrokerOverloaded",
            "prod",
            "1",
            "2027-01-15T07:10:00Z",
        );
        a["labels"]["severity"] = "warning".into();
        a
    };

    // The webhook path acts as before.
    let (s, b) = h
        .alerts(&payload("firing", vec![overloaded("firing")]))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["results"][0]["outcome"], "dry_run", "{b}");

    // Two rounds with Prometheus down: one record for the outage, and the alert the webhook
    // brought stays tracked.
    for _ in 0..2 {
        h.advance(30);
        h.app.api.engine.reevaluate().await.unwrap();
    }
    let lines = audit_lines(&files.audit_path());
    let fallback: Vec<&Value> = lines
        .iter()
        .filter(|r| r["reason"] == "alerts_source_webhook_fallback")
        .collect();
    assert_eq!(fallback.len(), 1, "{lines:#?}");
    let f = fallback[0];
    assert_eq!(f["outcome"], "failed");
    assert_eq!(f["action"], "none");
    assert_eq!(f["trigger"], "reevaluate");
    let message = f["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "cannot read the firing broker alerts from Prometheus (prometheus query \"ALERTS"
        ) && message.contains(
            "until it answers, broker alerts come from the webhooks this replica received only"
        ),
        "{message}"
    );
    let (_, state) = h
        .request(
            "GET",
            "/api/v1/state",
            Some(&format!("Bearer {TOKEN}")),
            b"",
        )
        .await;
    let t = tracked(&state);
    assert_eq!(t.len(), 1, "{state:#}");
    assert_eq!(t[0]["origin"], "webhook");
    assert!(t[0]["confirmed_by_prometheus"].is_null(), "{state:#}");
    let m = h.metrics().await;
    for (series, want) in [
        (
            "medic_actuator_broker_alerts_source{source=\"webhook\"}",
            1.0,
        ),
        (
            "medic_actuator_broker_alerts_source{source=\"prometheus\"}",
            0.0,
        ),
        ("medic_actuator_prometheus_errors_total", 2.0),
    ] {
        assert_eq!(metric(&m, series), want, "{series}\n{m}");
    }

    // Prometheus answers again and shows the alert: one record says so, and from now on
    // Prometheus confirms it...
    prom.set_down(false);
    prom.fire("KafkaBrokerOverloaded", "prod", "1", ACTIVE_AT);
    h.advance(30);
    h.app.api.engine.reevaluate().await.unwrap();
    let lines = audit_lines(&files.audit_path());
    let back = lines.last().unwrap();
    assert_eq!(back["outcome"], "applied", "{lines:#?}");
    assert_eq!(back["action"], "none");
    assert_eq!(
        back["message"],
        "Prometheus answers again: firing broker alerts come from its ALERTS (1 series) and the webhooks"
    );
    let (_, state) = h
        .request(
            "GET",
            "/api/v1/state",
            Some(&format!("Bearer {TOKEN}")),
            b"",
        )
        .await;
    assert_eq!(tracked(&state).len(), 1, "the same alert: {state:#}");
    assert_eq!(
        tracked(&state)[0]["confirmed_by_prometheus"],
        "2027-01-15T08:01:30Z"
    );

    // ...so when it resolves in Prometheus, the leader drops it although the resolved
    // notification never came here.
    prom.clear();
    h.advance(30);
    h.app.api.engine.reevaluate().await.unwrap();
    let lines = audit_lines(&files.audit_path());
    let gone = lines.last().unwrap();
    assert_eq!(
        (&gone["broker"], &gone["reason"], &gone["alert_status"]),
        (&"1".into(), &"cancelled".into(), &"resolved".into()),
        "{lines:#?}"
    );
    let (_, state) = h
        .request(
            "GET",
            "/api/v1/state",
            Some(&format!("Bearer {TOKEN}")),
            b"",
        )
        .await;
    assert!(tracked(&state).is_empty(), "{state:#}");
}

/// The rule file of the real Prometheus: one broker alert that fires on its own.
const RULES: &str = r#"groups:
  - name: broker-alerts-source-test
    rules:
      - alert: KafkaBrokerOverloaded
        expr: vector(1)
        for: 2s
        labels:
          cluster: prod
          broker: "2"
          severity: warning
"#;

async fn wait_for<T: Send + 'static>(
    what: &str,
    f: impl FnMut() -> Option<T> + Send + 'static,
) -> T {
    let what = what.to_string();
    tokio::task::spawn_blocking(move || medic_e2e::wait_until(Duration::from_secs(60), &what, f))
        .await
        .unwrap()
}

/// Post a webhook that carries no broker alert (a lag alert of a group without a policy): any
/// webhook prompts the leader to look at Prometheus now.
fn prompt(addr: &str, n: usize) {
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let body = payload(
        "firing",
        vec![lag_alert(
            "firing",
            &format!("p{n}"),
            "prod",
            "no-such-group",
            None,
        )],
    );
    let auth = format!("Bearer {TOKEN}");
    let r = medic_e2e::http::request(
        port,
        "POST",
        "/api/v1/alerts",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        &body,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A real Prometheus evaluates a rule whose broker alert fires. No webhook ever carries that
/// alert, and there is no re-evaluation round (1h): a webhook about something else prompts the
/// leader to look, and it acts on the alert. Prometheus stopped: the fallback is audited; back:
/// so is that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_webhook_prompts_the_binary_to_act_on_a_broker_alert_only_a_real_prometheus_shows() {
    let files = Files::new();
    files.add_brokers(
        "  - {cluster: prod, backend: log-only, expected_brokers: 10, settle_time: 0s}\n",
    );
    let rules = files.path("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let rules2 = rules.clone();
    let prom = tokio::task::spawn_blocking(move || {
        let prom = medic_e2e::prometheus::Prometheus::start(
            &medic_e2e::prometheus::PromConfig {
                interval: "1s".into(),
                rule_files: vec![rules2],
                alertmanager_port: None,
                jobs: Vec::new(),
            },
            medic_e2e::prometheus::Prometheus::pick_port(),
        );
        medic_e2e::wait_until(Duration::from_secs(60), "the rule's alert firing", || {
            let q = r#"ALERTS{alertname="KafkaBrokerOverloaded",alertstate="firing"}"#;
            (!prom.query(q).is_empty()).then_some(())
        });
        prom
    })
    .await
    .unwrap();
    let kube = FakeKube::default();
    let kube_server = kube.start().await;
    let cfg = write_config(
        &files,
        &kube_server.uri(),
        &format!(
            "prometheus: {{url: \"http://127.0.0.1:{}\"}}\nreevaluate_interval: 1h\nalert_ttl: 2h\n",
            prom.port
        ),
    );
    let run = Running::start(&cfg);
    let audit = files.audit_path();
    assert!(
        !audit_lines(&audit).iter().any(|r| r["broker"] == "2"),
        "nothing before the prompt"
    );

    let (a, addr) = (audit.clone(), run.addr.clone());
    let acted = wait_for("the broker action from ALERTS", move || {
        prompt(&addr, 0);
        audit_lines(&a)
            .into_iter()
            .find(|r| r["broker"] == "2" && r["outcome"] == "dry_run")
    })
    .await;
    // What Prometheus itself says about the alert.
    let port = prom.port;
    let (alerts, for_state) = tokio::task::spawn_blocking(move || {
        let p = |q: &str| {
            let r = medic_e2e::http::request(
                port,
                "GET",
                &medic_e2e::http::with_query("/api/v1/query", &[("query", q)]),
                &[],
                b"",
            )
            .unwrap();
            r.json()["data"]["result"].as_array().cloned().unwrap()
        };
        (
            p(r#"ALERTS{alertname="KafkaBrokerOverloaded"}"#),
            p(r#"ALERTS_FOR_STATE{alertname="KafkaBrokerOverloaded"}"#),
        )
    })
    .await
    .unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let mut labels: BTreeMap<String, String> =
        serde_json::from_value(alerts[0]["metric"].clone()).unwrap();
    labels.remove("__name__");
    labels.remove("alertstate");
    let active_at: f64 = for_state[0]["value"][1].as_str().unwrap().parse().unwrap();
    // The start is when the leader first saw the alert firing: after the rule went pending
    // (ALERTS_FOR_STATE), and no later than the decision.
    let starts: jiff::Timestamp = acted["starts_at"].as_str().unwrap().parse().unwrap();
    let decided: jiff::Timestamp = acted["ts"].as_str().unwrap().parse().unwrap();
    assert!(
        starts.as_second() >= active_at as i64 && starts <= decided,
        "starts_at {starts} must lie between the pending start {active_at} and the decision {decided}"
    );
    for (field, want) in [
        ("trigger", "reevaluate"),
        ("action", "move_leadership"),
        ("alertname", "KafkaBrokerOverloaded"),
        ("cluster", "prod"),
        (
            "fingerprint",
            medic_actuator::alert::fingerprint(&labels).as_str(),
        ),
    ] {
        assert_eq!(acted[field], want, "{field}: {acted:#}\n{}", run.dump());
    }
    let m = client()
        .get(run.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        medic_e2e::sample(
            &m,
            "medic_actuator_alerts_total{kind=\"broker\",status=\"firing\"}"
        ),
        None,
        "no webhook carried a broker alert\n{m}"
    );

    // Prometheus goes away: the audit says the webhooks are the source now; then it is back.
    let mut prom = prom;
    let prom = tokio::task::spawn_blocking(move || {
        prom.server.kill();
        prom
    })
    .await
    .unwrap();
    let (a, addr) = (audit.clone(), run.addr.clone());
    let fallback = wait_for("the fallback record", move || {
        prompt(&addr, 1);
        audit_lines(&a)
            .into_iter()
            .find(|r| r["reason"] == "alerts_source_webhook_fallback")
    })
    .await;
    assert_eq!(
        (&fallback["outcome"], &fallback["trigger"]),
        (&"failed".into(), &"reevaluate".into()),
        "{fallback:#}"
    );
    let mut prom = prom;
    let _prom = tokio::task::spawn_blocking(move || {
        prom.server.restart();
        prom
    })
    .await
    .unwrap();
    let (a, addr) = (audit.clone(), run.addr.clone());
    let back = wait_for("the record of Prometheus answering again", move || {
        prompt(&addr, 2);
        audit_lines(&a).into_iter().find(|r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Prometheus answers again"))
        })
    })
    .await;
    assert!(back["seq"].as_u64() > fallback["seq"].as_u64(), "{back:#}");
    let lines = audit_lines(&audit);
    assert_eq!(
        lines
            .iter()
            .filter(|r| r["reason"] == "alerts_source_webhook_fallback")
            .count(),
        1,
        "one record per outage: {lines:#?}"
    );
    drop(run);
}
