//! The audit log: one JSON line per decision, durable before the webhook is answered.

mod reader;
pub mod topic;
mod writer;

pub use crate::reason::ReasonCode;
pub use reader::{read_log, DEFAULT_LIMIT, MAX_LIMIT};
pub use writer::{AuditLog, AuditOptions, CommitSink, Recovered};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::alert::AlertStatus;
use crate::decide::{LagSource, Trigger};

/// Errors of the audit sink.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// An I/O error on the log file.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The writer thread is gone (a previous I/O error or shutdown).
    #[error("audit log writer has stopped")]
    Stopped,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The change was made.
    Applied,
    /// Nothing was done, `reason` says why.
    Skipped,
    /// The change was attempted and failed, `reason` says why.
    Failed,
    /// dry_run: the change would have been made.
    DryRun,
}

impl Outcome {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::DryRun => "dry_run",
        }
    }
}

/// The kind of action decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// More replicas.
    ScaleUp,
    /// Fewer replicas.
    ScaleDown,
    /// No change.
    None,
    /// The global pause switch was turned on.
    Pause,
    /// The global pause switch was turned off.
    Resume,
    /// Broker remediation: leadership moved off a broker (no data moves).
    MoveLeadership,
    /// Broker remediation: replicas moved off a live broker.
    MoveReplicas,
    /// Broker remediation: a dead broker's replicas re-created on live brokers.
    ReplaceReplicas,
    /// Leader election: this replica acquired the Lease and leads from now on.
    AcquireLeadership,
    /// Leader election: this replica stopped leading (not renewed in time, or overwritten).
    LoseLeadership,
    /// Leader election: this replica gave the Lease up on shutdown.
    ReleaseLeadership,
    /// The policy file was reloaded (applied), or a reload was refused (failed).
    ConfigReload,
    /// `on_autoscaler: raise_min_replicas`: an HPA's `minReplicas` (a ScaledObject's
    /// `minReplicaCount`) raised while the lag alert fires.
    RaiseMinReplicas,
    /// `on_autoscaler: raise_min_replicas`: that minimum put back to its original.
    RestoreMinReplicas,
}

impl Action {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ScaleUp => "scale_up",
            Action::ScaleDown => "scale_down",
            Action::None => "none",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::MoveLeadership => "move_leadership",
            Action::MoveReplicas => "move_replicas",
            Action::ReplaceReplicas => "replace_replicas",
            Action::AcquireLeadership => "acquire_leadership",
            Action::LoseLeadership => "lose_leadership",
            Action::ReleaseLeadership => "release_leadership",
            Action::ConfigReload => "config_reload",
            Action::RaiseMinReplicas => "raise_min_replicas",
            Action::RestoreMinReplicas => "restore_min_replicas",
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Monotonic sequence number of this actuator's log (assigned by the writer).
    #[serde(default)]
    pub seq: u64,
    /// Decision time, RFC 3339 UTC.
    pub ts: Timestamp,
    /// The actuator instance (pod name) that decided.
    pub instance: String,
    /// What started the evaluation: webhook, reevaluate or api.
    pub trigger: Trigger,
    /// applied, skipped, failed or dry_run.
    pub outcome: Outcome,
    /// scale_up, scale_down, none, pause or resume.
    pub action: Action,
    /// Machine-readable reason for skipped and failed (e.g. cooldown, no_policy, kube_forbidden).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ReasonCode>,
    /// A sentence for operators.
    pub message: String,
    /// The alert's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertname: Option<String>,
    /// firing or resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_status: Option<AlertStatus>,
    /// Alertmanager's fingerprint of the alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The alert's startsAt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    /// The alert's cluster label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The alert's consumergroup label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumergroup: Option<String>,
    /// The Deployment, `namespace/name` (absent for no_policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Replicas before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_replicas: Option<u32>,
    /// Replicas set (or that would have been set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_replicas: Option<u32>,
    /// Where the policy wants to end up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<u32>,
    /// Lag in offsets used for the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// prometheus, annotation or none.
    pub lag_source: LagSource,
    /// Whether the actuator ran in dry-run mode (for broker records: the cluster's dry run,
    /// the global one, or the log-only backend).
    pub dry_run: bool,
    /// Broker records: the alert's `broker` label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Broker records: the `path` label of `KafkaBrokerDiskPressure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Broker records: `kafka`, `cruise-control` or `log-only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Broker actions: `started` when the backend accepted it, `completed` when it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Broker actions: the backend's task (Cruise Control's User-Task-ID, or the actuator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Broker actions: partitions whose replica set changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_moves: Option<u32>,
    /// Broker actions: partitions whose leader changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_moves: Option<u32>,
    /// Broker actions: the plan (partition changes, partitions left alone, disk projection), or
    /// the Cruise Control request and its proposal summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<serde_json::Value>,
}

