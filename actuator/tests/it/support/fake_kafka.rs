//! A Kafka cluster at the protocol level, for the `kafka` backend: one loopback listener per
//! broker, requests decoded with kafka-protocol (RequestHeader + body) and recorded, answers
//! computed from a small cluster state (metadata, reassignments, elections, log dirs, configs).
//! A reassignment that adds replicas stays in progress until the test calls `complete_all`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub struct FBroker {
    pub id: i32,
    pub rack: Option<String>,
    pub alive: bool,
    pub port: u16,
    pub disk_total: i64,
    pub disk_used: i64,
}

#[derive(Debug, Clone)]
pub struct FPart {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub size: i64,
}

/// One decoded request, with the broker whose listener got it.
#[derive(Debug, Clone)]
pub enum Req {
    ApiVersions,
    Metadata,
    /// Decoded and checked, but no test reads its fields.
    List,
    Alter(AlterPartitionReassignmentsRequest),
    Elect(ElectLeadersRequest),
    LogDirs,
    Configs(IncrementalAlterConfigsRequest),
}

#[derive(Default)]
pub struct State {
    pub brokers: BTreeMap<i32, FBroker>,
    pub parts: BTreeMap<(String, i32), FPart>,
    /// Ongoing reassignments: target replicas.
    pub ongoing: BTreeMap<(String, i32), Vec<i32>>,
    pub controller: i32,
    pub log: Vec<(i32, i16, Req)>,
    /// API keys this cluster does not offer.
    pub unsupported: Vec<i16>,
    /// Accept connections but never answer.
    pub silent: bool,
    /// Per-partition errors AlterPartitionReassignments returns.
    pub refuse: BTreeMap<(String, i32), i16>,
    /// The `client_id` of every request header, in arrival order.
    pub client_ids: Vec<Option<String>>,
    /// (API key, the client's port) of every request, in arrival order: which connection, so
    /// which process, sent it.
    pub peers: Vec<(i16, u16)>,
    /// Dynamic configs as IncrementalAlterConfigs left them: (resource type: 2 topic, 4
    /// broker; name) -> config -> value. A list config SUBTRACTed to nothing is removed.
    pub configs: BTreeMap<(i8, String), BTreeMap<String, String>>,
}

