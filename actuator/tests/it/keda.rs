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
    start_with(POLICIES, |_| {}).await
}

/// The server on a loopback port with `policies`, the harness's config changed by `tweak`, and a
/// plain client.
async fn start_with(policies: &str, tweak: impl FnOnce(&mut medic_actuator::Config)) -> Scaler {
    let files = Files::new();
    std::fs::write(files.path("policies.yaml"), policies).unwrap();
    let h = harness_with(&files, fake_kube(), tweak).await;
    let (addr, stop, server) = serve(&h, None).await;
    let client = ExternalScalerClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    Scaler {
        h,
        files,
        client,
        stop: Some(stop),
        server,
    }
}

/// Serve `h`'s External Scaler (over TLS with `tls`) on a loopback port.
async fn serve(
    h: &Harness,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(medic_actuator::keda::serve_with_tls(
        listener,
        h.app.keda_service(),
        tls,
        async move {
            let _ = rx.await;
        },
    ));
    (addr, tx, server)
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

/// A bound for events driven by the ALERTS poll and the TLS handshakes: generous, CI is a
/// loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(30);

/// The ALERTS poll interval in these tests.
const POLL: Duration = Duration::from_millis(100);

/// Wait for `f` to give a value, checking every 20 ms, failing after [`WAIT`].
async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn keda_records(s: &Scaler) -> Vec<serde_json::Value> {
    s.audit()
        .into_iter()
        .filter(|r| r["trigger"] == "keda")
        .collect()
}

fn so_metric(cluster: &str, group: &str, metric: &str) -> ScaledObjectRef {
    let mut r = so(cluster, group);
    r.scaler_metadata
        .insert("metric".to_string(), metric.to_string());
    r
}

/// prod/orders (KEDA) has a lag_seconds target; prod/payments (KEDA) a fractional one;
/// prod/billing (actuator) none.
const POLICIES_SECONDS: &str = r#"policies:
  - cluster: prod
    consumergroup: orders
    deployment: {namespace: shop, name: orders-consumer}
    lag_per_replica: 1500
    lag_seconds_per_replica: 30
    scaler: keda
  - cluster: prod
    consumergroup: payments
    deployment: {namespace: shop, name: payments-consumer}
    lag_seconds_per_replica: 2.5
    scaler: keda
  - cluster: prod
    consumergroup: billing
    deployment: {namespace: billing, name: billing-consumer}
"#;

#[tokio::test]
async fn lag_seconds_targets_the_policy_and_reads_the_recording_rule_while_the_alert_fires() {
    use medic_actuator::keda::proto::{MetricSpec, MetricValue};
    let mut s = start_with(POLICIES_SECONDS, |_| {}).await;
    let name = "kafka_medic_consumergroup_lag_seconds";
    let spec = s
        .client
        .get_metric_spec(so_metric("prod", "orders", "lag_seconds"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        spec.metric_specs,
        vec![MetricSpec {
            metric_name: name.into(),
            target_size: 30,
            target_size_float: 30.0,
        }]
    );
    // A fractional target: the float as it is, the integer rounded up.
    let spec = s
        .client
        .get_metric_spec(so_metric("prod", "payments", "lag_seconds"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        spec.metric_specs,
        vec![MetricSpec {
            metric_name: name.into(),
            target_size: 3,
            target_size_float: 2.5,
        }]
    );

    s.h.prom.set_lag_seconds("prod", "orders", 95.5);
    s.h.prom.set_lag("prod", "orders", 7777.0);
    let req = |metric: &str, name: &str| GetMetricsRequest {
        scaled_object_ref: Some(so_metric("prod", "orders", metric)),
        metric_name: name.into(),
    };
    // Not firing: 0, as for `lag`.
    let m = s
        .client
        .get_metrics(req("lag_seconds", name))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        m.metric_values,
        vec![MetricValue {
            metric_name: name.into(),
            metric_value: 0,
            metric_value_float: 0.0,
        }]
    );
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
    let m = s
        .client
        .get_metrics(req("lag_seconds", name))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        m.metric_values,
        vec![MetricValue {
            metric_name: name.into(),
            metric_value: 96,
            metric_value_float: 95.5,
        }],
        "the recording rule's seconds (the integer rounded up)"
    );
    // The same group with `metric: lag` still reads offsets.
    let m = s
        .client
        .get_metrics(req("lag", "kafka_medic_consumergroup_lag"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.metric_values[0].metric_value, 7777);
    assert!(s.is_active("prod", "orders").await);

    // No series for the group: Unavailable, naming the rule.
    s.h.prom.lag_seconds.lock().unwrap().clear();
    let err = s
        .client
        .get_metrics(req("lag_seconds", name))
        .await
        .expect_err("no series");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(
        err.message(),
        "Prometheus has no cluster_consumergroup:kafka_consumergroup_lag_seconds:max series for cluster \"prod\" consumergroup \"orders\""
    );

    // A policy without lag_seconds_per_replica: every call is InvalidArgument naming the key.
    let want = "ScaledObject shop/orders-so: metric: lag_seconds needs lag_seconds_per_replica in the policy of cluster \"prod\" consumergroup \"billing\", which has none (add it to the policy file, or use metric: lag)";
    let err = s
        .client
        .get_metric_spec(so_metric("prod", "billing", "lag_seconds"))
        .await
        .expect_err("no lag_seconds_per_replica");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), want);
    let err = s
        .client
        .is_active(so_metric("prod", "billing", "lag_seconds"))
        .await
        .expect_err("no lag_seconds_per_replica");
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::InvalidArgument, want)
    );
    // An unknown metric is still refused, and a group without a policy is still NotFound.
    let err = s
        .client
        .get_metric_spec(so_metric("prod", "orders", "lag_offsets"))
        .await
        .expect_err("unknown metric");
    assert_eq!(
        (err.code(), err.message()),
        (
            tonic::Code::InvalidArgument,
            "metric: \"lag_offsets\" is not one of lag, lag_seconds"
        )
    );
    let err = s
        .client
        .get_metric_spec(so_metric("prod", "nobody", "lag_seconds"))
        .await
        .expect_err("no policy");
    assert_eq!(err.code(), tonic::Code::NotFound);
    s.stop().await;
}

