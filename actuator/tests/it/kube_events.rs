//! Scale actions as Kubernetes Events on their Deployments (reason KafkaMedicScaled), through
//! the webhook, against the stateful fake Events API next to the fake Deployments.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support;
use support::fake_events::FakeEvents;
use support::harness::*;
use support::*;

/// Poll `f` (real time) until it gives a value; the machine may be loaded.
async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until a series has `want` and return the exposition.
async fn wait_metric(h: &Harness, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = h.metrics().await;
        if metric(&m, series) == want {
            return m;
        }
        assert!(Instant::now() < deadline, "{series} is not {want}:\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fire(fp: &str, group: &str, lag: u64) -> Vec<u8> {
    payload(
        "firing",
        vec![lag_alert("firing", fp, "prod", group, Some(lag))],
    )
}

/// The one audit record of `target` with `outcome`.
fn audit_record(files: &Files, target: &str, outcome: &str) -> Value {
    let found: Vec<Value> = audit_lines(&files.audit_path())
        .into_iter()
        .filter(|r| r["target"] == target && r["outcome"] == outcome)
        .collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    found.into_iter().next().unwrap()
}

const CREATED: &str = r#"medic_actuator_kube_events_total{result="created"}"#;
const FAILED: &str = r#"medic_actuator_kube_events_total{result="failed"}"#;
const DROPPED: &str = r#"medic_actuator_kube_events_total{result="dropped"}"#;

#[tokio::test]
async fn a_scale_is_one_event_on_its_deployment_and_skips_are_none() {
    let files = Files::new();
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let events = FakeEvents::default();
    events.mount(&h._kube_server).await;

    // A skip before the scale (1500 offsets need the 2 replicas there are).
    let (s, body) = h.alerts(&fire("fp-skip", "orders", 1500)).await;
    assert_eq!(
        (s, &body["results"][0]["reason"]),
        (200, &json!("at_desired")),
        "{body}"
    );
    // The scale.
    let (s, body) = h.alerts(&fire("fp-up", "orders", 4000)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["results"][0]["outcome"], "applied", "{body}");
    assert_eq!(h.kube.replicas("shop", "orders-consumer"), 4);
    // A skip after it (cooldown), then a scale of the other target. Events are sent in order,
    // one at a time: once the second scale's Event is there, an Event of either skip would be
    // there too.
    let (_, body) = h.alerts(&fire("fp-cool", "orders", 8000)).await;
    assert_eq!(body["results"][0]["reason"], "cooldown", "{body}");
    let (_, body) = h.alerts(&fire("fp-billing", "billing", 3000)).await;
    assert_eq!(body["results"][0]["outcome"], "applied", "{body}");
    let all = wait_for("two Events", || {
        let e = events.events();
        (e.len() >= 2).then_some(e)
    })
    .await;
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(
        events.refused(),
        vec![],
        "every Event passed the API's checks"
    );

    let orders = audit_record(&files, "shop/orders-consumer", "applied");
    let ev = &all[0];
    assert_eq!(
        ev["involvedObject"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "orders-consumer",
               "namespace": "shop", "uid": "uid-shop-orders-consumer"})
    );
    assert_eq!(ev["metadata"]["namespace"], "shop");
    assert!(
        ev["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("orders-consumer."),
        "{ev}"
    );
    assert_eq!(ev["reason"], "KafkaMedicScaled");
    assert_eq!(ev["type"], "Normal");
    assert_eq!(ev["action"], "scale_up");
    assert_eq!(ev["message"], orders["message"]);
    assert_eq!(
        ev["message"],
        "scaled shop/orders-consumer from 2 to 4 (desired 4, lag 4000 from annotation)"
    );
    assert_eq!(ev["source"], json!({"component": "medic-actuator"}));
    assert_eq!(ev["reportingComponent"], "medic-actuator");
    assert_eq!(ev["reportingInstance"], "actuator-test");
    assert_eq!(ev["firstTimestamp"], orders["ts"]);
    assert_eq!(ev["lastTimestamp"], orders["ts"]);
    assert_eq!(ev["count"], 1);

    let billing = audit_record(&files, "billing/billing-consumer", "applied");
    assert_eq!(all[1]["involvedObject"]["name"], "billing-consumer");
    assert_eq!(all[1]["involvedObject"]["namespace"], "billing");
    assert_eq!(all[1]["message"], billing["message"]);

    let m = wait_metric(&h, CREATED, 2.0).await;
    assert_eq!(metric(&m, FAILED), 0.0, "{m}");
    assert_eq!(metric(&m, DROPPED), 0.0, "{m}");
    assert_eq!(
        metric(
            &m,
            r#"medic_actuator_kube_requests_total{verb="create",resource="events",code="201"}"#
        ),
        2.0,
        "{m}"
    );
}

#[tokio::test]
async fn events_forbidden_still_scales_and_audits() {
    let files = Files::new();
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let events = FakeEvents::default();
    events.mount(&h._kube_server).await;
    events.forbid();

    let (s, body) = h.alerts(&fire("fp-up", "orders", 4000)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["results"][0]["outcome"], "applied", "{body}");
    assert_eq!(h.kube.replicas("shop", "orders-consumer"), 4);
    let record = audit_record(&files, "shop/orders-consumer", "applied");
    assert_eq!(record["to_replicas"], 4);

    let m = wait_metric(&h, FAILED, 1.0).await;
    assert_eq!(metric(&m, CREATED), 0.0, "{m}");
    assert_eq!(
        metric(
            &m,
            r#"medic_actuator_kube_requests_total{verb="create",resource="events",code="403"}"#
        ),
        1.0,
        "{m}"
    );
    let refused = events.refused();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0].code, 403);
    assert!(events.events().is_empty());
    // The next decision is not held up either.
    h.advance(61);
    let (s, body) = h.alerts(&fire("fp-up2", "orders", 8000)).await;
    assert_eq!(
        (s, &body["results"][0]["outcome"]),
        (200, &json!("applied")),
        "{body}"
    );
    assert_eq!(h.kube.replicas("shop", "orders-consumer"), 6);
    wait_metric(&h, FAILED, 2.0).await;
}

