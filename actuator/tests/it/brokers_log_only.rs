//! Broker remediation with the log-only backend (no Kafka connection): every decision is
//! audited, nothing is changed, and the gates run as they would with a real backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use support::harness::*;
use support::*;

const T_MINUS_1H: &str = "2027-01-15T07:00:00Z";

#[tokio::test]
async fn log_only_audits_decisions_and_the_gates_hold() {
    let files = Files::new();
    files.add_brokers(
        "  - {cluster: prod, backend: log-only, expected_brokers: 10, cluster_cooldown: 10m, settle_time: 0s}\n",
    );
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let alert = |status, fp, name, broker| {
        payload(
            status,
            vec![broker_alert_at(
                status, fp, name, "prod", broker, T_MINUS_1H,
            )],
        )
    };

    let (s, b) = h
        .alerts(&alert("firing", "o1", "KafkaBrokerOverloaded", "1"))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["results"][0]["cluster"], "prod");
    assert_eq!(b["results"][0]["broker"], "1");
    assert_eq!(b["results"][0]["outcome"], "dry_run");
    assert_eq!(b["results"][0]["action"], "move_leadership");
    assert!(
        b["results"][0].get("target").is_none() || b["results"][0]["target"].is_null(),
        "{b}"
    );

    // A second overloaded broker: the cluster interval (counted from the first decision) holds it.
    let (s, b) = h
        .alerts(&alert("firing", "o2", "KafkaBrokerOverloaded", "2"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["results"][0]["outcome"], "skipped");
    assert_eq!(b["results"][0]["reason"], "cluster_cooldown");

    // Its resolution cancels what was pending for it.
    let (_, b) = h
        .alerts(&alert("resolved", "o2", "KafkaBrokerOverloaded", "2"))
        .await;
    assert_eq!(b["results"][0]["reason"], "cancelled");

    // A broker down for less than the grace period (30m by default): waits.
    let (_, b) = h
        .alerts(&payload(
            "firing",
            vec![broker_alert_at(
                "firing",
                "d3",
                "KafkaBrokerDown",
                "prod",
                "3",
                "2027-01-15T07:50:00Z",
            )],
        ))
        .await;
    assert_eq!(b["results"][0]["reason"], "grace_period");

    // The same delivery again is a duplicate.
    let (_, b) = h
        .alerts(&alert("firing", "o1", "KafkaBrokerOverloaded", "1"))
        .await;
    assert_eq!(b["results"][0]["reason"], "duplicate");

    let lines = audit_lines(&files.audit_path());
    let got: Vec<(String, String, String, String)> = lines
        .iter()
        .map(|r| {
            (
                r["broker"].as_str().unwrap_or("").to_string(),
                r["outcome"].as_str().unwrap().to_string(),
                r["action"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, String, String)> = [
        ("1", "dry_run", "move_leadership", ""),
        ("2", "skipped", "none", "cluster_cooldown"),
        ("2", "skipped", "none", "cancelled"),
        ("3", "skipped", "none", "grace_period"),
        ("1", "skipped", "none", "duplicate"),
    ]
    .iter()
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
    .collect();
    assert_eq!(got, want, "{lines:#?}");
    let first = &lines[0];
    assert_eq!(first["backend"], "log-only");
    assert_eq!(first["phase"], "started");
    assert_eq!(first["dry_run"], true);
    assert_eq!(first["alertname"], "KafkaBrokerOverloaded");
    assert_eq!(first["cluster"], "prod");
    assert_eq!(
        first["message"],
        "dry run (log-only): would move_leadership: broker 1 (no partition plan without a kafka connection)"
    );
    assert_eq!(
        lines[3]["message"],
        "broker down for less than the grace period; 1200s left (most restarts come back by themselves)"
    );

    // The grace period ends while the alert keeps firing: the re-evaluation acts on it once the
    // cluster interval is over too.
    h.advance(20 * 60);
    h.app.api.engine.reevaluate().await.unwrap();
    let lines = audit_lines(&files.audit_path());
    let last = lines.last().unwrap();
    assert_eq!(last["broker"], "3");
    assert_eq!(last["trigger"], "reevaluate");
    assert_eq!(last["outcome"], "dry_run");
    assert_eq!(last["action"], "replace_replicas");
    assert!(
        !lines[5..].iter().any(|r| r["broker"] == "2"),
        "broker 2's pending action was cancelled by its resolution: {lines:#?}"
    );

    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "medic_actuator_mass_failure{cluster=\"prod\"}"),
        0.0
    );
    assert_eq!(
        metric(&m, "medic_actuator_brokers_alerting{cluster=\"prod\"}"),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "medic_actuator_broker_actions_total{cluster=\"prod\",action=\"replace_replicas\",outcome=\"dry_run\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "medic_actuator_broker_cluster_cooldown_remaining_seconds{cluster=\"prod\"}"
        ),
        600.0,
        "{m}"
    );
    assert_eq!(metric(&m, "medic_actuator_broker_policies"), 1.0);
    let scrape = files.path("metrics.txt");
    std::fs::write(&scrape, &m).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&scrape).unwrap())
        .output()
        .expect("promtool (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{m}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, page) = h
        .request(
            "GET",
            "/api/v1/audit?cluster=prod&broker=2",
            Some(&format!("Bearer {TOKEN}")),
            b"",
        )
        .await;
    assert_eq!(s, 200, "{page}");
    let reasons: Vec<&str> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, vec!["cluster_cooldown", "cancelled"]);
    let (_, state) = h
        .request(
            "GET",
            "/api/v1/state",
            Some(&format!("Bearer {TOKEN}")),
            b"",
        )
        .await;
    let br = &state["broker_remediation"][0];
    assert_eq!(br["cluster"], "prod");
    assert_eq!(br["backend"], "log-only");
    assert_eq!(br["last_action"]["broker"], 3);
    assert_eq!(br["alerting_brokers"], serde_json::json!([1, 3]));
}

