//! The narrow trait broker actions go through: look at the cluster, start an action, poll it,
//! cancel it; and the types it speaks. Implemented by the `kafka` (`kafka.rs`),
//! `cruise-control` (`cruise_control.rs`) and `log-only` (`log_only.rs`) backends; chosen per
//! cluster by [`super::build`]. This file imports no backend.

use futures::future::BoxFuture;
use medic_kafka::KafkaError;

use crate::broker::planner::{Limits, Plan, PlanKind};
use crate::broker::policy::BackendKind;
use crate::broker::ClusterModel;
use crate::intent::{ActionIntent, ThrottleIntent};
use crate::reason::ReasonCode;

/// Errors of a remediation backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The cluster (or Cruise Control) does not offer what is needed.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// Unreachable, timed out, or a server error: trying later may help.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Refused (an error code, a 4xx, bad credentials): trying again will not help by itself.
    #[error("refused: {0}")]
    Refused(String),
}

impl BackendError {
    /// Stable reason code for the audit log.
    pub fn code(&self) -> ReasonCode {
        match self {
            BackendError::Unsupported(_) => ReasonCode::BackendUnsupported,
            BackendError::Unavailable(_) => ReasonCode::BackendUnavailable,
            BackendError::Refused(_) => ReasonCode::BackendRefused,
        }
    }
}

/// The Kafka client's errors as a backend's: unreachable brokers may come back, a missing API
/// will not, anything else is a refusal.
impl From<KafkaError> for BackendError {
    fn from(e: KafkaError) -> Self {
        match e {
            KafkaError::Unsupported { .. } => BackendError::Unsupported(e.to_string()),
            KafkaError::Connect { .. }
            | KafkaError::Timeout { .. }
            | KafkaError::Io { .. }
            | KafkaError::NoBroker { .. } => BackendError::Unavailable(error_chain(&e)),
            _ => BackendError::Refused(error_chain(&e)),
        }
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(&format!(": {x}"));
        src = x.source();
    }
    s
}

/// What a backend sees of the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// The cluster model, when the backend reads Kafka's metadata (flags not yet set).
    pub model: Option<ClusterModel>,
    /// A reassignment or execution in progress (anyone's), described.
    pub in_progress: Option<String>,
    /// Brokers in the cluster: live ones and dead ones still in replica lists.
    pub brokers: Option<usize>,
}

/// An action to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// What to do.
    pub kind: PlanKind,
    /// The broker in trouble.
    pub broker: i32,
    /// The plan (backends that plan here need it; Cruise Control plans by itself).
    pub plan: Option<Plan>,
    /// Other brokers that must not receive replicas (alerting ones).
    pub exclude: Vec<i32>,
    /// Why, for the backend's own records (Cruise Control's `reason`).
    pub reason: String,
    /// Caps, passed on to Cruise Control as its concurrency limits.
    pub limits: Limits,
    /// Replication throttle in bytes/s, when set.
    pub throttle: Option<u64>,
}

/// An accepted action.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    /// The task to poll.
    pub task_id: String,
    /// What the backend said it will do (Cruise Control's proposal summary).
    pub summary: Option<serde_json::Value>,
    /// Anything an operator should know (e.g. partitions the cluster refused).
    pub note: Option<String>,
    /// Nothing runs: the backend only computed a proposal (Cruise Control's own dry run).
    pub proposal_only: bool,
}

/// Where a running action stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Still running, described.
    Running(String),
    /// Finished, described.
    Done(String),
    /// Ended in failure.
    Failed(BackendError),
}

/// A remediation backend.
pub trait RemediationBackend: Send + Sync {
    /// Which backend.
    fn kind(&self) -> BackendKind;

    /// A fresh look: metadata (when the backend reads it, with replica sizes and disk use when
    /// `sizes`), and whether any reassignment is in progress.
    fn observe(&self, sizes: bool) -> BoxFuture<'_, Result<Observation, BackendError>>;

    /// Start an action.
    fn start<'a>(&'a self, req: &'a Request) -> BoxFuture<'a, Result<Started, BackendError>>;

    /// Poll a started action.
    fn poll<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Progress, BackendError>>;

    /// Stop a started action (time-out), and clean up after it.
    fn cancel<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<String, BackendError>>;

    /// The throttle `start` will set for `req`, recorded in the action's intent before it is
    /// set. None: no throttle, or one the backend's own system sets and removes (Cruise
    /// Control's `replication_throttle`).
    fn throttle_plan(&self, _req: &Request) -> Result<Option<ThrottleIntent>, BackendError> {
        Ok(None)
    }

    /// Take over an action recorded in an intent (started by a process that stopped): after
    /// this, `poll` and `cancel` work on the returned task id as on one started here, and
    /// remove the throttle the intent records (only that) once nothing of it moves.
    fn resume<'a>(
        &'a self,
        action: &'a ActionIntent,
    ) -> BoxFuture<'a, Result<String, BackendError>> {
        Box::pin(async move {
            Err(BackendError::Unsupported(format!(
                "the {} backend cannot take over action {}",
                self.kind().as_str(),
                action.id
            )))
        })
    }
}
