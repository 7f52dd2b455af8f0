//! The `externalscaler.ExternalScaler` gRPC service: IsActive, StreamIsActive, GetMetricSpec,
//! GetMetrics (StreamMetricSpec is not served: tonic answers Unimplemented, which KEDA accepts).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::proto::external_scaler_server::ExternalScaler;
use super::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};
use super::{GroupKey, KedaHub};
use crate::audit::{Action, AuditRecord, Outcome};
use crate::decide::Trigger;
use crate::engine::Engine;
use crate::policy::Policy;
use crate::reason::ReasonCode;

/// How often an open `StreamIsActive` re-reads its state without a webhook (alerts that
/// expire because Alertmanager stopped re-sending them).
const RECHECK: Duration = Duration::from_secs(5);

/// The metric name in `GetMetricSpec` and `GetMetrics`.
pub const METRIC_LAG: &str = "kafka_medic_consumergroup_lag";

/// The service.
#[derive(Clone)]
pub struct ExternalScalerService {
    engine: Arc<Engine>,
    hub: Arc<KedaHub>,
    stop: CancellationToken,
}

impl ExternalScalerService {
    /// A service answering from `engine`'s policies and `hub`'s alert state.
    pub fn new(engine: Arc<Engine>, hub: Arc<KedaHub>) -> Self {
        Self {
            engine,
            hub,
            stop: CancellationToken::new(),
        }
    }

    /// Cancelled at shutdown: open streams end.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// The policy the ScaledObject's metadata names; NotFound (audited) without one.
    async fn resolve(&self, r: &ScaledObjectRef) -> Result<(GroupKey, Policy), Status> {
        let meta = |k: &str| {
            r.scaler_metadata
                .get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let (Some(cluster), Some(group)) = (meta("cluster"), meta("consumergroup")) else {
            return Err(Status::invalid_argument(format!(
                "ScaledObject {}/{}: the trigger metadata needs `cluster` and `consumergroup`",
                r.namespace, r.name
            )));
        };
        match meta("metric").as_deref() {
            None | Some("lag") => {}
            Some("lag_seconds") => {
                return Err(Status::invalid_argument(
                    "metric: lag_seconds is not served yet; use metric: lag (the default)",
                ))
            }
            Some(other) => {
                return Err(Status::invalid_argument(format!(
                    "metric: {other:?} is not one of lag, lag_seconds"
                )))
            }
        }
        if let Some(p) = self.engine.policies().get(&cluster, &group) {
            return Ok(((cluster, group), p.clone()));
        }
        let message = format!(
            "no policy for cluster {cluster:?} consumergroup {group:?} (asked by ScaledObject {}/{})",
            r.namespace, r.name
        );
        let record = AuditRecord {
            cluster: Some(cluster),
            consumergroup: Some(group),
            reason: Some(ReasonCode::NoPolicy),
            message: message.clone(),
            dry_run: self.engine.dry_run(),
            ..AuditRecord::new(
                self.engine.now(),
                &self.hub.instance,
                Trigger::Keda,
                Outcome::Skipped,
                Action::None,
            )
        };
        if let Err(e) = self.engine.audit().append(vec![record]).await {
            tracing::error!(error = %e, "could not audit a KEDA request for a group without a policy");
        }
        Err(Status::not_found(message))
    }
}

type ActiveStream = Pin<Box<dyn Stream<Item = Result<IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for ExternalScalerService {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let (key, _) = self.resolve(request.get_ref()).await?;
        let result = self.hub.activity.is_active(&key, self.engine.now());
        Ok(Response::new(IsActiveResponse { result }))
    }

    type StreamIsActiveStream = ActiveStream;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let (key, _) = self.resolve(request.get_ref()).await?;
        let state = (
            self.hub.activity.subscribe(),
            None::<bool>,
            self.hub.clone(),
            self.engine.clone(),
            key,
            self.stop.clone(),
        );
        // The current state first, then one message per change.
        let stream =
            futures::stream::unfold(state, |(mut rx, last, hub, engine, key, stop)| async move {
                loop {
                    rx.mark_unchanged();
                    let now_active = hub.activity.is_active(&key, engine.now());
                    if last != Some(now_active) {
                        let item = Ok(IsActiveResponse { result: now_active });
                        return Some((item, (rx, Some(now_active), hub, engine, key, stop)));
                    }
                    tokio::select! {
                        changed = rx.changed() => if changed.is_err() { return None },
                        () = tokio::time::sleep(RECHECK) => {}
                        () = stop.cancelled() => return None,
                    }
                }
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let (_, policy) = self.resolve(request.get_ref()).await?;
        let target = i64::try_from(policy.lag_per_replica.max(1)).unwrap_or(i64::MAX);
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: METRIC_LAG.into(),
                target_size: target,
                target_size_float: target as f64,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let req = request.into_inner();
        let Some(r) = req.scaled_object_ref else {
            return Err(Status::invalid_argument("scaledObjectRef is missing"));
        };
        let (key, _) = self.resolve(&r).await?;
        let name = if req.metric_name.is_empty() {
            METRIC_LAG.to_string()
        } else {
            req.metric_name
        };
        // While the persistent-lag alert does not fire, report 0: a spike shorter than the
        // sustain window never fires the alert, so it never asks the HPA for a replica.
        let value = if self.hub.activity.is_active(&key, self.engine.now()) {
            let Some(prom) = &self.hub.prom else {
                return Err(Status::failed_precondition(
                    "no Prometheus configured (prometheus.url): the group's lag is unknown",
                ));
            };
            match prom.group_lag(&key.0, &key.1).await {
                Ok(Some(lag)) => lag,
                Ok(None) => {
                    return Err(Status::unavailable(format!(
                        "Prometheus has no lag series for cluster {:?} consumergroup {:?}",
                        key.0, key.1
                    )))
                }
                Err(e) => {
                    return Err(Status::unavailable(format!(
                        "Prometheus query for the group's lag failed: {e}"
                    )))
                }
            }
        } else {
            0
        };
        let v = i64::try_from(value).unwrap_or(i64::MAX);
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: name,
                metric_value: v,
                metric_value_float: value as f64,
            }],
        }))
    }
}
