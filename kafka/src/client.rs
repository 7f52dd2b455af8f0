//! The cluster client: a connection per broker, and one batched call per Kafka API the agent
//! needs; the actuator sends its admin requests through [`KafkaClient::call`]. Each call goes
//! to one broker and carries every group or partition meant for it, so the number of requests
//! per collection grows with brokers, not with partitions or groups.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    BrokerId, ConsumerGroupDescribeRequest, DescribeGroupsRequest, FetchRequest, GroupId,
    ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};

use crate::conn::{Connection, Identity};
use crate::error::{code_name, KafkaError};
use crate::observer::{api_name, RequestEvent, RequestObserver};
use crate::records::{timestamps_at, FetchOutcome};
use crate::security::Security;

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tp {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl Tp {
    pub fn new(topic: &str, partition: i32) -> Self {
        Tp {
            topic: Arc::from(topic),
            partition,
        }
    }
}

/// One broker as the metadata describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerInfo {
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerInfo {
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One partition as the metadata describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionInfo {
    /// The leader's broker id, or -1 while the partition has no leader.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error_code: i16,
}

/// One topic as the metadata describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicInfo {
    pub internal: bool,
    pub partitions: BTreeMap<i32, PartitionInfo>,
}

/// What the cluster looks like.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    pub controller: i32,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, TopicInfo>,
}

/// The rebalance protocol a group uses (ListGroups v5 `group_type`, KIP-848).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupType {
    /// The classic protocol (JoinGroup/SyncGroup): described with DescribeGroups.
    Classic,
    /// KIP-848's consumer protocol (default for new consumers in Kafka 4): described with
    /// ConsumerGroupDescribe.
    Consumer,
    /// Another type (`share`, `streams`): listed, not described.
    Other(String),
}

impl GroupType {
    /// From ListGroups' `group_type`; empty (a broker older than ListGroups v5, Kafka < 3.8,
    /// has no KIP-848 groups) is classic.
    pub fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "" | "classic" => GroupType::Classic,
            "consumer" => GroupType::Consumer,
            other => GroupType::Other(other.to_string()),
        }
    }

    /// The name Kafka uses: `classic`, `consumer`, or the other type's own.
    pub fn as_str(&self) -> &str {
        match self {
            GroupType::Classic => "classic",
            GroupType::Consumer => "consumer",
            GroupType::Other(s) => s,
        }
    }
}

/// A consumer group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedGroup {
    pub group: String,
    pub protocol_type: String,
    /// Empty when the broker is too old to report states (ListGroups < v4).
    pub state: String,
    /// The group's type; `Classic` when the broker does not report types.
    pub group_type: GroupType,
    /// False when the broker is too old to report types (ListGroups < v5): `group_type` is
    /// then assumed classic, which holds because such brokers have no KIP-848 groups.
    pub type_reported: bool,
}

/// One member of a described group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
}

/// A group as DescribeGroups (classic) or ConsumerGroupDescribe (consumer) describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDescription {
    pub group: String,
    /// The group's details, or the broker's per-group error (name and message).
    pub described: Result<DescribedGroup, String>,
}

/// What a describe call says of one group.
#[derive(Debug, Clone, PartialEq)]
pub struct DescribedGroup {
    pub state: String,
    /// Classic: the protocol type (`consumer`, `connect`, or empty); consumer groups:
    /// `consumer`.
    pub protocol_type: String,
    pub members: Vec<GroupMember>,
}

/// The committed offsets of one group, or why they could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupOffsets {
    pub group: String,
    /// (partition, committed offset); partitions with no commit are left out.
    pub offsets: Result<Vec<(Tp, i64)>, String>,
}

/// Per-API request counters, read by the collector to report requests per collection.
#[derive(Debug, Default)]
pub struct RequestStats {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl RequestStats {
    fn record(&self, event: &RequestEvent<'_>) {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(api_name(event.api)).or_default() += 1;
        }
    }

