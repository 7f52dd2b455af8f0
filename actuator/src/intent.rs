//! The durable intent of broker actions, kept in Kubernetes so that it outlives the process and
//! is shared by every replica: one ConfigMap per cluster (`medic-actuator-intent-<cluster>` in
//! the actuator's namespace) holding
//!
//! - `data.action`: the action that runs (written before anything is sent to the cluster;
//!   removed once its end is audited), as JSON: ids, broker, kind, the moves, the throttle this
//!   tool sets, start, deadline, phase;
//! - `data.cooldowns`: the last action per cluster and per broker, from which the broker and
//!   cluster intervals count.
//!
//! Every write carries the resourceVersion it read (create: none, so an existing object is a
//! 409), so two writers cannot both believe they own the cluster. This file holds the pure part
//! (types, JSON, the object's name) and the [`IntentStore`] trait; the Kubernetes store is
//! `backend/intent_store.rs`.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backend::KubeError;
use crate::broker::gate::LastBrokerAction;
use crate::broker::planner::PlanKind;
use crate::broker::policy::BackendKind;

/// The data key of the running action.
pub const DATA_ACTION: &str = "action";
/// The data key of the cooldowns.
pub const DATA_COOLDOWNS: &str = "cooldowns";
/// Prefix of every intent ConfigMap's name.
pub const NAME_PREFIX: &str = "medic-actuator-intent-";
/// The label naming the tool that manages the object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = "medic-actuator";
/// The annotation holding the cluster name as written in the policy (the name is sanitised).
pub const CLUSTER_ANNOTATION: &str = "kafka-medic.io/cluster";

/// Longest name produced (a DNS-1123 label, so it is also a valid label value).
const MAX_NAME: usize = 63;
/// Longest part of the cluster name kept when a hash is appended.
const MAX_KEPT: usize = MAX_NAME - NAME_PREFIX.len() - 9;

/// The ConfigMap name of a cluster's intent: `medic-actuator-intent-<cluster>`, lowercased,
/// every character outside `[a-z0-9-]` replaced by `-`. When that changed the name (or it was
/// too long), the first 8 hex digits of the name's SHA-256 are appended, so `prod_eu1` and
/// `prod-eu1` do not share an object.
pub fn configmap_name(cluster: &str) -> String {
    let clean: String = cluster
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-');
    if clean == cluster && NAME_PREFIX.len() + clean.len() <= MAX_NAME {
        return format!("{NAME_PREFIX}{clean}");
    }
    let digest = Sha256::digest(cluster.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let kept: String = clean.chars().take(MAX_KEPT).collect();
    let kept = kept.trim_end_matches('-');
    if kept.is_empty() {
        format!("{NAME_PREFIX}{hash}")
    } else {
        format!("{NAME_PREFIX}{kept}-{hash}")
    }
}

/// Where an action stands, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentPhase {
    /// Recorded before the backend was called. A process that stopped here may have set part
    /// of the throttle or sent the reassignment without recording it.
    Starting,
    /// The backend accepted it: the throttle is set, the reassignment (or task) runs.
    Started,
}

impl IntentPhase {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            IntentPhase::Starting => "starting",
            IntentPhase::Started => "started",
        }
    }
}

/// The alert that caused an action (its audit records name it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentAlert {
    /// `KafkaBrokerOverloaded`, `KafkaBrokerDiskPressure` or `KafkaBrokerDown`.
    pub alertname: String,
    /// Alertmanager's fingerprint.
    pub fingerprint: String,
    /// startsAt: the episode.
    pub starts_at: Timestamp,
    /// The `path` label (disk pressure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// One partition's replica change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentMove {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Replicas before.
    pub from: Vec<i32>,
    /// Replicas after (the first is the preferred leader).
    pub to: Vec<i32>,
}

/// The replication throttle this tool sets for an action: per broker the configs and values
/// SET (and DELETEd afterwards), per topic the `partition:broker` entries APPENDed to each
/// list config (and SUBTRACTed afterwards). Nothing else is ever removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleIntent {
    /// broker id -> config -> value.
    pub brokers: BTreeMap<i32, BTreeMap<String, String>>,
    /// topic -> config -> `partition:broker` entries.
    pub topics: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

