//! One collection: ask Kafka, in batches, for everything the lag report needs, then compute it.
//!
//! Requests per collection, for B brokers: 1 Metadata; per coordinator 1 ListGroups,
//! ceil(groups / offset_fetch_batch) OffsetFetch, and at most 1 DescribeGroups (its classic
//! groups) and 1 ConsumerGroupDescribe (its KIP-848 groups); per leader 1 ListOffsets; and, only for
//! partitions whose committed offset the end-offset history cannot place in time, at most one
//! Fetch per leader (plus one ListOffsets and Fetch per leader for offsets below the log start).
//! None of it grows with the number of partitions.

mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;

use crate::config::{Mode, NameFilter};
use crate::lag::{
    partition_report, GroupInfo, GroupReport, LagReport, PartitionReport, Skipped, TopicEnds,
    TopicReport,
};
use crate::shard::Shard;
use medic_kafka::{
    ClusterMetadata, DescribedGroup, FetchOutcome, GroupType, KafkaClient, KafkaError, ListedGroup,
    Tp,
};
pub(crate) use state::LagState;

/// What the collector needs to know.
#[derive(Debug, Clone)]
pub(crate) struct CollectorSettings {
    pub(crate) cluster: String,
    pub(crate) mode: Mode,
    pub(crate) groups: NameFilter,
    pub(crate) topics: NameFilter,
    /// Cluster mode: only the groups and topics this shard owns (see [`crate::shard`]).
    pub(crate) shard: Shard,
    pub(crate) history_samples: usize,
    pub(crate) drain_rate_window: Duration,
    pub(crate) fetch_max_bytes: i32,
    pub(crate) fetch_partition_max_bytes: i32,
}

/// A problem in one stage of a collection. The stage names are the bounded set used as the
/// `stage` label of `medic_agent_collection_errors_total`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StageError {
    pub(crate) stage: &'static str,
    pub(crate) message: String,
}

/// Why a whole collection failed (the previous report stays in place).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CollectError {
    #[error("cannot read cluster metadata")]
    Metadata(#[source] KafkaError),
    #[error("broker {0} (the --broker-id of this sidecar) is not in the cluster metadata")]
    BrokerNotInMetadata(i32),
    #[error("cannot list the groups of broker {broker}")]
    ListGroups {
        broker: i32,
        #[source]
        source: KafkaError,
    },
}

impl CollectError {
    pub(crate) fn stage(&self) -> &'static str {
        match self {
            CollectError::Metadata(_) | CollectError::BrokerNotInMetadata(_) => "metadata",
            CollectError::ListGroups { .. } => "list_groups",
        }
    }
}

/// A successful collection.
#[derive(Debug, Clone)]
pub(crate) struct Collection {
    pub(crate) report: LagReport,
    /// Sidecar mode: whether the local broker answered this collection.
    pub(crate) broker_up: Option<bool>,
    /// Problems that did not stop the collection.
    pub(crate) errors: Vec<StageError>,
}

/// Collects lag reports, keeping the history that lag in seconds and drain rates need.
pub(crate) struct Collector {
    client: Arc<KafkaClient>,
    settings: CollectorSettings,
    state: LagState,
    /// Cluster mode: the last groups seen per coordinator, kept while that coordinator fails.
    last_by_coordinator: HashMap<i32, Vec<GroupReport>>,
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

struct GroupOffsets {
    listed: ListedGroup,
    coordinator: i32,
    offsets: Vec<(Tp, i64)>,
    /// From DescribeGroups or ConsumerGroupDescribe; None if the group was not described.
    described: Option<DescribedGroup>,
}

impl Collector {
    pub(crate) fn new(client: Arc<KafkaClient>, settings: CollectorSettings) -> Self {
        let state = LagState::new(
            settings.history_samples,
            settings.drain_rate_window.as_secs_f64(),
        );
        Collector {
            client,
            settings,
            state,
            last_by_coordinator: HashMap::new(),
        }
    }

    /// Sidecar mode, when metadata cannot be read: does the local broker still answer at the
    /// address the last metadata gave for it?
    pub(crate) async fn probe_local_broker(&self) -> Option<bool> {
        let Mode::Sidecar { broker_id } = self.settings.mode else {
            return None;
        };
        Some(self.client.list_groups(broker_id).await.is_ok())
    }

