//! KEDA's External Scaler: the actuator answers KEDA about a group's persistent lag instead of
//! PATCHing the Deployment itself (policies with `scaler: keda`).
//!
//! `activity` holds which groups' `KafkaConsumerLagPersistent` fires (fed by the webhook
//! handler and by a poll of Prometheus's `ALERTS`), `service` is the gRPC service, `proto` its
//! messages, `tls` the listener's TLS.

pub mod activity;
pub mod proto;
pub mod service;
pub mod tls;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::alert::{Alert, AlertStatus};
use crate::audit::{Action, AuditError, AuditRecord, Outcome};
use crate::backend::MetricsApi;
use crate::decide::Trigger;
use crate::engine::Engine;
use crate::policy::Scaler;
use crate::reason::ReasonCode;
use crate::telemetry::{self, Telemetry};

pub use activity::{Activity, GroupKey};
pub use service::ExternalScalerService;

/// What the webhook handler and the gRPC service share.
pub struct KedaHub {
    /// Firing lag alerts per group.
    pub activity: Activity,
    /// The instance name for audit records.
    pub instance: String,
    /// Prometheus, for `GetMetrics` and the `ALERTS` poll.
    pub prom: Option<Arc<dyn MetricsApi>>,
    /// How often `ALERTS` is read while the External Scaler is served (`keda.alerts_poll_interval`).
    pub alerts_poll_interval: Duration,
    /// Metrics (failed Prometheus queries).
    pub telemetry: Arc<Telemetry>,
}

/// Whether the last read of `ALERTS` got an answer (None: no read yet): one audit record per
/// outage, one when Prometheus answers again.
#[derive(Debug, Default)]
pub struct AlertsSource {
    answered: Option<bool>,
}

impl KedaHub {
    /// Record the lag alerts of one webhook (groups with a policy only, so memory is bounded by
    /// the policy file). A change of a `scaler: keda` group is audited (trigger `keda`) and then
    /// pushed to every `StreamIsActive`.
    pub async fn note_webhook(&self, engine: &Engine, alerts: &[Alert]) -> Result<(), AuditError> {
        let now = engine.now();
        let keys: Vec<GroupKey> = alerts
            .iter()
            .filter_map(|a| match a {
                Alert::Lag(l) => Some((l.cluster.clone(), l.consumergroup.clone())),
                _ => None,
            })
            .collect();
        let saved = self.activity.checkpoint(&keys);
        let mut records = Vec::new();
        let policies = engine.policies();
        for a in alerts {
            let Alert::Lag(l) = a else { continue };
            let Some(policy) = policies.get(&l.cluster, &l.consumergroup) else {
                continue;
            };
            let key: GroupKey = (l.cluster.clone(), l.consumergroup.clone());
            let Some(active) = self.activity.note(&key, &l.fingerprint, l.status, now) else {
                continue;
            };
            if policy.scaler != Scaler::Keda {
                continue;
            }
            records.push(AuditRecord {
                alertname: Some(crate::alert::LAG_ALERT.into()),
                alert_status: Some(l.status),
                fingerprint: Some(l.fingerprint.clone()),
                starts_at: Some(l.starts_at.clone()),
                cluster: Some(l.cluster.clone()),
                consumergroup: Some(l.consumergroup.clone()),
                target: Some(policy.target()),
                message: format!(
                    "KEDA told: group {:?} on cluster {:?} is now {} ({} {})",
                    l.consumergroup,
                    l.cluster,
                    if active { "active" } else { "inactive" },
                    crate::alert::LAG_ALERT,
                    if l.status == AlertStatus::Firing {
                        "fires"
                    } else {
                        "resolved"
                    },
                ),
                dry_run: engine.dry_run(),
                ..AuditRecord::new(
                    now,
                    &self.instance,
                    Trigger::Keda,
                    Outcome::Applied,
                    Action::None,
                )
            });
        }
        if !records.is_empty() {
            if let Err(e) = engine.audit().append(records).await {
                // No change without its record: undo it, so Alertmanager's retry is a change
                // again and gets audited and pushed then.
                self.activity.restore(saved);
                return Err(e);
            }
        }
        self.activity.publish();
        Ok(())
    }