/// A broker action that runs (or was about to start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionIntent {
    /// The actuator's id of the action.
    pub id: String,
    /// The backend's task (Kafka: the actuator's reassignment id; Cruise Control: its
    /// User-Task-ID), once the backend accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The cluster (as in the policy).
    pub cluster: String,
    /// The broker in trouble.
    pub broker: i32,
    /// What the action does.
    pub kind: PlanKind,
    /// The backend that carries it out.
    pub backend: BackendKind,
    /// Where it stands.
    pub phase: IntentPhase,
    /// The actuator replica that started it.
    pub by: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When it is cancelled if still running: `started_at` + `reassignment_timeout`.
    pub deadline: Timestamp,
    /// The alert.
    pub alert: IntentAlert,
    /// The planned replica changes (empty for Cruise Control, which plans by itself).
    #[serde(default)]
    pub moves: Vec<IntentMove>,
    /// The throttle this tool sets for it (none: no throttle, or the backend sets its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleIntent>,
    /// The replica that took the action over after the one that started it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_by: Option<String>,
    /// When it was taken over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_at: Option<Timestamp>,
    /// Last write.
    pub updated_at: Timestamp,
}

/// The last broker action, from which an interval counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CooldownEntry {
    /// When it ended.
    pub at: Timestamp,
    /// The broker.
    pub broker: i32,
    /// What it did.
    pub kind: PlanKind,
    /// startsAt of the alert that caused it (the episode).
    pub episode: Timestamp,
    /// The replica that recorded it.
    #[serde(default)]
    pub by: String,
}

impl CooldownEntry {
    /// The entry of a last action, recorded by `by`.
    pub fn of(last: &LastBrokerAction, by: &str) -> Self {
        Self {
            at: last.at,
            broker: last.broker,
            kind: last.kind,
            episode: last.episode,
            by: by.to_string(),
        }
    }

    /// As the gates see it.
    pub fn last(&self) -> LastBrokerAction {
        LastBrokerAction {
            at: self.at,
            broker: self.broker,
            kind: self.kind,
            episode: self.episode,
        }
    }
}

/// The last action of the cluster and of each broker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cooldowns {
    /// The cluster's last action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<CooldownEntry>,
    /// Each broker's last action, by broker id.
    #[serde(default)]
    pub brokers: BTreeMap<i32, CooldownEntry>,
}

impl Cooldowns {
    /// Record an action's end (the newer entry wins).
    pub fn remember(&mut self, entry: CooldownEntry) {
        if self.cluster.as_ref().is_none_or(|c| c.at <= entry.at) {
            self.cluster = Some(entry.clone());
        }
        if self
            .brokers
            .get(&entry.broker)
            .is_none_or(|c| c.at <= entry.at)
        {
            self.brokers.insert(entry.broker, entry);
        }
    }

    /// Every entry (the cluster's and the brokers'), as the gates see them.
    pub fn entries(&self) -> Vec<LastBrokerAction> {
        self.cluster
            .iter()
            .chain(self.brokers.values())
            .map(CooldownEntry::last)
            .collect()
    }
}

/// What a cluster's intent object holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterIntent {
    /// The action that runs, if any.
    pub action: Option<ActionIntent>,
    /// The intervals.
    pub cooldowns: Cooldowns,
}

impl ClusterIntent {
    /// The ConfigMap's `data`: `action` (only while one runs) and `cooldowns`, each JSON.
    pub fn to_data(&self) -> Result<BTreeMap<String, String>, String> {
        let mut data = BTreeMap::new();
        if let Some(a) = &self.action {
            data.insert(
                DATA_ACTION.to_string(),
                serde_json::to_string(a).map_err(|e| format!("data.{DATA_ACTION}: {e}"))?,
            );
        }
        data.insert(
            DATA_COOLDOWNS.to_string(),
            serde_json::to_string(&self.cooldowns)
                .map_err(|e| format!("data.{DATA_COOLDOWNS}: {e}"))?,
        );
        Ok(data)
    }

