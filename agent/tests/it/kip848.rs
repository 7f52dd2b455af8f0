//! Kafka 4 consumer groups (KIP-848) against the protocol-level fake cluster: the real
//! medic-agent binary in cluster mode over two coordinators, each with classic and consumer
//! groups. Checks the members and types on /metrics and /api/v1/groups, and the exact describe
//! requests sent: per coordinator and collection, one DescribeGroups for its classic groups and
//! one ConsumerGroupDescribe for its consumer groups.

use std::collections::BTreeMap;
use std::time::Duration;

use medic_e2e::fake_broker::{ApiKey, FakeCluster, Group, Member, RequestRecord};
use medic_e2e::{get, sample, wait_until, Server};

use crate::support::AgentProcess;

/// Two brokers; `orders` with 4 partitions (2 per leader) and 10 records each. Broker 0
/// coordinates `classic-a` (2 members) and `kip-a` (3 members); broker 1 `classic-b` (1
/// member), `kip-b` (1 member) and `kip-idle` (a consumer group with no member, Empty).
fn mixed_cluster(rt: &tokio::runtime::Runtime) -> FakeCluster {
    let cluster = rt.block_on(FakeCluster::builder().brokers(2).start());
    let now_ms = (medic_e2e::http::unix_now() * 1000.0) as i64;
    cluster.update(|t| {
        t.add_topic("orders", 4);
        for p in 0..4 {
            t.append("orders", p, 10, now_ms - 60_000);
        }
        t.put_group(
            "classic-a",
            Group::classic(0)
                .member(Member::new("ca-1").assign("orders", &[0, 1]))
                .member(Member::new("ca-2").assign("orders", &[2, 3]))
                .commit("orders", 0, 4),
        );
        t.put_group(
            "classic-b",
            Group::classic(1)
                .member(Member::new("cb-1").assign("orders", &[0, 1, 2, 3]))
                .commit("orders", 1, 9),
        );
        let mut kip_a = Group::consumer(0).commit("orders", 2, 10);
        for (i, p) in [0, 1, 2].into_iter().enumerate() {
            kip_a = kip_a.member(Member::new(&format!("ka-{i}")).assign("orders", &[p]));
        }
        t.put_group("kip-a", kip_a);
        t.put_group(
            "kip-b",
            Group::consumer(1)
                .member(Member::new("kb-1").assign("orders", &[3]))
                .commit("orders", 3, 1),
        );
        t.put_group("kip-idle", Group::consumer(1).commit("orders", 0, 0));
    });
    cluster
}

/// The real medic-agent in cluster mode over the fake cluster, listening.
fn start_agent(bootstrap: &str) -> (Server, u16) {
    AgentProcess::new(bootstrap)
        .cluster("fake")
        .interval("200ms")
        .request_timeout("2s")
        .start()
}

fn members(group: &str) -> String {
    format!("kafka_consumergroup_members{{cluster=\"fake\",consumergroup=\"{group}\"}}")
}

fn info(group: &str, state: &str, ty: &str) -> String {
    format!(
        "kafka_consumergroup_info{{cluster=\"fake\",consumergroup=\"{group}\",state=\"{state}\",type=\"{ty}\",protocol_type=\"consumer\"}}"
    )
}

/// Requests per collection: the log cut at each Metadata request (the first request of a
/// collection), counted by (broker, API). Only collections followed by another are complete.
fn per_collection(log: &[RequestRecord]) -> Vec<BTreeMap<(i32, i16), usize>> {
    let mut out: Vec<BTreeMap<(i32, i16), usize>> = Vec::new();
    for r in log {
        if r.is(ApiKey::Metadata) {
            out.push(BTreeMap::new());
        }
        if let Some(cur) = out.last_mut() {
            *cur.entry((r.broker, r.api_key)).or_default() += 1;
        }
    }
    out.pop();
    out
}

