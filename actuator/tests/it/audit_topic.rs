//! The Kafka copy of the audit log (`audit.topic.*`) against a real tansu broker: two replicas
//! produce every record of their files to one topic, byte-equal and in file order per key; a
//! stopped broker costs the topic records (counted failed or dropped), never the webhook's
//! answer nor the file; the settings are validated naming their keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use medic_actuator::config::{Config, ConfigError};
use medic_e2e::{create_topic, free_port, Tansu};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::support;
use support::harness::*;
use support::process::{client, post, write_config, Running};
use support::*;

const PARTITIONS: i32 = 3;
const DELIVERED: &str = r#"medic_actuator_audit_topic_records_total{result="delivered"}"#;
const DROPPED: &str = r#"medic_actuator_audit_topic_records_total{result="dropped"}"#;
const FAILED: &str = r#"medic_actuator_audit_topic_records_total{result="failed"}"#;
const QUEUE: &str = "medic_actuator_audit_topic_queue";

/// Wait (real time, generous: a loaded 2-core CI machine) until a series has `want`.
async fn wait_metric(h: &Harness, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = h.metrics().await;
        if metric(&m, series) == want {
            return m;
        }
        assert!(Instant::now() < deadline, "{series} is not {want}:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn with_topic(c: &mut Config, instance: &str, bootstrap: &str, topic: &str) {
    c.instance = Some(instance.into());
    c.audit.topic.bootstrap_servers = vec![bootstrap.into()];
    c.audit.topic.name = topic.into();
}

fn fire(fp: &str, group: &str, lag: u64) -> Vec<u8> {
    payload(
        "firing",
        vec![lag_alert("firing", fp, "prod", group, Some(lag))],
    )
}

/// One message of the topic.
#[derive(Debug, Clone)]
struct Copy {
    partition: i32,
    offset: i64,
    key: String,
    value: Vec<u8>,
}

/// Read the whole topic (every partition from the start) until `want` messages arrived.
fn consume(bootstrap: &str, topic: &str, want: usize) -> Vec<Copy> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "audit-topic-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(Copy {
                partition: m.partition(),
                offset: m.offset(),
                key: String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap(),
                value: m.payload().unwrap_or_default().to_vec(),
            }),
            Some(Err(e)) => panic!("consuming {topic}: {e}"),
            None => {}
        }
    }
    // Anything beyond `want` would be a duplicate: give it a moment to show up.
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push(Copy {
                partition: m.partition(),
                offset: m.offset(),
                key: String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap(),
                value: m.payload().unwrap_or_default().to_vec(),
            });
        }
    }
    out
}

/// The key a record must have, worked out here from the record alone.
fn expected_key(r: &Value) -> String {
    if let Some(t) = r["target"].as_str() {
        return t.to_string();
    }
    match (r["cluster"].as_str(), r["consumergroup"].as_str()) {
        (Some(c), Some(g)) => format!("{c}/{g}"),
        _ => r["instance"].as_str().unwrap().to_string(),
    }
}