    /// Read a ConfigMap's `data` back; a key that does not parse is an error naming it (the
    /// actuator then starts nothing on the cluster until an operator looks).
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self, String> {
        let action = match data.get(DATA_ACTION) {
            None => None,
            Some(s) if s.trim().is_empty() => None,
            Some(s) => Some(
                serde_json::from_str::<ActionIntent>(s)
                    .map_err(|e| format!("data.{DATA_ACTION} does not parse: {e}"))?,
            ),
        };
        let cooldowns = match data.get(DATA_COOLDOWNS) {
            None => Cooldowns::default(),
            Some(s) if s.trim().is_empty() => Cooldowns::default(),
            Some(s) => serde_json::from_str(s)
                .map_err(|e| format!("data.{DATA_COOLDOWNS} does not parse: {e}"))?,
        };
        Ok(Self { action, cooldowns })
    }
}

/// An intent as read, with the resourceVersion to write it back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// What it holds.
    pub intent: ClusterIntent,
    /// Its resourceVersion.
    pub version: String,
}

/// Where the intents live.
pub trait IntentStore: Send + Sync {
    /// `namespace/name` of a cluster's object, for messages.
    fn location(&self, cluster: &str) -> String;

    /// The cluster's intent; `None` when there is no object yet.
    fn read<'a>(&'a self, cluster: &'a str) -> BoxFuture<'a, Result<Option<Stored>, KubeError>>;

    /// Write the cluster's intent: create it when `version` is `None` (a 409 if it exists), or
    /// replace it if it still has `version` (a 409 if anyone changed or deleted it since).
    /// Returns the new resourceVersion.
    fn write<'a>(
        &'a self,
        cluster: &'a str,
        intent: &'a ClusterIntent,
        version: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, KubeError>>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn action() -> ActionIntent {
        let mut brokers = BTreeMap::new();
        brokers.insert(
            1,
            BTreeMap::from([(
                "leader.replication.throttled.rate".to_string(),
                "1048576".to_string(),
            )]),
        );
        ActionIntent {
            id: "prod-1768464000000".into(),
            task_id: Some("kafka-1768464000123-1".into()),
            cluster: "prod".into(),
            broker: 4,
            kind: PlanKind::ReplaceReplicas,
            backend: BackendKind::Kafka,
            phase: IntentPhase::Started,
            by: "actuator-0".into(),
            started_at: ts("2026-01-15T08:00:00Z"),
            deadline: ts("2026-01-15T14:00:00Z"),
            alert: IntentAlert {
                alertname: "KafkaBrokerDown".into(),
                fingerprint: "d4".into(),
                starts_at: ts("2026-01-15T07:00:00Z"),
                path: None,
            },
            moves: vec![IntentMove {
                topic: "logs".into(),
                partition: 1,
                from: vec![1, 4],
                to: vec![1, 3],
            }],
            throttle: Some(ThrottleIntent {
                brokers,
                topics: BTreeMap::from([(
                    "logs".to_string(),
                    BTreeMap::from([(
                        "follower.replication.throttled.replicas".to_string(),
                        vec!["1:3".to_string()],
                    )]),
                )]),
            }),
            recovered_by: None,
            recovered_at: None,
            updated_at: ts("2026-01-15T08:00:01Z"),
        }
    }