/// The phase of a broker action's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The backend accepted the action (or, in dry run, it was decided).
    Started,
    /// The action ended (outcome applied or failed).
    Completed,
}

impl AuditRecord {
    /// A record with the required fields; the rest can be filled in with struct update syntax.
    pub fn new(
        ts: Timestamp,
        instance: &str,
        trigger: Trigger,
        outcome: Outcome,
        action: Action,
    ) -> Self {
        Self {
            seq: 0,
            ts,
            instance: instance.to_string(),
            trigger,
            outcome,
            action,
            reason: None,
            message: String::new(),
            alertname: None,
            alert_status: None,
            fingerprint: None,
            starts_at: None,
            cluster: None,
            consumergroup: None,
            target: None,
            from_replicas: None,
            to_replicas: None,
            desired_replicas: None,
            lag: None,
            lag_source: LagSource::None,
            dry_run: false,
            broker: None,
            path: None,
            backend: None,
            phase: None,
            task_id: None,
            replica_moves: None,
            leader_moves: None,
            plan: None,
        }
    }
}

/// Filters for reading the log back.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this target (`namespace/name`).
    pub target: Option<String>,
    /// Only this action (scale_up, scale_down, none, pause, resume, move_leadership, move_replicas, replace_replicas, acquire_leadership, lose_leadership, release_leadership, config_reload).
    pub action: Option<Action>,
    /// Only this outcome (applied, skipped, failed, dry_run).
    pub outcome: Option<Outcome>,
    /// Only this reason code.
    pub reason: Option<String>,
    /// Only this cluster (lag and broker records).
    #[serde(default)]
    pub cluster: Option<String>,
    /// Only this broker (broker records).
    #[serde(default)]
    pub broker: Option<String>,
    /// Only records at or after this time (RFC 3339).
    pub since: Option<Timestamp>,
    /// Only records before this time (RFC 3339).
    pub until: Option<Timestamp>,
    /// At most this many records, the most recent ones ([`DEFAULT_LIMIT`] when absent; the
    /// reader clamps it to `1..=`[`MAX_LIMIT`], the API refuses values outside that range).
    pub limit: Option<usize>,
}

impl AuditQuery {
    /// Whether a record passes the filters.
    pub fn matches(&self, r: &AuditRecord) -> bool {
        self.target
            .as_ref()
            .is_none_or(|t| r.target.as_ref() == Some(t))
            && self.action.is_none_or(|a| r.action == a)
            && self.outcome.is_none_or(|o| r.outcome == o)
            && self
                .reason
                .as_ref()
                .is_none_or(|x| r.reason.map(ReasonCode::as_str) == Some(x.as_str()))
            && self
                .cluster
                .as_ref()
                .is_none_or(|x| r.cluster.as_ref() == Some(x))
            && self
                .broker
                .as_ref()
                .is_none_or(|x| r.broker.as_ref() == Some(x))
            && self.since.is_none_or(|s| r.ts >= s)
            && self.until.is_none_or(|u| r.ts < u)
    }
}

/// Result of reading the log back.
#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    /// Matching records, oldest first.
    pub records: Vec<AuditRecord>,
    /// Whether older matching records were left out by `limit` (the reader stops at the first
    /// one, so they are not counted).
    pub truncated: bool,
    /// Lines that did not parse (torn or foreign) among the lines read, skipped.
    pub invalid_lines: usize,
    /// Bytes read from the files (not serialized; for tests and the benchmark).
    #[serde(skip)]
    pub bytes_read: u64,
}

/// The log files from oldest to newest: `path.N`, ..., `path.1`, `path`.
pub fn log_files(path: &Path, max_files: usize) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..=max_files)
        .rev()
        .map(|i| rotated_path(path, i))
        .filter(|p| p.exists())
        .collect();
    files.push(path.to_path_buf());
    files
}

/// `path.N`.
pub fn rotated_path(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Parse log text into records; lines that do not parse are counted, not returned.
pub fn parse_lines(text: &str) -> (Vec<AuditRecord>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<AuditRecord>(line) {
            Ok(r) => out.push(r),
            Err(_) => bad += 1,
        }
    }
    (out, bad)
}
