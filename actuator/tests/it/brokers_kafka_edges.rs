//! The `kafka` backend at its edges: a real broker without the admin APIs (tansu), a broker
//! that never answers, a reassignment that outlives its time-out, and rdkafka's MockCluster
//! for the metadata side.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

use crate::support;
// Only the broker tests use the fake Kafka broker, so it is not part of `support`.
use crate::support::fake_kafka;

use std::time::{Duration, Instant};

use fake_kafka::{FakeKafka, Req};
use medic_actuator::backend::kafka::KafkaBackend;
use medic_actuator::backend::remediation::{BackendError, RemediationBackend, Request};
use medic_actuator::broker::policy::KafkaConnection;
use medic_actuator::broker::{plan_moves, Limits, PlanKind};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use serde_json::Value;
use support::harness::*;
use support::*;

const HOUR_AGO: &str = "2027-01-15T07:00:00Z";

fn conn(bootstrap: &str, timeout: &str) -> KafkaConnection {
    serde_yaml::from_str(&format!(
        "{{bootstrap_servers: ['{bootstrap}'], request_timeout: {timeout}}}"
    ))
    .unwrap()
}

fn policy(bootstrap: &str, extra: &str) -> String {
    format!(
        "  - {{cluster: prod, backend: kafka, kafka: {{bootstrap_servers: ['{bootstrap}'], request_timeout: 2s}}, settle_time: 0s, poll_interval: 20ms{extra}}}\n"
    )
}

fn alert(fp: &str, name: &str, broker: &str) -> Vec<u8> {
    payload(
        "firing",
        vec![broker_alert_at(
            "firing", fp, name, "prod", broker, HOUR_AGO,
        )],
    )
}

const LIMITS: Limits = Limits {
    max_moves_per_broker: 5,
    max_leader_moves: 1000,
    disk_target_ratio: 0.75,
};

#[tokio::test]
async fn tansu_without_the_admin_apis_is_a_clear_audited_failure_not_a_hang() {
    let tansu = medic_e2e::Tansu::start();
    let files = Files::new();
    files.add_brokers(&policy(&tansu.bootstrap(), ""));
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let t0 = Instant::now();
    let (s, b) = h
        .alerts(&alert(
            "o1",
            "KafkaBrokerOverloaded",
            &medic_e2e::Tansu::NODE_ID.to_string(),
        ))
        .await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["results"][0]["outcome"], "failed", "{b}");
    assert_eq!(b["results"][0]["reason"], "backend_unsupported");
    let r = &audit_lines(&files.audit_path())[0];
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.starts_with("cannot read the cluster's state, so nothing starts: not supported: ")
            && msg.ends_with(&format!(
                "{} does not offer AlterPartitionReassignments, ElectLeaders (from its ApiVersions): the kafka backend cannot move partitions on this cluster",
                tansu.bootstrap()
            )),
        "{msg}"
    );

    // The write side too: AlterPartitionReassignments is refused as unsupported at once.
    let backend = KafkaBackend::new(&conn(&tansu.bootstrap(), "2s"), None).unwrap();
    let (mut model, _) = backend.model(false).await.unwrap();
    assert_eq!(model.brokers.keys().copied().collect::<Vec<_>>(), vec![111]);
    // A made-up second broker, so that there is something to plan.
    model
        .brokers
        .insert(5, medic_actuator::broker::Broker::live(None));
    model.partitions.push(medic_actuator::broker::Partition {
        topic: "x".into(),
        partition: 0,
        replicas: vec![111],
        isr: vec![111],
        leader: 111,
        sizes: Default::default(),
        dirs: Default::default(),
    });
    let plan = plan_moves(&model, 111, None, &LIMITS);
    assert_eq!(plan.changes.len(), 1);
    let req = Request {
        kind: PlanKind::MoveReplicas,
        broker: 111,
        plan: Some(plan),
        exclude: vec![],
        reason: "test".into(),
        limits: LIMITS,
        throttle: None,
    };
    let t0 = Instant::now();
    let err = backend.start(&req).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3));
    let BackendError::Unsupported(m) = &err else {
        panic!("{err:?}")
    };
    assert!(
        m.contains("does not support alter_partition_reassignments"),
        "{m}"
    );
}

