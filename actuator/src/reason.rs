//! The reason code of an audit record: why nothing was done, or why it failed. One enum for the
//! lag side, the broker side and the adapters, written as the snake_case strings of the audit
//! log format (`"cooldown"`, `"bad_broker_label"`), which readers and filters compare as text.

use serde::{Deserialize, Serialize};

/// Why a decision skipped or failed (the audit record's `reason`, the
/// `medic_actuator_decision_reasons_total{reason}` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    // Lag alerts.
    /// No lag policy for the alert's (cluster, consumergroup).
    NoPolicy,
    /// This delivery was already handled.
    Duplicate,
    /// The global pause switch is on.
    Paused,
    /// The target acted too recently.
    Cooldown,
    /// The replicas already are where the policy wants them.
    AtDesired,
    /// A scale-down held while a broker alert is active.
    BrokerTrouble,
    /// No lag figure.
    LagUnknown,
    /// Replicas outside the policy's bounds: someone else manages the Deployment.
    OutOfBounds,
    /// An HPA or KEDA ScaledObject scales the Deployment.
    ManagedByAutoscaler,
    /// The autoscaler lookup failed.
    AutoscalerCheckFailed,
    /// The policy says `scaler: keda`: KEDA scales the Deployment from the actuator's
    /// External Scaler answers, the actuator never PATCHes it.
    ScaledByKeda,
    /// Kubernetes answered 403.
    KubeForbidden,
    /// Kubernetes was unreachable or answered 5xx/429.
    KubeUnavailable,
    /// The cooldown claim kept conflicting.
    KubeConflict,
    /// The Deployment does not exist.
    KubeNotFound,
    /// Kubernetes refused the request otherwise.
    KubeRefused,
    /// The last audit write failed: no action.
    AuditUnhealthy,
    // Broker alerts.
    /// `KafkaBrokerDown` has not lasted the grace period yet.
    GracePeriod,
    /// Too many brokers alert at once.
    MassFailure,
    /// Waiting for alerts that may arrive with this one.
    Settling,
    /// The cluster size is unknown.
    ClusterSizeUnknown,
    /// Our remediation is running on the cluster.
    RemediationInProgress,
    /// The cluster acted too recently.
    ClusterCooldown,
    /// The broker was acted on too recently.
    BrokerCooldown,
    /// A reassignment (ours or anyone's) is in progress.
    ReassignmentInProgress,
    /// `KafkaBrokerDown`, but the metadata lists the broker.
    BrokerAlive,
    /// Overloaded or full, but the metadata does not list the broker.
    BrokerNotAlive,
    /// The plan changes nothing.
    NothingToMove,
    /// The plan failed the checker and was not sent.
    PlanInvalid,
    /// The alert's `broker` label is missing or not a broker id.
    BadBrokerLabel,
    /// The backend cannot do this (e.g. no AlterPartitionReassignments).
    BackendUnsupported,
    /// The backend could not be reached.
    BackendUnavailable,
    /// The backend refused the request.
    BackendRefused,
    /// The action ran past `reassignment_timeout` and was cancelled.
    ReassignmentTimeout,
    /// Resolved: what was pending for the alert is cancelled.
    Cancelled,
    /// Resolved: nothing was pending, or a started action goes on.
    AlertResolved,
    /// Leader election: this replica does not hold the Lease, so it does not act on brokers.
    NotLeader,
    // Configuration reloads and alert sources.
    /// A reloaded configuration or policy file did not validate: rejected whole, the old one stays.
    ConfigInvalid,
    /// A reload changed a setting that only takes effect at start: rejected, the old one stays.
    RestartRequired,
    /// Prometheus's `ALERTS` could not be queried: broker alerts (and KEDA's `IsActive`, trigger
    /// `keda`) come from the webhooks this replica received until it answers again.
    AlertsSourceWebhookFallback,
    /// `on_autoscaler: raise_min_replicas`: the autoscaler's original-minimum annotation is
    /// not a replica count, so its minimum is not changed.
    OriginalMinReplicasInvalid,
}