#[tokio::test]
async fn a_group_only_alerts_shows_firing_becomes_active_and_inactive_when_it_stops() {
    let mut s = start_with(POLICIES, |c| c.keda.alerts_poll_interval = POLL).await;
    let mut stream = s
        .client
        .stream_is_active(so("prod", "orders"))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the current state first")
        .unwrap()
        .unwrap();
    assert!(!first.result);

    // Prometheus shows the alert; no webhook ever comes.
    s.h.prom.set_lag_alert("prod", "orders", true);
    let pushed = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a push after the next poll")
        .unwrap()
        .unwrap();
    assert!(pushed.result, "the push says active");
    assert!(s.is_active("prod", "orders").await);
    let keda = keda_records(&s);
    assert_eq!(keda.len(), 1, "{keda:#?}");
    let r = &keda[0];
    for (k, v) in [
        ("trigger", "keda"),
        ("outcome", "applied"),
        ("action", "none"),
        ("alertname", "KafkaConsumerLagPersistent"),
        ("alert_status", "firing"),
        ("cluster", "prod"),
        ("consumergroup", "orders"),
        ("target", "shop/orders-consumer"),
        ("instance", "actuator-test"),
        (
            "message",
            "KEDA told: group \"orders\" on cluster \"prod\" is now active (KafkaConsumerLagPersistent fires in Prometheus's ALERTS)",
        ),
    ] {
        assert_eq!(r[k], v, "audit field {k} in {r}");
    }
    assert!(r["fingerprint"].is_null(), "no notification: {r}");
    assert!(
        s.audit().iter().all(|r| r["trigger"] != "webhook"),
        "no webhook was sent"
    );

    // An actuator-scaled group shown firing answers true too, without a record (only
    // `scaler: keda` groups are audited, as for the webhooks).
    s.h.prom.set_lag_alert("prod", "billing", true);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !s.is_active("prod", "billing").await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "billing never became active"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(keda_records(&s).len(), 1);

    // It stops firing in ALERTS: inactive, pushed and audited.
    s.h.prom.set_lag_alert("prod", "orders", false);
    let pushed = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a push after the next poll")
        .unwrap()
        .unwrap();
    assert!(!pushed.result, "the push says inactive");
    assert!(!s.is_active("prod", "orders").await);
    assert!(s.is_active("prod", "billing").await, "billing still fires");
    let keda = keda_records(&s);
    assert_eq!(keda.len(), 2, "{keda:#?}");
    assert_eq!(keda[1]["alert_status"], "resolved");
    assert_eq!(keda[1]["outcome"], "applied");
    assert_eq!(
        keda[1]["message"],
        "KEDA told: group \"orders\" on cluster \"prod\" is now inactive (KafkaConsumerLagPersistent no longer fires in Prometheus's ALERTS)"
    );
    drop(stream);
    s.stop().await;
}

