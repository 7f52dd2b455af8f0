//! Self-tests of the fake cluster, through a minimal client written here (framing and header
//! only), so that what is checked is the bytes on the wire.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

struct Client {
    sock: TcpStream,
    corr: i32,
}

impl Client {
    async fn connect(addr: &str) -> Self {
        Client {
            sock: TcpStream::connect(addr).await.unwrap(),
            corr: 0,
        }
    }

    /// Sends `req` with header version `v` and body encoded at `body_v`; reads the answer at
    /// `resp_v`. None: the broker closed the connection.
    async fn send_as<R: Request>(
        &mut self,
        req: &R,
        v: i16,
        body_v: i16,
        resp_v: i16,
    ) -> Option<R::Response> {
        self.corr += 1;
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 0]);
        RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(v)
            .with_correlation_id(self.corr)
            .with_client_id(Some(StrBytes::from_static_str("selftest")))
            .encode(&mut buf, R::header_version(body_v))
            .unwrap();
        req.encode(&mut buf, body_v).unwrap();
        let n = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&n.to_be_bytes());
        if self.sock.write_all(&buf).await.is_err() {
            return None;
        }
        let len = self.sock.read_i32().await.ok()?;
        let mut body = vec![0u8; len as usize];
        self.sock.read_exact(&mut body).await.ok()?;
        let mut body = Bytes::from(body);
        let api = ApiKey::try_from(R::KEY).unwrap();
        let h = ResponseHeader::decode(&mut body, api.response_header_version(resp_v)).unwrap();
        assert_eq!(h.correlation_id, self.corr);
        let resp = R::Response::decode(&mut body, resp_v).unwrap();
        assert_eq!(body.remaining(), 0, "the whole answer was decoded");
        Some(resp)
    }

    async fn send<R: Request>(&mut self, req: &R, v: i16) -> Option<R::Response> {
        self.send_as(req, v, v, v).await
    }
}

/// Metadata for every topic (null topics; the default is an empty list: no topic).
fn all_topics() -> MetadataRequest {
    MetadataRequest::default().with_topics(None)
}

fn gid(g: &str) -> GroupId {
    GroupId(StrBytes::from_string(g.to_string()))
}

fn name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_string()))
}

/// Two brokers; topic `t` with 2 partitions (p0 led by 0, p1 by 1); a classic group `c`
/// (coordinator 0, two members), a consumer group `k` (coordinator 1, one member), an empty
/// classic group `e` on broker 0.
async fn cluster() -> FakeCluster {
    let c = FakeCluster::builder().brokers(2).start().await;
    c.update(|t| {
        t.add_topic("t", 2);
        t.append("t", 0, 10, 1_000);
        t.append("t", 0, 10, 2_000);
        t.append("t", 1, 5, 3_000);
        t.put_group(
            "c",
            Group::classic(0)
                .member(Member::new("c-1").assign("t", &[0]))
                .member(Member::new("c-2").assign("t", &[1]))
                .commit("t", 0, 7)
                .commit("t", 1, 5),
        );
        t.put_group(
            "k",
            Group::consumer(1)
                .member(Member::new("k-1").client_id("kip848").assign("t", &[0, 1]))
                .commit("t", 0, 12),
        );
        t.put_group("e", Group::classic(0).commit("t", 1, 1));
    });
    c
}

#[tokio::test]
async fn api_versions_advertises_exact_ranges_and_refuses_others_as_kafka_does() {
    let c = cluster().await;
    let mut cl = Client::connect(&c.addr(0)).await;
    let r = cl.send(&ApiVersionsRequest::default(), 3).await.unwrap();
    assert_eq!(r.error_code, 0);
    let range = |k: ApiKey| {
        r.api_keys
            .iter()
            .find(|a| a.api_key == k as i16)
            .map(|a| (a.min_version, a.max_version))
    };
    assert_eq!(range(ApiKey::ListGroups), Some((0, 5)));
    assert_eq!(range(ApiKey::ConsumerGroupDescribe), Some((0, 1)));
    assert_eq!(range(ApiKey::OffsetFetch), Some((1, 9)));
    assert_eq!(range(ApiKey::Produce), None);
    // ApiVersions above the range: UNSUPPORTED_VERSION in a v0 answer with the ranges.
    let r = cl
        .send_as(&ApiVersionsRequest::default(), 9, 3, 0)
        .await
        .unwrap();
    assert_eq!(r.error_code, 35);
    assert_eq!(r.api_keys.len(), KAFKA_4_API_VERSIONS.len());
    // Any other request outside its range (v6, the body a v5 one): the connection is closed.
    assert!(cl
        .send_as(&ListGroupsRequest::default(), 6, 5, 5)
        .await
        .is_none());
    // An older broker.
    c.update(|t| {
        t.set_api_versions(ApiKey::ListGroups, 0, 4);
        t.remove_api(ApiKey::ConsumerGroupDescribe);
    });
    let mut cl = Client::connect(&c.addr(0)).await;
    let r = cl.send(&ApiVersionsRequest::default(), 3).await.unwrap();
    assert!(!r.api_keys.iter().any(|a| a.api_key == 69));
    assert!(cl.send(&ListGroupsRequest::default(), 5).await.is_none());
    let log = c.requests();
    assert_eq!(log.len(), 5, "{log:#?}");
    assert!(log
        .iter()
        .all(|r| r.client_id.as_deref() == Some("selftest")));
    assert_eq!((log[1].api_key, log[1].version), (18, 9));
}

