//! The Kafka client against rdkafka's in-process MockCluster (3 brokers): end offsets are read
//! with one ListOffsets per leader, follow a leader change, and survive a broker going down.
//!
//! (The mock cannot answer OffsetFetch for "all topics", which the agent uses; committed
//! offsets are tested against tansu.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use medic_kafka::{ClientConfig, KafkaClient, Security, Tp};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig as RdConfig;

fn client(bootstrap: &str) -> KafkaClient {
    KafkaClient::new(ClientConfig {
        bootstrap: bootstrap.split(',').map(str::to_string).collect(),
        security: Security::default(),
        request_timeout: Duration::from_secs(2),
        offset_fetch_batch: 100,
        client_id: "medic-test".into(),
        observer: None,
    })
}

fn produce(bootstrap: &str, topic: &str, counts: &[usize]) {
    let p: ThreadedProducer<DefaultProducerContext> = RdConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for (partition, n) in counts.iter().enumerate() {
        for i in 0..*n {
            p.send(
                BaseRecord::<(), str>::to(topic)
                    .partition(partition as i32)
                    .payload(&format!("m{i}")),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        }
    }
    p.flush(Duration::from_secs(10)).unwrap();
}

async fn ends_by_leader(
    c: &KafkaClient,
    topic: &str,
    partitions: i32,
) -> (Vec<(i32, i64)>, usize, Vec<String>) {
    let md = c.metadata(None).await.unwrap();
    let t = &md.topics[topic];
    let mut by_leader: std::collections::BTreeMap<i32, Vec<Tp>> = Default::default();
    for p in 0..partitions {
        by_leader
            .entry(t.partitions[&p].leader)
            .or_default()
            .push(Tp::new(topic, p));
    }
    let before = c.stats().by_api().get("list_offsets").copied().unwrap_or(0);
    let mut ends = Vec::new();
    let mut errors = Vec::new();
    for (leader, tps) in &by_leader {
        match c.list_offsets(*leader, tps, -1).await {
            Ok(list) => ends.extend(list.into_iter().map(|(tp, r)| (tp.partition, r.unwrap()))),
            Err(e) => errors.push(format!("broker {leader}: {e}")),
        }
    }
    ends.sort();
    let after = c.stats().by_api().get("list_offsets").copied().unwrap_or(0);
    ((ends), (after - before) as usize, errors)
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_change_and_broker_down() {
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic("orders", 6, 3).unwrap();
    let b = mock.bootstrap_servers();
    produce(&b, "orders", &[1, 2, 3, 4, 5, 6]);
    let c = client(&b);

    let md = c.metadata(None).await.unwrap();
    assert_eq!(md.brokers.len(), 3);
    let leaders: std::collections::BTreeSet<i32> = md.topics["orders"]
        .partitions
        .values()
        .map(|p| p.leader)
        .collect();
    let (ends, requests, errors) = ends_by_leader(&c, "orders", 6).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(ends, vec![(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)]);
    assert_eq!(
        requests,
        leaders.len(),
        "one ListOffsets per leader, not per partition"
    );

    // Move every partition's leadership to broker 2: the same offsets, in one request.
    for p in 0..6 {
        mock.partition_leader("orders", p, Some(2)).unwrap();
    }
    let md = c.metadata(None).await.unwrap();
    assert!(
        md.topics["orders"]
            .partitions
            .values()
            .all(|p| p.leader == 2),
        "{md:?}"
    );
    let (ends, requests, errors) = ends_by_leader(&c, "orders", 6).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(ends, vec![(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)]);
    assert_eq!(requests, 1);

    // Broker 2 goes down: its request fails with a clear error, metadata still comes from the
    // others, and the partitions it leads cannot be read this round.
    mock.broker_down(2).unwrap();
    let err = c
        .list_offsets(2, &[Tp::new("orders", 0)], -1)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("127.0.0.1") || err.contains("localhost"),
        "{err}"
    );
    let md = c.metadata(None).await.unwrap();
    assert_eq!(
        md.brokers.keys().copied().collect::<Vec<_>>(),
        vec![1, 3],
        "metadata from the live brokers"
    );

    // Back up: reads work again through a new connection.
    mock.broker_up(2).unwrap();
    let (ends, _, errors) = ends_by_leader(&c, "orders", 6).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(ends.len(), 6);
}
