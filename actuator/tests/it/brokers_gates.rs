//! The safety gates of broker remediation, end to end through the webhook against the fake
//! Kafka cluster: one action at a time, the mass-failure guard, waiting for a running
//! reassignment (ours or anyone's) and acting after it, pause, and dry run per cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
// Only the broker tests use the fake Kafka broker, so it is not part of `support`.
use crate::support::fake_kafka;

use std::time::Duration;

use fake_kafka::{FakeKafka, Req};
use serde_json::Value;
use support::harness::*;
use support::*;

const HOUR_AGO: &str = "2027-01-15T07:00:00Z";

/// `n` brokers on racks a/b, and topic `t` with `n` partitions of RF 3 spread round the ring.
async fn cluster(n: i32) -> FakeKafka {
    let brokers: Vec<(i32, Option<&str>)> = (1..=n)
        .map(|id| (id, Some(if id % 2 == 0 { "b" } else { "a" })))
        .collect();
    let fake = FakeKafka::start(&brokers).await;
    fake.add_topic("t", n, |p| (0..3).map(|i| ((p + i) % n) + 1).collect());
    fake
}

fn policy(fake: &FakeKafka, extra: &str) -> String {
    let extra = if extra.contains("settle_time") {
        extra.to_string()
    } else {
        format!(", settle_time: 0s{extra}")
    };
    format!(
        "  - {{cluster: prod, backend: kafka, kafka: {{bootstrap_servers: ['{}'], request_timeout: 2s}}, poll_interval: 20ms, cluster_cooldown: 10m{extra}}}\n",
        fake.bootstrap()
    )
}

fn alert(status: &str, fp: &str, name: &str, broker: &str) -> Value {
    broker_alert_at(status, fp, name, "prod", broker, HOUR_AGO)
}

async fn wait_for(files: &Files, what: &str, n: usize, f: impl Fn(&Value) -> bool) {
    for _ in 0..500 {
        if audit_lines(&files.audit_path())
            .iter()
            .filter(|r| f(r))
            .count()
            >= n
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "fewer than {n} audit records {what} within 5s:\n{:#?}",
        audit_lines(&files.audit_path())
    );
}

fn alter_count(fake: &FakeKafka) -> usize {
    fake.writes()
        .iter()
        .filter(|(_, r)| matches!(r, Req::Alter(_)))
        .count()
}

fn summary(files: &Files) -> Vec<(String, String, String, String, String)> {
    audit_lines(&files.audit_path())
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
            (
                s("broker"),
                s("trigger"),
                s("outcome"),
                s("action"),
                s("reason"),
            )
        })
        .collect()
}

fn row(b: &str, t: &str, o: &str, a: &str, r: &str) -> (String, String, String, String, String) {
    (b.into(), t.into(), o.into(), a.into(), r.into())
}

#[tokio::test]
async fn two_overloaded_brokers_at_once_act_on_one_then_the_other() {
    let fake = cluster(8).await;
    let files = Files::new();
    files.add_brokers(&policy(&fake, ""));
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let (s, b) = h
        .alerts(&payload(
            "firing",
            vec![
                alert("firing", "o1", "KafkaBrokerOverloaded", "1"),
                alert("firing", "o2", "KafkaBrokerOverloaded", "2"),
            ],
        ))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["results"][0]["outcome"], "applied", "{b}");
    assert_eq!(b["results"][1]["outcome"], "skipped");
    assert_eq!(b["results"][1]["reason"], "remediation_in_progress");
    wait_for(&files, "completed", 1, |r| r["phase"] == "completed").await;
    assert_eq!(alter_count(&fake), 1, "one action");
    // t-0 is [1,2,3]: 2 is overloaded too, so 3 takes the lead, never 2.
    assert_eq!(fake.replicas("t", 0), vec![3, 2, 1]);
    assert_eq!(fake.leader("t", 0), 3);

    // After the cluster interval, the re-evaluation acts on the second broker; the first is in
    // its broker interval.
    h.advance(599);
    h.app.api.engine.reevaluate().await.unwrap();
    assert_eq!(alter_count(&fake), 1, "cluster interval not over");
    h.advance(1);
    h.app.api.engine.reevaluate().await.unwrap();
    wait_for(&files, "completed", 2, |r| r["phase"] == "completed").await;
    assert_eq!(alter_count(&fake), 2);
    assert_eq!(fake.leader("t", 1), 3, "t-1 [2,3,4]: 3 leads now");
    assert_eq!(
        summary(&files),
        vec![
            row("1", "webhook", "applied", "move_leadership", ""),
            row("2", "webhook", "skipped", "none", "remediation_in_progress"),
            row("1", "executor", "applied", "move_leadership", ""),
            row("1", "reevaluate", "skipped", "none", "cluster_cooldown"),
            row("2", "reevaluate", "skipped", "none", "cluster_cooldown"),
            row("1", "reevaluate", "skipped", "none", "broker_cooldown"),
            row("2", "reevaluate", "applied", "move_leadership", ""),
            row("2", "executor", "applied", "move_leadership", ""),
        ]
    );
}

