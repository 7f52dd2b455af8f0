//! The Kafka client against a real tansu broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use medic_e2e::{commit_offsets, create_topic, produce, producer, Tansu};
use medic_kafka::{ClientConfig, FetchOutcome, KafkaClient, Security, Tp};

fn client(bootstrap: &str) -> KafkaClient {
    KafkaClient::new(ClientConfig {
        bootstrap: vec![bootstrap.to_string()],
        security: Security::default(),
        request_timeout: Duration::from_secs(5),
        offset_fetch_batch: 500,
        client_id: "medic-test".into(),
        observer: None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn batched_reads_against_tansu() {
    let tansu = Tansu::start();
    let b = tansu.bootstrap();
    create_topic(&b, "orders", 3);
    let p = producer(&b);
    produce(&p, "orders", 0, 5);
    produce(&p, "orders", 1, 2);
    commit_offsets(&b, "billing", &[("orders", 0, 3), ("orders", 1, 2)]);
    commit_offsets(&b, "audit", &[("orders", 0, 1)]);

    let c = client(&b);
    let md = c.metadata(None).await.unwrap();
    assert_eq!(
        md.brokers.keys().copied().collect::<Vec<_>>(),
        vec![Tansu::NODE_ID]
    );
    let orders = &md.topics["orders"];
    assert_eq!(orders.partitions.len(), 3);
    assert!(orders
        .partitions
        .values()
        .all(|p| p.leader == Tansu::NODE_ID));

    let mut groups = c.list_groups(Tansu::NODE_ID).await.unwrap();
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    let names: Vec<_> = groups.iter().map(|g| g.group.as_str()).collect();
    assert_eq!(names, vec!["audit", "billing"], "{groups:?}");

    let offsets = c
        .offset_fetch(Tansu::NODE_ID, &["billing".into(), "audit".into()])
        .await
        .unwrap();
    eprintln!("{offsets:?}");
    let billing = offsets.iter().find(|g| g.group == "billing").unwrap();
    let mut got = billing.offsets.clone().unwrap();
    got.sort();
    assert_eq!(
        got,
        vec![(Tp::new("orders", 0), 3), (Tp::new("orders", 1), 2)]
    );

    let parts = vec![
        Tp::new("orders", 0),
        Tp::new("orders", 1),
        Tp::new("orders", 2),
    ];
    let mut ends = c.list_offsets(Tansu::NODE_ID, &parts, -1).await.unwrap();
    ends.sort_by(|a, b| a.0.cmp(&b.0));
    let ends: Vec<_> = ends.into_iter().map(|(tp, r)| (tp.partition, r)).collect();
    assert_eq!(ends, vec![(0, Ok(5)), (1, Ok(2)), (2, Ok(0))]);

    let ts = c
        .fetch_timestamps(
            Tansu::NODE_ID,
            &[(Tp::new("orders", 0), vec![3])],
            1 << 20,
            64 << 10,
        )
        .await
        .unwrap();
    eprintln!("{ts:?}");
    assert!(matches!(ts[0].2, FetchOutcome::Timestamp(t) if t > 1_700_000_000_000));
    eprintln!("requests: {:?}", c.stats().by_api());
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_timestamps_for_several_partitions_in_one_request() {
    let tansu = Tansu::start();
    let b = tansu.bootstrap();
    create_topic(&b, "orders", 2);
    create_topic(&b, "payments", 1);
    let p = producer(&b);
    produce(&p, "orders", 0, 5);
    produce(&p, "payments", 0, 4);
    let c = client(&b);
    c.metadata(None).await.unwrap();
    let ts = c
        .fetch_timestamps(
            Tansu::NODE_ID,
            &[
                (Tp::new("orders", 0), vec![3, 1]),
                (Tp::new("payments", 0), vec![0]),
            ],
            4 << 20,
            64 << 10,
        )
        .await
        .unwrap();
    eprintln!("{ts:?}");
    let got: Vec<_> = ts
        .iter()
        .map(|(tp, o, _)| (tp.topic.to_string(), *o))
        .collect();
    let mut got = got;
    got.sort();
    assert_eq!(
        got,
        vec![
            ("orders".into(), 1),
            ("orders".into(), 3),
            ("payments".into(), 0)
        ]
    );
    assert!(
        ts.iter()
            .all(|(_, _, o)| matches!(o, FetchOutcome::Timestamp(_))),
        "{ts:?}"
    );
}