#[tokio::test]
async fn metadata_lists_brokers_topics_and_leaders() {
    let c = cluster().await;
    let mut cl = Client::connect(&c.addr(1)).await;
    let r = cl.send(&all_topics(), 12).await.unwrap();
    let ports: Vec<i32> = r.brokers.iter().map(|b| b.port).collect();
    assert_eq!(ports.len(), 2);
    assert_eq!(
        c.bootstrap(),
        format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1])
    );
    assert_eq!(r.topics.len(), 1);
    let leaders: Vec<i32> = r.topics[0]
        .partitions
        .iter()
        .map(|p| p.leader_id.0)
        .collect();
    assert_eq!(leaders, vec![0, 1]);
    let req = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(name("nope"))),
    ]));
    let r = cl.send(&req, 12).await.unwrap();
    assert_eq!(r.topics[0].error_code, 3);
}

#[tokio::test]
async fn list_groups_filters_by_coordinator_state_and_type() {
    let c = cluster().await;
    let mut b0 = Client::connect(&c.addr(0)).await;
    let mut b1 = Client::connect(&c.addr(1)).await;
    let r = b0.send(&ListGroupsRequest::default(), 5).await.unwrap();
    let got: Vec<(String, String, String)> = r
        .groups
        .iter()
        .map(|g| {
            (
                g.group_id.0.to_string(),
                g.group_state.to_string(),
                g.group_type.to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("c".into(), "Stable".into(), "classic".into()),
            ("e".into(), "Empty".into(), "classic".into())
        ]
    );
    let r = b1.send(&ListGroupsRequest::default(), 5).await.unwrap();
    assert_eq!(r.groups.len(), 1);
    assert_eq!(r.groups[0].group_type.as_str(), "consumer");
    let req =
        ListGroupsRequest::default().with_types_filter(vec![StrBytes::from_static_str("Consumer")]);
    assert!(b0.send(&req, 5).await.unwrap().groups.is_empty());
    let req =
        ListGroupsRequest::default().with_states_filter(vec![StrBytes::from_static_str("empty")]);
    let r = b0.send(&req, 4).await.unwrap();
    assert_eq!(r.groups.len(), 1);
    assert_eq!(r.groups[0].group_id.0.as_str(), "e");
    // v4 carries the state, not the type; v2 neither.
    assert_eq!(r.groups[0].group_type.as_str(), "");
    let r = b0.send(&ListGroupsRequest::default(), 2).await.unwrap();
    assert_eq!(r.groups[0].group_state.as_str(), "");
    assert_eq!(r.groups[0].protocol_type.as_str(), "consumer");
}

#[tokio::test]
async fn describe_groups_answers_as_kafka_4_for_each_group_type() {
    let c = cluster().await;
    let mut b0 = Client::connect(&c.addr(0)).await;
    let mut b1 = Client::connect(&c.addr(1)).await;
    let req = DescribeGroupsRequest::default().with_groups(vec![gid("c"), gid("k")]);
    let r = b0.send(&req, 6).await.unwrap();
    let classic = &r.groups[0];
    assert_eq!(classic.error_code, 0);
    assert_eq!(classic.group_state.as_str(), "Stable");
    assert_eq!(classic.protocol_data.as_str(), "range");
    assert_eq!(classic.members.len(), 2);
    let mut a = classic.members[1].member_assignment.clone();
    assert_eq!(a.get_i16(), 0);
    let a = ConsumerProtocolAssignment::decode(&mut a, 0).unwrap();
    assert_eq!(a.assigned_partitions[0].partitions, vec![1]);
    // `k` is coordinated by broker 1.
    assert_eq!(r.groups[1].error_code, 16);
    let r = b1.send(&req, 6).await.unwrap();
    assert_eq!(r.groups[0].error_code, 16);
    assert_eq!(r.groups[1].error_code, 69);
    assert_eq!(
        r.groups[1].error_message.as_deref(),
        Some("Group k is not a classic group.")
    );
    assert_eq!(r.groups[1].group_state.as_str(), "Dead");
    // Before v6: Dead, no error, no members.
    let r = b1.send(&req, 5).await.unwrap();
    assert_eq!(r.groups[1].error_code, 0);
    assert_eq!(r.groups[1].group_state.as_str(), "Dead");
    assert!(r.groups[1].members.is_empty());
    // Unknown group, at its hashed coordinator.
    let home = c.read(|t| t.coordinator_of("ghost"));
    let mut h = Client::connect(&c.addr(home)).await;
    let r = h
        .send(
            &DescribeGroupsRequest::default().with_groups(vec![gid("ghost")]),
            6,
        )
        .await
        .unwrap();
    assert_eq!(r.groups[0].error_code, 69);
    assert_eq!(
        r.groups[0].error_message.as_deref(),
        Some("Group ghost not found.")
    );
}

#[tokio::test]
async fn consumer_group_describe_answers_as_kafka_4_for_each_group_type() {
    let c = cluster().await;
    let mut b1 = Client::connect(&c.addr(1)).await;
    let req = ConsumerGroupDescribeRequest::default().with_group_ids(vec![gid("k"), gid("c")]);
    let r = b1.send(&req, 1).await.unwrap();
    let k = &r.groups[0];
    assert_eq!(k.error_code, 0);
    assert_eq!(k.group_state.as_str(), "Stable");
    assert_eq!(k.members.len(), 1);
    assert_eq!(k.members[0].client_id.as_str(), "kip848");
    assert_eq!(
        k.members[0].assignment.topic_partitions[0].partitions,
        vec![0, 1]
    );
    assert_eq!(k.members[0].member_type, 1);
    assert_eq!(r.groups[1].error_code, 16, "c is coordinated by broker 0");
    let mut b0 = Client::connect(&c.addr(0)).await;
    let r = b0
        .send(
            &ConsumerGroupDescribeRequest::default().with_group_ids(vec![gid("c")]),
            0,
        )
        .await
        .unwrap();
    assert_eq!(r.groups[0].error_code, 69);
    assert_eq!(
        r.groups[0].error_message.as_deref(),
        Some("Group c is not a consumer group.")
    );
}

#[tokio::test]
async fn offset_fetch_batched_and_per_group() {
    let c = cluster().await;
    let mut b0 = Client::connect(&c.addr(0)).await;
    let group = |g: &str| {
        OffsetFetchRequestGroup::default()
            .with_group_id(gid(g))
            .with_member_epoch(-1)
            .with_topics(None)
    };
    let req =
        OffsetFetchRequest::default().with_groups(vec![group("c"), group("k"), group("ghost0")]);
    c.update(|t| t.put_group("ghost0", Group::classic(0)));
    c.update(|t| t.remove_group("ghost0"));
    let r = b0.send(&req, 9).await.unwrap();
    let offs: Vec<(i32, i64)> = r.groups[0].topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect();
    assert_eq!(offs, vec![(0, 7), (1, 5)]);
    assert_eq!(r.groups[1].error_code, 16);
    let ghost_home = c.read(|t| t.coordinator_of("ghost0"));
    if ghost_home == 0 {
        assert_eq!(r.groups[2].error_code, 0);
        assert!(r.groups[2].topics.is_empty());
    } else {
        assert_eq!(r.groups[2].error_code, 16);
    }
    let r = b0
        .send(
            &OffsetFetchRequest::default()
                .with_group_id(gid("e"))
                .with_topics(None),
            7,
        )
        .await
        .unwrap();
    assert_eq!(r.error_code, 0);
    assert_eq!(r.topics[0].partitions[0].committed_offset, 1);
    let r = b0
        .send(
            &OffsetFetchRequest::default()
                .with_group_id(gid("k"))
                .with_topics(None),
            7,
        )
        .await
        .unwrap();
    assert_eq!(r.error_code, 16);
}

#[tokio::test]
async fn list_offsets_and_fetch_follow_the_leader_and_the_timestamps() {
    let c = cluster().await;
    c.update(|t| t.set_log_start("t", 0, 3));
    let mut b0 = Client::connect(&c.addr(0)).await;
    let lo = |ts: i64| {
        ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(name("t"))
            .with_partitions(
                (0..2)
                    .map(|p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(ts)
                    })
                    .collect(),
            )])
    };
    let r = b0.send(&lo(-1), 7).await.unwrap();
    let ps = &r.topics[0].partitions;
    assert_eq!((ps[0].error_code, ps[0].offset), (0, 20));
    assert_eq!(ps[1].error_code, 6, "p1 is led by broker 1");
    let r = b0.send(&lo(-2), 7).await.unwrap();
    assert_eq!(r.topics[0].partitions[0].offset, 3);
    let r = b0.send(&lo(1_500), 7).await.unwrap();
    assert_eq!(r.topics[0].partitions[0].offset, 10);
    assert_eq!(r.topics[0].partitions[0].timestamp, 2_000);

    let fetch = |offset: i64| {
        FetchRequest::default()
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name("t"))
                .with_partitions(
                    (0..2)
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(1 << 16)
                        })
                        .collect(),
                )])
    };
    let r = b0.send(&fetch(8), 12).await.unwrap();
    let p0 = &r.responses[0].partitions[0];
    assert_eq!(
        (p0.error_code, p0.high_watermark, p0.log_start_offset),
        (0, 20, 3)
    );
    let mut recs = p0.records.clone().unwrap();
    let sets = RecordBatchDecoder::decode_all(&mut recs).unwrap();
    let got: Vec<(i64, i64)> = sets
        .iter()
        .flat_map(|s| s.records.iter().map(|r| (r.offset, r.timestamp)))
        .collect();
    assert_eq!(got.first(), Some(&(8, 1_000)));
    assert_eq!(got.len(), 12);
    assert!(got.contains(&(9, 1_000)) && got.contains(&(10, 2_000)) && got.contains(&(19, 2_000)));
    assert_eq!(r.responses[0].partitions[1].error_code, 6);
    let r = b0.send(&fetch(1), 12).await.unwrap();
    assert_eq!(r.responses[0].partitions[0].error_code, 1);
    assert_eq!(r.responses[0].partitions[0].log_start_offset, 3);
}

