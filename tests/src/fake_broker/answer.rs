//! Answers to the data and group APIs, computed from the [`Table`] and encoded straight into
//! the response buffer. Fields a version does not have are left at their defaults (the codec
//! refuses to encode them otherwise).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::consumer_group_describe_response as cgd;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::table::{Group, GroupType, Partition, Table, Topic};

pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const LEADER_NOT_AVAILABLE: i16 = 5;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const NOT_COORDINATOR: i16 = 16;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const UNKNOWN_TOPIC_ID: i16 = 100;

/// Most records in one generated batch.
const BATCH_RECORDS: i64 = 100;

/// Err: the codec's message (a body that does not decode, or an answer that does not encode).
type Res = Result<(), String>;

fn e(err: impl std::fmt::Display) -> String {
    err.to_string()
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Decodes the request body for `api` at `version` and encodes the answer into `out`. Err: the
/// body could not be decoded (the caller closes the connection).
pub fn answer(
    api: ApiKey,
    version: i16,
    body: &mut Bytes,
    broker: i32,
    table: &Table,
    out: &mut BytesMut,
) -> Res {
    match api {
        ApiKey::Metadata => metadata(
            MetadataRequest::decode(body, version).map_err(e)?,
            version,
            table,
            out,
        ),
        ApiKey::FindCoordinator => find_coordinator(
            FindCoordinatorRequest::decode(body, version).map_err(e)?,
            version,
            table,
            out,
        ),
        ApiKey::ListGroups => list_groups(
            ListGroupsRequest::decode(body, version).map_err(e)?,
            version,
            broker,
            table,
            out,
        ),
        ApiKey::DescribeGroups => describe_groups(
            DescribeGroupsRequest::decode(body, version).map_err(e)?,
            version,
            broker,
            table,
            out,
        ),
        ApiKey::ConsumerGroupDescribe => consumer_group_describe(
            ConsumerGroupDescribeRequest::decode(body, version).map_err(e)?,
            version,
            broker,
            table,
            out,
        ),
        ApiKey::OffsetFetch => offset_fetch(
            OffsetFetchRequest::decode(body, version).map_err(e)?,
            version,
            broker,
            table,
            out,
        ),
        ApiKey::ListOffsets => list_offsets(
            ListOffsetsRequest::decode(body, version).map_err(e)?,
            version,
            broker,
            table,
            out,
        ),
        ApiKey::Fetch => fetch(
            FetchRequest::decode(body, version).map_err(e)?,
            version,
            broker,
            table,
            out,
        ),
        other => Err(format!("the fake broker does not serve {other:?}")),
    }
}

fn metadata(req: MetadataRequest, v: i16, t: &Table, out: &mut BytesMut) -> Res {
    let brokers = t
        .brokers
        .iter()
        .map(|(id, port)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(*id))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(i32::from(*port))
        })
        .collect();
    let topic = |tp: &Topic| {
        let mut mt = MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(tp.name.to_string()))))
            .with_is_internal(tp.internal)
            .with_partitions(
                tp.partitions
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let nodes = if p.leader >= 0 {
                            vec![BrokerId(p.leader)]
                        } else {
                            Vec::new()
                        };
                        MetadataResponsePartition::default()
                            .with_error_code(if p.leader >= 0 {
                                0
                            } else {
                                LEADER_NOT_AVAILABLE
                            })
                            .with_partition_index(i as i32)
                            .with_leader_id(BrokerId(p.leader))
                            .with_replica_nodes(nodes.clone())
                            .with_isr_nodes(nodes)
                    })
                    .collect(),
            );
        if v >= 10 {
            mt.topic_id = tp.id;
        }
        mt
    };
    // v0: an empty list means every topic; v1+: null means every topic.
    let all = match &req.topics {
        None => true,
        Some(ts) => v == 0 && ts.is_empty(),
    };
    let topics = if all {
        t.topics().iter().map(topic).collect()
    } else {
        req.topics
            .unwrap_or_default()
            .into_iter()
            .map(|rt| {
                let found = match &rt.name {
                    Some(n) => t.topic(n.0.as_str()),
                    None => t.topic_by_id(&rt.topic_id),
                };
                match found {
                    Some(tp) => topic(tp),
                    None => {
                        let mut mt = MetadataResponseTopic::default()
                            .with_error_code(UNKNOWN_TOPIC_OR_PARTITION)
                            .with_name(rt.name);
                        if v >= 10 {
                            mt.topic_id = rt.topic_id;
                        }
                        mt
                    }
                }
            })
            .collect()
    };
    let mut resp = MetadataResponse::default()
        .with_brokers(brokers)
        .with_controller_id(BrokerId(t.brokers.first().map(|b| b.0).unwrap_or(-1)))
        .with_topics(topics);
    if v >= 2 {
        resp.cluster_id = Some(s(&t.cluster_id));
    }
    resp.encode(out, v).map_err(e)
}