#[tokio::test]
async fn when_alerts_cannot_be_read_the_webhook_state_stays_and_each_outage_is_audited_once() {
    let mut s = start_with(POLICIES, |c| c.keda.alerts_poll_interval = POLL).await;
    let fallbacks = |s: &Scaler| -> Vec<serde_json::Value> {
        s.audit()
            .into_iter()
            .filter(|r| r["reason"] == "alerts_source_webhook_fallback")
            .collect()
    };
    // orders fires through the webhook only (ALERTS shows nothing), billing through ALERTS only.
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
    s.h.prom.set_lag_alert("prod", "billing", true);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !s.is_active("prod", "billing").await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "billing never active"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        s.is_active("prod", "orders").await,
        "a poll that does not show a webhook's group leaves it"
    );

    // Prometheus goes down: one record says so.
    s.h.prom.set_down(true);
    let rec = until("the fallback record", || fallbacks(&s).into_iter().next()).await;
    for (k, v) in [
        ("trigger", "keda"),
        ("outcome", "failed"),
        ("action", "none"),
        ("reason", "alerts_source_webhook_fallback"),
        ("alertname", "KafkaConsumerLagPersistent"),
        ("instance", "actuator-test"),
    ] {
        assert_eq!(rec[k], v, "audit field {k} in {rec}");
    }
    let msg = rec["message"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "cannot read the firing KafkaConsumerLagPersistent alerts from Prometheus's ALERTS (prometheus query \"ALERTS{alertstate=\\\"firing\\\",alertname=\\\"KafkaConsumerLagPersistent\\\"}\" failed: "
        ),
        "{msg}"
    );
    assert!(
        msg.ends_with("); until it answers, KEDA's IsActive follows the webhooks this replica received (a group ALERTS showed firing stays active until its resolved notification or alert_ttl)"),
        "{msg}"
    );
    // Three more failed polls: still one record; the state is as it was.
    let n = s.h.prom.lag_alert_queries();
    until("three more polls", || {
        (s.h.prom.lag_alert_queries() >= n + 3).then_some(())
    })
    .await;
    assert_eq!(fallbacks(&s).len(), 1, "one record per outage");
    assert!(
        s.is_active("prod", "orders").await,
        "the webhook state stays"
    );
    assert!(
        s.is_active("prod", "billing").await,
        "what ALERTS showed last stays"
    );
    // The webhooks still change it meanwhile.
    let mut stream = s
        .client
        .stream_is_active(so("prod", "orders"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        tokio::time::timeout(WAIT, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .result
    );
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
        .expect("the webhook's push")
        .unwrap()
        .unwrap();
    assert!(!pushed.result);

    // Prometheus answers again: one record says so, and ALERTS counts again.
    s.h.prom.set_down(false);
    let back = until("the record of Prometheus answering again", || {
        s.audit().into_iter().find(|r| {
            r["trigger"] == "keda"
                && r["seq"].as_u64() > rec["seq"].as_u64()
                && r["alert_status"].is_null()
        })
    })
    .await;
    assert_eq!(back["outcome"], "applied");
    assert!(back["reason"].is_null(), "{back}");
    assert_eq!(
        back["message"],
        "Prometheus answers again: KEDA's IsActive follows its ALERTS (1 KafkaConsumerLagPersistent firing) and the webhooks"
    );
    s.h.prom.set_lag_alert("prod", "billing", false);
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.is_active("prod", "billing").await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "billing never inactive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A second outage is a second record.
    s.h.prom.set_down(true);
    until("the second outage's record", || {
        (fallbacks(&s).len() == 2).then_some(())
    })
    .await;
    s.h.prom.set_down(false);
    drop(stream);
    s.stop().await;
}

/// Certificates for the TLS tests, made with rcgen: a CA, a server certificate for `localhost`
/// and a client certificate signed by it, and a second CA with a client certificate of its own.
struct Pki {
    files: Files,
}

fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// A certificate signed by `ca`: (certificate PEM, key PEM).
fn leaf(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    names: &[&str],
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "keda-operator");
    params.extended_key_usages = vec![usage];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new() -> Self {
        let files = Files::new();
        std::fs::write(files.path("policies.yaml"), POLICIES).unwrap();
        let (ours, theirs) = (ca("kafka-medic test CA"), ca("another CA"));
        let server = leaf(
            &ours,
            &["localhost"],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(&ours, &[], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        let stranger = leaf(&theirs, &[], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        for (name, text) in [
            ("ca.pem", ours.pem()),
            ("other-ca.pem", theirs.pem()),
            ("server.pem", server.0),
            ("server.key", server.1),
            ("client.pem", client.0),
            ("client.key", client.1),
            ("stranger.pem", stranger.0),
            ("stranger.key", stranger.1),
        ] {
            std::fs::write(files.path(name), text).unwrap();
        }
        Self { files }
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.files.path(name)).unwrap()
    }

    /// The server's TLS, requiring a client certificate with `mutual`.
    fn server(&self, mutual: bool) -> tonic::transport::ServerTlsConfig {
        let cfg = medic_actuator::config::KedaTlsConfig {
            cert_file: Some(self.files.path("server.pem")),
            key_file: Some(self.files.path("server.key")),
            client_ca_file: mutual.then(|| self.files.path("ca.pem")),
        };
        medic_actuator::keda::tls::server_tls(&cfg)
            .unwrap()
            .expect("a TLS config")
    }

    /// A client trusting `ca` (a file name), with the client certificate `identity` if any,
    /// asking IsActive for prod/orders: its answer, or the whole error chain.
    async fn is_active(
        &self,
        addr: std::net::SocketAddr,
        ca: &str,
        identity: Option<&str>,
    ) -> Result<bool, String> {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.read(ca)))
            .domain_name("localhost");
        if let Some(id) = identity {
            tls = tls.identity(Identity::from_pem(
                self.read(&format!("{id}.pem")),
                self.read(&format!("{id}.key")),
            ));
        }
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .connect_timeout(WAIT)
            .timeout(WAIT)
            .tls_config(tls)
            .unwrap();
        let channel = endpoint.connect().await.map_err(|e| chain(&e))?;
        let mut client = ExternalScalerClient::new(channel);
        client
            .is_active(so("prod", "orders"))
            .await
            .map(|r| r.into_inner().result)
            .map_err(|e| format!("{e:?}: {}", chain(&e)))
    }
}