#[derive(Clone)]
pub struct FakeKafka {
    pub state: Arc<Mutex<State>>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Drop for FakeKafka {
    fn drop(&mut self) {
        if Arc::strong_count(&self.tasks) == 1 {
            for t in self.tasks.lock().unwrap().iter() {
                t.abort();
            }
        }
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl FakeKafka {
    /// Brokers `(id, rack)`; each gets a listener. Disk: 1000 bytes, 100 used.
    pub async fn start(brokers: &[(i32, Option<&str>)]) -> Self {
        let me = FakeKafka {
            state: Arc::new(Mutex::new(State::default())),
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        for (id, rack) in brokers {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            me.state.lock().unwrap().brokers.insert(
                *id,
                FBroker {
                    id: *id,
                    rack: rack.map(str::to_string),
                    alive: true,
                    port,
                    disk_total: 1000,
                    disk_used: 100,
                },
            );
            let state = me.state.clone();
            let id = *id;
            let t = tokio::spawn(async move {
                loop {
                    let Ok((sock, _)) = l.accept().await else {
                        return;
                    };
                    let state = state.clone();
                    tokio::spawn(async move {
                        let _ = serve(sock, id, state).await;
                    });
                }
            });
            me.tasks.lock().unwrap().push(t);
        }
        me.state.lock().unwrap().controller = brokers[0].0;
        me
    }

    pub fn bootstrap(&self) -> String {
        let st = self.state.lock().unwrap();
        let b = st.brokers.values().find(|b| b.alive).unwrap();
        format!("127.0.0.1:{}", b.port)
    }

    pub fn add_partition(
        &self,
        topic: &str,
        p: i32,
        replicas: &[i32],
        isr: &[i32],
        leader: i32,
        size: i64,
    ) {
        self.state.lock().unwrap().parts.insert(
            (topic.into(), p),
            FPart {
                replicas: replicas.to_vec(),
                isr: isr.to_vec(),
                leader,
                size,
            },
        );
    }

    /// Every partition of `topic` (0..n) with replicas from `f(p)`, all in sync, led by the first.
    pub fn add_topic(&self, topic: &str, n: i32, f: impl Fn(i32) -> Vec<i32>) {
        for p in 0..n {
            let r = f(p);
            self.add_partition(topic, p, &r, &r, r[0], 10 * (p as i64 + 1));
        }
    }

    pub fn kill(&self, id: i32) {
        let mut st = self.state.lock().unwrap();
        st.brokers.get_mut(&id).unwrap().alive = false;
        for p in st.parts.values_mut() {
            p.isr.retain(|r| *r != id);
            if p.leader == id {
                p.leader = p.isr.first().copied().unwrap_or(-1);
            }
        }
    }

    /// Someone else's reassignment.
    pub fn foreign_reassignment(&self, topic: &str, p: i32, target: &[i32]) {
        self.state
            .lock()
            .unwrap()
            .ongoing
            .insert((topic.into(), p), target.to_vec());
    }

    /// Finish every reassignment in progress: the target replicas, all in sync.
    pub fn complete_all(&self) {
        let mut st = self.state.lock().unwrap();
        let ongoing = std::mem::take(&mut st.ongoing);
        for (tp, target) in ongoing {
            if let Some(p) = st.parts.get_mut(&tp) {
                p.replicas = target.clone();
                p.isr = target.clone();
                if !target.contains(&p.leader) {
                    p.leader = target[0];
                }
            }
        }
    }

    /// Set a dynamic config as an operator would (`kafka-configs --alter`); resource type 2 is
    /// a topic, 4 a broker.
    pub fn set_config(&self, resource_type: i8, name: &str, key: &str, value: &str) {
        self.state
            .lock()
            .unwrap()
            .configs
            .entry((resource_type, name.to_string()))
            .or_default()
            .insert(key.to_string(), value.to_string());
    }

    /// Every replication throttle config set now: (resource type, name) -> config -> value.
    pub fn throttles(&self) -> BTreeMap<(i8, String), BTreeMap<String, String>> {
        self.state
            .lock()
            .unwrap()
            .configs
            .iter()
            .map(|(k, c)| {
                let t: BTreeMap<String, String> = c
                    .iter()
                    .filter(|(n, _)| n.contains(".replication.throttled."))
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect();
                (k.clone(), t)
            })
            .filter(|(_, t)| !t.is_empty())
            .collect()
    }

    /// Partitions being reassigned now.
    pub fn ongoing(&self) -> Vec<(String, i32)> {
        self.state.lock().unwrap().ongoing.keys().cloned().collect()
    }

    /// The `client_id` of every request received, in arrival order.
    pub fn client_ids(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().client_ids.clone()
    }

    /// (API key, the client's TCP port) of every request received, in arrival order.
    pub fn peers(&self) -> Vec<(i16, u16)> {
        self.state.lock().unwrap().peers.clone()
    }

    /// The listener port of every broker, dead ones included.
    pub fn ports(&self) -> Vec<u16> {
        self.state
            .lock()
            .unwrap()
            .brokers
            .values()
            .map(|b| b.port)
            .collect()
    }

    pub fn requests(&self) -> Vec<(i32, i16, Req)> {
        self.state.lock().unwrap().log.clone()
    }

    /// Decoded admin requests only (not ApiVersions, Metadata, List, LogDirs).
    pub fn writes(&self) -> Vec<(i32, Req)> {
        self.requests()
            .into_iter()
            .filter(|(_, _, r)| matches!(r, Req::Alter(_) | Req::Elect(_) | Req::Configs(_)))
            .map(|(b, _, r)| (b, r))
            .collect()
    }

    pub fn replicas(&self, topic: &str, p: i32) -> Vec<i32> {
        self.state.lock().unwrap().parts[&(topic.to_string(), p)]
            .replicas
            .clone()
    }

    pub fn leader(&self, topic: &str, p: i32) -> i32 {
        self.state.lock().unwrap().parts[&(topic.to_string(), p)].leader
    }
}

async fn serve(mut sock: TcpStream, broker: i32, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let peer = sock.peer_addr().map(|a| a.port()).unwrap_or(0);
    loop {
        let len = sock.read_i32().await?;
        let mut buf = vec![0u8; len as usize];
        sock.read_exact(&mut buf).await?;
        if state.lock().unwrap().silent {
            continue;
        }
        let mut body = Bytes::from(buf);
        let key = i16::from_be_bytes([body[0], body[1]]);
        let version = i16::from_be_bytes([body[2], body[3]]);
        let api = ApiKey::try_from(key).expect("known api key");
        let header = RequestHeader::decode(&mut body, api.request_header_version(version)).unwrap();
        {
            let mut st = state.lock().unwrap();
            st.client_ids
                .push(header.client_id.as_ref().map(|c| c.to_string()));
            st.peers.push((key, peer));
        }
        let mut out = BytesMut::new();
        out.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(header.correlation_id)
            .encode(&mut out, api.response_header_version(version))
            .unwrap();
        answer(api, version, &mut body, broker, &state, &mut out);
        let n = (out.len() - 4) as i32;
        out[0..4].copy_from_slice(&n.to_be_bytes());
        sock.write_all(&out).await?;
        let _ = body.remaining();
    }
}

fn answer(
    api: ApiKey,
    v: i16,
    body: &mut Bytes,
    broker: i32,
    state: &Mutex<State>,
    out: &mut BytesMut,
) {
    let mut st = state.lock().unwrap();
    match api {
        ApiKey::ApiVersions => {
            st.log.push((broker, api as i16, Req::ApiVersions));
            let all: [(ApiKey, i16, i16); 7] = [
                (ApiKey::ApiVersions, 0, 3),
                (ApiKey::Metadata, 0, 12),
                (ApiKey::ListPartitionReassignments, 0, 0),
                (ApiKey::AlterPartitionReassignments, 0, 0),
                (ApiKey::ElectLeaders, 0, 2),
                (ApiKey::DescribeLogDirs, 1, 4),
                (ApiKey::IncrementalAlterConfigs, 0, 1),
            ];
            let keys = all
                .iter()
                .filter(|(k, _, _)| !st.unsupported.contains(&(*k as i16)))
                .map(|(k, lo, hi)| {
                    ApiVersion::default()
                        .with_api_key(*k as i16)
                        .with_min_version(*lo)
                        .with_max_version(*hi)
                })
                .collect();
            ApiVersionsResponse::default()
                .with_api_keys(keys)
                .encode(out, v)
                .unwrap();
        }
        ApiKey::Metadata => {
            let req = MetadataRequest::decode(body, v).unwrap();
            st.log.push((broker, api as i16, Req::Metadata));
            let brokers = st
                .brokers
                .values()
                .filter(|b| b.alive)
                .map(|b| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(b.id))
                        .with_host(s("127.0.0.1"))
                        .with_port(b.port as i32)
                        .with_rack(b.rack.as_deref().map(s))
                })
                .collect();
            let want_all = req.topics.is_none();
            let mut topics: BTreeMap<String, Vec<MetadataResponsePartition>> = BTreeMap::new();
            if want_all {
                for ((t, p), part) in &st.parts {
                    topics.entry(t.clone()).or_default().push(
                        MetadataResponsePartition::default()
                            .with_partition_index(*p)
                            .with_leader_id(BrokerId(part.leader))
                            .with_replica_nodes(
                                part.replicas.iter().map(|r| BrokerId(*r)).collect(),
                            )
                            .with_isr_nodes(part.isr.iter().map(|r| BrokerId(*r)).collect()),
                    );
                }
            }
            let topics = topics
                .into_iter()
                .map(|(t, ps)| {
                    MetadataResponseTopic::default()
                        .with_name(Some(TopicName(s(&t))))
                        .with_partitions(ps)
                })
                .collect();
            MetadataResponse::default()
                .with_brokers(brokers)
                .with_controller_id(BrokerId(st.controller))
                .with_cluster_id(Some(s("fake")))
                .with_topics(topics)
                .encode(out, v)
                .unwrap();
        }
        ApiKey::ListPartitionReassignments => {
            let req = ListPartitionReassignmentsRequest::decode(body, v).unwrap();
            let filter: Option<Vec<(String, i32)>> = req.topics.as_ref().map(|ts| {
                ts.iter()
                    .flat_map(|t| {
                        t.partition_indexes
                            .iter()
                            .map(move |p| (t.name.0.to_string(), *p))
                    })
                    .collect()
            });
            st.log.push((broker, api as i16, Req::List));
            let mut topics: BTreeMap<String, Vec<OngoingPartitionReassignment>> = BTreeMap::new();
            for ((t, p), target) in &st.ongoing {
                if filter
                    .as_ref()
                    .is_some_and(|f| !f.contains(&(t.clone(), *p)))
                {
                    continue;
                }
                let cur = st
                    .parts
                    .get(&(t.clone(), *p))
                    .map(|x| x.replicas.clone())
                    .unwrap_or_default();
                topics.entry(t.clone()).or_default().push(
                    OngoingPartitionReassignment::default()
                        .with_partition_index(*p)
                        .with_replicas(target.iter().map(|r| BrokerId(*r)).collect())
                        .with_adding_replicas(
                            target
                                .iter()
                                .filter(|r| !cur.contains(r))
                                .map(|r| BrokerId(*r))
                                .collect(),
                        )
                        .with_removing_replicas(
                            cur.iter()
                                .filter(|r| !target.contains(r))
                                .map(|r| BrokerId(*r))
                                .collect(),
                        ),
                );
            }
            ListPartitionReassignmentsResponse::default()
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            OngoingTopicReassignment::default()
                                .with_name(TopicName(s(&t)))
                                .with_partitions(ps)
                        })
                        .collect(),
                )
                .encode(out, v)
                .unwrap();
        }
        ApiKey::AlterPartitionReassignments => {
            let req = AlterPartitionReassignmentsRequest::decode(body, v).unwrap();
            st.log.push((broker, api as i16, Req::Alter(req.clone())));
            let mut responses = Vec::new();
            for t in &req.topics {
                let name = t.name.0.to_string();
                let mut parts = Vec::new();
                for p in &t.partitions {
                    let tp = (name.clone(), p.partition_index);
                    let code = if let Some(c) = st.refuse.get(&tp) {
                        *c
                    } else if !st.parts.contains_key(&tp) {
                        3
                    } else {
                        match &p.replicas {
                            None => {
                                if st.ongoing.remove(&tp).is_some() {
                                    0
                                } else {
                                    85
                                }
                            }
                            Some(r) => {
                                let target: Vec<i32> = r.iter().map(|b| b.0).collect();
                                let part = st.parts.get_mut(&tp).unwrap();
                                let mut a = target.clone();
                                let mut b = part.replicas.clone();
                                a.sort();
                                b.sort();
                                if a == b {
                                    // A reorder moves no data: done at once.
                                    part.replicas = target;
                                } else {
                                    st.ongoing.insert(tp.clone(), target);
                                }
                                0
                            }
                        }
                    };
                    parts.push(
                        ReassignablePartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code),
                    );
                }
                responses.push(
                    ReassignableTopicResponse::default()
                        .with_name(t.name.clone())
                        .with_partitions(parts),
                );
            }
            AlterPartitionReassignmentsResponse::default()
                .with_responses(responses)
                .encode(out, v)
                .unwrap();
        }
        ApiKey::ElectLeaders => {
            let req = ElectLeadersRequest::decode(body, v).unwrap();
            st.log.push((broker, api as i16, Req::Elect(req.clone())));
            let mut results = Vec::new();
            for t in req.topic_partitions.iter().flatten() {
                let name = t.topic.0.to_string();
                let mut prs = Vec::new();
                for p in &t.partitions {
                    let code = match st.parts.get_mut(&(name.clone(), *p)) {
                        None => 3,
                        Some(part) => {
                            let pref = part.replicas[0];
                            if part.leader == pref {
                                84
                            } else if part.isr.contains(&pref) {
                                part.leader = pref;
                                0
                            } else {
                                80
                            }
                        }
                    };
                    prs.push(
                        PartitionResult::default()
                            .with_partition_id(*p)
                            .with_error_code(code),
                    );
                }
                results.push(
                    ReplicaElectionResult::default()
                        .with_topic(t.topic.clone())
                        .with_partition_result(prs),
                );
            }
            ElectLeadersResponse::default()
                .with_replica_election_results(results)
                .encode(out, v)
                .unwrap();
        }
        ApiKey::DescribeLogDirs => {
            let _ = DescribeLogDirsRequest::decode(body, v).unwrap();
            st.log.push((broker, api as i16, Req::LogDirs));
            let b = st.brokers[&broker].clone();
            let mut topics: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
            for ((t, p), part) in &st.parts {
                if part.replicas.contains(&broker) {
                    topics.entry(t.clone()).or_default().push(
                        DescribeLogDirsPartition::default()
                            .with_partition_index(*p)
                            .with_partition_size(part.size),
                    );
                }
            }
            let dir = DescribeLogDirsResult::default()
                .with_log_dir(s("/var/lib/kafka/data"))
                .with_total_bytes(b.disk_total)
                .with_usable_bytes(b.disk_total - b.disk_used)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            DescribeLogDirsTopic::default()
                                .with_name(TopicName(s(&t)))
                                .with_partitions(ps)
                        })
                        .collect(),
                );
            DescribeLogDirsResponse::default()
                .with_results(vec![dir])
                .encode(out, v)
                .unwrap();
        }
        ApiKey::IncrementalAlterConfigs => {
            let req = IncrementalAlterConfigsRequest::decode(body, v).unwrap();
            st.log.push((broker, api as i16, Req::Configs(req.clone())));
            for r in &req.resources {
                let configs = st
                    .configs
                    .entry((r.resource_type, r.resource_name.to_string()))
                    .or_default();
                for c in &r.configs {
                    let name = c.name.to_string();
                    let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                    let items = |s: &str| -> Vec<String> {
                        s.split(',')
                            .filter(|x| !x.is_empty())
                            .map(str::to_string)
                            .collect()
                    };
                    match c.config_operation {
                        0 => {
                            configs.insert(name, value);
                        }
                        1 => {
                            configs.remove(&name);
                        }
                        2 => {
                            let mut list = items(configs.get(&name).map_or("", |s| s.as_str()));
                            for x in items(&value) {
                                if !list.contains(&x) {
                                    list.push(x);
                                }
                            }
                            configs.insert(name, list.join(","));
                        }
                        3 => {
                            let drop = items(&value);
                            let list: Vec<String> =
                                items(configs.get(&name).map_or("", |s| s.as_str()))
                                    .into_iter()
                                    .filter(|x| !drop.contains(x))
                                    .collect();
                            if list.is_empty() {
                                configs.remove(&name);
                            } else {
                                configs.insert(name, list.join(","));
                            }
                        }
                        op => panic!("the fake Kafka got config operation {op}"),
                    }
                }
            }
            st.configs.retain(|_, c| !c.is_empty());
            let responses = req
                .resources
                .iter()
                .map(|r| {
                    AlterConfigsResourceResponse::default()
                        .with_resource_type(r.resource_type)
                        .with_resource_name(r.resource_name.clone())
                })
                .collect();
            IncrementalAlterConfigsResponse::default()
                .with_responses(responses)
                .encode(out, v)
                .unwrap();
        }
        other => panic!("the fake Kafka got {other:?}"),
    }
}

