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
use crate::backend::prometheus::LAG_SECONDS_RULE;
use crate::decide::Trigger;
use crate::engine::Engine;
use crate::policy::Policy;
use crate::reason::ReasonCode;

/// How often an open `StreamIsActive` re-reads its state without a webhook (alerts that
/// expire because Alertmanager stopped re-sending them).
const RECHECK: Duration = Duration::from_secs(5);

/// The metric name in `GetMetricSpec` and `GetMetrics` (`metric: lag`, the default).
pub const METRIC_LAG: &str = "kafka_medic_consumergroup_lag";

/// The metric name in `GetMetricSpec` and `GetMetrics` with `metric: lag_seconds`.
pub const METRIC_LAG_SECONDS: &str = "kafka_medic_consumergroup_lag_seconds";

/// What a ScaledObject's trigger scales on (`metric` in its metadata).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    /// `lag` (the default): offsets, target `lag_per_replica`.
    Lag,
    /// `lag_seconds`: the oldest unconsumed message's age, target `lag_seconds_per_replica`.
    LagSeconds(f64),
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::Lag => METRIC_LAG,
            Metric::LagSeconds(_) => METRIC_LAG_SECONDS,
        }
    }
}

/// An integer for KEDA's int64 fields, rounded up (KEDA reads the float ones when above 0).
fn int(v: f64) -> i64 {
    if v.is_finite() && v > 0.0 {
        // `as` saturates at i64::MAX.
        v.ceil() as i64
    } else {
        0
    }
}

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

    /// The state shared with the webhook handler.
    pub(crate) fn hub(&self) -> &Arc<KedaHub> {
        &self.hub
    }

    /// The engine (policies, clock, audit log).
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The policy the ScaledObject's metadata names, and its metric; NotFound (audited) without
    /// a policy, InvalidArgument for a metric the policy cannot serve.
    async fn resolve_metric(
        &self,
        r: &ScaledObjectRef,
    ) -> Result<(GroupKey, Policy, Metric), Status> {
        let (key, policy) = self.resolve(r).await?;
        let metric = match r
            .scaler_metadata
            .get("metric")
            .map(|m| m.trim())
            .filter(|m| !m.is_empty())
        {
            Some("lag_seconds") => match policy.lag_seconds_per_replica {
                Some(target) => Metric::LagSeconds(target),
                None => {
                    return Err(Status::invalid_argument(format!(
                        "ScaledObject {}/{}: metric: lag_seconds needs lag_seconds_per_replica in the policy of cluster {:?} consumergroup {:?}, which has none (add it to the policy file, or use metric: lag)",
                        r.namespace, r.name, key.0, key.1
                    )))
                }
            },
            _ => Metric::Lag,
        };
        Ok((key, policy, metric))
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
            None | Some("lag") | Some("lag_seconds") => {}
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
        let (key, _, _) = self.resolve_metric(request.get_ref()).await?;
        let result = self.hub.activity.is_active(&key, self.engine.now());
        Ok(Response::new(IsActiveResponse { result }))
    }

    type StreamIsActiveStream = ActiveStream;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let (key, _, _) = self.resolve_metric(request.get_ref()).await?;
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
        let (_, policy, metric) = self.resolve_metric(request.get_ref()).await?;
        let (target_size, target_size_float) = match metric {
            Metric::Lag => {
                let target = i64::try_from(policy.lag_per_replica.max(1)).unwrap_or(i64::MAX);
                (target, target as f64)
            }
            // An integer KEDA can read too: rounded up, at least 1 (0 would divide by zero).
            Metric::LagSeconds(target) => (int(target).max(1), target),
        };
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: metric.name().into(),
                target_size,
                target_size_float,
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
        let (key, _, metric) = self.resolve_metric(&r).await?;
        let name = if req.metric_name.is_empty() {
            metric.name().to_string()
        } else {
            req.metric_name
        };
        // While the persistent-lag alert does not fire, report 0 (offsets or seconds alike): a
        // spike shorter than the sustain window never fires the alert, so it never asks the HPA
        // for a replica.
        let (metric_value, metric_value_float) = if self
            .hub
            .activity
            .is_active(&key, self.engine.now())
        {
            let Some(prom) = &self.hub.prom else {
                return Err(Status::failed_precondition(
                    "no Prometheus configured (prometheus.url): the group's lag is unknown",
                ));
            };
            let (cluster, group) = (&key.0, &key.1);
            let missing = |series: &str| {
                Status::unavailable(format!(
                        "Prometheus has no {series} series for cluster {cluster:?} consumergroup {group:?}"
                    ))
            };
            match metric {
                Metric::Lag => match prom.group_lag(cluster, group).await {
                    Ok(Some(lag)) => (i64::try_from(lag).unwrap_or(i64::MAX), lag as f64),
                    Ok(None) => return Err(missing("lag")),
                    Err(e) => {
                        return Err(Status::unavailable(format!(
                            "Prometheus query for the group's lag failed: {e}"
                        )))
                    }
                },
                Metric::LagSeconds(_) => match prom.group_lag_seconds(cluster, group).await {
                    Ok(Some(seconds)) => (int(seconds), seconds),
                    Ok(None) => return Err(missing(LAG_SECONDS_RULE)),
                    Err(e) => {
                        return Err(Status::unavailable(format!(
                            "Prometheus query for the group's lag in seconds failed: {e}"
                        )))
                    }
                },
            }
        } else {
            (0, 0.0)
        };
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: name,
                metric_value,
                metric_value_float,
            }],
        }))
    }
}
