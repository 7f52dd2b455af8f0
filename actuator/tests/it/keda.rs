//! KEDA's External Scaler, with a tonic client standing in for KEDA against the real gRPC
//! server: IsActive follows the persistent-lag webhooks, StreamIsActive pushes the change,
//! GetMetricSpec/GetMetrics answer from the policy and Prometheus, a group without a policy is
//! NotFound and audited, and a `scaler: keda` policy never gets a PATCH.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use medic_actuator::keda::proto::external_scaler_client::ExternalScalerClient;
use medic_actuator::keda::proto::{GetMetricsRequest, ScaledObjectRef};
use support::harness::*;
use support::*;
use tonic::transport::Channel;

/// prod/orders is scaled by KEDA; prod/billing by the actuator.
const POLICIES: &str = r#"policies:
  - cluster: prod
    consumergroup: orders
    deployment: {namespace: shop, name: orders-consumer}
    min_replicas: 1
    max_replicas: 10
    lag_per_replica: 1500
    scaler: keda
  - cluster: prod
    consumergroup: billing
    deployment: {namespace: billing, name: billing-consumer}
"#;

/// A bound for every wait on the server.
const BOUND: Duration = Duration::from_secs(5);

/// The bound on a StreamIsActive push after the webhook is answered: well under the stream's
/// 5 s re-check, so only the push itself can meet it.
const PUSH_BOUND: Duration = Duration::from_secs(1);

fn so(cluster: &str, group: &str) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "orders-so".into(),
        namespace: "shop".into(),
        scaler_metadata: HashMap::from([
            ("cluster".to_string(), cluster.to_string()),
            ("consumergroup".to_string(), group.to_string()),
        ]),
    }
}

struct Scaler {
    h: Harness,
    files: Files,
    client: ExternalScalerClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), String>>,
}

async fn start() -> Scaler {
    let files = Files::new();
    std::fs::write(files.path("policies.yaml"), POLICIES).unwrap();
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(medic_actuator::keda::serve(
        listener,
        h.app.keda_service(),
        async move {
            let _ = rx.await;
        },
    ));
    let client = ExternalScalerClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    Scaler {
        h,
        files,
        client,
        stop: Some(tx),
        server,
    }
}

impl Scaler {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let r = tokio::time::timeout(BOUND, self.server).await;
        assert!(
            matches!(r, Ok(Ok(Ok(())))),
            "the server stops cleanly: {r:?}"
        );
    }

    async fn is_active(&mut self, cluster: &str, group: &str) -> bool {
        self.client
            .is_active(so(cluster, group))
            .await
            .unwrap()
            .into_inner()
            .result
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        audit_lines(&self.files.audit_path())
    }
}

#[tokio::test]
async fn is_active_follows_the_webhook_and_stream_is_active_pushes_it() {
    let mut s = start().await;
    assert!(!s.is_active("prod", "orders").await, "nothing fires yet");
    let mut stream = s
        .client
        .stream_is_active(so("prod", "orders"))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(BOUND, stream.message())
        .await
        .expect("the current state first")
        .unwrap()
        .unwrap();
    assert!(!first.result);

    let (code, _) =
        s.h.alerts(&payload(
            "firing",
            vec![lag_alert(
                "firing",
                "fp-orders",
                "prod",
                "orders",
                Some(9000),
            )],
        ))
        .await;
    assert_eq!(code, 200);
    let pushed = tokio::time::timeout(PUSH_BOUND, stream.message())
        .await
        .expect("a push within the bound")
        .unwrap()
        .unwrap();
    assert!(pushed.result, "the push says active");
    assert!(s.is_active("prod", "orders").await);

    // The change is audited with trigger keda; the lag decision is scaled_by_keda.
    let audit = s.audit();
    let keda: Vec<_> = audit.iter().filter(|r| r["trigger"] == "keda").collect();
    assert_eq!(keda.len(), 1, "{audit:#?}");
    assert_eq!(keda[0]["consumergroup"], "orders");
    assert_eq!(keda[0]["target"], "shop/orders-consumer");
    assert!(keda[0]["message"].as_str().unwrap().contains("now active"));

    // Resolved: inactive again, pushed and audited.
    let (code, _) =
        s.h.alerts(&payload(
            "resolved",
            vec![lag_alert(
                "resolved",
                "fp-orders",
                "prod",
                "orders",
                Some(10),
            )],
        ))
        .await;
    assert_eq!(code, 200);
    let pushed = tokio::time::timeout(PUSH_BOUND, stream.message())
        .await
        .expect("a push within the bound")
        .unwrap()
        .unwrap();
    assert!(!pushed.result);
    assert!(!s.is_active("prod", "orders").await);
    let keda = s
        .audit()
        .into_iter()
        .filter(|r| r["trigger"] == "keda")
        .count();
    assert_eq!(keda, 2);
    drop(stream);
    s.stop().await;
}