#[tokio::test]
async fn a_broker_that_never_answers_times_out_audited() {
    let fake = FakeKafka::start(&[(1, Some("a")), (2, Some("b"))]).await;
    fake.state.lock().unwrap().silent = true;
    let files = Files::new();
    files.add_brokers(&format!(
        "  - {{cluster: prod, backend: kafka, kafka: {{bootstrap_servers: ['{}'], request_timeout: 300ms}}, settle_time: 0s}}\n",
        fake.bootstrap()
    ));
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let t0 = Instant::now();
    let (s, b) = h.alerts(&alert("o1", "KafkaBrokerOverloaded", "1")).await;
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(s, 200);
    assert_eq!(b["results"][0]["outcome"], "failed", "{b}");
    assert_eq!(b["results"][0]["reason"], "backend_unavailable");
    let msg = audit_lines(&files.audit_path())[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("timed out after 300ms waiting for api_versions"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_reassignment_past_its_time_out_is_cancelled_and_the_throttle_removed() {
    let fake = FakeKafka::start(&[
        (1, Some("a")),
        (2, Some("b")),
        (3, Some("a")),
        (4, Some("b")),
    ])
    .await;
    fake.add_partition("t", 0, &[1, 2], &[1, 2], 1, 10);
    fake.add_partition("t", 1, &[2, 1], &[2, 1], 2, 10);
    fake.kill(2);
    let files = Files::new();
    files.add_brokers(&policy(
        &fake.bootstrap(),
        ", reassignment_timeout: 200ms, throttle_bytes_per_second: 5000",
    ));
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let (_, b) = h.alerts(&alert("d2", "KafkaBrokerDown", "2")).await;
    assert_eq!(b["results"][0]["outcome"], "applied", "{b}");
    let mut done: Option<Value> = None;
    for _ in 0..300 {
        done = audit_lines(&files.audit_path())
            .into_iter()
            .find(|r| r["phase"] == "completed");
        if done.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let done = done.expect("a completion record");
    assert_eq!(done["outcome"], "failed", "{done}");
    assert_eq!(done["reason"], "reassignment_timeout");
    let msg = done["message"].as_str().unwrap();
    assert!(
        msg.ends_with("cancelled the reassignment of 2 partitions; throttle removed"),
        "{msg}"
    );
    let alters: Vec<Vec<(String, i32, Option<Vec<i32>>)>> = fake
        .writes()
        .into_iter()
        .filter_map(|(_, r)| match r {
            Req::Alter(a) => Some(
                a.topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(move |p| {
                            (
                                t.name.0.to_string(),
                                p.partition_index,
                                p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect()),
                            )
                        })
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(alters.len(), 2, "{alters:?}");
    let mut cancel = alters[1].clone();
    cancel.sort();
    assert_eq!(
        cancel,
        vec![("t".to_string(), 0, None), ("t".to_string(), 1, None)],
        "Kafka's cancel: the same partitions with no replicas"
    );
    assert!(fake.state.lock().unwrap().ongoing.is_empty());
    assert_eq!(fake.replicas("t", 0), vec![1, 2], "nothing changed");
}

#[tokio::test]
async fn mock_cluster_metadata_becomes_the_model() {
    let mock = MockCluster::new(3).unwrap();
    for (id, rack) in [(1, "a"), (2, "b"), (3, "c")] {
        mock.broker_rack(id, rack).unwrap();
    }
    mock.create_topic("mc", 4, 3).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let backend =
        KafkaBackend::new(&conn(bootstrap.split(',').next().unwrap(), "5s"), None).unwrap();
    let (model, _) = backend.model(false).await.unwrap();

    // What rdkafka itself sees.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let md = tokio::task::spawn_blocking(move || {
        consumer
            .fetch_metadata(Some("mc"), Duration::from_secs(5))
            .unwrap()
    })
    .await
    .unwrap();
    let racks: Vec<(i32, Option<String>, bool)> = model
        .brokers
        .iter()
        .map(|(id, b)| (*id, b.rack.clone(), b.alive))
        .collect();
    assert_eq!(
        racks,
        vec![
            (1, Some("a".into()), true),
            (2, Some("b".into()), true),
            (3, Some("c".into()), true)
        ]
    );
    let topic = &md.topics()[0];
    assert_eq!(topic.partitions().len(), 4);
    for p in topic.partitions() {
        let ours = model
            .partitions
            .iter()
            .find(|x| x.topic == "mc" && x.partition == p.id())
            .unwrap();
        assert_eq!(ours.replicas, p.replicas().to_vec(), "mc-{}", p.id());
        assert_eq!(ours.isr, p.isr().to_vec());
        assert_eq!(ours.leader, p.leader());
        assert_eq!(ours.replicas.len(), 3);
    }
    // A leadership plan from this model is well-formed for every broker.
    for b in 1..=3 {
        let plan = medic_actuator::broker::plan_leadership(&model, b, &LIMITS);
        assert!(medic_actuator::broker::verify(&model, &plan, &LIMITS).is_ok());
        assert_eq!(plan.changes.len(), model.leadership_of(b));
    }
    // The mock lacks the admin APIs: observing is refused clearly, never guessed.
    let err = backend.observe(false).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Unsupported(m) if m.ends_with(" does not offer ListPartitionReassignments, AlterPartitionReassignments, ElectLeaders, IncrementalAlterConfigs (from its ApiVersions): the kafka backend cannot move partitions on this cluster")),
        "{err:?}"
    );
}