#[tokio::test]
async fn a_cluster_without_broker_policy_only_holds_scale_downs() {
    let files = Files::new();
    files.add_brokers("  - {cluster: other, backend: log-only, expected_brokers: 3}\n");
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let (s, b) = h
        .alerts(&payload(
            "firing",
            vec![broker_alert_at(
                "firing",
                "x",
                "KafkaBrokerDown",
                "prod",
                "1",
                T_MINUS_1H,
            )],
        ))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["results"], serde_json::json!([]));
    assert!(audit_lines(&files.audit_path()).is_empty());
}

#[tokio::test]
async fn a_bad_broker_label_is_audited_and_never_acted_on() {
    let files = Files::new();
    files.add_brokers(
        "  - {cluster: prod, backend: log-only, expected_brokers: 3, settle_time: 0s}\n",
    );
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let overloaded = |fp, broker| {
        payload(
            "firing",
            vec![broker_alert_at(
                "firing",
                fp,
                "KafkaBrokerOverloaded",
                "prod",
                broker,
                T_MINUS_1H,
            )],
        )
    };
    let (s, b) = h.alerts(&overloaded("bad", "kafka-1")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["results"][0]["outcome"], "skipped");
    assert_eq!(b["results"][0]["reason"], "bad_broker_label");
    assert_eq!(b["results"][0]["broker"], "kafka-1");
    let lines = audit_lines(&files.audit_path());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["reason"], "bad_broker_label");
    assert_eq!(lines[0]["broker"], "kafka-1");
    assert_eq!(lines[0]["alertname"], "KafkaBrokerOverloaded");
    assert_eq!(lines[0]["starts_at"], T_MINUS_1H);
    assert_eq!(
        lines[0]["message"],
        "the alert's broker label Some(\"kafka-1\") is not a Kafka broker id"
    );
    // It is not tracked: it neither counts toward a mass failure nor is re-evaluated, and a
    // second broker of three alerting properly is acted on.
    assert_eq!(h.app.api.engine.reevaluate().await.unwrap(), 0);
    let (_, b) = h.alerts(&overloaded("good", "2")).await;
    assert_eq!(b["results"][0]["outcome"], "dry_run", "{b}");
    assert_eq!(b["results"][0]["action"], "move_leadership");
    assert_eq!(audit_lines(&files.audit_path()).len(), 2);
}

#[tokio::test]
async fn intervals_survive_a_restart_through_the_audit_log() {
    let files = Files::new();
    files.add_brokers(
        "  - {cluster: prod, backend: log-only, expected_brokers: 10, settle_time: 0s}\n",
    );
    let alert = payload(
        "firing",
        vec![broker_alert_at(
            "firing",
            "o1",
            "KafkaBrokerOverloaded",
            "prod",
            "1",
            T_MINUS_1H,
        )],
    );
    {
        let h = harness_with(&files, fake_kube(), |_| {}).await;
        let (_, b) = h.alerts(&alert).await;
        assert_eq!(b["results"][0]["outcome"], "dry_run", "{b}");
    }
    // A new process on the same audit log, five minutes later: the cluster interval (10m)
    // still holds, from the record of the first decision.
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    h.advance(300);
    let other = payload(
        "firing",
        vec![broker_alert_at(
            "firing",
            "o2",
            "KafkaBrokerOverloaded",
            "prod",
            "2",
            T_MINUS_1H,
        )],
    );
    let (_, b) = h.alerts(&other).await;
    assert_eq!(b["results"][0]["reason"], "cluster_cooldown", "{b}");
    let last = audit_lines(&files.audit_path()).pop().unwrap();
    assert_eq!(
        last["message"],
        "the cluster was acted on recently; 300s left of cluster_cooldown"
    );
}