    /// Read the firing `KafkaConsumerLagPersistent` alerts from Prometheus's `ALERTS` once and
    /// fold them into the activity map: a group shown firing becomes active, one shown before
    /// and no more becomes inactive; each change of a `scaler: keda` group is audited (trigger
    /// `keda`) and then pushed to every `StreamIsActive`. When Prometheus cannot be queried the
    /// map stays as the webhooks left it, and one record per outage says so
    /// (`alerts_source_webhook_fallback`), one more when it answers again. Nothing without a
    /// Prometheus URL.
    pub async fn poll_alerts(
        &self,
        engine: &Engine,
        source: &mut AlertsSource,
    ) -> Result<(), AuditError> {
        let Some(prom) = &self.prom else {
            return Ok(());
        };
        let since = self.activity.deliveries();
        let answer = prom.firing_lag_alerts().await;
        let now = engine.now();
        let base = |outcome| AuditRecord {
            alertname: Some(crate::alert::LAG_ALERT.into()),
            dry_run: engine.dry_run(),
            ..AuditRecord::new(now, &self.instance, Trigger::Keda, outcome, Action::None)
        };
        let shown = match answer {
            Ok(shown) => shown,
            Err(e) => {
                self.telemetry
                    .counter(telemetry::PROM_ERRORS, &[])
                    .increment(1);
                if source.answered != Some(false) {
                    tracing::warn!(error = %e, "cannot read the firing lag alerts from Prometheus's ALERTS; KEDA's IsActive follows the webhooks received only");
                    engine
                        .audit()
                        .append(vec![AuditRecord {
                            reason: Some(ReasonCode::AlertsSourceWebhookFallback),
                            message: format!(
                                "cannot read the firing {} alerts from Prometheus's ALERTS ({e}); until it answers, KEDA's IsActive follows the webhooks this replica received (a group ALERTS showed firing stays active until its resolved notification or alert_ttl)",
                                crate::alert::LAG_ALERT
                            ),
                            ..base(Outcome::Failed)
                        }])
                        .await?;
                    source.answered = Some(false);
                }
                return Ok(());
            }
        };
        if source.answered == Some(false) {
            engine
                .audit()
                .append(vec![AuditRecord {
                    message: format!(
                        "Prometheus answers again: KEDA's IsActive follows its ALERTS ({} {} firing) and the webhooks",
                        shown.len(),
                        crate::alert::LAG_ALERT
                    ),
                    ..base(Outcome::Applied)
                }])
                .await?;
            tracing::info!(
                "Prometheus answers again: KEDA's IsActive follows ALERTS and the webhooks"
            );
        }
        source.answered = Some(true);
        let policies = engine.policies();
        let groups: Vec<GroupKey> = policies
            .all()
            .iter()
            .map(|p| (p.cluster.clone(), p.consumergroup.clone()))
            .collect();
        let shown: BTreeSet<GroupKey> = shown.into_iter().collect();
        let (changes, saved) = self.activity.reconcile(&groups, &shown, since, now);
        if changes.is_empty() {
            return Ok(());
        }
        let records: Vec<AuditRecord> = changes
            .iter()
            .filter_map(|((cluster, group), active)| {
                let policy = policies.get(cluster, group)?;
                (policy.scaler == Scaler::Keda).then(|| AuditRecord {
                    alert_status: Some(if *active {
                        AlertStatus::Firing
                    } else {
                        AlertStatus::Resolved
                    }),
                    cluster: Some(cluster.clone()),
                    consumergroup: Some(group.clone()),
                    target: Some(policy.target()),
                    message: format!(
                        "KEDA told: group {group:?} on cluster {cluster:?} is now {} ({} {} in Prometheus's ALERTS)",
                        if *active { "active" } else { "inactive" },
                        crate::alert::LAG_ALERT,
                        if *active { "fires" } else { "no longer fires" },
                    ),
                    ..base(Outcome::Applied)
                })
            })
            .collect();
        if !records.is_empty() {
            if let Err(e) = engine.audit().append(records).await {
                // No change without its record: undo, so the next poll is a change again.
                self.activity.restore(saved);
                return Err(e);
            }
        }
        tracing::info!(
            changed = changes.len(),
            "KEDA activity from Prometheus's ALERTS"
        );
        self.activity.publish();
        Ok(())
    }

    /// Poll `ALERTS` every `alerts_poll_interval`, the first time at once, until `stop` (or
    /// return at once without a Prometheus URL).
    pub async fn run_alerts_poll(self: Arc<Self>, engine: Arc<Engine>, stop: CancellationToken) {
        if self.prom.is_none() {
            return;
        }
        let mut source = AlertsSource::default();
        let mut tick = tokio::time::interval(self.alerts_poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.poll_alerts(&engine, &mut source).await {
                tracing::error!(error = %e, "KEDA activity from Prometheus's ALERTS could not be audited; retried at the next poll");
            }
        }
    }
}

/// Serve the External Scaler on `listener` (plain HTTP/2) until `shutdown` completes; see
/// [`serve_with_tls`].
pub async fn serve(
    listener: TcpListener,
    service: ExternalScalerService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), String> {
    serve_with_tls(listener, service, None, shutdown).await
}

