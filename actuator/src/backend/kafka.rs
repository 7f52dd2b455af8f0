//! The `kafka` backend: the Kafka admin API over the medic-kafka client (client id
//! `medic-actuator`).
//!
//! - observe: Metadata (live brokers, racks, replicas, ISR, leaders), ListPartitionReassignments
//!   (anything in progress, anyone's), and DescribeLogDirs per broker for replica sizes and disk
//!   use when asked;
//! - start: the replication throttle when configured (see `kafka_throttle.rs`), then
//!   AlterPartitionReassignments with the plan's replica lists;
//! - poll: ListPartitionReassignments for the task's partitions; once none is moving,
//!   ElectLeaders (PREFERRED) for a leadership move, and the throttle is removed;
//! - cancel: AlterPartitionReassignments with no replicas (Kafka's cancel) and the throttle
//!   removed for every partition that no longer moves (never under a running move);
//! - resume: take over an action recorded in its intent (moves, throttle) after a restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use futures::future::BoxFuture;
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, ApiKey, ApiVersionsRequest, BrokerId,
    DescribeLogDirsRequest, ElectLeadersRequest, ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use medic_kafka::error::code_name;
use medic_kafka::{ClientConfig, KafkaClient, KafkaError, RequestObserver, Security};

use super::kafka_throttle::Throttle;
use super::remediation::{
    BackendError, Observation, Progress, RemediationBackend, Request, Started,
};
use crate::broker::planner::PlanKind;
use crate::broker::policy::{BackendKind, KafkaConnection};
use crate::broker::{Broker, ClusterModel, Disk, Partition};
use crate::intent::{ActionIntent, ThrottleIntent};

/// The `client_id` of the actuator's requests, as brokers log them.
pub const CLIENT_ID: &str = "medic-actuator";

/// ELECTION_NOT_NEEDED: the preferred leader already leads.
const ELECTION_NOT_NEEDED: i16 = 84;

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// A started action.
#[derive(Debug, Clone)]
struct Task {
    kind: PlanKind,
    /// Partitions whose replica list was changed.
    moving: Vec<(String, i32)>,
    /// Partitions to elect preferred leaders for once `moving` is done (leadership moves).
    elect: Vec<(String, i32)>,
    /// The throttle to remove at the end.
    throttle: Option<Throttle>,
}

/// The Kafka admin backend.
pub struct KafkaBackend {
    client: KafkaClient,
    /// Changes the cluster (the `kafka` backend), or only reads it (`log-only`'s reader).
    writes: bool,
    timeout_ms: i32,
    racks: Mutex<BTreeMap<i32, String>>,
    live: Mutex<BTreeSet<i32>>,
    tasks: Mutex<HashMap<String, Task>>,
    next: AtomicU64,
}

