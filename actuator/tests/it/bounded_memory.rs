//! What the actuator keeps in memory is bounded: alerts that can lead to no action or hold are
//! not tracked, re-sent deliveries are deduped, and tracked alerts have a ceiling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use serde_json::Value;
use support::harness::*;
use support::*;

fn target_state(state: &Value, target: &str) -> Value {
    state["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == target)
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_resent_alert_without_a_policy_is_a_duplicate() {
    let files = Files::new();
    let kube = fake_kube();
    let h = harness_with(&files, kube.clone(), |_| {}).await;
    let body = payload(
        "firing",
        vec![lag_alert(
            "firing",
            "nopol",
            "prod",
            "unknown-group",
            Some(9000),
        )],
    );
    let (s1, b1) = h.alerts(&body).await;
    let (s2, b2) = h.alerts(&body).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(b1["results"][0]["reason"], "no_policy", "{b1:#}");
    assert_eq!(b2["results"][0]["reason"], "duplicate", "{b2:#}");
    let lines = audit_lines(&files.audit_path());
    let reasons: Vec<&str> = lines
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(reasons, ["no_policy", "duplicate"]);
    assert!(
        lines[1]["message"]
            .as_str()
            .unwrap()
            .starts_with("this alert delivery was already handled"),
        "{:#}",
        lines[1]
    );
    // After the dedupe window it is a new delivery again.
    h.advance(3600);
    let (_, b3) = h.alerts(&body).await;
    assert_eq!(b3["results"][0]["reason"], "no_policy", "{b3:#}");
    assert!(kube.writes().is_empty());
}

#[tokio::test]
async fn broker_alerts_of_a_cluster_without_policies_are_not_tracked() {
    let files = Files::new();
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let alerts: Vec<Value> = (0..50)
        .map(|i| broker_alert("firing", &format!("fuzz{i}"), "KafkaBrokerDown", "nowhere"))
        .collect();
    let (status, _) = h.alerts(&payload("firing", alerts)).await;
    assert_eq!(status, 200);
    let state = h.app.api.engine.state().await;
    assert_eq!(state["broker_alerts"], serde_json::json!([]), "{state:#}");
    // A cluster with a lag policy does track them: they hold its scale-downs.
    let (status, _) = h
        .alerts(&payload(
            "firing",
            vec![broker_alert("firing", "real", "KafkaBrokerDown", "prod")],
        ))
        .await;
    assert_eq!(status, 200);
    let state = h.app.api.engine.state().await;
    let held: Vec<&str> = state["broker_alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(held, ["prod"]);
}

#[tokio::test]
async fn tracked_alerts_and_broker_holds_have_a_ceiling() {
    let files = Files::new();
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    h.prom.set_lag("prod", "orders", 2000.0);
    // 1,100 distinct broker alert fingerprints on a cluster with a lag policy.
    for batch in 0..11 {
        let alerts: Vec<Value> = (0..100)
            .map(|i| {
                broker_alert(
                    "firing",
                    &format!("b{batch}-{i}"),
                    "KafkaBrokerOverloaded",
                    "prod",
                )
            })
            .collect();
        let (status, body) = h.alerts(&payload("firing", alerts)).await;
        assert_eq!(status, 200, "{body:#}");
        h.advance(1);
    }
    // 100 distinct lag alert fingerprints for one group.
    for i in 0..100 {
        let (status, body) = h
            .alerts(&payload(
                "firing",
                vec![lag_alert(
                    "firing",
                    &format!("l{i}"),
                    "prod",
                    "orders",
                    None,
                )],
            ))
            .await;
        assert_eq!(status, 200, "{body:#}");
        h.advance(1);
    }
    let state = h.app.api.engine.state().await;
    let holds = state["broker_alerts"].as_array().unwrap();
    assert_eq!(holds.len(), 1024);
    // The newest are kept: the last batch is all there, the first one is gone.
    let fps: Vec<&str> = holds
        .iter()
        .filter_map(|b| b["fingerprint"].as_str())
        .collect();
    assert!(fps.contains(&"b10-99") && !fps.contains(&"b0-0"), "{fps:?}");
    let tracked = target_state(&state, "shop/orders-consumer")["tracked_alerts"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(tracked.len(), 64);
    let names: Vec<&str> = tracked
        .iter()
        .map(|t| t["fingerprint"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"l99") && !names.contains(&"l0"),
        "{names:?}"
    );
}