/// ConfigResource types (IncrementalAlterConfigs): topic and broker.
const TOPIC_RESOURCE: i8 = 2;
const BROKER_RESOURCE: i8 = 4;

impl FakeKafka {
    /// Brokers 1-5 (4 dead, 5 with a full disk so it receives nothing), partitions of `logs` on
    /// 4, and an operator's own throttles: on topic `other`, on `logs` partition 2, and on
    /// broker 5 (the HA and recovery tests check that these survive).
    pub async fn dead_broker_4_with_operator_throttles() -> FakeKafka {
        let fake = Self::start(&[
            (1, Some("a")),
            (2, Some("b")),
            (3, Some("c")),
            (4, Some("c")),
            (5, Some("a")),
        ])
        .await;
        fake.add_partition("logs", 0, &[4, 1, 2], &[4, 1, 2], 4, 300);
        fake.add_partition("logs", 1, &[1, 4], &[1, 4], 1, 200);
        fake.add_partition("logs", 2, &[2, 3], &[2, 3], 2, 100);
        fake.add_partition("other", 0, &[1, 2], &[1, 2], 1, 10);
        fake.kill(4);
        fake.state
            .lock()
            .unwrap()
            .brokers
            .get_mut(&5)
            .unwrap()
            .disk_used = 990;
        fake.set_config(
            TOPIC_RESOURCE,
            "other",
            "leader.replication.throttled.replicas",
            "0:1,0:2",
        );
        fake.set_config(
            TOPIC_RESOURCE,
            "logs",
            "follower.replication.throttled.replicas",
            "2:3",
        );
        fake.set_config(
            BROKER_RESOURCE,
            "5",
            "leader.replication.throttled.rate",
            "999",
        );
        fake
    }
}