    /// The documented format: every key, as the operator sees it in the ConfigMap.
    #[test]
    fn the_action_json_has_the_documented_keys_and_round_trips() {
        let a = action();
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "prod-1768464000000",
                "task_id": "kafka-1768464000123-1",
                "cluster": "prod",
                "broker": 4,
                "kind": "replace_replicas",
                "backend": "kafka",
                "phase": "started",
                "by": "actuator-0",
                "started_at": "2026-01-15T08:00:00Z",
                "deadline": "2026-01-15T14:00:00Z",
                "alert": {"alertname": "KafkaBrokerDown", "fingerprint": "d4", "starts_at": "2026-01-15T07:00:00Z"},
                "moves": [{"topic": "logs", "partition": 1, "from": [1, 4], "to": [1, 3]}],
                "throttle": {
                    "brokers": {"1": {"leader.replication.throttled.rate": "1048576"}},
                    "topics": {"logs": {"follower.replication.throttled.replicas": ["1:3"]}}
                },
                "updated_at": "2026-01-15T08:00:01Z"
            })
        );
        let back: ActionIntent = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn data_holds_the_action_only_while_one_runs_and_always_the_cooldowns() {
        let mut intent = ClusterIntent {
            action: Some(action()),
            cooldowns: Cooldowns::default(),
        };
        intent.cooldowns.remember(CooldownEntry {
            at: ts("2026-01-15T09:00:00Z"),
            broker: 4,
            kind: PlanKind::ReplaceReplicas,
            episode: ts("2026-01-15T07:00:00Z"),
            by: "actuator-0".into(),
        });
        let data = intent.to_data().unwrap();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            vec![DATA_ACTION, DATA_COOLDOWNS]
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&data[DATA_COOLDOWNS]).unwrap(),
            serde_json::json!({
                "cluster": {"at": "2026-01-15T09:00:00Z", "broker": 4, "kind": "replace_replicas", "episode": "2026-01-15T07:00:00Z", "by": "actuator-0"},
                "brokers": {"4": {"at": "2026-01-15T09:00:00Z", "broker": 4, "kind": "replace_replicas", "episode": "2026-01-15T07:00:00Z", "by": "actuator-0"}}
            })
        );
        assert_eq!(ClusterIntent::from_data(&data).unwrap(), intent);
        intent.action = None;
        let data = intent.to_data().unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), vec![DATA_COOLDOWNS]);
        assert_eq!(ClusterIntent::from_data(&data).unwrap(), intent);
        assert_eq!(
            ClusterIntent::from_data(&BTreeMap::new()).unwrap(),
            ClusterIntent::default()
        );
    }

    #[test]
    fn a_data_key_that_does_not_parse_is_an_error_naming_it() {
        let data = BTreeMap::from([(DATA_ACTION.to_string(), "{\"id\": 1".to_string())]);
        let e = ClusterIntent::from_data(&data).unwrap_err();
        assert!(e.starts_with("data.action does not parse: "), "{e}");
        let data = BTreeMap::from([(DATA_COOLDOWNS.to_string(), "{\"cluster\": 5}".to_string())]);
        let e = ClusterIntent::from_data(&data).unwrap_err();
        assert!(e.starts_with("data.cooldowns does not parse: "), "{e}");
    }

    #[test]
    fn cooldowns_keep_the_newest_entry_per_cluster_and_broker() {
        let entry = |at: &str, broker: i32| CooldownEntry {
            at: ts(at),
            broker,
            kind: PlanKind::MoveLeadership,
            episode: ts("2026-01-15T07:00:00Z"),
            by: "a".into(),
        };
        let mut c = Cooldowns::default();
        c.remember(entry("2026-01-15T09:00:00Z", 1));
        c.remember(entry("2026-01-15T08:00:00Z", 2));
        c.remember(entry("2026-01-15T07:30:00Z", 1));
        assert_eq!(c.cluster.as_ref().unwrap().at, ts("2026-01-15T09:00:00Z"));
        assert_eq!(c.brokers[&1].at, ts("2026-01-15T09:00:00Z"));
        assert_eq!(c.brokers[&2].at, ts("2026-01-15T08:00:00Z"));
        assert_eq!(c.entries().len(), 3);
    }

    #[test]
    fn names_are_dns_labels_and_distinct_for_distinct_clusters() {
        assert_eq!(configmap_name("prod"), "medic-actuator-intent-prod");
        assert_eq!(configmap_name("prod-eu1"), "medic-actuator-intent-prod-eu1");
        let a = configmap_name("prod_eu1");
        let b = configmap_name("Prod-EU1");
        assert!(a.starts_with("medic-actuator-intent-prod-eu1-"), "{a}");
        assert_ne!(a, b);
        assert_ne!(a, configmap_name("prod-eu1"));
        // Nothing usable left of the name: the hash alone.
        assert_eq!(configmap_name("__").len(), NAME_PREFIX.len() + 8);
        let long = "x".repeat(300);
        for name in [
            a,
            b,
            configmap_name(&long),
            configmap_name("__"),
            configmap_name("a.b/c"),
        ] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'),
                "{name}"
            );
            assert!(
                name.as_bytes()[name.len() - 1].is_ascii_alphanumeric(),
                "{name}"
            );
        }
        assert_ne!(configmap_name(&long), configmap_name(&"x".repeat(301)));
    }
}
