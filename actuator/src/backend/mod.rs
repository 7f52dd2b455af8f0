//! Adapters behind narrow traits: Kubernetes (scale) and Prometheus (lag, broker alerts) here;
//! broker remediation behind [`remediation::RemediationBackend`], one backend per file
//! (`kafka`, `cruise_control`, `log_only`), chosen per cluster by [`build`].

pub mod cruise_control;
pub mod intent_store;
pub mod kafka;
pub mod kafka_throttle;
pub mod kube;
pub mod kube_events;
pub mod log_only;
pub mod prometheus;
pub mod remediation;

use std::sync::Arc;

use futures::future::BoxFuture;
use medic_kafka::RequestObserver;

use crate::broker::policy::{BackendKind, BrokerPolicy};
use crate::decide::LastAction;
use crate::policy::DeploymentRef;
use crate::reason::ReasonCode;
use cruise_control::CruiseControl;
use kafka::KafkaBackend;
use log_only::LogOnly;
use remediation::RemediationBackend;

/// What the actuator reads from a Deployment before deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetView {
    /// `spec.replicas` of the scale subresource.
    pub replicas: u32,
    /// The Deployment's resourceVersion (precondition of the cooldown claim).
    pub resource_version: String,
    /// The last action recorded in the cooldown annotation, if any.
    /// (An annotation that does not parse is logged, ignored and overwritten.)
    pub last_action: Option<LastAction>,
    /// The Deployment's uid, when the API returned it (named by the scale's Kubernetes Event).
    pub uid: Option<String>,
}

/// Another autoscaler whose `spec.scaleTargetRef` is a Deployment: the actuator leaves that
/// Deployment's replicas alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autoscaler {
    /// `HorizontalPodAutoscaler` or `ScaledObject`.
    pub kind: &'static str,
    /// The autoscaler's namespace (the Deployment's).
    pub namespace: String,
    /// The autoscaler's name.
    pub name: String,
}

impl std::fmt::Display for Autoscaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Errors talking to the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    /// 409: the object changed since it was read.
    #[error("conflict on {resource} {target}: {message}")]
    Conflict {
        /// deployments or deployments/scale.
        resource: &'static str,
        /// namespace/name.
        target: String,
        /// The API server's message.
        message: String,
    },
    /// 403: the actuator's ServiceAccount lacks an RBAC permission.
    #[error("forbidden: missing RBAC permission: verb {verb:?} on resource {resource:?} in namespace {namespace:?} (group {group:?}): {message}")]
    Forbidden {
        /// The verb that was refused (get, patch or list).
        verb: &'static str,
        /// deployments, deployments/scale, horizontalpodautoscalers or scaledobjects.
        resource: &'static str,
        /// The resource's API group: apps, autoscaling or keda.sh.
        group: &'static str,
        /// The namespace.
        namespace: String,
        /// The API server's message.
        message: String,
    },
    /// 404: no such Deployment.
    #[error("deployment {target} not found")]
    NotFound {
        /// namespace/name.
        target: String,
    },
    /// 5xx, 429 or a transport error, still failing after the bounded backoff.
    #[error("kubernetes API unavailable after {attempts} attempts: {message}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        message: String,
    },
    /// Any other refusal (400, 422, ...): retrying will not help.
    #[error("kubernetes API refused {verb} {resource}: HTTP {code}: {message}")]
    Refused {
        /// get or patch.
        verb: &'static str,
        /// deployments or deployments/scale.
        resource: &'static str,
        /// HTTP status.
        code: u16,
        /// The API server's message.
        message: String,
    },
}

impl KubeError {
    /// Stable reason code for the audit log.
    pub fn code(&self) -> ReasonCode {
        match self {
            KubeError::Conflict { .. } => ReasonCode::KubeConflict,
            KubeError::Forbidden { .. } => ReasonCode::KubeForbidden,
            KubeError::NotFound { .. } => ReasonCode::KubeNotFound,
            KubeError::Unavailable { .. } => ReasonCode::KubeUnavailable,
            KubeError::Refused { .. } => ReasonCode::KubeRefused,
        }
    }

    /// Whether Alertmanager retrying the webhook could help.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            KubeError::Unavailable { .. } | KubeError::Conflict { .. }
        )
    }
}

/// The Kubernetes side: read the scale and the cooldown annotation, claim, scale.
pub trait ScaleApi: Send + Sync {
    /// GET the Deployment's metadata (cooldown annotation, resourceVersion) and its scale.
    fn read<'a>(
        &'a self,
        target: &'a DeploymentRef,
    ) -> BoxFuture<'a, Result<TargetView, KubeError>>;

    /// Record `action` in the cooldown annotation, only if the Deployment still has
    /// `resource_version` (optimistic concurrency; a 409 means someone else acted first).
    fn claim<'a>(
        &'a self,
        target: &'a DeploymentRef,
        resource_version: &'a str,
        action: &'a LastAction,
    ) -> BoxFuture<'a, Result<(), KubeError>>;

    /// PATCH the scale subresource to `replicas`.
    fn scale<'a>(
        &'a self,
        target: &'a DeploymentRef,
        replicas: u32,
    ) -> BoxFuture<'a, Result<(), KubeError>>;

    /// The HorizontalPodAutoscaler (`autoscaling/v2`) or KEDA ScaledObject
    /// (`keda.sh/v1alpha1`) in the target's namespace whose `spec.scaleTargetRef` is the
    /// Deployment, if any. An API that is not served (404: KEDA not installed) has none; any
    /// other failure is an error, never "none".
    fn autoscaler<'a>(
        &'a self,
        target: &'a DeploymentRef,
    ) -> BoxFuture<'a, Result<Option<Autoscaler>, KubeError>>;

    /// GET an autoscaler found by [`ScaleApi::autoscaler`]: its minimum, maximum,
    /// resourceVersion and original-minimum annotation (`on_autoscaler: raise_min_replicas`).
    fn read_autoscaler<'a>(
        &'a self,
        autoscaler: &'a Autoscaler,
    ) -> BoxFuture<'a, Result<self::kube::AutoscalerView, KubeError>>;

    /// Set the autoscaler's minimum to `min` and, in the same write, its original-minimum
    /// annotation to `original` (`None` removes it), only if the object still has
    /// `resource_version` (a 409 means it changed since the read).
    fn set_autoscaler_min<'a>(
        &'a self,
        autoscaler: &'a Autoscaler,
        resource_version: &'a str,
        min: u32,
        original: Option<u32>,
    ) -> BoxFuture<'a, Result<(), KubeError>>;
}