fn find_coordinator(req: FindCoordinatorRequest, v: i16, t: &Table, out: &mut BytesMut) -> Res {
    let locate = |key: &str| {
        let id = t.coordinator_of(key);
        let port = t
            .brokers
            .iter()
            .find(|(b, _)| *b == id)
            .map(|(_, p)| i32::from(*p))
            .unwrap_or(-1);
        (id, port)
    };
    let mut resp = FindCoordinatorResponse::default();
    if v >= 4 {
        resp.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let (id, port) = locate(k);
                Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(BrokerId(id))
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(port)
            })
            .collect();
    } else {
        let (id, port) = locate(&req.key);
        resp.node_id = BrokerId(id);
        resp.host = StrBytes::from_static_str("127.0.0.1");
        resp.port = port;
    }
    resp.encode(out, v).map_err(e)
}

fn list_groups(req: ListGroupsRequest, v: i16, broker: i32, t: &Table, out: &mut BytesMut) -> Res {
    let wanted = |filter: &[StrBytes], value: &str| {
        filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value))
    };
    let groups = t
        .groups
        .iter()
        .filter(|(_, g)| g.coordinator == broker)
        .filter(|(_, g)| v < 4 || wanted(&req.states_filter, g.effective_state()))
        .filter(|(_, g)| v < 5 || wanted(&req.types_filter, g.group_type.as_str()))
        .map(|(id, g)| {
            let mut lg = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(id.to_string())))
                .with_protocol_type(s(&g.protocol_type));
            if v >= 4 {
                lg.group_state = s(g.effective_state());
            }
            if v >= 5 {
                lg.group_type = StrBytes::from_static_str(g.group_type.as_str());
            }
            lg
        })
        .collect();
    ListGroupsResponse::default()
        .with_groups(groups)
        .encode(out, v)
        .map_err(e)
}

/// A classic member's assignment as the consumer protocol encodes it (version 0).
fn assignment_bytes(g: &Group, m: &super::Member) -> Result<Bytes, String> {
    let _ = g;
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        m.assignment
            .iter()
            .map(|(topic, parts)| {
                consumer_protocol_assignment::TopicPartition::default()
                    .with_topic(TopicName(s(topic)))
                    .with_partitions(parts.clone())
            })
            .collect(),
    );
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&0i16.to_be_bytes());
    a.encode(&mut buf, 0).map_err(e)?;
    Ok(buf.freeze())
}