    /// Runs one collection at `now`.
    pub(crate) async fn collect(&mut self, now: SystemTime) -> Result<Collection, CollectError> {
        let t = unix_seconds(now);
        let mut errors = Vec::new();
        let md = self
            .client
            .metadata(None)
            .await
            .map_err(CollectError::Metadata)?;

        let coordinators: Vec<i32> = match self.settings.mode {
            Mode::Sidecar { broker_id } => {
                if !md.brokers.contains_key(&broker_id) {
                    return Err(CollectError::BrokerNotInMetadata(broker_id));
                }
                vec![broker_id]
            }
            Mode::Cluster => md.brokers.keys().copied().collect(),
        };

        // Groups and their committed offsets, one ListGroups + batched OffsetFetch per
        // coordinator, all coordinators at once.
        let client = &self.client;
        let filter = &self.settings.groups;
        let shard = self.settings.shard;
        let per_coordinator = join_all(
            coordinators
                .iter()
                .map(|&b| async move { (b, groups_of(client, b, filter, shard).await) }),
        )
        .await;
        let mut groups: Vec<GroupOffsets> = Vec::new();
        let mut failed_coordinators = Vec::new();
        let mut broker_up = None;
        for (b, res) in per_coordinator {
            match res {
                Ok((gs, errs)) => {
                    if matches!(self.settings.mode, Mode::Sidecar { .. }) {
                        broker_up = Some(true);
                    }
                    groups.extend(gs);
                    errors.extend(errs);
                }
                Err(e) => {
                    if let Mode::Sidecar { broker_id } = self.settings.mode {
                        return Err(CollectError::ListGroups {
                            broker: broker_id,
                            source: e,
                        });
                    }
                    errors.push(StageError {
                        stage: "list_groups",
                        message: format!("broker {b}: {e}"),
                    });
                    failed_coordinators.push(b);
                }
            }
        }

        // Which partitions need an end offset: every committed partition that still exists,
        // and the partitions whose end offsets this agent reports.
        let mut skipped = Skipped::default();
        let mut needed: BTreeSet<Tp> = BTreeSet::new();
        for g in &groups {
            for (tp, _) in &g.offsets {
                if partition_exists(&md, tp) {
                    needed.insert(tp.clone());
                } else {
                    skipped.topic_missing += 1;
                }
            }
        }
        let reported = self.reported_partitions(&md);
        needed.extend(reported.iter().cloned());

        let ends = self.end_offsets(&md, &needed, -1, &mut errors).await;
        for (tp, end) in &ends {
            self.state.observe_end(tp, *end, t);
        }

        // Lag per partition; partitions the history cannot place wait for a record timestamp.
        let mut pending: BTreeMap<Tp, BTreeSet<i64>> = BTreeMap::new();
        let mut reports = Vec::with_capacity(groups.len());
        for g in &groups {
            let mut by_topic: BTreeMap<&str, Vec<PartitionReport>> = BTreeMap::new();
            for (tp, committed) in &g.offsets {
                let Some(end) = ends.get(tp).copied() else {
                    if partition_exists(&md, tp) {
                        skipped.end_offset_unknown += 1;
                    }
                    continue;
                };
                let append_time = self.state.append_time(tp, *committed);
                let ts = self.state.cached_timestamp(tp, *committed);
                let r = partition_report(tp.partition, *committed, end, t, append_time, ts);
                if r.lag_seconds.is_none() {
                    pending.entry(tp.clone()).or_default().insert(*committed);
                }
                by_topic.entry(&tp.topic).or_default().push(r);
            }
            reports.push((g, by_topic));
        }
        if !pending.is_empty() {
            self.fetch_timestamps(&md, &pending, &mut errors).await;
        }

        let mut group_reports = Vec::with_capacity(reports.len());
        for (g, by_topic) in reports {
            let mut topics = Vec::with_capacity(by_topic.len());
            for (topic, mut parts) in by_topic {
                parts.sort_by_key(|p| p.partition);
                let tp_topic = Tp::new(topic, 0).topic;
                for p in parts.iter_mut().filter(|p| p.lag_seconds.is_none()) {
                    let tp = Tp {
                        topic: tp_topic.clone(),
                        partition: p.partition,
                    };
                    let ts = self.state.cached_timestamp(&tp, p.committed_offset);
                    *p = partition_report(
                        p.partition,
                        p.committed_offset,
                        p.end_offset,
                        t,
                        None,
                        ts,
                    );
                }
                let rate = self.state.observe_consumption(
                    &g.listed.group,
                    &tp_topic,
                    t,
                    parts.iter().map(|p| (p.partition, p.committed_offset)),
                );
                topics.push(topic_report(topic, parts, rate));
            }
            let described = g.described.as_ref();
            group_reports.push(GroupReport {
                group: g.listed.group.clone(),
                // Brokers older than ListGroups v4 list no state; the describe has it.
                state: match described {
                    Some(d) if g.listed.state.is_empty() => d.state.clone(),
                    _ => g.listed.state.clone(),
                },
                coordinator: g.coordinator,
                topics,
                info: GroupInfo {
                    group_type: g.listed.group_type.as_str().to_string(),
                    protocol_type: g.listed.protocol_type.clone(),
                    members: described.map(|d| u32::try_from(d.members.len()).unwrap_or(u32::MAX)),
                },
            });
        }

        // Cluster mode: a coordinator that failed this time keeps its last groups, so their
        // series do not vanish (and resolve alerts) because one broker did not answer.
        if matches!(self.settings.mode, Mode::Cluster) {
            let mut fresh: HashMap<i32, Vec<GroupReport>> = HashMap::new();
            for g in &group_reports {
                fresh.entry(g.coordinator).or_default().push(g.clone());
            }
            for b in &failed_coordinators {
                if let Some(old) = self.last_by_coordinator.get(b) {
                    group_reports.extend(old.iter().cloned());
                    fresh.insert(*b, old.clone());
                }
            }
            self.last_by_coordinator = fresh;
        }
        group_reports.sort_by(|a, b| a.group.cmp(&b.group));

        let mut topic_end_offsets: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
        for tp in &reported {
            if let Some(end) = ends.get(tp) {
                topic_end_offsets
                    .entry(&tp.topic)
                    .or_default()
                    .push((tp.partition, *end));
            }
        }
        self.state.sweep();
        Ok(Collection {
            report: LagReport {
                cluster: self.settings.cluster.clone(),
                collected_at: t,
                groups: group_reports,
                topic_end_offsets: topic_end_offsets
                    .into_iter()
                    .map(|(topic, partitions)| TopicEnds {
                        topic: topic.to_string(),
                        partitions,
                    })
                    .collect(),
                skipped,
            },
            broker_up,
            errors,
        })
    }

