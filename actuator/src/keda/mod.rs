//! KEDA's External Scaler: the actuator answers KEDA about a group's persistent lag instead of
//! PATCHing the Deployment itself (policies with `scaler: keda`).
//!
//! `activity` holds which groups' `KafkaConsumerLagPersistent` fires (fed by the webhook
//! handler), `service` is the gRPC service, `proto` its messages.

pub mod activity;
pub mod proto;
pub mod service;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::alert::{Alert, AlertStatus};
use crate::audit::{Action, AuditError, AuditRecord, Outcome};
use crate::backend::MetricsApi;
use crate::decide::Trigger;
use crate::engine::Engine;
use crate::policy::Scaler;

pub use activity::{Activity, GroupKey};
pub use service::ExternalScalerService;

/// What the webhook handler and the gRPC service share.
pub struct KedaHub {
    /// Firing lag alerts per group.
    pub activity: Activity,
    /// The instance name for audit records.
    pub instance: String,
    /// Prometheus, for `GetMetrics`.
    pub prom: Option<Arc<dyn MetricsApi>>,
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
}

/// Serve the External Scaler on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    service: ExternalScalerService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), String> {
    let stop = service.stop_token();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tonic::transport::Server::builder()
        .add_service(proto::external_scaler_server::ExternalScalerServer::new(
            service,
        ))
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            // Open StreamIsActive calls end, so the server can stop.
            stop.cancel();
        })
        .await
        .map_err(|e| format!("KEDA External Scaler: {e}"))
}