#[tokio::test]
async fn a_mass_failure_acts_on_none_and_is_exported() {
    let fake = cluster(10).await;
    let files = Files::new();
    files.add_brokers(&policy(&fake, ", settle_time: 1m"));
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    // Four separate notifications, as Alertmanager groups by broker: each waits for the others.
    for b in ["1", "2", "3", "4"] {
        let (_, r) = h
            .alerts(&payload(
                "firing",
                vec![alert(
                    "firing",
                    &format!("o{b}"),
                    "KafkaBrokerOverloaded",
                    b,
                )],
            ))
            .await;
        // The cluster size is learnt on the first look at Kafka, which comes after settling.
        assert_eq!(r["results"][0]["reason"], "settling", "{b}: {r}");
    }
    h.advance(60);
    h.app.api.engine.reevaluate().await.unwrap();
    let lines = audit_lines(&files.audit_path());
    let last4: Vec<&str> = lines[lines.len() - 4..]
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(last4, vec!["mass_failure"; 4], "{lines:#?}");
    assert_eq!(
        lines.last().unwrap()["message"],
        "mass failure: 4 of 10 brokers alert at once; acting on none, a human should look"
    );
    assert_eq!(alter_count(&fake), 0, "nothing moved");
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "medic_actuator_mass_failure{cluster=\"prod\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "medic_actuator_brokers_alerting{cluster=\"prod\"}"),
        4.0
    );

    // Two recover: 2 of 10 is not a mass failure any more; one broker is acted on.
    for b in ["3", "4"] {
        h.alerts(&payload(
            "resolved",
            vec![alert(
                "resolved",
                &format!("o{b}"),
                "KafkaBrokerOverloaded",
                b,
            )],
        ))
        .await;
    }
    h.app.api.engine.reevaluate().await.unwrap();
    assert_eq!(alter_count(&fake), 1);
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "medic_actuator_mass_failure{cluster=\"prod\"}"),
        0.0,
        "{m}"
    );
}