/// An error and its sources, joined.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

#[tokio::test]
async fn mutual_tls_answers_a_client_certificate_of_the_ca_and_refuses_the_others() {
    let pki = Pki::new();
    let h = harness_with(&pki.files, fake_kube(), |_| {}).await;
    let (addr, stop, server) = serve(&h, Some(pki.server(true))).await;

    // KEDA's caCert + tlsClientCert/tlsClientKey: answers.
    assert_eq!(
        pki.is_active(addr, "ca.pem", Some("client")).await,
        Ok(false)
    );

    // A client trusting another CA: its handshake fails on the server's certificate.
    let err = pki
        .is_active(addr, "other-ca.pem", Some("client"))
        .await
        .expect_err("the server's certificate is not trusted");
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );

    // No client certificate: refused by the server.
    let err = pki
        .is_active(addr, "ca.pem", None)
        .await
        .expect_err("a client certificate is required");
    assert!(
        err.contains("received fatal alert: CertificateRequired"),
        "{err}"
    );

    // A client certificate of another CA: refused by the server.
    let err = pki
        .is_active(addr, "ca.pem", Some("stranger"))
        .await
        .expect_err("the client certificate's CA is not the configured one");
    assert!(err.contains("received fatal alert: UnknownCA"), "{err}");

    // Plain HTTP/2 on the TLS port gets nothing.
    let plain = async {
        let mut c = ExternalScalerClient::connect(format!("http://{addr}"))
            .await
            .map_err(|e| chain(&e))?;
        c.is_active(so("prod", "orders"))
            .await
            .map_err(|e| format!("{e:?}"))
    };
    assert!(
        tokio::time::timeout(WAIT, plain).await.unwrap().is_err(),
        "a plaintext client is not served"
    );

    // The server still answers after the refusals.
    assert_eq!(
        pki.is_active(addr, "ca.pem", Some("client")).await,
        Ok(false)
    );
    let _ = stop.send(());
    let r = tokio::time::timeout(BOUND, server).await;
    assert!(
        matches!(r, Ok(Ok(Ok(())))),
        "the server stops cleanly: {r:?}"
    );
}