/// Build the client's security settings from the connection config (secrets read here; the
/// keys are checked and built by medic-kafka, as for medic-agent).
pub fn security(k: &KafkaConnection) -> Result<Security, String> {
    k.security_settings().build().map_err(|problems| {
        problems
            .iter()
            .map(|p| p.render(&format!("kafka.{}", p.key)))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

impl KafkaBackend {
    /// A backend for the cluster behind `conn`; its requests are reported to `observer`.
    pub fn new(conn: &KafkaConnection, observer: Option<RequestObserver>) -> Result<Self, String> {
        Self::build(conn, true, observer)
    }

    /// A reader only (for `log-only`): no check of the write APIs.
    pub fn reader(
        conn: &KafkaConnection,
        observer: Option<RequestObserver>,
    ) -> Result<Self, String> {
        Self::build(conn, false, observer)
    }

    fn build(
        conn: &KafkaConnection,
        writes: bool,
        observer: Option<RequestObserver>,
    ) -> Result<Self, String> {
        let cfg = ClientConfig {
            bootstrap: conn.bootstrap_servers.clone(),
            security: security(conn)?,
            request_timeout: conn.request_timeout,
            offset_fetch_batch: 1,
            client_id: CLIENT_ID.to_string(),
            observer,
        };
        Ok(Self {
            client: KafkaClient::new(cfg),
            writes,
            timeout_ms: i32::try_from(conn.request_timeout.as_millis()).unwrap_or(i32::MAX),
            racks: Mutex::new(BTreeMap::new()),
            live: Mutex::new(BTreeSet::new()),
            tasks: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        })
    }

    /// The address admin requests go to: the controller the metadata names (in KRaft any
    /// broker, which forwards), else the first live broker.
    async fn admin_addr(&self) -> Result<String, BackendError> {
        let md = self
            .client
            .metadata(Some(&[]))
            .await
            .map_err(BackendError::from)?;
        self.client
            .broker_addr(md.controller)
            .or_else(|_| {
                md.brokers
                    .values()
                    .next()
                    .map(|b| b.addr())
                    .ok_or(KafkaError::UnknownBroker(md.controller))
            })
            .map_err(BackendError::from)
    }

    /// Partitions being reassigned, optionally only among `only`.
    async fn ongoing(
        &self,
        addr: &str,
        only: Option<&[(String, i32)]>,
    ) -> Result<Vec<(String, i32)>, BackendError> {
        let timeout_ms = self.timeout_ms;
        let topics = only.map(|parts| {
            let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (t, p) in parts {
                by_topic.entry(t.as_str()).or_default().push(*p);
            }
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    ListPartitionReassignmentsTopics::default()
                        .with_name(topic(t))
                        .with_partition_indexes(ps)
                })
                .collect::<Vec<_>>()
        });
        let (_, resp) = self
            .client
            .call(addr, 0, |_| {
                ListPartitionReassignmentsRequest::default()
                    .with_timeout_ms(timeout_ms)
                    .with_topics(topics)
            })
            .await
            .map_err(BackendError::from)?;
        if resp.error_code != 0 {
            return Err(BackendError::Refused(format!(
                "ListPartitionReassignments: Kafka error {} ({}){}",
                resp.error_code,
                code_name(resp.error_code),
                resp.error_message
                    .filter(|m| !m.is_empty())
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )));
        }
        Ok(resp
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.name.0.to_string(), p.partition_index))
            })
            .collect())
    }

    async fn sizes(&self, model: &mut ClusterModel) -> Vec<String> {
        let mut notes = Vec::new();
        let live: Vec<i32> = model
            .brokers
            .iter()
            .filter(|(_, b)| b.alive)
            .map(|(id, _)| *id)
            .collect();
        let mut index: HashMap<(String, i32), usize> = HashMap::new();
        for (i, p) in model.partitions.iter().enumerate() {
            index.insert((p.topic.clone(), p.partition), i);
        }
        for id in live {
            let addr = match self.client.broker_addr(id) {
                Ok(a) => a,
                Err(e) => {
                    notes.push(format!("broker {id}: {e}"));
                    continue;
                }
            };
            let resp = self
                .client
                .call(&addr, 4, |_| {
                    DescribeLogDirsRequest::default()
                        .with_topics(None::<Vec<DescribableLogDirTopic>>)
                })
                .await;
            let (_, resp) = match resp {
                Ok(r) => r,
                Err(e) => {
                    notes.push(format!("DescribeLogDirs on broker {id}: {e}"));
                    continue;
                }
            };
            let mut total = Disk {
                used_bytes: 0,
                total_bytes: 0,
            };
            let mut known = false;
            let mut dirs = BTreeMap::new();
            for dir in resp.results.iter().filter(|d| d.error_code == 0) {
                let path = dir.log_dir.to_string();
                if dir.total_bytes >= 0 && dir.usable_bytes >= 0 {
                    let d = Disk {
                        total_bytes: dir.total_bytes as u64,
                        used_bytes: (dir.total_bytes - dir.usable_bytes).max(0) as u64,
                    };
                    total.used_bytes += d.used_bytes;
                    total.total_bytes += d.total_bytes;
                    known = true;
                    dirs.insert(path.clone(), d);
                }
                for t in &dir.topics {
                    for p in t.partitions.iter().filter(|p| !p.is_future_key) {
                        if let Some(i) = index.get(&(t.name.0.to_string(), p.partition_index)) {
                            if let Some(part) = model.partitions.get_mut(*i) {
                                part.sizes.insert(id, p.partition_size.max(0) as u64);
                                part.dirs.insert(id, path.clone());
                            }
                        }
                    }
                }
            }
            if let Some(b) = model.brokers.get_mut(&id) {
                b.disk = known.then_some(total);
                b.log_dirs = dirs;
            }
        }
        notes
    }

    /// The cluster model from Metadata (and DescribeLogDirs when `sizes`), with the address
    /// admin requests go to.
    pub async fn model(&self, sizes: bool) -> Result<(ClusterModel, String), BackendError> {
        let md = self
            .client
            .metadata(None)
            .await
            .map_err(BackendError::from)?;
        let mut model = ClusterModel::default();
        {
            let mut racks = self.racks.lock().map_err(|_| poisoned())?;
            for (id, b) in &md.brokers {
                if let Some(r) = &b.rack {
                    racks.insert(*id, r.clone());
                }
                model.brokers.insert(*id, Broker::live(b.rack.as_deref()));
            }
            for (name, t) in &md.topics {
                for (n, p) in &t.partitions {
                    model.partitions.push(Partition {
                        topic: name.clone(),
                        partition: *n,
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                        leader: p.leader,
                        sizes: BTreeMap::new(),
                        dirs: BTreeMap::new(),
                    });
                }
            }
            model.add_missing_brokers(&racks);
        }
        if let Ok(mut live) = self.live.lock() {
            *live = md.brokers.keys().copied().collect();
        }
        let addr = self
            .client
            .broker_addr(md.controller)
            .or_else(|_| {
                md.brokers
                    .values()
                    .next()
                    .map(|b| b.addr())
                    .ok_or(KafkaError::UnknownBroker(md.controller))
            })
            .map_err(BackendError::from)?;
        if sizes {
            for note in self.sizes(&mut model).await {
                tracing::info!(note = %note, "replica sizes partly unknown");
            }
        }
        Ok((model, addr))
    }

    /// Check, from its ApiVersions, that the cluster offers what this backend sends, so that
    /// a cluster without them gets a clear refusal before anything is planned or sent.
    async fn check_apis(&self, addr: &str) -> Result<(), BackendError> {
        let (_, resp) = self
            .client
            .call(addr, 2, |_| ApiVersionsRequest::default())
            .await
            .map_err(BackendError::from)?;
        let mut need = vec![ApiKey::ListPartitionReassignments];
        if self.writes {
            need.extend([
                ApiKey::AlterPartitionReassignments,
                ApiKey::ElectLeaders,
                ApiKey::IncrementalAlterConfigs,
            ]);
        }
        let missing: Vec<String> = need
            .into_iter()
            .filter(|k| !resp.api_keys.iter().any(|a| a.api_key == *k as i16))
            .map(|k| format!("{k:?}"))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(BackendError::Unsupported(format!(
                "{addr} does not offer {} (from its ApiVersions): the kafka backend cannot {} on this cluster",
                missing.join(", "),
                if self.writes { "move partitions" } else { "tell whether a reassignment runs" }
            )))
        }
    }

    async fn observe_inner(&self, sizes: bool) -> Result<Observation, BackendError> {
        let (model, addr) = self.model(sizes).await?;
        self.check_apis(&addr).await?;
        let ongoing = self.ongoing(&addr, None).await?;
        let in_progress = (!ongoing.is_empty()).then(|| {
            let list: Vec<String> = ongoing
                .iter()
                .take(5)
                .map(|(t, p)| format!("{t}-{p}"))
                .collect();
            format!(
                "{} partitions being reassigned in the cluster ({}{})",
                ongoing.len(),
                list.join(", "),
                if ongoing.len() > 5 { ", ..." } else { "" }
            )
        });
        Ok(Observation {
            brokers: Some(model.brokers.len()),
            model: Some(model),
            in_progress,
        })
    }

    /// The throttle `start` sets for `req`: replica moves with a configured rate, on the live
    /// brokers of the last metadata (the intent records exactly this before it is set).
    fn throttle_for(&self, req: &Request) -> Result<Option<Throttle>, BackendError> {
        let Some(plan) = req.plan.as_ref() else {
            return Ok(None);
        };
        match (req.throttle, plan.kind) {
            (Some(rate), PlanKind::MoveReplicas | PlanKind::ReplaceReplicas) => {
                let moving: Vec<&crate::broker::Change> =
                    plan.changes.iter().filter(|c| c.to != c.from).collect();
                let live = self.live.lock().map_err(|_| poisoned())?.clone();
                Ok(Some(Throttle::for_changes(&moving, rate, &live)))
            }
            _ => Ok(None),
        }
    }

    async fn start_inner(&self, req: &Request) -> Result<Started, BackendError> {
        let plan = req.plan.as_ref().ok_or_else(|| {
            BackendError::Refused("the kafka backend needs a plan from the metadata".into())
        })?;
        let addr = self.admin_addr().await?;
        let moving: Vec<&crate::broker::Change> =
            plan.changes.iter().filter(|c| c.to != c.from).collect();
        let throttle = match self.throttle_for(req)? {
            Some(t) => {
                t.apply(&self.client, &addr).await?;
                Some(t)
            }
            None => None,
        };
        let mut rejected = Vec::new();
        let mut refused: BTreeSet<(String, i32)> = BTreeSet::new();
        let mut accepted = Vec::new();
        if !moving.is_empty() {
            let mut by_topic: BTreeMap<&str, Vec<ReassignablePartition>> = BTreeMap::new();
            for c in &moving {
                by_topic.entry(c.topic.as_str()).or_default().push(
                    ReassignablePartition::default()
                        .with_partition_index(c.partition)
                        .with_replicas(Some(c.to.iter().map(|b| BrokerId(*b)).collect())),
                );
            }
            let topics: Vec<ReassignableTopic> = by_topic
                .into_iter()
                .map(|(t, ps)| {
                    ReassignableTopic::default()
                        .with_name(topic(t))
                        .with_partitions(ps)
                })
                .collect();
            let timeout_ms = self.timeout_ms;
            let sent = self
                .client
                .call(&addr, 0, |_| {
                    AlterPartitionReassignmentsRequest::default()
                        .with_timeout_ms(timeout_ms)
                        .with_topics(topics)
                })
                .await
                .map_err(BackendError::from);
            let resp = match sent {
                Ok((_, r)) => r,
                Err(e) => {
                    self.unthrottle(&throttle, &addr).await;
                    return Err(e);
                }
            };
            if resp.error_code != 0 {
                self.unthrottle(&throttle, &addr).await;
                return Err(BackendError::Refused(format!(
                    "AlterPartitionReassignments: Kafka error {} ({}){}",
                    resp.error_code,
                    code_name(resp.error_code),
                    resp.error_message
                        .filter(|m| !m.is_empty())
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                )));
            }
            for t in &resp.responses {
                for p in &t.partitions {
                    let tp = (t.name.0.to_string(), p.partition_index);
                    if p.error_code == 0 {
                        accepted.push(tp);
                    } else {
                        refused.insert(tp.clone());
                        rejected.push(format!(
                            "{}-{}: {}{}",
                            tp.0,
                            tp.1,
                            code_name(p.error_code),
                            p.error_message
                                .as_ref()
                                .filter(|m| !m.is_empty())
                                .map(|m| format!(" ({m})"))
                                .unwrap_or_default()
                        ));
                    }
                }
            }
            if accepted.is_empty() {
                self.unthrottle(&throttle, &addr).await;
                return Err(BackendError::Refused(format!(
                    "every partition was refused: {}",
                    rejected.join("; ")
                )));
            }
        }
        let elect = match plan.kind {
            PlanKind::MoveLeadership => plan
                .changes
                .iter()
                .map(|c| (c.topic.clone(), c.partition))
                .filter(|tp| !refused.contains(tp))
                .collect(),
            _ => Vec::new(),
        };
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let task_id = format!("kafka-{}-{n}", jiff::Timestamp::now().as_millisecond());
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.insert(
                task_id.clone(),
                Task {
                    kind: plan.kind,
                    moving: accepted.clone(),
                    elect,
                    throttle,
                },
            );
        }
        Ok(Started {
            task_id,
            summary: None,
            note: (!rejected.is_empty()).then(|| {
                format!(
                    "Kafka refused {} partitions: {}",
                    rejected.len(),
                    rejected.join("; ")
                )
            }),
            proposal_only: false,
        })
    }

    async fn unthrottle(&self, throttle: &Option<Throttle>, addr: &str) -> String {
        match throttle {
            None => String::new(),
            Some(t) => match t.remove(&self.client, addr).await {
                Ok(()) => "; throttle removed".into(),
                Err(e) => format!("; removing the throttle failed: {e}"),
            },
        }
    }

    fn task(&self, id: &str) -> Result<Task, BackendError> {
        self.tasks
            .lock()
            .map_err(|_| poisoned())?
            .get(id)
            .cloned()
            .ok_or_else(|| BackendError::Refused(format!("no task {id} in this actuator")))
    }

    fn forget(&self, id: &str) {
        if let Ok(mut t) = self.tasks.lock() {
            t.remove(id);
        }
    }

    async fn poll_inner(&self, id: &str) -> Result<Progress, BackendError> {
        let task = self.task(id)?;
        let addr = self.admin_addr().await?;
        if !task.moving.is_empty() {
            let still = self.ongoing(&addr, Some(&task.moving)).await?;
            if !still.is_empty() {
                return Ok(Progress::Running(format!(
                    "{} of {} partitions still moving",
                    still.len(),
                    task.moving.len()
                )));
            }
        }
        let mut done = format!("{} partitions reassigned", task.moving.len());
        let mut failed_all = false;
        if task.kind == PlanKind::MoveLeadership && !task.elect.is_empty() {
            let (ok, failures) = self.elect(&addr, &task.elect).await?;
            failed_all = ok == 0;
            done.push_str(&format!("; {ok} preferred leaders elected"));
            if !failures.is_empty() {
                done.push_str(&format!(
                    ", {} failed: {}",
                    failures.len(),
                    failures.join("; ")
                ));
            }
        }
        done.push_str(&self.unthrottle(&task.throttle, &addr).await);
        self.forget(id);
        Ok(if failed_all {
            Progress::Failed(BackendError::Refused(done))
        } else {
            Progress::Done(done)
        })
    }

    async fn elect(
        &self,
        addr: &str,
        parts: &[(String, i32)],
    ) -> Result<(usize, Vec<String>), BackendError> {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in parts {
            by_topic.entry(t.as_str()).or_default().push(*p);
        }
        let topics: Vec<TopicPartitions> = by_topic
            .into_iter()
            .map(|(t, ps)| {
                TopicPartitions::default()
                    .with_topic(topic(t))
                    .with_partitions(ps)
            })
            .collect();
        let timeout_ms = self.timeout_ms;
        let (_, resp) = self
            .client
            .call(addr, 2, |_| {
                ElectLeadersRequest::default()
                    .with_election_type(0)
                    .with_topic_partitions(Some(topics))
                    .with_timeout_ms(timeout_ms)
            })
            .await
            .map_err(BackendError::from)?;
        if resp.error_code != 0 {
            return Err(BackendError::Refused(format!(
                "ElectLeaders: Kafka error {} ({})",
                resp.error_code,
                code_name(resp.error_code)
            )));
        }
        let mut ok = 0;
        let mut failures = Vec::new();
        for t in &resp.replica_election_results {
            for p in &t.partition_result {
                if p.error_code == 0 || p.error_code == ELECTION_NOT_NEEDED {
                    ok += 1;
                } else {
                    failures.push(format!(
                        "{}-{}: {}",
                        t.topic.0,
                        p.partition_id,
                        code_name(p.error_code)
                    ));
                }
            }
        }
        Ok((ok, failures))
    }

    async fn cancel_inner(&self, id: &str) -> Result<String, BackendError> {
        let task = self.task(id)?;
        let addr = self.admin_addr().await?;
        let mut by_topic: BTreeMap<&str, Vec<ReassignablePartition>> = BTreeMap::new();
        for (t, p) in &task.moving {
            by_topic.entry(t.as_str()).or_default().push(
                ReassignablePartition::default()
                    .with_partition_index(*p)
                    .with_replicas(None),
            );
        }
        let topics: Vec<ReassignableTopic> = by_topic
            .into_iter()
            .map(|(t, ps)| {
                ReassignableTopic::default()
                    .with_name(topic(t))
                    .with_partitions(ps)
            })
            .collect();
        let timeout_ms = self.timeout_ms;
        let mut msg = match self
            .client
            .call(&addr, 0, |_| {
                AlterPartitionReassignmentsRequest::default()
                    .with_timeout_ms(timeout_ms)
                    .with_topics(topics)
            })
            .await
        {
            Ok((_, r)) if r.error_code == 0 => {
                format!(
                    "cancelled the reassignment of {} partitions",
                    task.moving.len()
                )
            }
            Ok((_, r)) => format!(
                "cancelling failed: Kafka error {} ({})",
                r.error_code,
                code_name(r.error_code)
            ),
            Err(e) => format!("cancelling failed: {}", BackendError::from(e)),
        };
        msg.push_str(&self.unthrottle_stopped(&task, &addr).await);
        self.forget(id);
        Ok(msg)
    }

    /// After a cancel: remove the throttle of the partitions that no longer move, and keep
    /// (and name) what still throttles a running move.
    async fn unthrottle_stopped(&self, task: &Task, addr: &str) -> String {
        let Some(t) = &task.throttle else {
            return String::new();
        };
        let still: BTreeSet<(String, i32)> = match self.ongoing(addr, Some(&task.moving)).await {
            Ok(s) => s.into_iter().collect(),
            Err(e) => {
                return format!(
                    "; the throttle is kept ({}): whether its partitions still move could not be read: {e}",
                    t.describe()
                )
            }
        };
        let (remove, keep) = t.split(&still);
        let mut msg = self.unthrottle(&Some(remove), addr).await;
        if !keep.is_empty() {
            msg = format!(
                "{msg} for the partitions that stopped; kept for {} partitions still moving ({}): remove it by hand once they finish",
                still.len(),
                keep.describe()
            );
        }
        msg
    }

    /// Register the task of an action recorded in an intent.
    fn resume_inner(&self, a: &ActionIntent) -> Result<String, BackendError> {
        let throttle = a
            .throttle
            .as_ref()
            .map(Throttle::from_intent)
            .transpose()
            .map_err(|e| {
                BackendError::Refused(format!("the throttle recorded for {}: {e}", a.id))
            })?;
        let moving = a
            .moves
            .iter()
            .filter(|m| m.to != m.from)
            .map(|m| (m.topic.clone(), m.partition))
            .collect();
        let elect = match a.kind {
            PlanKind::MoveLeadership => a
                .moves
                .iter()
                .map(|m| (m.topic.clone(), m.partition))
                .collect(),
            _ => Vec::new(),
        };
        let id = a.task_id.clone().unwrap_or_else(|| a.id.clone());
        self.tasks.lock().map_err(|_| poisoned())?.insert(
            id.clone(),
            Task {
                kind: a.kind,
                moving,
                elect,
                throttle,
            },
        );
        Ok(id)
    }
}

fn poisoned() -> BackendError {
    BackendError::Refused("internal: a lock was poisoned".into())
}

impl RemediationBackend for KafkaBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Kafka
    }

    fn observe(&self, sizes: bool) -> BoxFuture<'_, Result<Observation, BackendError>> {
        Box::pin(self.observe_inner(sizes))
    }

    fn start<'a>(&'a self, req: &'a Request) -> BoxFuture<'a, Result<Started, BackendError>> {
        Box::pin(self.start_inner(req))
    }

    fn poll<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Progress, BackendError>> {
        Box::pin(self.poll_inner(task_id))
    }

    fn cancel<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<String, BackendError>> {
        Box::pin(self.cancel_inner(task_id))
    }

    fn throttle_plan(&self, req: &Request) -> Result<Option<ThrottleIntent>, BackendError> {
        Ok(self.throttle_for(req)?.map(|t| t.to_intent()))
    }

    fn resume<'a>(
        &'a self,
        action: &'a ActionIntent,
    ) -> BoxFuture<'a, Result<String, BackendError>> {
        Box::pin(async move { self.resume_inner(action) })
    }
}