#[tokio::test]
async fn an_alert_during_our_reassignment_waits_and_is_acted_on_after_it() {
    let fake = cluster(8).await;
    fake.kill(8);
    let files = Files::new();
    files.add_brokers(&policy(&fake, ""));
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let (_, b) = h
        .alerts(&payload(
            "firing",
            vec![alert("firing", "d8", "KafkaBrokerDown", "8")],
        ))
        .await;
    assert_eq!(b["results"][0]["outcome"], "applied", "{b}");
    assert_eq!(b["results"][0]["action"], "replace_replicas");
    let (_, b) = h
        .alerts(&payload(
            "firing",
            vec![alert("firing", "o1", "KafkaBrokerOverloaded", "1")],
        ))
        .await;
    assert_eq!(b["results"][0]["reason"], "remediation_in_progress", "{b}");
    // While it runs, re-evaluations wait too (and say so once).
    h.app.api.engine.reevaluate().await.unwrap();
    h.app.api.engine.reevaluate().await.unwrap();
    assert_eq!(alter_count(&fake), 1);
    fake.complete_all();
    wait_for(&files, "completed", 1, |r| r["phase"] == "completed").await;
    h.advance(600);
    h.app.api.engine.reevaluate().await.unwrap();
    assert_eq!(
        alter_count(&fake),
        2,
        "acted on after the reassignment and the interval"
    );
    let s = summary(&files);
    assert_eq!(
        s,
        vec![
            row("8", "webhook", "applied", "replace_replicas", ""),
            row("1", "webhook", "skipped", "none", "remediation_in_progress"),
            row(
                "8",
                "reevaluate",
                "skipped",
                "none",
                "remediation_in_progress"
            ),
            row("8", "executor", "applied", "replace_replicas", ""),
            // Broker 8 holds no replica any more: nothing left to replace.
            row("8", "reevaluate", "skipped", "none", "nothing_to_move"),
            row("1", "reevaluate", "applied", "move_leadership", ""),
        ],
        "{s:#?}"
    );
}

#[tokio::test]
async fn someone_elses_reassignment_blocks_until_it_ends() {
    let fake = cluster(8).await;
    fake.foreign_reassignment("t", 5, &[6, 7, 1]);
    let files = Files::new();
    files.add_brokers(&policy(&fake, ""));
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let (_, b) = h
        .alerts(&payload(
            "firing",
            vec![alert("firing", "o1", "KafkaBrokerOverloaded", "1")],
        ))
        .await;
    assert_eq!(b["results"][0]["reason"], "reassignment_in_progress", "{b}");
    let r = &audit_lines(&files.audit_path())[0];
    assert_eq!(
        r["message"],
        "a reassignment is in progress: 1 partitions being reassigned in the cluster (t-5)"
    );
    h.app.api.engine.reevaluate().await.unwrap();
    assert_eq!(
        audit_lines(&files.audit_path()).len(),
        1,
        "same reason: not audited again"
    );
    assert_eq!(alter_count(&fake), 0);
    fake.complete_all();
    h.app.api.engine.reevaluate().await.unwrap();
    assert_eq!(
        alter_count(&fake),
        1,
        "acted on once the other reassignment ended"
    );
}

#[tokio::test]
async fn pause_holds_broker_actions_and_resume_lets_them_through() {
    let fake = cluster(8).await;
    let files = Files::new();
    files.add_brokers(&policy(&fake, ""));
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let auth = format!("Bearer {TOKEN}");
    h.request("POST", "/api/v1/pause", Some(&auth), b"").await;
    let (_, b) = h
        .alerts(&payload(
            "firing",
            vec![alert("firing", "o1", "KafkaBrokerOverloaded", "1")],
        ))
        .await;
    assert_eq!(b["results"][0]["reason"], "paused", "{b}");
    assert_eq!(fake.requests().len(), 0, "no request to Kafka while paused");
    h.request("POST", "/api/v1/resume", Some(&auth), b"").await;
    h.app.api.engine.reevaluate().await.unwrap();
    assert_eq!(alter_count(&fake), 1, "acted on when the pause ended");
}

#[tokio::test]
async fn dry_run_per_cluster_plans_from_the_metadata_and_changes_nothing() {
    let fake = cluster(8).await;
    let files = Files::new();
    files.add_brokers(&policy(&fake, ", dry_run: true"));
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let (_, b) = h
        .alerts(&payload(
            "firing",
            vec![alert("firing", "o1", "KafkaBrokerOverloaded", "1")],
        ))
        .await;
    assert_eq!(b["results"][0]["outcome"], "dry_run", "{b}");
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
    let r = &audit_lines(&files.audit_path())[0];
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["plan"]["changes"][0]["partition"], 0);
    assert_eq!(r["plan"]["changes"][0]["to"], serde_json::json!([2, 3, 1]));
    assert_eq!(
        r["message"],
        "dry run (kafka): would move_leadership: 1 partitions get a new preferred leader (1 leaders move) off broker 1"
    );
}