/// Accepts the token `good` (principal `alice`) and `other` (principal `bob`), each with a
/// session of `lifetime_ms`.
struct Tokens {
    lifetime_ms: i64,
}

impl Authenticator for Tokens {
    fn mechanisms(&self) -> Vec<String> {
        vec!["OAUTHBEARER".into()]
    }
    fn authenticate(&self, mechanism: &str, auth_bytes: &[u8]) -> Result<AuthOk, AuthError> {
        assert_eq!(mechanism, "OAUTHBEARER");
        let principal = match auth_bytes {
            b"good" => "alice",
            b"other" => "bob",
            _ => {
                return Err(AuthError {
                    error_code: 58,
                    message: "invalid token".into(),
                    server_bytes: b"{\"status\":\"invalid_token\"}".to_vec(),
                })
            }
        };
        Ok(AuthOk {
            principal: principal.into(),
            session_lifetime_ms: self.lifetime_ms,
            server_bytes: Vec::new(),
        })
    }
}

async fn login(cl: &mut Client, token: &[u8]) -> SaslAuthenticateResponse {
    let h = cl
        .send(
            &SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_static_str("OAUTHBEARER")),
            1,
        )
        .await
        .unwrap();
    assert_eq!(h.error_code, 0);
    assert_eq!(h.mechanisms, vec![StrBytes::from_static_str("OAUTHBEARER")]);
    cl.send(
        &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(token)),
        2,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn sasl_is_required_and_logged_with_the_principal() {
    let c = FakeCluster::builder()
        .brokers(1)
        .authenticator(Arc::new(Tokens { lifetime_ms: 0 }))
        .start()
        .await;
    // Before authentication: ApiVersions yes, anything else closes the connection.
    let mut cl = Client::connect(&c.addr(0)).await;
    assert!(cl.send(&ApiVersionsRequest::default(), 3).await.is_some());
    assert!(cl.send(&MetadataRequest::default(), 12).await.is_none());
    // A wrong token: the broker's error and message, then the connection is closed.
    let mut cl = Client::connect(&c.addr(0)).await;
    let r = login(&mut cl, b"bad").await;
    assert_eq!(r.error_code, 58);
    assert_eq!(r.error_message.as_deref(), Some("invalid token"));
    assert_eq!(&r.auth_bytes[..], b"{\"status\":\"invalid_token\"}");
    assert!(cl.send(&MetadataRequest::default(), 12).await.is_none());
    // A good one.
    let mut cl = Client::connect(&c.addr(0)).await;
    let r = login(&mut cl, b"good").await;
    assert_eq!((r.error_code, r.session_lifetime_ms), (0, 0));
    assert!(cl.send(&MetadataRequest::default(), 12).await.is_some());
    // The one after the failed login never reached a connection that was still open.
    let md = c.requests_for(ApiKey::Metadata);
    assert_eq!(md.len(), 2, "{md:#?}");
    assert_eq!(md[0].principal, None);
    assert_eq!(md[1].principal.as_deref(), Some("alice"));
    assert_ne!(md[0].connection, md[1].connection);
    assert_eq!(c.expired_sessions_closed(), 0);
}