/// The raw lines of an audit file.
fn file_lines(files: &Files) -> Vec<Vec<u8>> {
    std::fs::read_to_string(files.audit_path())
        .unwrap()
        .lines()
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_copy_every_record_byte_equal_in_file_order_per_key() {
    let tansu = tokio::task::spawn_blocking(Tansu::start).await.unwrap();
    let bootstrap = tansu.bootstrap();
    let topic = "medic-audit";
    {
        let b = bootstrap.clone();
        tokio::task::spawn_blocking(move || create_topic(&b, topic, PARTITIONS))
            .await
            .unwrap();
    }
    // Two replicas on one Kubernetes API (one set of Deployments), each with its own file.
    let kube = fake_kube();
    let (files_a, files_b) = (Files::new(), Files::new());
    let a = harness_with(&files_a, kube.clone(), |c| {
        with_topic(c, "replica-a", &bootstrap, topic)
    })
    .await;
    let b = harness_with(&files_b, kube.clone(), |c| {
        with_topic(c, "replica-b", &bootstrap, topic)
    })
    .await;
    let auth = format!("Bearer {TOKEN}");

    // Scale actions and skips on both, interleaved on shared targets.
    let (s, r) = a.alerts(&fire("a1", "orders", 4000)).await;
    assert_eq!(
        (s, &r["results"][0]["outcome"]),
        (200, &json!("applied")),
        "{r}"
    );
    let (_, r) = b.alerts(&fire("b1", "orders", 8000)).await;
    assert_eq!(r["results"][0]["reason"], "cooldown", "{r}");
    let (_, r) = a.alerts(&fire("a1", "orders", 4000)).await;
    assert_eq!(r["results"][0]["reason"], "duplicate", "{r}");
    let (_, r) = b.alerts(&fire("b2", "billing", 3000)).await;
    assert_eq!(r["results"][0]["outcome"], "applied", "{r}");
    let (_, r) = a.alerts(&fire("a2", "ghost", 10)).await;
    assert_eq!(r["results"][0]["reason"], "no_policy", "{r}");
    let (s, _) = b.request("POST", "/api/v1/pause", Some(&auth), b"").await;
    assert_eq!(s, 200);
    let (_, r) = b.alerts(&fire("b3", "billing", 9000)).await;
    assert_eq!(r["results"][0]["reason"], "paused", "{r}");
    let (s, _) = b.request("POST", "/api/v1/resume", Some(&auth), b"").await;
    assert_eq!(s, 200);
    a.advance(61);
    let (_, r) = a.alerts(&fire("a3", "orders", 8000)).await;
    assert_eq!(r["results"][0]["outcome"], "applied", "{r}");
    assert_eq!(kube.replicas("shop", "orders-consumer"), 6);
    let (_, r) = b.alerts(&fire("b4", "billing", 9000)).await;
    assert_eq!(r["results"][0]["reason"], "cooldown", "{r}");
    let (_, r) = a.alerts(&fire("a4", "ghost", 10)).await;
    assert_eq!(r["results"][0]["reason"], "no_policy", "{r}");

    let (lines_a, lines_b) = (file_lines(&files_a), file_lines(&files_b));
    assert_eq!((lines_a.len(), lines_b.len()), (5, 6));
    // Every record acknowledged by the broker, none dropped or failed.
    for (h, n) in [(&a, lines_a.len()), (&b, lines_b.len())] {
        let m = wait_metric(h, DELIVERED, n as f64).await;
        assert_eq!(metric(&m, DROPPED), 0.0, "{m}");
        assert_eq!(metric(&m, FAILED), 0.0, "{m}");
        assert_eq!(metric(&m, QUEUE), 0.0, "{m}");
    }

    let want = lines_a.len() + lines_b.len();
    let b2 = bootstrap.clone();
    let copies = tokio::task::spawn_blocking(move || consume(&b2, topic, want))
        .await
        .unwrap();
    assert_eq!(copies.len(), want, "each record once: {copies:#?}");

    // Byte-equal: every message is a line of one of the files, under the record's key.
    let mut by_record: BTreeMap<(String, u64), &Copy> = BTreeMap::new();
    for c in &copies {
        let v: Value = serde_json::from_slice(&c.value).unwrap();
        let id = (
            v["instance"].as_str().unwrap().to_string(),
            v["seq"].as_u64().unwrap(),
        );
        assert_eq!(c.key, expected_key(&v), "{v}");
        assert!(by_record.insert(id.clone(), c).is_none(), "{id:?} twice");
    }
    for (instance, lines) in [("replica-a", &lines_a), ("replica-b", &lines_b)] {
        // Per key, the topic holds the file's records in the file's order, in one partition.
        let mut per_key: BTreeMap<String, Vec<(u64, &Copy)>> = BTreeMap::new();
        for line in lines.iter() {
            let v: Value = serde_json::from_slice(line).unwrap();
            let seq = v["seq"].as_u64().unwrap();
            let c = by_record
                .get(&(instance.to_string(), seq))
                .unwrap_or_else(|| panic!("{instance} seq {seq} is not on the topic"));
            assert_eq!(&c.value, line, "{instance} seq {seq}: not byte-equal");
            per_key.entry(expected_key(&v)).or_default().push((seq, c));
        }
        for (key, recs) in &per_key {
            let partitions: Vec<i32> = recs.iter().map(|(_, c)| c.partition).collect();
            assert!(
                partitions.windows(2).all(|w| w[0] == w[1]),
                "{instance} {key}: one key, one partition: {partitions:?}"
            );
            let offsets: Vec<i64> = recs.iter().map(|(_, c)| c.offset).collect();
            assert!(
                offsets.windows(2).all(|w| w[0] < w[1]),
                "{instance} {key}: file order {:?} but offsets {offsets:?}",
                recs.iter().map(|(s, _)| *s).collect::<Vec<_>>()
            );
        }
        if instance == "replica-a" {
            assert_eq!(
                per_key.keys().cloned().collect::<Vec<_>>(),
                vec!["prod/ghost".to_string(), "shop/orders-consumer".to_string()]
            );
            assert_eq!(per_key["shop/orders-consumer"].len(), 3);
        } else {
            assert_eq!(
                per_key.keys().cloned().collect::<Vec<_>>(),
                vec![
                    "billing/billing-consumer".to_string(),
                    "replica-b".to_string(),
                    "shop/orders-consumer".to_string()
                ]
            );
            assert_eq!(per_key["replica-b"].len(), 2, "pause and resume");
        }
    }
    // The two replicas' records of one target share a partition too.
    let orders: Vec<i32> = copies
        .iter()
        .filter(|c| c.key == "shop/orders-consumer")
        .map(|c| c.partition)
        .collect();
    assert_eq!(orders.len(), 4);
    assert!(orders.windows(2).all(|w| w[0] == w[1]), "{orders:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_costs_topic_records_not_answers_nor_the_file() {
    let mut tansu = tokio::task::spawn_blocking(Tansu::start).await.unwrap();
    let bootstrap = tansu.bootstrap();
    let topic = "medic-audit-stopped";
    {
        let b = bootstrap.clone();
        tokio::task::spawn_blocking(move || create_topic(&b, topic, PARTITIONS))
            .await
            .unwrap();
    }
    let files = Files::new();
    let h = harness_with(&files, fake_kube(), |c| {
        with_topic(c, "replica-a", &bootstrap, topic);
        c.audit.topic.queue_capacity = 2;
        c.audit.topic.delivery_timeout = Duration::from_secs(10);
    })
    .await;
    let (s, _) = h.alerts(&fire("g0", "ghost0", 1)).await;
    assert_eq!(s, 200);
    wait_metric(&h, DELIVERED, 1.0).await;

    tokio::task::spawn_blocking(move || {
        tansu.kill();
        tansu
    })
    .await
    .unwrap();
    for i in 1..=5 {
        let started = Instant::now();
        let (s, r) = h
            .alerts(&fire(&format!("g{i}"), &format!("ghost{i}"), 1))
            .await;
        let took = started.elapsed();
        assert_eq!(
            (s, &r["results"][0]["reason"]),
            (200, &json!("no_policy")),
            "{r}"
        );
        // Far below the 10 s the producer keeps retrying: the answer never waits for Kafka.
        assert!(took < Duration::from_secs(3), "webhook {i} took {took:?}");
        let seq = r["results"][0]["seq"].as_u64().unwrap();
        let lines = audit_lines(&files.audit_path());
        assert!(
            lines
                .iter()
                .any(|l| l["seq"] == seq && l["consumergroup"] == format!("ghost{i}")),
            "record {seq} is in the file when the webhook is answered"
        );
    }
    // Two records fit the queue; the other three were dropped from the topic.
    let m = wait_metric(&h, DROPPED, 3.0).await;
    assert_eq!(metric(&m, QUEUE), 2.0, "{m}");
    assert_eq!(metric(&m, DELIVERED), 1.0, "{m}");
    // After the delivery time-out the two waiting ones count as failed.
    let m = wait_metric(&h, FAILED, 2.0).await;
    assert_eq!(metric(&m, QUEUE), 0.0, "{m}");
    assert_eq!(metric(&m, DELIVERED), 1.0, "{m}");
    assert_eq!(metric(&m, DROPPED), 3.0, "{m}");
    assert_eq!(
        audit_lines(&files.audit_path()).len(),
        6,
        "the file has all six"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_kafka_never_holds_the_start_and_shutdown_logs_what_was_left() {
    let files = Files::new();
    let kube = fake_kube();
    let server = kube.start().await;
    let config = write_config(&files, &server.uri(), "");
    let dead = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let run = Running::start_with(
        &[],
        &[
            (
                "MEDIC_ACTUATOR_AUDIT_TOPIC_BOOTSTRAP_SERVERS",
                std::path::Path::new(&dead),
            ),
            (
                "MEDIC_ACTUATOR_AUDIT_TOPIC_DELIVERY_TIMEOUT",
                std::path::Path::new("5m"),
            ),
            (
                "MEDIC_ACTUATOR_AUDIT_TOPIC_FLUSH_TIMEOUT",
                std::path::Path::new("1s"),
            ),
        ],
        &config,
    );
    // Nothing listens there, and the records would be retried for 5 minutes.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "start took {:?}",
        started.elapsed()
    );
    let c = client();
    let (s, r) = post(&c, &run, fire("g1", "ghost", 1)).await.unwrap();
    assert_eq!(
        (s, &r["results"][0]["reason"]),
        (200, &json!("no_policy")),
        "{r}"
    );
    assert_eq!(audit_lines(&files.audit_path()).len(), 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = c
            .get(run.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metric(&m, QUEUE) == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "queue is not 1:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGTERM: the flush waits 1 s, then says what was left.
    let mut run = run;
    let pid = run.child.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = run.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "no exit after SIGTERM\n{}",
            run.dump()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}\n{}", run.dump());
    let log = medic_e2e::wait_until(Duration::from_secs(10), "the flush warning", || {
        let log = run.log.lock().unwrap().clone();
        log.into_iter()
            .find(|l| l.contains("records not delivered at shutdown"))
    });
    let v: Value = serde_json::from_str(&log).unwrap();
    assert_eq!(v["fields"]["undelivered"], 1, "{log}");
    assert_eq!(v["fields"]["topic"], "kafka-medic-audit", "{log}");
}

fn problems(args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let files = Files::new();
    let token = files.path("token").display().to_string();
    let policies = files.path("policies.yaml").display().to_string();
    let mut argv = vec![
        "--policies-file",
        policies.as_str(),
        "--auth-bearer-token-file",
        token.as_str(),
    ];
    argv.extend_from_slice(args);
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match Config::load(argv, &env) {
        Ok(c) => panic!("accepted: {:#?}", c.audit.topic),
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn settings_are_validated_naming_the_key() {
    let p = problems(
        &[
            "--audit-topic-bootstrap-servers",
            "kafka-0:9092,nohost",
            "--audit-topic-name",
            "audit log",
            "--audit-topic-security-protocol",
            "tls",
            "--audit-topic-queue-capacity",
            "0",
            "--audit-topic-delivery-timeout",
            "0s",
        ],
        &[],
    );
    assert_eq!(
        p,
        vec![
            "audit.topic.bootstrap_servers: \"nohost\" is not host:port".to_string(),
            "audit.topic.name: \"audit log\" has ' '; a topic name may only hold a-z, A-Z, 0-9, '.', '_' and '-'".into(),
            "audit.topic.security_protocol: \"tls\": expected plaintext, ssl, sasl_plaintext or sasl_ssl".into(),
            "audit.topic.queue_capacity: 0 must be between 1 and 1000000".into(),
            "audit.topic.delivery_timeout: 0s must be between 1s and 24h".into(),
        ]
    );
    let p = problems(
        &[],
        &[
            ("MEDIC_ACTUATOR_AUDIT_TOPIC_BOOTSTRAP_SERVERS", "k:9092"),
            (
                "MEDIC_ACTUATOR_AUDIT_TOPIC_SECURITY_PROTOCOL",
                "sasl_plaintext",
            ),
            ("MEDIC_ACTUATOR_AUDIT_TOPIC_SASL_MECHANISM", "GSSAPI"),
            (
                "MEDIC_ACTUATOR_AUDIT_TOPIC_SASL_PASSWORD_FILE",
                "/nonexistent/pw",
            ),
        ],
    );
    assert_eq!(
        p,
        vec![
            "audit.topic.sasl_mechanism: \"GSSAPI\" is not supported for the audit topic; expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512".to_string(),
            "audit.topic.sasl_username: required with security_protocol sasl_plaintext".into(),
            "audit.topic.sasl_password_file: cannot read /nonexistent/pw: No such file or directory (os error 2)".into(),
        ]
    );
    // OAUTHBEARER and AWS_MSK_IAM are medic-kafka's (the kafka backend, the agent), not
    // librdkafka's in this build: refused for the audit topic, naming the key.
    for mechanism in ["OAUTHBEARER", "AWS_MSK_IAM"] {
        let p = problems(
            &[],
            &[
                ("MEDIC_ACTUATOR_AUDIT_TOPIC_BOOTSTRAP_SERVERS", "k:9092"),
                (
                    "MEDIC_ACTUATOR_AUDIT_TOPIC_SECURITY_PROTOCOL",
                    "sasl_plaintext",
                ),
                ("MEDIC_ACTUATOR_AUDIT_TOPIC_SASL_MECHANISM", mechanism),
                ("MEDIC_ACTUATOR_AUDIT_TOPIC_SASL_USERNAME", "u"),
            ],
        );
        assert_eq!(
            p,
            vec![
                format!("audit.topic.sasl_mechanism: {mechanism:?} is not supported for the audit topic; expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
                "audit.topic.sasl_password_file: required with security_protocol sasl_plaintext".into(),
            ]
        );
    }
    // TLS needs a librdkafka with OpenSSL: refused, naming the key, when this build has none.
    let features = ClientConfig::new()
        .create_native_config()
        .unwrap()
        .get("builtin.features")
        .unwrap();
    let ssl = [
        "--audit-topic-bootstrap-servers",
        "k:9093",
        "--audit-topic-security-protocol",
        "ssl",
    ];
    if features.split(',').any(|f| f == "ssl") {
        let files = Files::new();
        let mut argv = vec![
            "--policies-file".to_string(),
            files.path("policies.yaml").display().to_string(),
            "--auth-bearer-token-file".into(),
            files.path("token").display().to_string(),
        ];
        argv.extend(ssl.iter().map(|s| s.to_string()));
        Config::load(argv, &BTreeMap::new()).unwrap();
    } else {
        let p = problems(&ssl, &[]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("audit.topic.security_protocol: ") && p[0].contains("OpenSSL"),
            "{p:?}"
        );
    }
    // Off by default; a list in the file, commas in a variable; SASL PLAIN accepted.
    let files = Files::new();
    std::fs::write(files.path("pw"), "secret\n").unwrap();
    let file = files.path("actuator.yaml");
    std::fs::write(
        &file,
        format!(
            "policies_file: {}\nauth: {{bearer_token_file: {}}}\naudit:\n  topic:\n    bootstrap_servers: [k0:9092, k1:9092]\n    security_protocol: SASL_PLAINTEXT\n    sasl_mechanism: PLAIN\n    sasl_username: medic\n    sasl_password_file: {}\n",
            files.path("policies.yaml").display(),
            files.path("token").display(),
            files.path("pw").display()
        ),
    )
    .unwrap();
    let c = Config::load(
        ["--config".to_string(), file.display().to_string()],
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(c.audit.topic.bootstrap_servers, vec!["k0:9092", "k1:9092"]);
    assert_eq!(c.audit.topic.name, "kafka-medic-audit");
    assert_eq!(c.audit.topic.queue_capacity, 10_000);
    let env = BTreeMap::from([(
        "MEDIC_ACTUATOR_AUDIT_TOPIC_BOOTSTRAP_SERVERS".to_string(),
        "a:1, b:2".to_string(),
    )]);
    let c = Config::load(["--config".to_string(), file.display().to_string()], &env).unwrap();
    assert_eq!(c.audit.topic.bootstrap_servers, vec!["a:1", "b:2"]);
    let off = Config::load(
        [
            "--policies-file".to_string(),
            files.path("policies.yaml").display().to_string(),
            "--insecure-no-auth".into(),
        ],
        &BTreeMap::new(),
    )
    .unwrap();
    assert!(!off.audit.topic.enabled());
}

#[test]
fn the_binary_refuses_bad_topic_settings_with_exit_code_2() {
    let files = Files::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medic-actuator"))
        .args([
            "--policies-file",
            &files.path("policies.yaml").display().to_string(),
            "--insecure-no-auth",
            "--audit-topic-bootstrap-servers",
            "k:9092",
            "--audit-topic-queue-capacity",
            "0",
        ])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("audit.topic.queue_capacity: 0 must be between 1 and 1000000"),
        "{err}"
    );
}