#[test]
fn classic_and_consumer_groups_on_two_coordinators() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = mixed_cluster(&rt);
    let (agent, port) = start_agent(&cluster.bootstrap());

    let text = wait_until(Duration::from_secs(20), "members of every group", || {
        let t = get(port, "/metrics").body;
        ["classic-a", "classic-b", "kip-a", "kip-b", "kip-idle"]
            .iter()
            .all(|g| sample(&t, &members(g)).is_some())
            .then_some(t)
    });
    let got = |g: &str| sample(&text, &members(g));
    assert_eq!(got("classic-a"), Some(2.0), "{}", agent.describe());
    assert_eq!(got("classic-b"), Some(1.0));
    assert_eq!(got("kip-a"), Some(3.0), "a KIP-848 group's members: {text}");
    assert_eq!(got("kip-b"), Some(1.0));
    assert_eq!(got("kip-idle"), Some(0.0));
    for (g, state, ty) in [
        ("classic-a", "Stable", "classic"),
        ("classic-b", "Stable", "classic"),
        ("kip-a", "Stable", "consumer"),
        ("kip-b", "Stable", "consumer"),
        ("kip-idle", "Empty", "consumer"),
    ] {
        assert_eq!(sample(&text, &info(g, state, ty)), Some(1.0), "{g}: {text}");
    }
    // The lag of a consumer group is there as for a classic one.
    let lag = "kafka_consumergroup_lag{cluster=\"fake\",consumergroup=\"kip-a\",topic=\"orders\",partition=\"2\"}";
    assert_eq!(sample(&text, lag), Some(0.0));
    let lag = "kafka_consumergroup_lag{cluster=\"fake\",consumergroup=\"kip-b\",topic=\"orders\",partition=\"3\"}";
    assert_eq!(sample(&text, lag), Some(9.0));

    let json = get(port, "/api/v1/groups?group=kip-a").json();
    assert_eq!(json["groups"][0]["type"], "consumer", "{json}");
    assert_eq!(json["groups"][0]["members"], 3);
    assert_eq!(json["groups"][0]["protocol_type"], "consumer");

    // Exactly one DescribeGroups and one ConsumerGroupDescribe per coordinator and collection,
    // each carrying that coordinator's groups of its type (a misrouted one would come back
    // NOT_COORDINATOR and leave its members absent, checked above).
    rt.block_on(cluster.wait_for(Duration::from_secs(20), |log| {
        per_collection(log).len() >= 3
    }));
    let log = cluster.requests();
    let windows = per_collection(&log);
    for (i, w) in windows.iter().enumerate() {
        for broker in [0, 1] {
            for api in [
                ApiKey::ListGroups,
                ApiKey::DescribeGroups,
                ApiKey::ConsumerGroupDescribe,
            ] {
                assert_eq!(
                    w.get(&(broker, api as i16)).copied().unwrap_or(0),
                    1,
                    "collection {i}, broker {broker}, {api:?}: {w:?}"
                );
            }
        }
    }
    let versions: Vec<i16> = log
        .iter()
        .filter(|r| r.is(ApiKey::DescribeGroups) || r.is(ApiKey::ConsumerGroupDescribe))
        .map(|r| r.version)
        .collect();
    assert!(versions.iter().all(|v| *v == 6 || *v == 1), "{versions:?}");
    assert!(log
        .iter()
        .all(|r| r.client_id.as_deref() == Some("medic-agent")));
}

#[test]
fn a_broker_without_consumer_group_describe_is_a_stage_error_not_a_failed_collection() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = mixed_cluster(&rt);
    // A broker that lists KIP-848 groups but cannot describe them.
    cluster.update(|t| t.remove_api(ApiKey::ConsumerGroupDescribe));
    let (agent, port) = start_agent(&cluster.bootstrap());
    let errors = "medic_agent_collection_errors_total{cluster=\"fake\",stage=\"describe_groups\"}";
    let text = wait_until(Duration::from_secs(20), "a describe_groups error", || {
        let t = get(port, "/metrics").body;
        (sample(&t, errors).unwrap_or(0.0) >= 2.0 && sample(&t, &members("classic-a")).is_some())
            .then_some(t)
    });
    // Classic groups are still described, consumer groups have lag but no members series.
    assert_eq!(
        sample(&text, &members("classic-a")),
        Some(2.0),
        "{}",
        agent.describe()
    );
    assert_eq!(sample(&text, &members("kip-a")), None, "{text}");
    let lag = "kafka_consumergroup_lag{cluster=\"fake\",consumergroup=\"kip-b\",topic=\"orders\",partition=\"3\"}";
    assert_eq!(sample(&text, lag), Some(9.0));
    assert_eq!(
        sample(&text, &info("kip-a", "Stable", "consumer")),
        Some(1.0)
    );
    let ok = "medic_agent_collections_total{cluster=\"fake\",result=\"success\"}";
    assert!(sample(&text, ok).unwrap_or(0.0) >= 1.0, "{text}");
    let health = get(port, "/healthz");
    assert_eq!(health.status, 200, "{}", health.body);
    assert!(
        agent.log().contains("ConsumerGroupDescribe")
            || agent.log().contains("consumer_group_describe"),
        "the log names the unsupported API: {}",
        agent.log()
    );
    // And no ConsumerGroupDescribe was sent to a broker that does not offer it.
    assert!(cluster
        .requests_for(ApiKey::ConsumerGroupDescribe)
        .is_empty());
}