#[tokio::test]
async fn metric_spec_is_the_policy_target_and_metrics_the_prometheus_lag() {
    let mut s = start().await;
    let spec = s
        .client
        .get_metric_spec(so("prod", "orders"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    assert_eq!(spec.metric_specs[0].target_size, 1500, "lag_per_replica");
    let name = spec.metric_specs[0].metric_name.clone();
    s.h.prom.set_lag("prod", "orders", 7777.0);
    let req = || GetMetricsRequest {
        scaled_object_ref: Some(so("prod", "orders")),
        metric_name: name.clone(),
    };

    // Not firing: 0, whatever the instantaneous lag (a spike shorter than the window).
    let m = s.client.get_metrics(req()).await.unwrap().into_inner();
    assert_eq!(m.metric_values[0].metric_value, 0);
    assert_eq!(m.metric_values[0].metric_name, name);

    let (code, _) =
        s.h.alerts(&payload(
            "firing",
            vec![lag_alert(
                "firing",
                "fp-orders",
                "prod",
                "orders",
                Some(9000),
            )],
        ))
        .await;
    assert_eq!(code, 200);
    let m = s.client.get_metrics(req()).await.unwrap().into_inner();
    assert_eq!(m.metric_values[0].metric_value, 7777, "Prometheus's lag");
    s.stop().await;
}

#[tokio::test]
async fn a_group_without_a_policy_is_not_found_and_audited() {
    let mut s = start().await;
    let err = s
        .client
        .is_active(so("prod", "nobody"))
        .await
        .expect_err("no policy");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("no policy"), "{}", err.message());
    assert!(err.message().contains("\"nobody\""), "{}", err.message());
    let audit = s.audit();
    let r = audit.last().expect("an audit record");
    assert_eq!(r["trigger"], "keda");
    assert_eq!(r["reason"], "no_policy");
    assert_eq!(r["consumergroup"], "nobody");

    let mut bad = so("prod", "orders");
    bad.scaler_metadata.remove("cluster");
    let err = s.client.get_metric_spec(bad).await.expect_err("no cluster");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    s.stop().await;
}

#[tokio::test]
async fn a_keda_policy_is_never_patched() {
    let s = start().await;
    for (i, lag) in [9000u64, 20000, 50000].iter().enumerate() {
        let (code, body) =
            s.h.alerts(&payload(
                "firing",
                vec![lag_alert(
                    "firing",
                    &format!("fp-{i}"),
                    "prod",
                    "orders",
                    Some(*lag),
                )],
            ))
            .await;
        assert_eq!(code, 200);
        assert_eq!(body["results"][0]["reason"], "scaled_by_keda", "{body}");
        s.h.advance(600);
    }
    assert!(
        s.h.kube.scale_writes().is_empty(),
        "no PATCH of a keda-scaled Deployment"
    );
    assert_eq!(s.h.kube.replicas("shop", "orders-consumer"), 2);
    let skipped: Vec<_> = s
        .audit()
        .into_iter()
        .filter(|r| r["reason"] == "scaled_by_keda")
        .collect();
    assert_eq!(skipped.len(), 3);
    assert_eq!(skipped[0]["outcome"], "skipped");
    assert_eq!(skipped[0]["target"], "shop/orders-consumer");

    // The actuator-scaled group next to it still scales (the check is per policy).
    s.h.prom.set_lag("prod", "billing", 3000.0);
    let (code, body) =
        s.h.alerts(&payload(
            "firing",
            vec![lag_alert("firing", "fp-b", "prod", "billing", Some(3000))],
        ))
        .await;
    assert_eq!(code, 200);
    assert_eq!(body["results"][0]["outcome"], "applied", "{body}");
    assert_eq!(s.h.kube.scale_writes().len(), 1);
    s.stop().await;
}