fn describe_groups(
    req: DescribeGroupsRequest,
    v: i16,
    broker: i32,
    t: &Table,
    out: &mut BytesMut,
) -> Res {
    let mut groups = Vec::with_capacity(req.groups.len());
    for id in &req.groups {
        let mut d = DescribedGroup::default().with_group_id(id.clone());
        let name = id.0.as_str();
        if t.coordinator_of(name) != broker {
            d.error_code = NOT_COORDINATOR;
            groups.push(d);
            continue;
        }
        let not_classic = match t.groups.get(name) {
            Some(g) if g.group_type == GroupType::Classic => {
                d.group_state = s(g.effective_state());
                d.protocol_type = s(&g.protocol_type);
                d.protocol_data = s(&g.protocol);
                d.members = g
                    .members
                    .iter()
                    .map(|m| {
                        let mut dm = DescribedGroupMember::default()
                            .with_member_id(s(&m.member_id))
                            .with_client_id(s(&m.client_id))
                            .with_client_host(s(&m.client_host))
                            .with_member_assignment(assignment_bytes(g, m)?);
                        if v >= 4 {
                            dm.group_instance_id = m.instance_id.as_deref().map(s);
                        }
                        Ok(dm)
                    })
                    .collect::<Result<_, String>>()?;
                groups.push(d);
                continue;
            }
            Some(_) => format!("Group {name} is not a classic group."),
            None => format!("Group {name} not found."),
        };
        // Kafka 4: not a classic group (or none at all) is Dead with no members; v6 says why.
        d.group_state = StrBytes::from_static_str("Dead");
        if v >= 6 {
            d.error_code = GROUP_ID_NOT_FOUND;
            d.error_message = Some(StrBytes::from_string(not_classic));
        }
        groups.push(d);
    }
    DescribeGroupsResponse::default()
        .with_groups(groups)
        .encode(out, v)
        .map_err(e)
}

fn consumer_group_describe(
    req: ConsumerGroupDescribeRequest,
    v: i16,
    broker: i32,
    t: &Table,
    out: &mut BytesMut,
) -> Res {
    let mut groups = Vec::with_capacity(req.group_ids.len());
    for id in &req.group_ids {
        let mut d = cgd::DescribedGroup::default().with_group_id(id.clone());
        let name = id.0.as_str();
        if t.coordinator_of(name) != broker {
            d.error_code = NOT_COORDINATOR;
            groups.push(d);
            continue;
        }
        match t.groups.get(name) {
            Some(g) if g.group_type == GroupType::Consumer => {
                d.group_state = s(g.effective_state());
                d.group_epoch = g.epoch;
                d.assignment_epoch = g.epoch;
                d.assignor_name = s(&g.protocol);
                d.members = g
                    .members
                    .iter()
                    .map(|m| {
                        let assignment = cgd::Assignment::default().with_topic_partitions(
                            m.assignment
                                .iter()
                                .map(|(topic, parts)| {
                                    cgd::TopicPartitions::default()
                                        .with_topic_id(
                                            t.topic(topic).map(|x| x.id).unwrap_or_default(),
                                        )
                                        .with_topic_name(TopicName(s(topic)))
                                        .with_partitions(parts.clone())
                                })
                                .collect(),
                        );
                        let mut cm = cgd::Member::default()
                            .with_member_id(s(&m.member_id))
                            .with_instance_id(m.instance_id.as_deref().map(s))
                            .with_member_epoch(g.epoch)
                            .with_client_id(s(&m.client_id))
                            .with_client_host(s(&m.client_host))
                            .with_subscribed_topic_names(
                                m.assignment
                                    .iter()
                                    .map(|(tp, _)| TopicName(s(tp)))
                                    .collect(),
                            )
                            .with_assignment(assignment.clone())
                            .with_target_assignment(assignment);
                        if v >= 1 {
                            // 1: a member using the consumer protocol (0 would be classic).
                            cm.member_type = 1;
                        }
                        cm
                    })
                    .collect();
            }
            Some(_) => {
                d.error_code = GROUP_ID_NOT_FOUND;
                d.error_message = Some(s(&format!("Group {name} is not a consumer group.")));
            }
            None => {
                d.error_code = GROUP_ID_NOT_FOUND;
                d.error_message = Some(s(&format!("Group {name} not found.")));
            }
        }
        groups.push(d);
    }
    ConsumerGroupDescribeResponse::default()
        .with_groups(groups)
        .encode(out, v)
        .map_err(e)
}