#[tokio::test]
async fn tls_without_a_client_ca_needs_no_client_certificate() {
    let pki = Pki::new();
    let h = harness_with(&pki.files, fake_kube(), |_| {}).await;
    let (addr, stop, server) = serve(&h, Some(pki.server(false))).await;
    // KEDA's enableTLS + caCert only.
    assert_eq!(pki.is_active(addr, "ca.pem", None).await, Ok(false));
    let err = pki
        .is_active(addr, "other-ca.pem", None)
        .await
        .expect_err("the server's certificate is not trusted");
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    let _ = stop.send(());
    let r = tokio::time::timeout(BOUND, server).await;
    assert!(
        matches!(r, Ok(Ok(Ok(())))),
        "the server stops cleanly: {r:?}"
    );
}

/// The binary refuses bad `keda.*` settings at start-up with exit code 2, every problem named
/// by its key in one run (the policy file's too), and listens on nothing.
#[test]
fn the_binary_refuses_bad_keda_settings_at_start_naming_each_key() {
    let files = Files::new();
    std::fs::write(
        files.path("policies.yaml"),
        "policies:\n  - {cluster: prod, consumergroup: orders, deployment: {namespace: shop, name: orders-consumer}, scaler: keda, lag_seconds_per_replica: 0}\n",
    )
    .unwrap();
    std::fs::write(files.path("garbage.pem"), "not a certificate\n").unwrap();
    let garbage = files.path("garbage.pem").display().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medic-actuator"))
        .args([
            "--policies-file",
            &files.path("policies.yaml").display().to_string(),
            "--auth-bearer-token-file",
            &files.path("token").display().to_string(),
            "--keda-listen=127.0.0.1:0",
            "--keda-alerts-poll-interval=500ms",
        ])
        .env("MEDIC_ACTUATOR_AUDIT_PATH", files.audit_path())
        .env("MEDIC_ACTUATOR_KEDA_TLS_CERT_FILE", &garbage)
        .env(
            "MEDIC_ACTUATOR_KEDA_TLS_KEY_FILE",
            files.path("missing.key"),
        )
        .env("MEDIC_ACTUATOR_KEDA_TLS_CLIENT_CA_FILE", &garbage)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .collect();
    let policies = files.path("policies.yaml").display().to_string();
    let missing = files.path("missing.key").display().to_string();
    assert_eq!(lines.len(), 5, "{stderr}");
    assert_eq!(
        lines[0],
        format!("policies_file {policies}: policies[0].lag_seconds_per_replica: 0 must be a number above 0")
    );
    assert_eq!(lines[1], "keda.alerts_poll_interval: 500ms is below 1s");
    assert_eq!(
        lines[2],
        format!("keda.tls.cert_file {garbage}: no certificate found")
    );
    assert!(
        lines[3].starts_with(&format!("keda.tls.key_file {missing}: ")),
        "{stderr}"
    );
    assert_eq!(
        lines[4],
        format!("keda.tls.client_ca_file {garbage}: no certificate found")
    );
    assert!(!files.audit_path().exists(), "nothing was created");
}
