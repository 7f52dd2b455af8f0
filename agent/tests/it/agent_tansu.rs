//! medic-agent against a real tansu broker: exact lag values, filters, a group that goes empty
//! and comes back, a topic deleted under a group.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use medic_agent::lag::{GroupReport, LagSecondsSource};
use medic_e2e::{commit_offsets, consume_and_commit, delete_topic, produce, producer, Tansu};

use crate::support::{agent, topic_with_records};

fn group<'a>(groups: &'a [GroupReport], name: &str) -> &'a GroupReport {
    groups.iter().find(|g| g.group == name).unwrap_or_else(|| {
        panic!(
            "group {name} missing from {:?}",
            groups.iter().map(|g| &g.group).collect::<Vec<_>>()
        )
    })
}

/// (topic, partition) -> (committed, end, lag) for one group.
fn lags(g: &GroupReport) -> Vec<(String, i32, i64, i64, i64)> {
    g.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.topic.clone(),
                    p.partition,
                    p.committed_offset,
                    p.end_offset,
                    p.lag,
                )
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_lag_for_known_offsets() {
    let tansu = Tansu::start();
    let b = tansu.bootstrap();
    let p = producer(&b);
    topic_with_records(&b, &p, "orders", &[5, 2, 0]);
    topic_with_records(&b, &p, "payments", &[4]);
    commit_offsets(
        &b,
        "billing",
        &[("orders", 0, 3), ("orders", 1, 2), ("payments", 0, 0)],
    );
    commit_offsets(&b, "audit", &[("orders", 0, 1)]);

    let mut a = agent(&b, &[]);
    a.collect_once().await;
    let snap = a.snapshot.load();
    assert_eq!(snap.last_error, None);
    let r = &snap.report;
    assert_eq!(
        lags(group(&r.groups, "billing")),
        vec![
            ("orders".into(), 0, 3, 5, 2),
            ("orders".into(), 1, 2, 2, 0),
            ("payments".into(), 0, 0, 4, 4),
        ],
        "orders/2 has no commit and is not reported"
    );
    assert_eq!(
        lags(group(&r.groups, "audit")),
        vec![("orders".into(), 0, 1, 5, 4)]
    );
    let billing = group(&r.groups, "billing");
    assert_eq!((billing.topics[0].lag, billing.topics[0].lag_max), (2, 2));
    // No history yet: the lagging partitions' ages come from the records themselves.
    let p0 = &billing.topics[0].partitions[0];
    assert_eq!(p0.lag_seconds_source, LagSecondsSource::RecordTimestamp);
    let age = p0.lag_seconds.unwrap();
    assert!((0.0..30.0).contains(&age), "{age}");
    assert_eq!(billing.topics[0].partitions[1].lag_seconds, Some(0.0));
    // Every partition's end offset is reported, committed or not.
    let ends: Vec<_> = r
        .topic_end_offsets
        .iter()
        .map(|t| (t.topic.as_str(), t.partitions.clone()))
        .collect();
    assert_eq!(
        ends,
        vec![
            ("orders", vec![(0, 5), (1, 2), (2, 0)]),
            ("payments", vec![(0, 4)])
        ]
    );
    assert!(snap.lag_text.contains("kafka_consumergroup_lag{cluster=\"t\",consumergroup=\"audit\",topic=\"orders\",partition=\"0\"} 4\n"));

    // More records: lag follows exactly.
    produce(&p, "orders", 0, 3);
    commit_offsets(&b, "audit", &[("orders", 0, 8)]);
    a.collect_once().await;
    let snap = a.snapshot.load();
    assert_eq!(
        lags(group(&snap.report.groups, "billing"))[0],
        ("orders".into(), 0, 3, 8, 5)
    );
    assert_eq!(
        lags(group(&snap.report.groups, "audit")),
        vec![("orders".into(), 0, 8, 8, 0)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_and_deny_filters() {
    let tansu = Tansu::start();
    let b = tansu.bootstrap();
    topic_with_records(&b, &producer(&b), "t", &[2]);
    for g in ["billing-a", "billing-test", "audit", "other"] {
        commit_offsets(&b, g, &[("t", 0, 1)]);
    }
    let mut a = agent(
        &b,
        &["--group-allow", "^billing-,^audit$", "--group-deny=-test$"],
    );
    a.collect_once().await;
    let snap = a.snapshot.load();
    let names: Vec<_> = snap
        .report
        .groups
        .iter()
        .map(|g| g.group.as_str())
        .collect();
    assert_eq!(names, vec!["audit", "billing-a"]);
    assert!(!snap.lag_text.contains("consumergroup=\"other\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_that_goes_empty_keeps_its_lag_and_comes_back() {
    let tansu = Tansu::start();
    let b = tansu.bootstrap();
    let p = producer(&b);
    topic_with_records(&b, &p, "events", &[4]);
    let read = consume_and_commit(&b, "workers", "events", 4, Duration::from_secs(30));
    assert_eq!(read, 4, "consumer read {read} of 4 records");

    // The consumer left: the group is empty but its commits stay, and new records are lag.
    produce(&p, "events", 0, 6);
    let mut a = agent(&b, &[]);
    a.collect_once().await;
    let snap = a.snapshot.load();
    let g = group(&snap.report.groups, "workers");
    // tansu reports every group's state as "Unknown"; Kafka would say "Empty".
    assert_ne!(g.state, "Stable");
    assert_eq!(lags(g), vec![("events".into(), 0, 4, 10, 6)]);

    // It comes back and catches up.
    let read = consume_and_commit(&b, "workers", "events", 6, Duration::from_secs(30));
    assert_eq!(read, 6);
    a.collect_once().await;
    let snap = a.snapshot.load();
    assert_eq!(
        lags(group(&snap.report.groups, "workers")),
        vec![("events".into(), 0, 10, 10, 0)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_deleted_under_a_group_drops_its_series() {
    let tansu = Tansu::start();
    let b = tansu.bootstrap();
    let p = producer(&b);
    topic_with_records(&b, &p, "keep", &[3]);
    topic_with_records(&b, &p, "doomed", &[3, 0]);
    commit_offsets(
        &b,
        "g",
        &[("keep", 0, 1), ("doomed", 0, 1), ("doomed", 1, 0)],
    );
    let mut a = agent(&b, &[]);
    a.collect_once().await;
    assert_eq!(lags(group(&a.snapshot.load().report.groups, "g")).len(), 3);

    delete_topic(&b, "doomed");
    a.collect_once().await;
    let snap = a.snapshot.load();
    assert_eq!(snap.last_error, None);
    assert_eq!(
        lags(group(&snap.report.groups, "g")),
        vec![("keep".into(), 0, 1, 3, 2)]
    );
    assert!(
        !snap.lag_text.contains("topic=\"doomed\""),
        "{}",
        snap.lag_text
    );
    // tansu drops a deleted topic's commits with the topic (and refuses commits on unknown
    // topics), so nothing is left to skip here. Kafka keeps them until the group's offsets
    // expire; the agent then counts them in medic_agent_committed_offsets_skipped
    // {reason="topic_missing"} instead of reporting lag for them.
    assert_eq!(snap.report.skipped.topic_missing, 0);
    assert!(snap.lag_text.contains(
        "medic_agent_committed_offsets_skipped{cluster=\"t\",reason=\"topic_missing\"} 0\n"
    ));
}