    /// Requests sent since start, by API.
    pub fn by_api(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// Connection settings for [`KafkaClient`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub bootstrap: Vec<String>,
    pub security: Security,
    pub request_timeout: Duration,
    /// Most groups in one OffsetFetch (v8+) request.
    pub offset_fetch_batch: usize,
    /// The `client_id` of every request (`medic-agent`, `medic-actuator`).
    pub client_id: String,
    /// Told about every request sent (API, broker, outcome, duration), for the embedding
    /// binary's metrics; `None` counts only in [`KafkaClient::stats`].
    pub observer: Option<RequestObserver>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

/// A client for a handful of Kafka APIs, with one connection per broker.
pub struct KafkaClient {
    cfg: ClientConfig,
    /// The client id, and an observer that feeds `stats` and then the configured one.
    identity: Identity,
    brokers: Mutex<BTreeMap<i32, String>>,
    conns: Mutex<HashMap<String, Slot>>,
    stats: Arc<RequestStats>,
}

impl KafkaClient {
    pub fn new(cfg: ClientConfig) -> Self {
        let stats = Arc::new(RequestStats::default());
        let counted = stats.clone();
        let outer = cfg.observer.clone();
        let observer = RequestObserver::new(move |event| {
            counted.record(event);
            if let Some(o) = &outer {
                o.observe(event);
            }
        });
        KafkaClient {
            identity: Identity {
                client_id: cfg.client_id.clone(),
                observer: Some(observer),
            },
            cfg,
            brokers: Mutex::new(BTreeMap::new()),
            conns: Mutex::new(HashMap::new()),
            stats,
        }
    }

    pub fn stats(&self) -> &RequestStats {
        &self.stats
    }

    fn slot(&self, addr: &str) -> Slot {
        match self.conns.lock() {
            Ok(mut m) => m.entry(addr.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// Sends one request to `addr`, connecting first if needed. `build` gets the negotiated
    /// version (at most `cap`) and returns the request for it. A failed call drops the
    /// connection, so the next call reconnects.
    pub async fn call<R: Request>(
        &self,
        addr: &str,
        cap: i16,
        build: impl FnOnce(i16) -> R,
    ) -> Result<(i16, R::Response), KafkaError> {
        let slot = self.slot(addr);
        let mut guard = slot.lock().await;
        if guard.is_none() {
            *guard = Some(
                Connection::connect(
                    addr,
                    &self.cfg.security,
                    self.cfg.request_timeout,
                    &self.identity,
                )
                .await?,
            );
        }
        let Some(conn) = guard.as_mut() else {
            return Err(KafkaError::NoBroker {
                tried: addr.to_string(),
                last: "connection vanished".to_string(),
            });
        };
        let version = conn.version::<R>(cap)?;
        let request = build(version);
        match conn.send(&request, version).await {
            Ok(resp) => Ok((version, resp)),
            Err(e) => {
                *guard = None;
                Err(e)
            }
        }
    }

    /// The address of broker `id`, from the last metadata.
    pub fn broker_addr(&self, id: i32) -> Result<String, KafkaError> {
        self.brokers
            .lock()
            .ok()
            .and_then(|b| b.get(&id).cloned())
            .ok_or(KafkaError::UnknownBroker(id))
    }

    /// Fetches cluster metadata, for `topics` or for every topic when `None`. Tries the known
    /// brokers first, then the bootstrap list.
    pub async fn metadata(&self, topics: Option<&[String]>) -> Result<ClusterMetadata, KafkaError> {
        let mut candidates: Vec<String> = self
            .brokers
            .lock()
            .map(|b| b.values().cloned().collect())
            .unwrap_or_default();
        for b in &self.cfg.bootstrap {
            if !candidates.contains(b) {
                candidates.push(b.clone());
            }
        }
        let mut last = String::from("no bootstrap servers configured");
        for addr in &candidates {
            match self.metadata_from(addr, topics).await {
                Ok(md) => {
                    if let Ok(mut b) = self.brokers.lock() {
                        *b = md.brokers.iter().map(|(id, i)| (*id, i.addr())).collect();
                    }
                    return Ok(md);
                }
                Err(e) => {
                    tracing::debug!(addr = %addr, error = %e, "metadata request failed");
                    last = e.to_string();
                }
            }
        }
        Err(KafkaError::NoBroker {
            tried: candidates.join(","),
            last,
        })
    }

    async fn metadata_from(
        &self,
        addr: &str,
        topics: Option<&[String]>,
    ) -> Result<ClusterMetadata, KafkaError> {
        let (_, resp) = self
            .call(addr, 12, |_| {
                let mut req = MetadataRequest::default();
                req.allow_auto_topic_creation = false;
                req.topics = topics.map(|ts| {
                    ts.iter()
                        .map(|t| {
                            let mut mt = MetadataRequestTopic::default();
                            mt.name = Some(TopicName(StrBytes::from_string(t.clone())));
                            mt
                        })
                        .collect()
                });
                req
            })
            .await?;
        let mut md = ClusterMetadata {
            cluster_id: resp.cluster_id.map(|c| c.to_string()),
            controller: resp.controller_id.0,
            ..Default::default()
        };
        for b in resp.brokers {
            md.brokers.insert(
                b.node_id.0,
                BrokerInfo {
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.map(|r| r.to_string()),
                },
            );
        }
        for t in resp.topics {
            // A topic that is unknown or being deleted has an error and no usable partitions.
            if t.error_code != 0 {
                continue;
            }
            let Some(name) = t.name else { continue };
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    (
                        p.partition_index,
                        PartitionInfo {
                            leader: p.leader_id.0,
                            replicas: p.replica_nodes.iter().map(|r| r.0).collect(),
                            isr: p.isr_nodes.iter().map(|r| r.0).collect(),
                            error_code: p.error_code,
                        },
                    )
                })
                .collect();
            md.topics.insert(
                name.0.to_string(),
                TopicInfo {
                    internal: t.is_internal,
                    partitions,
                },
            );
        }
        Ok(md)
    }

    /// The groups that broker `id` coordinates.
    pub async fn list_groups(&self, broker: i32) -> Result<Vec<ListedGroup>, KafkaError> {
        let addr = self.broker_addr(broker)?;
        self.list_groups_at(&addr).await
    }

    /// The groups that the broker at `addr` coordinates, every type (ListGroups v5 reports
    /// each group's type; older versions report none, and every group is taken as classic).
    pub async fn list_groups_at(&self, addr: &str) -> Result<Vec<ListedGroup>, KafkaError> {
        self.list_groups_filtered(addr, &[]).await
    }

    /// Like [`KafkaClient::list_groups_at`], restricted to `types` (e.g. `["consumer"]`) when
    /// the broker can filter (v5+); an older broker gets no filter and its groups, all
    /// classic, are filtered here.
    pub async fn list_groups_filtered(
        &self,
        addr: &str,
        types: &[GroupType],
    ) -> Result<Vec<ListedGroup>, KafkaError> {
        let (version, resp) = self
            .call(addr, 5, |v| {
                let mut req = ListGroupsRequest::default();
                if v >= 5 {
                    req.types_filter = types
                        .iter()
                        .map(|t| StrBytes::from_string(t.as_str().to_string()))
                        .collect();
                }
                req
            })
            .await?;
        if resp.error_code != 0 {
            return Err(KafkaError::broker("list_groups", addr, resp.error_code));
        }
        let type_reported = version >= 5;
        Ok(resp
            .groups
            .into_iter()
            .map(|g| ListedGroup {
                group: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
                group_type: GroupType::parse(&g.group_type),
                type_reported,
            })
            .filter(|g| types.is_empty() || types.contains(&g.group_type))
            .collect())
    }

    /// Describes classic `groups` coordinated by `broker`, in one DescribeGroups request.
    /// A group the broker does not describe (NOT_COORDINATOR, or a KIP-848 group: Kafka 4
    /// answers GROUP_ID_NOT_FOUND at v6 and state `Dead` before) comes back as that group's
    /// `Err`.
    pub async fn describe_groups(
        &self,
        broker: i32,
        groups: &[String],
    ) -> Result<Vec<GroupDescription>, KafkaError> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let addr = self.broker_addr(broker)?;
        let (_, resp) = self
            .call(&addr, 6, |_| {
                let mut req = DescribeGroupsRequest::default();
                req.groups = groups
                    .iter()
                    .map(|g| GroupId(StrBytes::from_string(g.clone())))
                    .collect();
                req
            })
            .await?;
        Ok(resp
            .groups
            .into_iter()
            .map(|g| {
                let members = g.members.into_iter().map(|m| GroupMember {
                    member_id: m.member_id.to_string(),
                    instance_id: m.group_instance_id.map(|i| i.to_string()),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                });
                description(
                    &g.group_id,
                    g.error_code,
                    g.error_message.as_deref(),
                    &g.group_state,
                    &g.protocol_type,
                    members,
                )
            })
            .collect())
    }

    /// Describes KIP-848 consumer `groups` coordinated by `broker`, in one
    /// ConsumerGroupDescribe request (API 69, Kafka 3.8+). Per-group errors (a classic group
    /// is GROUP_ID_NOT_FOUND "... is not a consumer group.") come back as that group's `Err`;
    /// a broker without the API is [`KafkaError::Unsupported`].
    pub async fn consumer_group_describe(
        &self,
        broker: i32,
        groups: &[String],
    ) -> Result<Vec<GroupDescription>, KafkaError> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let addr = self.broker_addr(broker)?;
        let (_, resp) = self
            .call(&addr, 1, |_| {
                let mut req = ConsumerGroupDescribeRequest::default();
                req.group_ids = groups
                    .iter()
                    .map(|g| GroupId(StrBytes::from_string(g.clone())))
                    .collect();
                req
            })
            .await?;
        Ok(resp
            .groups
            .into_iter()
            .map(|g| {
                let members = g.members.into_iter().map(|m| GroupMember {
                    member_id: m.member_id.to_string(),
                    instance_id: m.instance_id.map(|i| i.to_string()),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                });
                description(
                    &g.group_id,
                    g.error_code,
                    g.error_message.as_deref(),
                    &g.group_state,
                    "consumer",
                    members,
                )
            })
            .collect())
    }

    /// Committed offsets of `groups`, asked of their coordinator `broker`. With OffsetFetch v8+
    /// this is one request per `offset_fetch_batch` groups; older brokers get one per group.
    pub async fn offset_fetch(
        &self,
        broker: i32,
        groups: &[String],
    ) -> Result<Vec<GroupOffsets>, KafkaError> {
        let addr = self.broker_addr(broker)?;
        let mut out = Vec::with_capacity(groups.len());
        let mut rest = groups;
        while !rest.is_empty() {
            let take = rest.len().min(self.cfg.offset_fetch_batch.max(1));
            let (chunk, tail) = rest.split_at(take);
            let (version, resp) = self
                .call(&addr, 9, |v| {
                    let mut req = OffsetFetchRequest::default();
                    if v >= 8 {
                        req.groups = chunk
                            .iter()
                            .map(|g| {
                                let mut rg = OffsetFetchRequestGroup::default();
                                rg.group_id = GroupId(StrBytes::from_string(g.clone()));
                                rg.member_epoch = -1;
                                rg.topics = None;
                                rg
                            })
                            .collect();
                    } else {
                        req.group_id = GroupId(StrBytes::from_string(chunk[0].clone()));
                        req.topics = None;
                    }
                    req
                })
                .await?;
            if version >= 8 {
                for g in resp.groups {
                    let offsets = committed(
                        g.error_code,
                        g.topics.iter().flat_map(|t| {
                            t.partitions.iter().map(|p| {
                                (&t.name, p.partition_index, p.committed_offset, p.error_code)
                            })
                        }),
                    );
                    out.push(GroupOffsets {
                        group: g.group_id.0.to_string(),
                        offsets,
                    });
                }
                rest = tail;
            } else {
                let offsets = committed(
                    resp.error_code,
                    resp.topics.iter().flat_map(|t| {
                        t.partitions
                            .iter()
                            .map(|p| (&t.name, p.partition_index, p.committed_offset, p.error_code))
                    }),
                );
                out.push(GroupOffsets {
                    group: chunk[0].clone(),
                    offsets,
                });
                rest = &rest[1..];
            }
        }
        Ok(out)
    }

    /// Offsets at `timestamp` (-1 latest, -2 earliest) for partitions led by `broker`, in one
    /// request. Per-partition errors come back as `Err(code)`.
    pub async fn list_offsets(
        &self,
        broker: i32,
        partitions: &[Tp],
        timestamp: i64,
    ) -> Result<Vec<(Tp, Result<i64, i16>)>, KafkaError> {
        let addr = self.broker_addr(broker)?;
        let by_topic = group_by_topic(partitions.iter().map(|tp| (tp, ())));
        let (_, resp) = self
            .call(&addr, 7, |_| {
                let mut req = ListOffsetsRequest::default();
                req.replica_id = BrokerId(-1);
                req.isolation_level = 0;
                req.topics = by_topic
                    .iter()
                    .map(|(topic, parts)| {
                        let mut t = ListOffsetsTopic::default();
                        t.name = TopicName(StrBytes::from_string(topic.to_string()));
                        t.partitions = parts
                            .iter()
                            .map(|(p, ())| {
                                let mut lp = ListOffsetsPartition::default();
                                lp.partition_index = *p;
                                lp.current_leader_epoch = -1;
                                lp.timestamp = timestamp;
                                lp
                            })
                            .collect();
                        t
                    })
                    .collect();
                req
            })
            .await?;
        let mut out = Vec::with_capacity(partitions.len());
        for t in resp.topics {
            let topic: Arc<str> = Arc::from(t.name.0.as_str());
            for p in t.partitions {
                let tp = Tp {
                    topic: topic.clone(),
                    partition: p.partition_index,
                };
                let v = if p.error_code != 0 {
                    Err(p.error_code)
                } else {
                    Ok(p.offset)
                };
                out.push((tp, v));
            }
        }
        Ok(out)
    }

    /// Reads the timestamps of the records at the given offsets of partitions led by `broker`,
    /// in one Fetch request bounded by `max_bytes` overall and `partition_max_bytes` each.
    /// Each partition is read from its lowest wanted offset; every wanted offset found in the
    /// returned records gets its timestamp.
    pub async fn fetch_timestamps(
        &self,
        broker: i32,
        wants: &[(Tp, Vec<i64>)],
        max_bytes: i32,
        partition_max_bytes: i32,
    ) -> Result<Vec<(Tp, i64, FetchOutcome)>, KafkaError> {
        let addr = self.broker_addr(broker)?;
        let mut sorted: HashMap<&Tp, Vec<i64>> = HashMap::with_capacity(wants.len());
        for (tp, offs) in wants {
            let mut v = offs.clone();
            v.sort_unstable();
            v.dedup();
            if !v.is_empty() {
                sorted.insert(tp, v);
            }
        }
        let by_topic = group_by_topic(sorted.iter().map(|(tp, o)| (*tp, o[0])));
        let (_, resp) = self
            .call(&addr, 12, |_| {
                let mut req = FetchRequest::default();
                req.replica_id = BrokerId(-1);
                // tansu answers an empty response to max_wait_ms = 0; a real broker answers
                // at once anyway, because every fetched partition has data (min_bytes = 1).
                req.max_wait_ms = 100;
                req.min_bytes = 1;
                req.max_bytes = max_bytes;
                req.isolation_level = 0;
                req.session_id = 0;
                req.session_epoch = -1;
                req.topics = by_topic
                    .iter()
                    .map(|(topic, parts)| {
                        let mut t = FetchTopic::default();
                        t.topic = TopicName(StrBytes::from_string(topic.to_string()));
                        t.partitions = parts
                            .iter()
                            .map(|(p, offset)| {
                                let mut fp = FetchPartition::default();
                                fp.partition = *p;
                                fp.current_leader_epoch = -1;
                                fp.fetch_offset = *offset;
                                fp.last_fetched_epoch = -1;
                                fp.log_start_offset = -1;
                                fp.partition_max_bytes = partition_max_bytes;
                                fp
                            })
                            .collect();
                        t
                    })
                    .collect();
                req
            })
            .await?;
        if resp.error_code != 0 {
            return Err(KafkaError::broker("fetch", &addr, resp.error_code));
        }
        let mut out = Vec::with_capacity(wants.len());
        for t in resp.responses {
            let topic: Arc<str> = Arc::from(t.topic.0.as_str());
            for p in t.partitions {
                let tp = Tp {
                    topic: topic.clone(),
                    partition: p.partition_index,
                };
                let Some(offsets) = sorted.get(&tp) else {
                    continue;
                };
                match p.error_code {
                    0 => {
                        let found = match p.records {
                            Some(records) => timestamps_at(records, offsets),
                            None => offsets
                                .iter()
                                .map(|o| (*o, FetchOutcome::NoRecord))
                                .collect(),
                        };
                        out.extend(found.into_iter().map(|(o, f)| (tp.clone(), o, f)));
                    }
                    // OFFSET_OUT_OF_RANGE
                    1 => {
                        let log_start = (p.log_start_offset >= 0).then_some(p.log_start_offset);
                        out.extend(
                            offsets
                                .iter()
                                .map(|o| (tp.clone(), *o, FetchOutcome::OutOfRange { log_start })),
                        );
                    }
                    code => {
                        out.extend(
                            offsets
                                .iter()
                                .map(|o| (tp.clone(), *o, FetchOutcome::Error(code))),
                        );
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A per-group describe error: the code's name, and the broker's message when it sent one.
/// One group of a DescribeGroups or ConsumerGroupDescribe answer: its error, or what it is.
fn description(
    group: &GroupId,
    error_code: i16,
    error_message: Option<&str>,
    state: &str,
    protocol_type: &str,
    members: impl Iterator<Item = GroupMember>,
) -> GroupDescription {
    let described = if error_code != 0 {
        Err(describe_error(error_code, error_message))
    } else {
        Ok(DescribedGroup {
            state: state.to_string(),
            protocol_type: protocol_type.to_string(),
            members: members.collect(),
        })
    };
    GroupDescription {
        group: group.0.to_string(),
        described,
    }
}

fn describe_error(code: i16, message: Option<&str>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!("{}: {m}", code_name(code)),
        _ => code_name(code),
    }
}

/// A group's committed offsets from an OffsetFetch response (any version): partitions without
/// a commit (offset -1) or with an error are left out; a group-level error fails the group.
fn committed<'a>(
    group_error: i16,
    partitions: impl Iterator<Item = (&'a TopicName, i32, i64, i16)>,
) -> Result<Vec<(Tp, i64)>, String> {
    if group_error != 0 {
        return Err(code_name(group_error));
    }
    Ok(partitions
        .filter(|(_, _, offset, err)| *err == 0 && *offset >= 0)
        .map(|(topic, p, offset, _)| (Tp::new(topic.0.as_str(), p), offset))
        .collect())
}

fn group_by_topic<'a, T: Copy>(
    items: impl Iterator<Item = (&'a Tp, T)>,
) -> BTreeMap<Arc<str>, Vec<(i32, T)>> {
    let mut m: BTreeMap<Arc<str>, Vec<(i32, T)>> = BTreeMap::new();
    for (tp, v) in items {
        m.entry(tp.topic.clone())
            .or_default()
            .push((tp.partition, v));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addr_brackets_ipv6() {
        let b = BrokerInfo {
            host: "::1".into(),
            port: 9092,
            rack: None,
        };
        assert_eq!(b.addr(), "[::1]:9092");
        let b = BrokerInfo {
            host: "k0".into(),
            port: 1,
            rack: None,
        };
        assert_eq!(b.addr(), "k0:1");
    }
}