    /// The partitions whose log end offset this agent reports: in cluster mode every
    /// partition of every accepted, non-internal topic this shard owns (all of them unsharded);
    /// in sidecar mode those the local broker leads, so that the sidecars split them without
    /// duplicates.
    fn reported_partitions(&self, md: &ClusterMetadata) -> BTreeSet<Tp> {
        let mut out = BTreeSet::new();
        let cluster = matches!(self.settings.mode, Mode::Cluster);
        for (name, topic) in &md.topics {
            if topic.internal
                || !self.settings.topics.accepts(name)
                || (cluster && !self.settings.shard.owns(name))
            {
                continue;
            }
            for (p, info) in &topic.partitions {
                let mine = match self.settings.mode {
                    Mode::Sidecar { broker_id } => info.leader == broker_id,
                    Mode::Cluster => true,
                };
                if mine {
                    out.insert(Tp::new(name, *p));
                }
            }
        }
        out
    }

    /// ListOffsets at `timestamp` for `partitions`, one request per leader, all leaders at once.
    async fn end_offsets(
        &self,
        md: &ClusterMetadata,
        partitions: &BTreeSet<Tp>,
        timestamp: i64,
        errors: &mut Vec<StageError>,
    ) -> HashMap<Tp, i64> {
        let mut by_leader: BTreeMap<i32, Vec<Tp>> = BTreeMap::new();
        for tp in partitions {
            match leader_of(md, tp) {
                Some(l) => by_leader.entry(l).or_default().push(tp.clone()),
                None => errors.push(StageError {
                    stage: "list_offsets",
                    message: format!("{}/{} has no leader", tp.topic, tp.partition),
                }),
            }
        }
        let client = &self.client;
        let results = join_all(by_leader.into_iter().map(|(leader, tps)| async move {
            (leader, client.list_offsets(leader, &tps, timestamp).await)
        }))
        .await;
        let mut out = HashMap::with_capacity(partitions.len());
        for (leader, res) in results {
            match res {
                Ok(list) => {
                    for (tp, r) in list {
                        match r {
                            Ok(o) if o >= 0 => {
                                out.insert(tp, o);
                            }
                            Ok(_) => {}
                            Err(code) => errors.push(StageError {
                                stage: "list_offsets",
                                message: format!(
                                    "{}/{} on broker {leader}: {}",
                                    tp.topic,
                                    tp.partition,
                                    medic_kafka::error::code_name(code)
                                ),
                            }),
                        }
                    }
                }
                Err(e) => errors.push(StageError {
                    stage: "list_offsets",
                    message: format!("broker {leader}: {e}"),
                }),
            }
        }
        out
    }