/// Errors querying Prometheus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromError {
    /// No Prometheus configured.
    #[error("no Prometheus URL configured")]
    NotConfigured,
    /// Unreachable, timed out or answered with an error.
    #[error("prometheus query {query:?} failed: {message}")]
    Query {
        /// The PromQL.
        query: String,
        /// What went wrong.
        message: String,
    },
}

/// One firing alert from Prometheus's `ALERTS`.
#[derive(Debug, Clone, PartialEq)]
pub struct FiringAlert {
    /// The series' labels (with `alertname`; `__name__` and `alertstate` included as returned).
    pub labels: std::collections::BTreeMap<String, String>,
    /// When the alert became active, from its `ALERTS_FOR_STATE` series (None: no such series).
    pub active_at: Option<jiff::Timestamp>,
}

/// The Prometheus side.
pub trait MetricsApi: Send + Sync {
    /// The group's total lag (`cluster_consumergroup:kafka_consumergroup_lag:sum`); None if no series.
    fn group_lag<'a>(
        &'a self,
        cluster: &'a str,
        consumergroup: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, PromError>>;

    /// Partitions the group has offsets for; None if no series.
    fn group_partitions<'a>(
        &'a self,
        cluster: &'a str,
        consumergroup: &'a str,
    ) -> BoxFuture<'a, Result<Option<u32>, PromError>>;

    /// The name of a firing KafkaBrokerDown/KafkaBrokerOverloaded alert on the cluster, if any.
    fn broker_trouble<'a>(
        &'a self,
        cluster: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, PromError>>;

    /// Every firing `KafkaBroker*` alert (`ALERTS{alertstate="firing"}`), each with the time
    /// it became active (`ALERTS_FOR_STATE`). An error if either query fails.
    fn firing_broker_alerts(&self) -> BoxFuture<'_, Result<Vec<FiringAlert>, PromError>>;

    /// The age in seconds of the group's oldest unconsumed message
    /// (`cluster_consumergroup:kafka_consumergroup_lag_seconds:max`); None if no series.
    fn group_lag_seconds<'a>(
        &'a self,
        cluster: &'a str,
        consumergroup: &'a str,
    ) -> BoxFuture<'a, Result<Option<f64>, PromError>> {
        let query = prometheus::lag_seconds_query(cluster, consumergroup);
        Box::pin(async move { Err(unsupported(query)) })
    }

    /// The (cluster, consumergroup) of every firing `KafkaConsumerLagPersistent`
    /// (`ALERTS{alertstate="firing",alertname="KafkaConsumerLagPersistent"}`), for KEDA's
    /// level-triggered `IsActive`.
    fn firing_lag_alerts(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, PromError>> {
        let query = prometheus::firing_lag_alerts_query();
        Box::pin(async move { Err(unsupported(query)) })
    }
}

fn unsupported(query: String) -> PromError {
    PromError::Query {
        query,
        message: "not supported by this metrics source".into(),
    }
}

/// The remediation backend a broker policy asks for (secrets are read here). Kafka requests
/// are reported to `kafka_observer`.
pub fn build(
    policy: &BrokerPolicy,
    kafka_observer: Option<RequestObserver>,
) -> Result<Arc<dyn RemediationBackend>, String> {
    let err = |e: String| format!("brokers: cluster {:?}: {e}", policy.cluster);
    match (policy.backend, &policy.kafka, &policy.cruise_control) {
        (BackendKind::LogOnly, None, _) => Ok(Arc::new(LogOnly::new(None))),
        (BackendKind::LogOnly, Some(k), _) => Ok(Arc::new(LogOnly::new(Some(Box::new(
            KafkaBackend::reader(k, kafka_observer).map_err(err)?,
        ))))),
        (BackendKind::Kafka, Some(k), _) => {
            Ok(Arc::new(KafkaBackend::new(k, kafka_observer).map_err(err)?))
        }
        (BackendKind::Kafka, None, _) => Err(err("kafka: required with backend kafka".into())),
        (BackendKind::CruiseControl, _, Some(cc)) => {
            Ok(Arc::new(CruiseControl::new(cc).map_err(err)?))
        }
        (BackendKind::CruiseControl, _, None) => Err(err(
            "cruise_control: required with backend cruise-control".into(),
        )),
    }
}