#[tokio::test]
async fn an_expired_session_is_closed_and_counted_unless_it_reauthenticates() {
    let lifetime = Duration::from_millis(30);
    let c = FakeCluster::builder()
        .authenticator(Arc::new(Tokens {
            lifetime_ms: lifetime.as_millis() as i64,
        }))
        .start()
        .await;
    // Re-authenticating after expiry keeps the connection.
    let mut cl = Client::connect(&c.addr(0)).await;
    let r = login(&mut cl, b"good").await;
    let at = Instant::now();
    assert_eq!(r.session_lifetime_ms, 30);
    tokio::time::sleep_until((at + lifetime).into()).await;
    assert_eq!(login(&mut cl, b"good").await.error_code, 0);
    assert!(cl.send(&MetadataRequest::default(), 12).await.is_some());
    // Re-authenticating as someone else is refused.
    let r = login(&mut cl, b"other").await;
    assert_eq!(r.error_code, 58);
    assert!(r
        .error_message
        .unwrap()
        .contains("Cannot change principals"));
    // A request past the lifetime closes the connection and counts it.
    let mut cl = Client::connect(&c.addr(0)).await;
    login(&mut cl, b"good").await;
    let at = Instant::now();
    tokio::time::sleep_until((at + lifetime).into()).await;
    assert!(cl.send(&MetadataRequest::default(), 12).await.is_none());
    assert_eq!(c.expired_sessions_closed(), 1);
}