    /// Reads the timestamps of the records at `pending` offsets (one Fetch per leader), and,
    /// for offsets already deleted by retention, of the oldest record still in the log.
    async fn fetch_timestamps(
        &mut self,
        md: &ClusterMetadata,
        pending: &BTreeMap<Tp, BTreeSet<i64>>,
        errors: &mut Vec<StageError>,
    ) {
        let wants: Vec<(Tp, Vec<i64>)> = pending
            .iter()
            .map(|(tp, offs)| (tp.clone(), offs.iter().copied().collect()))
            .collect();
        let results = self.fetch_round(md, &wants, errors).await;
        let mut below_start: BTreeSet<Tp> = BTreeSet::new();
        let mut starts: HashMap<Tp, i64> = HashMap::new();
        for (tp, offset, outcome) in results {
            match outcome {
                FetchOutcome::Timestamp(ts) => self.state.cache_timestamp(&tp, offset, ts),
                FetchOutcome::OutOfRange { log_start: Some(s) } => {
                    starts.insert(tp, s);
                }
                FetchOutcome::OutOfRange { log_start: None } => {
                    below_start.insert(tp);
                }
                FetchOutcome::NoRecord => {}
                FetchOutcome::Error(code) => errors.push(StageError {
                    stage: "fetch",
                    message: format!(
                        "{}/{}: {}",
                        tp.topic,
                        tp.partition,
                        medic_kafka::error::code_name(code)
                    ),
                }),
            }
        }
        if !below_start.is_empty() {
            starts.extend(self.end_offsets(md, &below_start, -2, errors).await);
        }
        if starts.is_empty() {
            return;
        }
        // The committed offsets were deleted: the oldest unconsumed record is the log's first.
        let second: Vec<(Tp, Vec<i64>)> = starts
            .iter()
            .map(|(tp, s)| (tp.clone(), vec![*s]))
            .collect();
        let results = self.fetch_round(md, &second, errors).await;
        for (tp, _, outcome) in results {
            if let (FetchOutcome::Timestamp(ts), Some(offs)) = (outcome, pending.get(&tp)) {
                let start = starts.get(&tp).copied().unwrap_or(i64::MAX);
                for o in offs.iter().filter(|o| **o < start) {
                    self.state.cache_timestamp(&tp, *o, ts);
                }
            }
        }
    }