#[tokio::test]
async fn a_failed_scale_is_a_warning_event_with_the_audit_message() {
    let files = Files::new();
    let kube = fake_kube();
    kube.state
        .lock()
        .unwrap()
        .scale_faults
        .push_back((403, "Forbidden"));
    let h = harness_with(&files, kube, |_| {}).await;
    let events = FakeEvents::default();
    events.mount(&h._kube_server).await;

    let (s, body) = h.alerts(&fire("fp-up", "orders", 4000)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["results"][0]["outcome"], "failed", "{body}");
    assert_eq!(body["results"][0]["reason"], "kube_forbidden", "{body}");
    let record = audit_record(&files, "shop/orders-consumer", "failed");
    let all = wait_for("the Event", || {
        let e = events.events();
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["type"], "Warning");
    assert_eq!(all[0]["reason"], "KafkaMedicScaled");
    assert_eq!(all[0]["message"], record["message"]);
    assert!(
        all[0]["message"]
            .as_str()
            .unwrap()
            .contains("deployments/scale"),
        "{}",
        all[0]
    );
    assert_eq!(all[0]["involvedObject"]["uid"], "uid-shop-orders-consumer");
}

#[tokio::test]
async fn a_hanging_events_api_does_not_delay_the_webhook() {
    let files = Files::new();
    let h = harness_with(&files, fake_kube(), |c| {
        c.kubernetes.request_timeout = Duration::from_secs(3);
    })
    .await;
    let events = FakeEvents::default();
    events.state.lock().unwrap().delay = Duration::from_secs(30);
    events.mount(&h._kube_server).await;

    let started = Instant::now();
    let (s, body) = h.alerts(&fire("fp-up", "orders", 4000)).await;
    let took = started.elapsed();
    assert_eq!(
        (s, &body["results"][0]["outcome"]),
        (200, &json!("applied")),
        "{body}"
    );
    // The Event's time-out is 3 s and the API holds it for 30 s: the answer waited for neither.
    assert!(took < Duration::from_secs(3), "webhook took {took:?}");
    audit_record(&files, "shop/orders-consumer", "applied");
    // The Event gives up after the request time-out and is counted.
    let m = wait_metric(&h, FAILED, 1.0).await;
    assert_eq!(metric(&m, CREATED), 0.0, "{m}");
}