#[tokio::test]
async fn wait_for_sees_a_request_and_drop_stops_the_listeners() {
    let c = cluster().await;
    let addr = c.addr(0);
    let mut cl = Client::connect(&addr).await;
    let send = tokio::spawn(async move {
        cl.send(&ListGroupsRequest::default(), 5).await.unwrap();
        cl
    });
    c.wait_for(Duration::from_secs(5), |log| {
        log.iter().any(|r| r.is(ApiKey::ListGroups))
    })
    .await;
    let mut cl = send.await.unwrap();
    drop(c);
    // Give the runtime a turn to run the aborts, then the open connection and the listener
    // are gone.
    tokio::task::yield_now().await;
    assert!(cl.send(&ListGroupsRequest::default(), 5).await.is_none());
    assert!(TcpStream::connect(&addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_partition_metadata_and_offset_fetch_answer_in_milliseconds() {
    let c = FakeCluster::builder().brokers(3).start().await;
    c.update(|t| {
        for i in 0..1_000 {
            t.add_topic(&format!("topic-{i:04}"), 100);
        }
        for g in 0..20_000 {
            let topic = format!("topic-{:04}", g % 1_000);
            let mut group = Group::classic(g % 3);
            for p in 0..5 {
                group = group.commit(&topic, (g / 1_000 * 5 + p) % 100, 1);
            }
            t.put_group(&format!("group-{g:05}"), group);
        }
    });
    let mut cl = Client::connect(&c.addr(0)).await;
    let started = Instant::now();
    let r = cl.send(&all_topics(), 12).await.unwrap();
    let metadata = started.elapsed();
    assert_eq!(
        r.topics.iter().map(|t| t.partitions.len()).sum::<usize>(),
        100_000
    );
    let groups: Vec<OffsetFetchRequestGroup> = (0..20_000)
        .filter(|g| g % 3 == 0)
        .take(500)
        .map(|g| {
            OffsetFetchRequestGroup::default()
                .with_group_id(gid(&format!("group-{g:05}")))
                .with_member_epoch(-1)
                .with_topics(None)
        })
        .collect();
    let started = Instant::now();
    let r = cl
        .send(&OffsetFetchRequest::default().with_groups(groups), 9)
        .await
        .unwrap();
    let offset_fetch = started.elapsed();
    assert_eq!(r.groups.len(), 500);
    assert!(r
        .groups
        .iter()
        .all(|g| g.error_code == 0 && g.topics[0].partitions.len() == 5));
    eprintln!("fake cluster: Metadata of 100,000 partitions {metadata:?} (client decode included), OffsetFetch of 500 groups {offset_fetch:?}");
    // Generous bounds: debug builds, a shared 2-core machine, the client's decode included.
    assert!(metadata < Duration::from_secs(3), "{metadata:?}");
    assert!(offset_fetch < Duration::from_secs(1), "{offset_fetch:?}");
}
