//! ListGroups with group types, DescribeGroups and ConsumerGroupDescribe (KIP-848): against the
//! protocol-level fake cluster for both group types and older brokers, and against tansu with
//! real rdkafka consumers in a classic group.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use medic_e2e::fake_broker::{ApiKey, FakeCluster, Group, Member};
use medic_e2e::{create_topic, Tansu};
use medic_kafka::{ClientConfig, GroupType, KafkaClient, KafkaError, Security};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig as RdConfig;

fn client(bootstrap: &str) -> KafkaClient {
    KafkaClient::new(ClientConfig {
        bootstrap: bootstrap.split(',').map(str::to_string).collect(),
        security: Security::default(),
        request_timeout: Duration::from_secs(5),
        offset_fetch_batch: 100,
        client_id: "medic-test".into(),
        observer: None,
    })
}

/// Broker 0 coordinates `classic` (2 members) and `kip` (3 members, KIP-848); broker 1 `kip-1`.
async fn fake() -> FakeCluster {
    let c = FakeCluster::builder().brokers(2).start().await;
    c.update(|t| {
        t.add_topic("t", 3);
        t.put_group(
            "classic",
            Group::classic(0)
                .member(Member::new("c1").client_id("app-1").assign("t", &[0]))
                .member(Member::new("c2").assign("t", &[1, 2])),
        );
        t.put_group(
            "kip",
            Group::consumer(0)
                .state("Reconciling")
                .member(Member::new("k1"))
                .member(Member::new("k2"))
                .member(Member::new("k3")),
        );
        t.put_group("kip-1", Group::consumer(1));
    });
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn list_groups_reports_each_groups_type_and_filters_by_type() {
    let c = fake().await;
    let k = client(&c.bootstrap());
    k.metadata(None).await.unwrap();
    let listed = k.list_groups(0).await.unwrap();
    let got: Vec<(&str, &GroupType, &str, bool)> = listed
        .iter()
        .map(|g| {
            (
                g.group.as_str(),
                &g.group_type,
                g.state.as_str(),
                g.type_reported,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("classic", &GroupType::Classic, "Stable", true),
            ("kip", &GroupType::Consumer, "Reconciling", true)
        ]
    );
    let only = k
        .list_groups_filtered(&c.addr(0), &[GroupType::Consumer])
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].group, "kip");
    // The filter went to the broker (v5 types_filter), not only applied here.
    let lg = c.requests_for(ApiKey::ListGroups);
    assert!(lg.iter().all(|r| r.version == 5), "{lg:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_broker_reports_no_type_and_every_group_counts_as_classic() {
    let c = fake().await;
    c.update(|t| {
        t.set_api_versions(ApiKey::ListGroups, 0, 4);
        t.remove_group("kip");
    });
    let k = client(&c.bootstrap());
    k.metadata(None).await.unwrap();
    let listed = k.list_groups(0).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].group_type, GroupType::Classic);
    assert!(!listed[0].type_reported);
    assert_eq!(c.requests_for(ApiKey::ListGroups)[0].version, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_group_type_is_described_by_its_own_api_in_one_request() {
    let c = fake().await;
    let k = client(&c.bootstrap());
    k.metadata(None).await.unwrap();
    let classic = k
        .describe_groups(0, &["classic".into(), "kip".into(), "kip-1".into()])
        .await
        .unwrap();
    let d = classic[0].described.as_ref().unwrap();
    assert_eq!(
        (d.state.as_str(), d.protocol_type.as_str()),
        ("Stable", "consumer")
    );
    let ids: Vec<(&str, &str)> = d
        .members
        .iter()
        .map(|m| (m.member_id.as_str(), m.client_id.as_str()))
        .collect();
    assert_eq!(ids, vec![("c1", "app-1"), ("c2", "consumer")]);
    // Kafka 4 on DescribeGroups v6: a consumer group is not a classic group; another
    // coordinator's group is NOT_COORDINATOR.
    assert_eq!(
        classic[1].described,
        Err("GroupIdNotFound: Group kip is not a classic group.".to_string())
    );
    assert_eq!(classic[2].described, Err("NotCoordinator".to_string()));

    let consumer = k
        .consumer_group_describe(0, &["kip".into(), "classic".into()])
        .await
        .unwrap();
    let d = consumer[0].described.as_ref().unwrap();
    assert_eq!(d.state, "Reconciling");
    assert_eq!(d.members.len(), 3);
    assert_eq!(
        consumer[1].described,
        Err("GroupIdNotFound: Group classic is not a consumer group.".to_string())
    );
    // One request each, at the newest versions both sides speak.
    let dg = c.requests_for(ApiKey::DescribeGroups);
    let cgd = c.requests_for(ApiKey::ConsumerGroupDescribe);
    assert_eq!((dg.len(), dg[0].version), (1, 6));
    assert_eq!((cgd.len(), cgd[0].version), (1, 1));
    // Nothing to describe: no request.
    assert!(k.consumer_group_describe(1, &[]).await.unwrap().is_empty());
    assert_eq!(c.requests_for(ApiKey::ConsumerGroupDescribe).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_without_consumer_group_describe_is_an_unsupported_error() {
    let c = fake().await;
    c.update(|t| t.remove_api(ApiKey::ConsumerGroupDescribe));
    let k = client(&c.bootstrap());
    k.metadata(None).await.unwrap();
    let err = k
        .consumer_group_describe(0, &["kip".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, KafkaError::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("consumer_group_describe"), "{err}");
}

/// tansu: ListGroups and DescribeGroups of a group with live rdkafka consumers.
#[tokio::test(flavor = "multi_thread")]
async fn tansu_describes_a_classic_group_with_its_live_consumers() {
    let tansu = Tansu::start();
    let b = tansu.bootstrap();
    create_topic(&b, "events", 3);
    let p = medic_e2e::producer(&b);
    for part in 0..3 {
        medic_e2e::produce(&p, "events", part, 5);
    }
    let consumers: Vec<BaseConsumer> = (0..2)
        .map(|i| {
            let c: BaseConsumer = RdConfig::new()
                .set("bootstrap.servers", &b)
                .set("group.id", "live")
                .set("client.id", format!("live-{i}"))
                .set("session.timeout.ms", "10000")
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            c.subscribe(&["events"]).unwrap();
            c
        })
        .collect();
    let k = client(&b);
    let md = k.metadata(None).await.unwrap();
    let broker = *md.brokers.keys().next().unwrap();
    // Poll the consumers until both hold an assignment (the group is formed), then describe.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let described = loop {
        // tansu lists a group once it has committed offsets: commit what each one read.
        for c in &consumers {
            if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
                let _ = c.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
            }
        }
        let listed = k.list_groups(broker).await.unwrap();
        let live = listed.iter().find(|g| g.group == "live");
        if let Some(g) = live {
            assert_eq!(g.group_type, GroupType::Classic, "{g:?}");
            let d = k.describe_groups(broker, &["live".into()]).await.unwrap();
            if let Ok(d) = &d[0].described {
                if d.members.len() == 2 {
                    break d.clone();
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the group never had 2 members; last listing: {listed:?}; tansu log:\n{}",
            tansu.server.log()
        );
    };
    // Two distinct members (tansu leaves client_id empty in DescribeGroups, so ids it is).
    let ids: std::collections::BTreeSet<&str> = described
        .members
        .iter()
        .map(|m| m.member_id.as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{described:?}");
    assert!(ids.iter().all(|i| !i.is_empty()), "{described:?}");
    assert_eq!(described.protocol_type, "consumer");
}