/// A group's committed offsets, by topic, restricted to `wanted` topics/partitions when given
/// (a wanted partition without a commit gets -1, as Kafka answers).
fn committed(
    g: Option<&Group>,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> BTreeMap<Arc<str>, Vec<(i32, i64)>> {
    let mut by_topic: BTreeMap<Arc<str>, Vec<(i32, i64)>> = BTreeMap::new();
    match (g, wanted) {
        (Some(g), None) => {
            for ((topic, p), off) in &g.offsets {
                by_topic.entry(topic.clone()).or_default().push((*p, *off));
            }
        }
        (g, Some(wanted)) => {
            for (topic, parts) in wanted {
                let topic: Arc<str> = Arc::from(topic.as_str());
                let e = by_topic.entry(topic.clone()).or_default();
                for p in parts {
                    let off = g
                        .and_then(|g| g.offsets.get(&(topic.clone(), p)))
                        .copied()
                        .unwrap_or(-1);
                    e.push((p, off));
                }
            }
        }
        (None, None) => {}
    }
    by_topic
}

fn offset_fetch(
    req: OffsetFetchRequest,
    v: i16,
    broker: i32,
    t: &Table,
    out: &mut BytesMut,
) -> Res {
    let mut resp = OffsetFetchResponse::default();
    if v >= 8 {
        resp.groups = req
            .groups
            .into_iter()
            .map(|rg| {
                let name = rg.group_id.0.as_str();
                if t.coordinator_of(name) != broker {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(rg.group_id.clone())
                        .with_error_code(NOT_COORDINATOR);
                }
                let wanted = rg.topics.map(|ts| {
                    ts.into_iter()
                        .map(|x| (x.name.0.to_string(), x.partition_indexes))
                        .collect()
                });
                let topics = committed(t.groups.get(name), wanted)
                    .into_iter()
                    .map(|(topic, parts)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                            .with_partitions(
                                parts
                                    .into_iter()
                                    .map(|(p, off)| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(off)
                                            .with_metadata(Some(StrBytes::default()))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(rg.group_id)
                    .with_topics(topics)
            })
            .collect();
    } else {
        let name = req.group_id.0.as_str();
        if t.coordinator_of(name) != broker {
            if v >= 2 {
                resp.error_code = NOT_COORDINATOR;
            }
        } else {
            let wanted = req.topics.map(|ts| {
                ts.into_iter()
                    .map(|x| (x.name.0.to_string(), x.partition_indexes))
                    .collect()
            });
            resp.topics = committed(t.groups.get(name), wanted)
                .into_iter()
                .map(|(topic, parts)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, off)| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(off)
                                        .with_metadata(Some(StrBytes::default()))
                                })
                                .collect(),
                        )
                })
                .collect();
        }
    }
    resp.encode(out, v).map_err(e)
}

/// The partition if `broker` leads it, else the partition-level error.
fn led<'a>(t: &'a Table, topic: &str, p: i32, broker: i32) -> Result<&'a Partition, i16> {
    match t.partition(topic, p) {
        None => Err(UNKNOWN_TOPIC_OR_PARTITION),
        Some(part) if part.leader != broker => Err(NOT_LEADER_OR_FOLLOWER),
        Some(part) => Ok(part),
    }
}