    async fn fetch_round(
        &self,
        md: &ClusterMetadata,
        wants: &[(Tp, Vec<i64>)],
        errors: &mut Vec<StageError>,
    ) -> Vec<(Tp, i64, FetchOutcome)> {
        let mut by_leader: BTreeMap<i32, Vec<(Tp, Vec<i64>)>> = BTreeMap::new();
        for (tp, o) in wants {
            if let Some(l) = leader_of(md, tp) {
                by_leader
                    .entry(l)
                    .or_default()
                    .push((tp.clone(), o.clone()));
            }
        }
        let client = &self.client;
        let (max, per) = (
            self.settings.fetch_max_bytes,
            self.settings.fetch_partition_max_bytes,
        );
        let results = join_all(by_leader.into_iter().map(|(leader, w)| async move {
            (leader, client.fetch_timestamps(leader, &w, max, per).await)
        }))
        .await;
        let mut out = Vec::new();
        for (leader, res) in results {
            match res {
                Ok(list) => out.extend(list),
                Err(e) => errors.push(StageError {
                    stage: "fetch",
                    message: format!("broker {leader}: {e}"),
                }),
            }
        }
        out
    }
}

async fn groups_of(
    client: &KafkaClient,
    broker: i32,
    filter: &NameFilter,
    shard: Shard,
) -> Result<(Vec<GroupOffsets>, Vec<StageError>), KafkaError> {
    let listed: Vec<ListedGroup> = client
        .list_groups(broker)
        .await?
        .into_iter()
        .filter(|g| filter.accepts(&g.group) && shard.owns(&g.group))
        .collect();
    if listed.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let names: Vec<String> = listed.iter().map(|g| g.group.clone()).collect();
    let mut errors = Vec::new();
    let fetched = match client.offset_fetch(broker, &names).await {
        Ok(f) => f,
        Err(e) => {
            errors.push(StageError {
                stage: "offset_fetch",
                message: format!("broker {broker}: {e}"),
            });
            return Ok((Vec::new(), errors));
        }
    };
    let by_name: HashMap<String, ListedGroup> =
        listed.into_iter().map(|g| (g.group.clone(), g)).collect();
    let mut out = Vec::with_capacity(fetched.len());
    for f in fetched {
        let Some(listed) = by_name.get(&f.group).cloned() else {
            continue;
        };
        match f.offsets {
            Ok(offsets) => out.push(GroupOffsets {
                listed,
                coordinator: broker,
                offsets,
                described: None,
            }),
            Err(code) => errors.push(StageError {
                stage: "offset_fetch",
                message: format!("group {}: {code}", f.group),
            }),
        }
    }
    describe(client, broker, &mut out, &mut errors).await;
    Ok((out, errors))
}

/// Describes `groups` (all coordinated by `broker`) for their members: one DescribeGroups for
/// the classic groups and one ConsumerGroupDescribe for the KIP-848 ones, sent at once; other
/// types (`share`, `streams`) are not described. A failed request, or a group the broker
/// would not describe, is a `describe_groups` stage error: the groups keep their lag, without
/// members.
async fn describe(
    client: &KafkaClient,
    broker: i32,
    groups: &mut [GroupOffsets],
    errors: &mut Vec<StageError>,
) {
    let names = |t: GroupType| -> Vec<String> {
        groups
            .iter()
            .filter(|g| g.listed.group_type == t)
            .map(|g| g.listed.group.clone())
            .collect()
    };
    let (classic, consumer) = (names(GroupType::Classic), names(GroupType::Consumer));
    let (classic, consumer) = futures::join!(
        client.describe_groups(broker, &classic),
        client.consumer_group_describe(broker, &consumer)
    );
    let mut by_name: HashMap<String, DescribedGroup> = HashMap::new();
    for res in [classic, consumer] {
        match res {
            Ok(list) => {
                for d in list {
                    match d.described {
                        Ok(x) => {
                            by_name.insert(d.group, x);
                        }
                        Err(message) => errors.push(StageError {
                            stage: "describe_groups",
                            message: format!("group {}: {message}", d.group),
                        }),
                    }
                }
            }
            Err(e) => errors.push(StageError {
                stage: "describe_groups",
                message: format!("broker {broker}: {e}"),
            }),
        }
    }
    for g in groups.iter_mut() {
        g.described = by_name.remove(&g.listed.group);
    }
}

fn partition_exists(md: &ClusterMetadata, tp: &Tp) -> bool {
    md.topics
        .get(&*tp.topic)
        .is_some_and(|t| t.partitions.contains_key(&tp.partition))
}

fn leader_of(md: &ClusterMetadata, tp: &Tp) -> Option<i32> {
    md.topics
        .get(&*tp.topic)
        .and_then(|t| t.partitions.get(&tp.partition))
        .map(|p| p.leader)
        .filter(|l| *l >= 0)
}

fn topic_report(topic: &str, partitions: Vec<PartitionReport>, rate: Option<f64>) -> TopicReport {
    let lag: i64 = partitions.iter().map(|p| p.lag).sum();
    let lag_max = partitions.iter().map(|p| p.lag).max().unwrap_or(0);
    let lag_seconds_max = partitions
        .iter()
        .filter_map(|p| p.lag_seconds)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    TopicReport {
        topic: topic.to_string(),
        lag,
        lag_max,
        lag_seconds_max,
        consumption_rate: rate,
        drain_seconds: crate::lag::drain::drain_seconds(lag, rate),
        partitions,
    }
}