impl ReasonCode {
    /// The snake_case code, as written in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::NoPolicy => "no_policy",
            ReasonCode::Duplicate => "duplicate",
            ReasonCode::Paused => "paused",
            ReasonCode::Cooldown => "cooldown",
            ReasonCode::AtDesired => "at_desired",
            ReasonCode::BrokerTrouble => "broker_trouble",
            ReasonCode::LagUnknown => "lag_unknown",
            ReasonCode::OutOfBounds => "out_of_bounds",
            ReasonCode::ManagedByAutoscaler => "managed_by_autoscaler",
            ReasonCode::AutoscalerCheckFailed => "autoscaler_check_failed",
            ReasonCode::ScaledByKeda => "scaled_by_keda",
            ReasonCode::KubeForbidden => "kube_forbidden",
            ReasonCode::KubeUnavailable => "kube_unavailable",
            ReasonCode::KubeConflict => "kube_conflict",
            ReasonCode::KubeNotFound => "kube_not_found",
            ReasonCode::KubeRefused => "kube_refused",
            ReasonCode::AuditUnhealthy => "audit_unhealthy",
            ReasonCode::GracePeriod => "grace_period",
            ReasonCode::MassFailure => "mass_failure",
            ReasonCode::Settling => "settling",
            ReasonCode::ClusterSizeUnknown => "cluster_size_unknown",
            ReasonCode::RemediationInProgress => "remediation_in_progress",
            ReasonCode::ClusterCooldown => "cluster_cooldown",
            ReasonCode::BrokerCooldown => "broker_cooldown",
            ReasonCode::ReassignmentInProgress => "reassignment_in_progress",
            ReasonCode::BrokerAlive => "broker_alive",
            ReasonCode::BrokerNotAlive => "broker_not_alive",
            ReasonCode::NothingToMove => "nothing_to_move",
            ReasonCode::PlanInvalid => "plan_invalid",
            ReasonCode::BadBrokerLabel => "bad_broker_label",
            ReasonCode::BackendUnsupported => "backend_unsupported",
            ReasonCode::BackendUnavailable => "backend_unavailable",
            ReasonCode::BackendRefused => "backend_refused",
            ReasonCode::ReassignmentTimeout => "reassignment_timeout",
            ReasonCode::Cancelled => "cancelled",
            ReasonCode::AlertResolved => "alert_resolved",
            ReasonCode::NotLeader => "not_leader",
            ReasonCode::ConfigInvalid => "config_invalid",
            ReasonCode::RestartRequired => "restart_required",
            ReasonCode::AlertsSourceWebhookFallback => "alerts_source_webhook_fallback",
            ReasonCode::OriginalMinReplicasInvalid => "original_min_replicas_invalid",
        }
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with the code as text, as the audit log and its readers do.
impl PartialEq<&str> for ReasonCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const ALL: [ReasonCode; 41] = [
        ReasonCode::NoPolicy,
        ReasonCode::Duplicate,
        ReasonCode::Paused,
        ReasonCode::Cooldown,
        ReasonCode::AtDesired,
        ReasonCode::BrokerTrouble,
        ReasonCode::LagUnknown,
        ReasonCode::OutOfBounds,
        ReasonCode::ManagedByAutoscaler,
        ReasonCode::AutoscalerCheckFailed,
        ReasonCode::ScaledByKeda,
        ReasonCode::KubeForbidden,
        ReasonCode::KubeUnavailable,
        ReasonCode::KubeConflict,
        ReasonCode::KubeNotFound,
        ReasonCode::KubeRefused,
        ReasonCode::AuditUnhealthy,
        ReasonCode::GracePeriod,
        ReasonCode::MassFailure,
        ReasonCode::Settling,
        ReasonCode::ClusterSizeUnknown,
        ReasonCode::RemediationInProgress,
        ReasonCode::ClusterCooldown,
        ReasonCode::BrokerCooldown,
        ReasonCode::ReassignmentInProgress,
        ReasonCode::BrokerAlive,
        ReasonCode::BrokerNotAlive,
        ReasonCode::NothingToMove,
        ReasonCode::PlanInvalid,
        ReasonCode::BadBrokerLabel,
        ReasonCode::BackendUnsupported,
        ReasonCode::BackendUnavailable,
        ReasonCode::BackendRefused,
        ReasonCode::ReassignmentTimeout,
        ReasonCode::Cancelled,
        ReasonCode::AlertResolved,
        ReasonCode::NotLeader,
        ReasonCode::ConfigInvalid,
        ReasonCode::RestartRequired,
        ReasonCode::AlertsSourceWebhookFallback,
        ReasonCode::OriginalMinReplicasInvalid,
    ];

    /// The audit log format: serde writes exactly `as_str`, reads it back, and every code is
    /// one the README documents.
    #[test]
    fn codes_serialise_as_the_documented_strings() {
        let readme = include_str!("../README.md");
        let mut seen = std::collections::HashSet::new();
        for code in ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()), "{code:?}");
            assert_eq!(serde_json::from_str::<ReasonCode>(&json).unwrap(), code);
            assert_eq!(code.to_string(), code.as_str());
            assert!(code == code.as_str() && code != "internal");
            assert!(seen.insert(code.as_str()), "{code:?} repeats a code");
            assert!(
                readme.contains(&format!("`{}`", code.as_str())),
                "{} is not documented in actuator/README.md",
                code.as_str()
            );
        }
        assert!(serde_json::from_str::<ReasonCode>("\"internal\"").is_err());
    }
}