fn list_offsets(
    req: ListOffsetsRequest,
    v: i16,
    broker: i32,
    t: &Table,
    out: &mut BytesMut,
) -> Res {
    let topics = req
        .topics
        .into_iter()
        .map(|rt| {
            let name = rt.name.0.as_str();
            let partitions = rt
                .partitions
                .iter()
                .map(|rp| {
                    let mut r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(rp.partition_index)
                        .with_timestamp(-1);
                    match led(t, name, rp.partition_index, broker) {
                        Err(code) => {
                            r.error_code = code;
                            r.offset = -1;
                        }
                        Ok(p) => {
                            r.offset = match rp.timestamp {
                                -1 => p.end,
                                -2 => p.log_start,
                                ts if ts >= 0 => {
                                    let o = p.offset_for_timestamp(ts);
                                    if o < p.end {
                                        r.timestamp = p.timestamp_at(o);
                                        o
                                    } else {
                                        -1
                                    }
                                }
                                // -3 (max timestamp) and others: not modelled.
                                _ => -1,
                            };
                            if v >= 4 {
                                r.leader_epoch = 0;
                            }
                        }
                    }
                    r
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(rt.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default()
        .with_topics(topics)
        .encode(out, v)
        .map_err(e)
}

/// Record batches of `p` from `from`, at least one batch, then up to `max_bytes` in all.
fn records(p: &Partition, from: i64, max_bytes: usize) -> Result<Bytes, String> {
    let mut buf = BytesMut::new();
    let mut offset = from;
    let opts = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    while offset < p.end {
        // A batch never spans two timestamp runs: each keeps its own.
        let run_end = p
            .runs
            .iter()
            .map(|(start, _)| *start)
            .find(|start| *start > offset)
            .unwrap_or(p.end)
            .min(p.end);
        let last = (offset + BATCH_RECORDS).min(run_end);
        let ts = p.timestamp_at(offset);
        let batch: Vec<Record> = (offset..last)
            .map(|o| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: o,
                sequence: -1,
                timestamp: ts,
                key: None,
                value: Some(Bytes::from_static(b"x")),
                headers: Default::default(),
            })
            .collect();
        let mut one = BytesMut::new();
        RecordBatchEncoder::encode(&mut one, batch.iter(), &opts).map_err(e)?;
        if !buf.is_empty() && buf.len() + one.len() > max_bytes {
            break;
        }
        buf.extend_from_slice(&one);
        offset = last;
    }
    Ok(buf.freeze())
}

fn fetch(req: FetchRequest, v: i16, broker: i32, t: &Table, out: &mut BytesMut) -> Res {
    let mut budget = usize::try_from(req.max_bytes).unwrap_or(0);
    let mut responses = Vec::with_capacity(req.topics.len());
    for rt in req.topics {
        let topic = if v >= 13 {
            t.topic_by_id(&rt.topic_id)
        } else {
            t.topic(rt.topic.0.as_str())
        };
        let mut partitions = Vec::with_capacity(rt.partitions.len());
        for rp in &rt.partitions {
            let mut pd = PartitionData::default()
                .with_partition_index(rp.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_records(Some(Bytes::new()));
            let part = match topic {
                None if v >= 13 => Err(UNKNOWN_TOPIC_ID),
                None => Err(UNKNOWN_TOPIC_OR_PARTITION),
                Some(tp) => led(t, &tp.name, rp.partition, broker),
            };
            match part {
                Err(code) => pd.error_code = code,
                Ok(p) => {
                    pd.high_watermark = p.end;
                    pd.last_stable_offset = p.end;
                    pd.log_start_offset = p.log_start;
                    if rp.fetch_offset < p.log_start || rp.fetch_offset > p.end {
                        pd.error_code = OFFSET_OUT_OF_RANGE;
                    } else if budget > 0 {
                        let limit = usize::try_from(rp.partition_max_bytes)
                            .unwrap_or(0)
                            .min(budget);
                        let r = records(p, rp.fetch_offset, limit)?;
                        budget = budget.saturating_sub(r.len());
                        pd.records = Some(r);
                    }
                }
            }
            partitions.push(pd);
        }
        let mut ftr = FetchableTopicResponse::default().with_partitions(partitions);
        if v >= 13 {
            ftr.topic_id = rt.topic_id;
        } else {
            ftr.topic = rt.topic;
        }
        responses.push(ftr);
    }
    FetchResponse::default()
        .with_responses(responses)
        .encode(out, v)
        .map_err(e)
}