/// Serve the External Scaler on `listener` until `shutdown` completes, over TLS with `tls`
/// ([`tls::server_tls`]), and poll Prometheus's `ALERTS` meanwhile (with a Prometheus URL).
/// Open `StreamIsActive` calls end at `shutdown`.
pub async fn serve_with_tls(
    listener: TcpListener,
    service: ExternalScalerService,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), String> {
    let stop = service.stop_token();
    // Dropped with this future: the poll and the open streams end with the server.
    let _stop_on_drop = stop.clone().drop_guard();
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        tls::install_ring_provider();
        server = server
            .tls_config(tls)
            .map_err(|e| format!("KEDA External Scaler TLS: {e}"))?;
    }
    let poll = tokio::spawn(
        service
            .hub()
            .clone()
            .run_alerts_poll(service.engine().clone(), stop.clone()),
    );
    // TCP_NODELAY: a push that follows another answer on the same connection (KEDA polls
    // IsActive on the connection that carries StreamIsActive) must not wait for the client's
    // delayed ACK: with Nagle on it waited ~43 ms (benches/keda_push.rs, BENCHMARKS.md).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let stop_streams = stop.clone();
    let served = server
        .add_service(proto::external_scaler_server::ExternalScalerServer::new(
            service,
        ))
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            // Open StreamIsActive calls end, so the server can stop.
            stop_streams.cancel();
        })
        .await
        .map_err(|e| format!("KEDA External Scaler: {e}"));
    stop.cancel();
    if let Err(e) = poll.await {
        tracing::error!(error = %e, "the KEDA ALERTS poll ended without an answer");
    }
    served
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use crate::backend::prometheus::{firing_lag_alerts_query, lag_seconds_query, PromClient};
    use crate::backend::MetricsApi;
    use crate::policy::Policies;

    fn vector(series: &[(serde_json::Value, &str)]) -> serde_json::Value {
        let result: Vec<_> = series
            .iter()
            .map(|(m, v)| serde_json::json!({"metric": m, "value": [1800000000.0, v]}))
            .collect();
        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}})
    }

    /// The exact PromQL of the recording rule and of ALERTS, and what is read from the answers.
    #[tokio::test]
    async fn lag_seconds_and_firing_lag_alerts_from_prometheus() {
        assert_eq!(
            lag_seconds_query("prod", "a\"b"),
            r#"cluster_consumergroup:kafka_consumergroup_lag_seconds:max{cluster="prod",consumergroup="a\"b"}"#
        );
        assert_eq!(
            firing_lag_alerts_query(),
            r#"ALERTS{alertstate="firing",alertname="KafkaConsumerLagPersistent"}"#
        );
        let server = MockServer::start().await;
        let group = |c: &str, g: &str| serde_json::json!({"__name__": "ALERTS", "alertname": "KafkaConsumerLagPersistent", "alertstate": "firing", "cluster": c, "consumergroup": g, "severity": "warning"});
        for (query, body) in [
            (
                lag_seconds_query("prod", "orders"),
                vector(&[
                    (
                        serde_json::json!({"cluster": "prod", "consumergroup": "orders"}),
                        "41.5",
                    ),
                    (
                        serde_json::json!({"cluster": "prod", "consumergroup": "orders", "replica": "b"}),
                        "12",
                    ),
                ]),
            ),
            (
                firing_lag_alerts_query(),
                vector(&[
                    (group("prod", "orders"), "1"),
                    (group("prod", "billing"), "1"),
                    // Two Prometheus replicas: one group.
                    (group("prod", "orders"), "1"),
                    // Without its group label: not a group.
                    (
                        serde_json::json!({"alertname": "KafkaConsumerLagPersistent", "cluster": "prod"}),
                        "1",
                    ),
                ]),
            ),
        ] {
            Mock::given(method("GET"))
                .and(path("/api/v1/query"))
                .and(query_param("query", query))
                .respond_with(ResponseTemplate::new(200).set_body_json(body))
                .expect(1)
                .mount(&server)
                .await;
        }
        let p = PromClient::new(&server.uri(), Duration::from_secs(2)).unwrap();
        assert_eq!(
            p.group_lag_seconds("prod", "orders").await.unwrap(),
            Some(41.5),
            "the largest series"
        );
        assert_eq!(
            p.firing_lag_alerts().await.unwrap(),
            vec![
                ("prod".to_string(), "billing".to_string()),
                ("prod".to_string(), "orders".to_string())
            ]
        );
    }

    #[test]
    fn lag_seconds_per_replica_must_be_above_zero() {
        let yaml = |v: &str| {
            format!(
                "policies:\n  - {{cluster: prod, consumergroup: orders, deployment: {{namespace: shop, name: orders}}, lag_seconds_per_replica: {v}}}\n"
            )
        };
        let p = Policies::parse(&yaml("30"), Path::new("p.yaml")).unwrap();
        assert_eq!(
            p.get("prod", "orders").unwrap().lag_seconds_per_replica,
            Some(30.0)
        );
        let p = Policies::parse(&yaml("2.5"), Path::new("p.yaml")).unwrap();
        assert_eq!(
            p.get("prod", "orders").unwrap().lag_seconds_per_replica,
            Some(2.5)
        );
        for (v, shown) in [("0", "0"), ("-5", "-5"), (".nan", "NaN")] {
            let err = Policies::parse(&yaml(v), Path::new("p.yaml")).unwrap_err();
            let crate::policy::PolicyError::Invalid { problems, .. } = err else {
                panic!("{err}")
            };
            assert_eq!(
                problems,
                vec![format!(
                    "policies[0].lag_seconds_per_replica: {shown} must be a number above 0"
                )]
            );
        }
    }
}
