//! The cluster client: a connection per broker, and one batched call per Kafka API the agent
//! needs. Each call goes to one broker and carries every group or partition meant for it, so
//! the number of requests per collection grows with brokers, not with partitions or groups.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    BrokerId, FetchRequest, GroupId, ListGroupsRequest, ListOffsetsRequest, MetadataRequest,
    OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;

use super::conn::{api_name, Connection, Security};
use super::error::KafkaError;

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

/// A consumer group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedGroup {
    pub group: String,
    pub protocol_type: String,
    /// Empty when the broker is too old to report states (ListGroups < v4).
    pub state: String,
}

/// The committed offsets of one group, or why they could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupOffsets {
    pub group: String,
    /// (partition, committed offset); partitions with no commit are left out.
    pub offsets: Result<Vec<(Tp, i64)>, String>,
}

/// What a timestamp fetch found at an offset.
#[derive(Debug, Clone, PartialEq)]
pub enum FetchOutcome {
    /// The timestamp (ms since the epoch) of the first record at or after the offset.
    Timestamp(i64),
    /// The offset is below the log start; the broker said where the log starts now, if it did.
    OutOfRange { log_start: Option<i64> },
    /// The broker returned no complete record this time (size limit, or nothing there).
    NoRecord,
    /// A partition-level error code.
    Error(i16),
}

/// Per-API request counters, read by the collector to report requests per collection.
#[derive(Debug, Default)]
pub struct RequestStats {
    counts: Mutex<BTreeMap<&'static str, u64>>,
    total: AtomicU64,
}

impl RequestStats {
    fn record(&self, api: &'static str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(api).or_default() += 1;
        }
        metrics::counter!("medic_agent_kafka_requests_total", "api" => api).increment(1);
    }

    /// Requests sent since start, all APIs.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
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
}

type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

/// A client for the handful of Kafka APIs the agent needs, with one connection per broker.
pub struct KafkaClient {
    cfg: ClientConfig,
    brokers: Mutex<BTreeMap<i32, String>>,
    conns: Mutex<HashMap<String, Slot>>,
    stats: RequestStats,
}

