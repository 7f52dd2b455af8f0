//! The `kafka` backend at the protocol level: a fake cluster (one loopback listener per broker)
//! decodes every request with kafka-protocol; the tests assert the exact requests sent, the
//! cluster state afterwards, the audit records and the webhook answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

use crate::support;
// Only the broker tests use the fake Kafka broker, so it is not part of `support`.
use crate::support::fake_kafka;

use std::time::Duration;

use fake_kafka::{FakeKafka, Req};
use kafka_protocol::messages::IncrementalAlterConfigsRequest;
use serde_json::Value;
use support::harness::*;
use support::*;

const HOUR_AGO: &str = "2027-01-15T07:00:00Z";

fn policy(fake: &FakeKafka, extra: &str) -> String {
    format!(
        "  - {{cluster: prod, backend: kafka, kafka: {{bootstrap_servers: ['{}'], request_timeout: 2s}}, settle_time: 0s, poll_interval: 20ms, reassignment_timeout: 20s{extra}}}\n",
        fake.bootstrap()
    )
}

fn alert(status: &str, fp: &str, name: &str, broker: &str) -> Value {
    broker_alert_at(status, fp, name, "prod", broker, HOUR_AGO)
}

/// Wait (real time) until the audit log has a record matching `f`.
async fn wait_record(files: &Files, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..500 {
        if let Some(r) = audit_lines(&files.audit_path()).into_iter().find(|r| f(r)) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "no audit record {what} within 5s:\n{:#?}",
        audit_lines(&files.audit_path())
    );
}

/// Wait (real time) until a series has a value (the counters follow the audit append).
async fn wait_metric(h: &Harness, series: &str, want: f64) -> String {
    let mut m = String::new();
    for _ in 0..300 {
        m = h.metrics().await;
        if metric(&m, series) == want {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{series} is not {want}:\n{m}");
}

fn completed(r: &Value) -> bool {
    r["phase"] == "completed"
}

/// (topic, partition, replicas) of every AlterPartitionReassignments request, in order.
fn alters(fake: &FakeKafka) -> Vec<Vec<(String, i32, Option<Vec<i32>>)>> {
    fake.writes()
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
        .collect()
}

/// (listener broker, resource type, name, [(config, op, value)]) of config changes.
type ConfigChange = (i32, i8, String, Vec<(String, i8, Option<String>)>);

fn configs(fake: &FakeKafka) -> Vec<ConfigChange> {
    let flat = |b: i32, c: &IncrementalAlterConfigsRequest| -> Vec<ConfigChange> {
        c.resources
            .iter()
            .map(|r| {
                (
                    b,
                    r.resource_type,
                    r.resource_name.to_string(),
                    r.configs
                        .iter()
                        .map(|x| {
                            (
                                x.name.to_string(),
                                x.config_operation,
                                x.value.as_ref().map(|v| v.to_string()),
                            )
                        })
                        .collect(),
                )
            })
            .collect()
    };
    fake.writes()
        .into_iter()
        .flat_map(|(b, r)| match r {
            Req::Configs(c) => flat(b, &c),
            _ => Vec::new(),
        })
        .collect()
}

#[tokio::test]
async fn overloaded_broker_leadership_moves_then_preferred_election() {
    let fake = FakeKafka::start(&[(1, Some("a")), (2, Some("b")), (3, Some("c"))]).await;
    fake.add_topic("orders", 6, |p| (0..3).map(|i| ((p + i) % 3) + 1).collect());
    let files = Files::new();
    files.add_brokers(&policy(&fake, ""));
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let (s, b) = h
        .alerts(&payload(
            "firing",
            vec![alert("firing", "o1", "KafkaBrokerOverloaded", "1")],
        ))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["results"][0]["outcome"], "applied", "{b}");
    assert_eq!(b["results"][0]["action"], "move_leadership");

    let done = wait_record(&files, "completed", completed).await;
    assert_eq!(done["outcome"], "applied", "{done}");
    assert_eq!(done["trigger"], "executor");

    // Broker 1 leads orders-0 and orders-3 ([1,2,3]): 2 becomes preferred, 1 goes last.
    assert_eq!(
        alters(&fake),
        vec![vec![
            ("orders".to_string(), 0, Some(vec![2, 3, 1])),
            ("orders".to_string(), 3, Some(vec![2, 3, 1])),
        ]]
    );
    let elects: Vec<(i8, Vec<(String, Vec<i32>)>)> = fake
        .writes()
        .into_iter()
        .filter_map(|(_, r)| match r {
            Req::Elect(e) => Some((
                e.election_type,
                e.topic_partitions
                    .unwrap()
                    .iter()
                    .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
                    .collect(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        elects,
        vec![(0, vec![("orders".to_string(), vec![0, 3])])],
        "PREFERRED election"
    );
    assert_eq!(fake.leader("orders", 0), 2);
    assert_eq!(fake.leader("orders", 3), 2);
    assert_eq!(fake.replicas("orders", 0), vec![2, 3, 1]);
    assert!(
        configs(&fake).is_empty(),
        "no throttle for leadership moves"
    );
    assert!(
        !fake
            .requests()
            .iter()
            .any(|(_, _, r)| matches!(r, Req::LogDirs)),
        "no sizes needed for leadership"
    );

    let lines = audit_lines(&files.audit_path());
    let start = &lines[0];
    assert_eq!(start["phase"], "started");
    assert_eq!(start["backend"], "kafka");
    assert_eq!(start["leader_moves"], 2);
    assert_eq!(start["replica_moves"], 0);
    assert_eq!(start["plan"]["kind"], "move_leadership");
    assert_eq!(
        start["plan"]["changes"][0]["to"],
        serde_json::json!([2, 3, 1])
    );
    assert_eq!(start["task_id"], done["task_id"]);
    assert_eq!(
        done["message"]
            .as_str()
            .unwrap()
            .split(") ")
            .nth(1)
            .unwrap(),
        "completed: 2 partitions reassigned; 2 preferred leaders elected"
    );
    let m = wait_metric(
        &h,
        "medic_actuator_actions_total{action=\"move_leadership\",outcome=\"applied\"}",
        2.0,
    )
    .await;
    assert_eq!(
        metric(&m, "medic_actuator_remediation_running{cluster=\"prod\"}"),
        0.0
    );
}

#[tokio::test]
async fn dead_broker_is_replaced_with_a_throttle_set_and_removed() {
    let fake = FakeKafka::start(&[
        (1, Some("a")),
        (2, Some("b")),
        (3, Some("c")),
        (4, Some("c")),
    ])
    .await;
    fake.add_partition("logs", 0, &[4, 1, 2], &[4, 1, 2], 4, 300);
    fake.add_partition("logs", 1, &[1, 4], &[1, 4], 1, 200);
    fake.add_partition("logs", 2, &[2, 3], &[2, 3], 2, 100);
    fake.kill(4);
    let files = Files::new();
    files.add_brokers(&policy(&fake, ", throttle_bytes_per_second: 1048576"));
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let (s, b) = h
        .alerts(&payload(
            "firing",
            vec![alert("firing", "d4", "KafkaBrokerDown", "4")],
        ))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["results"][0]["outcome"], "applied", "{b}");
    assert_eq!(b["results"][0]["action"], "replace_replicas");

    // logs-1 has one in-sync replica left: first. Broker 4 never showed a rack here, so each
    // replacement only has to keep the number of racks; 3 is the least loaded.
    let want = vec![vec![
        ("logs".to_string(), 1, Some(vec![1, 3])),
        ("logs".to_string(), 0, Some(vec![1, 3, 2])),
    ]];
    assert_eq!(alters(&fake), want);
    let rate = Some("1048576".to_string());
    let set = |b: i32| {
        (
            b,
            4i8,
            b.to_string(),
            vec![
                (
                    "leader.replication.throttled.rate".to_string(),
                    0i8,
                    rate.clone(),
                ),
                (
                    "follower.replication.throttled.rate".to_string(),
                    0i8,
                    rate.clone(),
                ),
            ],
        )
    };
    let topic = |op: i8| {
        (
            1,
            2i8,
            "logs".to_string(),
            vec![
                (
                    "leader.replication.throttled.replicas".to_string(),
                    op,
                    Some("1:1,0:1,0:2".to_string()),
                ),
                (
                    "follower.replication.throttled.replicas".to_string(),
                    op,
                    Some("1:3,0:3".to_string()),
                ),
            ],
        )
    };
    assert_eq!(
        configs(&fake),
        vec![topic(2), set(1), set(2), set(3)],
        "APPEND to the topic, SET on each broker's own listener, before the reassignment"
    );
    let log_dirs: Vec<i32> = fake
        .requests()
        .iter()
        .filter(|(_, _, r)| matches!(r, Req::LogDirs))
        .map(|(b, _, _)| *b)
        .collect();
    assert_eq!(log_dirs, vec![1, 2, 3], "sizes from every live broker");

    // Still moving: polled, not finished.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!audit_lines(&files.audit_path()).iter().any(completed));
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "medic_actuator_remediation_running{cluster=\"prod\"}"),
        1.0
    );

    fake.complete_all();
    let done = wait_record(&files, "completed", completed).await;
    assert_eq!(done["outcome"], "applied", "{done}");
    assert!(
        done["message"]
            .as_str()
            .unwrap()
            .ends_with("completed: 2 partitions reassigned; throttle removed"),
        "{done}"
    );
    let unset = |b: i32| {
        (
            b,
            4i8,
            b.to_string(),
            vec![
                ("leader.replication.throttled.rate".to_string(), 1i8, None),
                ("follower.replication.throttled.rate".to_string(), 1i8, None),
            ],
        )
    };
    assert_eq!(
        configs(&fake)[4..].to_vec(),
        vec![topic(3), unset(1), unset(2), unset(3)],
        "SUBTRACT from the topic and DELETE the rates afterwards"
    );
    assert_eq!(fake.replicas("logs", 0), vec![1, 3, 2]);
    assert_eq!(fake.replicas("logs", 1), vec![1, 3]);
    let start = &audit_lines(&files.audit_path())[0];
    assert_eq!(start["replica_moves"], 2);
    assert_eq!(start["plan"]["kind"], "replace_replicas");
    assert_eq!(start["plan"]["changes"][0]["size_bytes"], 200);
}

#[tokio::test]
async fn refused_partitions_are_reported_and_a_full_refusal_fails_audited() {
    let fake = FakeKafka::start(&[(1, Some("a")), (2, Some("b")), (3, Some("c"))]).await;
    fake.add_topic("t", 3, |p| (0..3).map(|i| ((p + i) % 3) + 1).collect());
    fake.state
        .lock()
        .unwrap()
        .refuse
        .insert(("t".into(), 0), 39); // INVALID_REPLICA_ASSIGNMENT
    let files = Files::new();
    files.add_brokers(&policy(&fake, ""));
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let (_, b) = h
        .alerts(&payload(
            "firing",
            vec![alert("firing", "o1", "KafkaBrokerOverloaded", "1")],
        ))
        .await;
    assert_eq!(b["results"][0]["outcome"], "failed", "{b}");
    assert_eq!(b["results"][0]["reason"], "backend_refused");
    let r = &audit_lines(&files.audit_path())[0];
    assert_eq!(
        r["message"],
        "move_leadership on broker 1 was not started: refused: every partition was refused: t-0: InvalidReplicaAssignment"
    );
    assert!(
        !fake
            .writes()
            .iter()
            .any(|(_, r)| matches!(r, Req::Elect(_))),
        "no election after a refusal"
    );
}

#[tokio::test]
async fn disk_pressure_moves_the_largest_partitions_until_under_the_target() {
    let fake = FakeKafka::start(&[
        (1, Some("a")),
        (2, Some("b")),
        (3, Some("a")),
        (4, Some("b")),
    ])
    .await;
    for (p, size) in [(0, 200), (1, 50), (2, 100)] {
        fake.add_partition("big", p, &[1, 2], &[1, 2], 1, size);
    }
    fake.add_partition("big", 3, &[2, 3], &[2, 3], 2, 10);
    fake.state
        .lock()
        .unwrap()
        .brokers
        .get_mut(&1)
        .unwrap()
        .disk_used = 900;
    let files = Files::new();
    files.add_brokers(&policy(&fake, ", disk_target_ratio: 0.75"));
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    // The agent reports the filesystem's mount point; Kafka's log directory lies inside it.
    let mut a = alert("firing", "k1", "KafkaBrokerDiskPressure", "1");
    a["labels"]["path"] = serde_json::json!("/var/lib/kafka");
    let (_, b) = h.alerts(&payload("firing", vec![a])).await;
    assert_eq!(b["results"][0]["outcome"], "applied", "{b}");
    assert_eq!(b["results"][0]["action"], "move_replicas");
    // 900 of 1000 used, target 750: moving big-0 (200) is enough. Rack a must stay: broker 3.
    // Broker 1 led it: broker 2 (in sync) becomes the preferred leader.
    assert_eq!(
        alters(&fake),
        vec![vec![("big".to_string(), 0, Some(vec![2, 3]))]]
    );
    let start = &audit_lines(&files.audit_path())[0];
    assert_eq!(start["path"], "/var/lib/kafka");
    assert_eq!(
        start["plan"]["disk"],
        serde_json::json!({"path": "/var/lib/kafka/data", "total_bytes": 1000, "used_bytes": 900, "projected_bytes": 700, "target_ratio": 0.75})
    );
    assert_eq!(start["plan"]["changes"][0]["size_bytes"], 200);
    fake.complete_all();
    let done = wait_record(&files, "completed", completed).await;
    assert_eq!(done["outcome"], "applied", "{done}");
    assert_eq!(fake.replicas("big", 0), vec![2, 3]);
}

/// The name each API the fake cluster logs is counted under (written out here, not derived
/// from the code under test).
fn api_label(key: i16) -> &'static str {
    match key {
        3 => "metadata",
        18 => "api_versions",
        35 => "describe_log_dirs",
        43 => "elect_leaders",
        44 => "incremental_alter_configs",
        45 => "alter_partition_reassignments",
        46 => "list_partition_reassignments",
        other => panic!("the fake cluster logged an unexpected API key {other}"),
    }
}

#[tokio::test]
async fn kafka_requests_carry_the_actuator_client_id_and_are_counted_in_its_metrics() {
    let fake = FakeKafka::start(&[(1, Some("a")), (2, Some("b")), (3, Some("c"))]).await;
    fake.add_topic("orders", 6, |p| (0..3).map(|i| ((p + i) % 3) + 1).collect());
    let files = Files::new();
    files.add_brokers(&policy(&fake, ""));
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let (s, b) = h
        .alerts(&payload(
            "firing",
            vec![alert("firing", "o1", "KafkaBrokerOverloaded", "1")],
        ))
        .await;
    assert_eq!(s, 200, "{b}");
    wait_record(&files, "completed", completed).await;

    // Brokers see the actuator under its own name, on every request.
    let ids = fake.client_ids();
    assert!(ids.len() >= 5, "{ids:?}");
    assert!(
        ids.iter().all(|id| id.as_deref() == Some("medic-actuator")),
        "{ids:?}"
    );

    // Every request the cluster answered is counted once, by API, as ok.
    let expected = || {
        let mut by_api: std::collections::BTreeMap<&'static str, f64> = Default::default();
        for (_, key, _) in fake.requests() {
            *by_api.entry(api_label(key)).or_default() += 1.0;
        }
        by_api
    };
    fn counted(
        m: &str,
        want: &std::collections::BTreeMap<&'static str, f64>,
    ) -> std::collections::BTreeMap<&'static str, f64> {
        want.keys()
            .map(|api| {
                let series =
                    format!("medic_actuator_kafka_requests_total{{api=\"{api}\",outcome=\"ok\"}}");
                (*api, metric(m, &series))
            })
            .collect()
    }
    let mut last = (Default::default(), Default::default(), String::new());
    for _ in 0..300 {
        let want = expected();
        let m = h.metrics().await;
        let got = counted(&m, &want);
        if got == want {
            last = (want, got, m);
            break;
        }
        last = (want, got, m);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (want, got, m) = last;
    assert_eq!(got, want, "{m}");
    assert_eq!(want.get("alter_partition_reassignments"), Some(&1.0));
    assert_eq!(want.get("elect_leaders"), Some(&1.0));
    assert!(want.get("api_versions").is_some_and(|n| *n >= 1.0));
    assert!(
        m.contains("# TYPE medic_actuator_kafka_request_duration_seconds histogram"),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "medic_actuator_kafka_request_duration_seconds_count{api=\"elect_leaders\"}"
        ),
        1.0,
        "{m}"
    );
}