impl KafkaClient {
    pub fn new(cfg: ClientConfig) -> Self {
        KafkaClient {
            cfg,
            brokers: Mutex::new(BTreeMap::new()),
            conns: Mutex::new(HashMap::new()),
            stats: RequestStats::default(),
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
            self.stats.record("api_versions");
            if self.cfg.security.sasl.is_some() {
                self.stats.record("sasl_handshake");
            }
            *guard = Some(
                Connection::connect(addr, &self.cfg.security, self.cfg.request_timeout).await?,
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
        let api = api_name(R::KEY);
        self.stats.record(api);
        let started = std::time::Instant::now();
        let result = conn.send(&request, version).await;
        metrics::histogram!("medic_agent_kafka_request_duration_seconds", "api" => api)
            .record(started.elapsed().as_secs_f64());
        match result {
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

    /// The groups that the broker at `addr` coordinates.
    pub async fn list_groups_at(&self, addr: &str) -> Result<Vec<ListedGroup>, KafkaError> {
        let (_, resp) = self.call(addr, 4, |_| ListGroupsRequest::default()).await?;
        if resp.error_code != 0 {
            return Err(KafkaError::broker("list_groups", addr, resp.error_code));
        }
        Ok(resp
            .groups
            .into_iter()
            .map(|g| ListedGroup {
                group: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
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

/// A group's committed offsets from an OffsetFetch response (any version): partitions without
/// a commit (offset -1) or with an error are left out; a group-level error fails the group.
fn committed<'a>(
    group_error: i16,
    partitions: impl Iterator<Item = (&'a TopicName, i32, i64, i16)>,
) -> Result<Vec<(Tp, i64)>, String> {
    if group_error != 0 {
        return Err(super::error::code_name(group_error));
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

/// Size of a record batch header up to and including `maxTimestamp`.
const BATCH_HEADER_TIMESTAMPS_END: usize = 43;

/// The timestamp of the first record at or after each of `offsets` (sorted ascending) in a
/// Fetch response's record bytes.
///
/// Complete batches are decoded (and decompressed) to find the exact records. If the data ends
/// in a batch cut short by the size limit, its header still holds the batch's first
/// timestamp; an offset not found in complete batches but inside that batch's range takes it
/// (exact when the batch starts at that offset, else the closest lower bound available).
pub fn timestamps_at(mut records: Bytes, offsets: &[i64]) -> Vec<(i64, FetchOutcome)> {
    let mut out: Vec<(i64, FetchOutcome)> = Vec::with_capacity(offsets.len());
    let mut next = 0usize;
    let mut truncated_first_ts = None;
    'batches: while records.remaining() >= 12 && next < offsets.len() {
        let base_offset = i64::from_be_bytes(records[0..8].try_into().unwrap_or([0; 8]));
        let len = i32::from_be_bytes(records[8..12].try_into().unwrap_or([0; 4]));
        let Ok(len) = usize::try_from(len) else {
            break;
        };
        let total = 12 + len;
        if records.remaining() < total {
            if records.remaining() >= BATCH_HEADER_TIMESTAMPS_END {
                let ts = i64::from_be_bytes(records[27..35].try_into().unwrap_or([0; 8]));
                truncated_first_ts = Some((base_offset, ts));
            }
            break;
        }
        let mut batch = records.split_to(total);
        match RecordBatchDecoder::decode(&mut batch) {
            Ok(set) => {
                for r in set.records.iter().filter(|r| !r.control) {
                    while next < offsets.len() && r.offset >= offsets[next] {
                        out.push((offsets[next], FetchOutcome::Timestamp(r.timestamp)));
                        next += 1;
                    }
                    if next == offsets.len() {
                        break 'batches;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot decode record batch");
                break;
            }
        }
    }
    for o in &offsets[next..] {
        let outcome = match truncated_first_ts {
            Some((base, ts)) if *o <= base || out.is_empty() => FetchOutcome::Timestamp(ts),
            _ => FetchOutcome::NoRecord,
        };
        out.push((*o, outcome));
    }
    out
}

/// The timestamp of the first record at or after `offset` (see [`timestamps_at`]).
pub fn timestamp_at(records: Bytes, offset: i64) -> FetchOutcome {
    timestamps_at(records, &[offset])
        .pop()
        .map(|(_, f)| f)
        .unwrap_or(FetchOutcome::NoRecord)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn record(offset: i64, ts: i64) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: -1,
            timestamp: ts,
            key: None,
            value: Some(Bytes::from_static(b"payload-payload-payload")),
            headers: Default::default(),
        }
    }

    fn batch(records: &[Record], compression: Compression) -> Bytes {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn finds_the_exact_record_inside_a_batch() {
        let recs: Vec<_> = (10..20).map(|o| record(o, 1_000 + o * 10)).collect();
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Snappy,
        ] {
            let b = batch(&recs, c);
            assert_eq!(
                timestamp_at(b.clone(), 10),
                FetchOutcome::Timestamp(1_100),
                "{c:?}"
            );
            assert_eq!(
                timestamp_at(b.clone(), 15),
                FetchOutcome::Timestamp(1_150),
                "{c:?}"
            );
            assert_eq!(timestamp_at(b, 25), FetchOutcome::NoRecord, "{c:?}");
        }
    }

    #[test]
    fn walks_several_batches_and_skips_earlier_ones() {
        let mut all = BytesMut::new();
        all.extend_from_slice(&batch(&[record(0, 500), record(1, 600)], Compression::None));
        all.extend_from_slice(&batch(&[record(2, 700), record(3, 800)], Compression::None));
        assert_eq!(timestamp_at(all.freeze(), 3), FetchOutcome::Timestamp(800));
    }

    #[test]
    fn a_truncated_batch_falls_back_to_its_header_timestamp() {
        let b = batch(&[record(7, 4_242), record(8, 4_343)], Compression::None);
        let cut = b.slice(0..b.len() - 5);
        assert_eq!(timestamp_at(cut, 7), FetchOutcome::Timestamp(4_242));
        let too_short = b.slice(0..20);
        assert_eq!(timestamp_at(too_short, 7), FetchOutcome::NoRecord);
        assert_eq!(timestamp_at(Bytes::new(), 7), FetchOutcome::NoRecord);
    }

    #[test]
    fn several_offsets_in_one_read() {
        let mut all = BytesMut::new();
        all.extend_from_slice(&batch(&[record(0, 500), record(1, 600)], Compression::None));
        all.extend_from_slice(&batch(&[record(2, 700), record(3, 800)], Compression::Gzip));
        let got = timestamps_at(all.freeze(), &[1, 3, 9]);
        assert_eq!(
            got,
            vec![
                (1, FetchOutcome::Timestamp(600)),
                (3, FetchOutcome::Timestamp(800)),
                (9, FetchOutcome::NoRecord)
            ]
        );
    }

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
