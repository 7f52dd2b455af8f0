//! Durable intent of broker actions and crash recovery, with the real binary (kill -9) against
//! the protocol-level fake Kafka and the fake API server's ConfigMaps: a reassignment running
//! when the process dies is followed to its end by the next process (or cancelled at its
//! deadline), exactly the throttle it set is removed (an operator's own stays), its end is
//! audited as recovered and its intent cleared; an action that ended while nobody watched is
//! audited as such; cooldowns hold across a restart from the ConfigMap alone; and an intent
//! that cannot be written starts nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::fake_kafka::{FakeKafka, Req};
use support::harness::*;
use support::process::*;
use support::*;

const NS: &str = "medic";
const CM: &str = "medic-actuator-intent-prod";
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const RATE: &str = "1048576";

/// Poll `f` (real time) until it gives a value; a generous deadline for a loaded machine.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The operator's throttles, as `cluster` set them.
fn operators_throttles() -> BTreeMap<(i8, String), BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    m.insert(
        (TOPIC, "other".to_string()),
        BTreeMap::from([(
            "leader.replication.throttled.replicas".to_string(),
            "0:1,0:2".to_string(),
        )]),
    );
    m.insert(
        (TOPIC, "logs".to_string()),
        BTreeMap::from([(
            "follower.replication.throttled.replicas".to_string(),
            "2:3".to_string(),
        )]),
    );
    m.insert(
        (BROKER, "5".to_string()),
        BTreeMap::from([(
            "leader.replication.throttled.rate".to_string(),
            "999".to_string(),
        )]),
    );
    m
}

/// The operator's throttles plus the replace_replicas move's: logs-1 [1,4] -> [1,3] and logs-0
/// [4,1,2] -> [1,3,2], rate on the live brokers taking part (1, 2, 3).
fn with_ours() -> BTreeMap<(i8, String), BTreeMap<String, String>> {
    let mut m = operators_throttles();
    m.insert(
        (TOPIC, "logs".to_string()),
        BTreeMap::from([
            (
                "follower.replication.throttled.replicas".to_string(),
                "2:3,1:3,0:3".to_string(),
            ),
            (
                "leader.replication.throttled.replicas".to_string(),
                "1:1,0:1,0:2".to_string(),
            ),
        ]),
    );
    for b in ["1", "2", "3"] {
        m.insert(
            (BROKER, b.to_string()),
            BTreeMap::from([
                (
                    "follower.replication.throttled.rate".to_string(),
                    RATE.to_string(),
                ),
                (
                    "leader.replication.throttled.rate".to_string(),
                    RATE.to_string(),
                ),
            ]),
        );
    }
    m
}

struct Setup {
    files: Files,
    fake: FakeKafka,
    kube: FakeKube,
    _server: wiremock::MockServer,
    cfg: std::path::PathBuf,
}

async fn setup(extra: &str) -> Setup {
    let fake = FakeKafka::dead_broker_4_with_operator_throttles().await;
    let files = Files::new();
    files.add_brokers(&format!(
        "  - {{cluster: prod, backend: kafka, kafka: {{bootstrap_servers: ['{}'], request_timeout: 2s}}, settle_time: 0s, poll_interval: 100ms, reassignment_timeout: 1h, throttle_bytes_per_second: {RATE}{extra}}}\n",
        fake.bootstrap()
    ));
    let kube = FakeKube::default();
    let server = kube.start().await;
    let cfg = write_config(&files, &server.uri(), "reevaluate_interval: 1h\n");
    Setup {
        files,
        fake,
        kube,
        _server: server,
        cfg,
    }
}

/// The binary, as replica `instance`, in namespace `medic`.
fn start(s: &Setup, instance: &str) -> Running {
    Running::start_with(
        &[],
        &[
            ("POD_NAMESPACE", Path::new(NS)),
            ("MEDIC_ACTUATOR_INSTANCE", Path::new(instance)),
        ],
        &s.cfg,
    )
}

/// A KafkaBrokerDown for broker 4 that started an hour ago (past `down_grace`).
fn down_alert(fp: &str) -> Vec<u8> {
    let starts = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    payload(
        "firing",
        vec![broker_alert_at(
            "firing",
            fp,
            "KafkaBrokerDown",
            "prod",
            "4",
            &starts.to_string(),
        )],
    )
}

fn action(s: &Setup) -> Option<Value> {
    s.kube.configmaps.data(NS, CM, "action")
}

/// Start the move with replica `bin-a` and check it runs: the reassignment on the fake, the
/// throttle set, the intent recorded. Returns the process and the intent.
async fn start_move(s: &Setup) -> (Running, Value) {
    let run = start(s, "bin-a");
    let (code, b) = post(&client(), &run, down_alert("d4")).await.unwrap();
    assert_eq!(code, 200, "{b}\n{}", run.dump());
    assert_eq!(b["results"][0]["outcome"], "applied", "{b}\n{}", run.dump());
    assert_eq!(b["results"][0]["action"], "replace_replicas", "{b}");
    let mut moving = s.fake.ongoing();
    moving.sort();
    assert_eq!(
        moving,
        vec![("logs".to_string(), 0), ("logs".to_string(), 1)],
        "the reassignment runs"
    );
    assert_eq!(s.fake.throttles(), with_ours(), "the throttle is set");
    let a = action(s).expect("the intent of the running action");
    assert_eq!(a["phase"], "started", "{a}");
    assert_eq!(a["by"], "bin-a");
    assert_eq!(a["cluster"], "prod");
    assert_eq!(a["broker"], 4);
    assert_eq!(a["kind"], "replace_replicas");
    assert_eq!(a["backend"], "kafka");
    assert_eq!(a["alert"]["alertname"], "KafkaBrokerDown");
    assert_eq!(a["alert"]["fingerprint"], "d4");
    assert!(a["task_id"].as_str().unwrap().starts_with("kafka-"), "{a}");
    let started: jiff::Timestamp = a["started_at"].as_str().unwrap().parse().unwrap();
    let deadline: jiff::Timestamp = a["deadline"].as_str().unwrap().parse().unwrap();
    assert_eq!(deadline.duration_since(started).as_secs(), 3600, "{a}");
    let mut moves = a["moves"].as_array().unwrap().clone();
    moves.sort_by_key(|m| m["partition"].as_i64());
    assert_eq!(
        moves,
        vec![
            json!({"topic": "logs", "partition": 0, "from": [4, 1, 2], "to": [1, 3, 2]}),
            json!({"topic": "logs", "partition": 1, "from": [1, 4], "to": [1, 3]}),
        ]
    );
    let rate = json!({"follower.replication.throttled.rate": RATE, "leader.replication.throttled.rate": RATE});
    assert_eq!(
        a["throttle"],
        json!({
            "brokers": {"1": rate, "2": rate, "3": rate},
            "topics": {"logs": {
                "follower.replication.throttled.replicas": ["1:3", "0:3"],
                "leader.replication.throttled.replicas": ["1:1", "0:1", "0:2"]
            }}
        }),
        "the intent names exactly the throttle this tool set"
    );
    let obj = s.kube.configmaps.get(NS, CM).unwrap();
    assert_eq!(
        obj["metadata"]["labels"]["app.kubernetes.io/managed-by"], "medic-actuator",
        "{obj}"
    );
    assert_eq!(
        obj["metadata"]["annotations"]["kafka-medic.io/cluster"],
        "prod"
    );
    // The first write created the object (no precondition), the next carried its version.
    let writes = s.kube.configmaps.writes();
    assert_eq!(writes[0].method, "POST", "{writes:?}");
    assert_eq!(
        writes[0].path,
        format!("/api/v1/namespaces/{NS}/configmaps")
    );
    assert_eq!(
        writes[0].body["data"]["action"]
            .as_str()
            .map(|t| serde_json::from_str::<Value>(t).unwrap()["phase"].clone()),
        Some(json!("starting")),
        "recorded before the backend was called"
    );
    assert!(
        writes[1..]
            .iter()
            .all(|w| w.method == "PUT" && w.body["metadata"]["resourceVersion"].is_string()),
        "{writes:?}"
    );
    (run, a)
}

/// The one end record of the action, once written.
async fn end_record(files: &Files) -> Value {
    let r = eventually("the end of the action in the audit log", || {
        audit_lines(&files.audit_path())
            .into_iter()
            .find(|r| r["phase"] == "completed")
    })
    .await;
    let ends = audit_lines(&files.audit_path())
        .into_iter()
        .filter(|r| r["phase"] == "completed")
        .count();
    assert_eq!(ends, 1, "{:#?}", audit_lines(&files.audit_path()));
    r
}

/// What the SUBTRACT/DELETE requests after the start removed: (type, name, config, op, value).
fn removals(fake: &FakeKafka) -> Vec<(i8, String, String, i8, Option<String>)> {
    let mut out: Vec<_> = fake
        .writes()
        .into_iter()
        .flat_map(|(_, r)| match r {
            Req::Configs(c) => c
                .resources
                .iter()
                .flat_map(|r| {
                    r.configs
                        .iter()
                        .filter(|x| x.config_operation == 1 || x.config_operation == 3)
                        .map(|x| {
                            (
                                r.resource_type,
                                r.resource_name.to_string(),
                                x.name.to_string(),
                                x.config_operation,
                                x.value.as_ref().map(|v| v.to_string()),
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    out.sort();
    out
}

fn our_removals() -> Vec<(i8, String, String, i8, Option<String>)> {
    let mut out = vec![
        (
            TOPIC,
            "logs".to_string(),
            "follower.replication.throttled.replicas".to_string(),
            3,
            Some("1:3,0:3".to_string()),
        ),
        (
            TOPIC,
            "logs".to_string(),
            "leader.replication.throttled.replicas".to_string(),
            3,
            Some("1:1,0:1,0:2".to_string()),
        ),
    ];
    for b in ["1", "2", "3"] {
        for k in [
            "leader.replication.throttled.rate",
            "follower.replication.throttled.rate",
        ] {
            out.push((BROKER, b.to_string(), k.to_string(), 1, None));
        }
    }
    out.sort();
    out
}

/// The intent is cleared and the action's end recorded in the cooldowns by `by`.
fn assert_cleared(s: &Setup, by: &str) {
    let obj = s.kube.configmaps.get(NS, CM).unwrap();
    assert!(obj["data"].get("action").is_none(), "{obj}");
    let c = s.kube.configmaps.data(NS, CM, "cooldowns").unwrap();
    assert_eq!(c["cluster"]["broker"], 4, "{c}");
    assert_eq!(c["cluster"]["kind"], "replace_replicas", "{c}");
    assert_eq!(c["cluster"]["by"], by, "{c}");
    assert_eq!(c["brokers"]["4"], c["cluster"], "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_running_at_a_crash_is_followed_to_its_end_by_the_next_process() {
    let s = setup("").await;
    let (run, a) = start_move(&s).await;
    let task = a["task_id"].as_str().unwrap().to_string();
    run.kill9();

    let run = start(&s, "bin-b");
    // It takes the action over (recorded in the intent) and leaves the throttle alone while
    // the partitions still move.
    let taken = eventually("the takeover recorded in the intent", || {
        action(&s).filter(|a| a["recovered_by"] == "bin-b")
    })
    .await;
    assert_eq!(taken["id"], a["id"]);
    assert_eq!(
        s.fake.throttles(),
        with_ours(),
        "not removed under a running move"
    );
    assert!(!audit_lines(&s.files.audit_path())
        .iter()
        .any(|r| r["phase"] == "completed"));

    s.fake.complete_all();
    let end = end_record(&s.files).await;
    assert_eq!(end["outcome"], "applied", "{end}\n{}", run.dump());
    assert_eq!(end["trigger"], "recovery", "{end}");
    assert_eq!(end["instance"], "bin-b");
    assert_eq!(end["action"], "replace_replicas");
    assert_eq!(end["task_id"], task.as_str());
    assert_eq!(end["fingerprint"], "d4");
    assert_eq!(end["broker"], "4");
    let msg = end["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "recovered by bin-b: replace_replicas on broker 4 (task {task}, started {} by bin-a) completed: 2 partitions reassigned; throttle removed",
            a["started_at"].as_str().unwrap()
        )),
        "{msg}"
    );
    assert_eq!(
        s.fake.throttles(),
        operators_throttles(),
        "only ours removed"
    );
    assert_eq!(removals(&s.fake), our_removals());
    assert_eq!(s.fake.replicas("logs", 0), vec![1, 3, 2]);
    eventually("the intent cleared", || {
        s.kube
            .configmaps
            .get(NS, CM)
            .filter(|o| o["data"].get("action").is_none())
    })
    .await;
    assert_cleared(&s, "bin-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_past_its_deadline_at_restart_is_cancelled_and_cleaned_up() {
    let s = setup("").await;
    let (run, mut a) = start_move(&s).await;
    run.kill9();
    // Its deadline passes while no process runs.
    let past = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(1);
    a["deadline"] = json!(past.to_string());
    s.kube.configmaps.set_data(NS, CM, "action", &a);

    let run = start(&s, "bin-b");
    let end = end_record(&s.files).await;
    assert_eq!(end["outcome"], "failed", "{end}\n{}", run.dump());
    assert_eq!(end["reason"], "reassignment_timeout", "{end}");
    assert_eq!(end["trigger"], "recovery");
    let msg = end["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("still running at its deadline {past}")),
        "{msg}"
    );
    assert!(
        msg.ends_with("cancelled the reassignment of 2 partitions; throttle removed"),
        "{msg}"
    );
    let cancels: Vec<Vec<(String, i32, bool)>> = s
        .fake
        .writes()
        .into_iter()
        .filter_map(|(_, r)| match r {
            Req::Alter(x) => Some(
                x.topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(move |p| {
                            (
                                t.name.0.to_string(),
                                p.partition_index,
                                p.replicas.is_none(),
                            )
                        })
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(cancels.len(), 2, "the start and the cancel: {cancels:?}");
    let mut cancel = cancels[1].clone();
    cancel.sort();
    assert_eq!(
        cancel,
        vec![("logs".to_string(), 0, true), ("logs".to_string(), 1, true)],
        "Kafka's cancel: the same partitions, no replicas"
    );
    assert!(s.fake.ongoing().is_empty());
    assert_eq!(s.fake.replicas("logs", 0), vec![4, 1, 2], "nothing moved");
    assert_eq!(s.fake.throttles(), operators_throttles());
    assert_eq!(removals(&s.fake), our_removals());
    eventually("the intent cleared", || {
        s.kube
            .configmaps
            .get(NS, CM)
            .filter(|o| o["data"].get("action").is_none())
    })
    .await;
    assert_cleared(&s, "bin-b");
}

/// Stop the process as Kubernetes does (SIGTERM) and wait for its exit.
async fn terminate(mut run: Running) {
    let pid = run.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let (status, run) = tokio::task::spawn_blocking(move || (run.child.wait().unwrap(), run))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}\n{}", run.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_that_ended_while_nobody_watched_is_audited_as_such_and_cleaned_up() {
    let s = setup("").await;
    let (run, a) = start_move(&s).await;
    // A graceful stop leaves the running action's intent (and its throttle) for the next one.
    terminate(run).await;
    assert_eq!(
        action(&s),
        Some(a.clone()),
        "the intent outlives the process"
    );
    assert!(!audit_lines(&s.files.audit_path())
        .iter()
        .any(|r| r["phase"] == "completed"));
    s.fake.complete_all();
    assert_eq!(s.fake.throttles(), with_ours(), "left behind by the crash");

    let run = start(&s, "bin-b");
    let end = end_record(&s.files).await;
    assert_eq!(end["outcome"], "applied", "{end}\n{}", run.dump());
    assert_eq!(end["trigger"], "recovery");
    let msg = end["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "recovered by bin-b: replace_replicas on broker 4 (task {}, started {} by bin-a) ended while no actuator was watching; completed: 2 partitions reassigned; throttle removed",
            a["task_id"].as_str().unwrap(),
            a["started_at"].as_str().unwrap()
        )),
        "{msg}"
    );
    assert_eq!(s.fake.throttles(), operators_throttles());
    assert_eq!(removals(&s.fake), our_removals());
    eventually("the intent cleared", || {
        s.kube
            .configmaps
            .get(NS, CM)
            .filter(|o| o["data"].get("action").is_none())
    })
    .await;
    assert_cleared(&s, "bin-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldowns_hold_across_a_restart_from_the_configmap_without_the_audit_log() {
    let s = setup(", cluster_cooldown: 1h, broker_cooldown: 2h").await;
    let (run, _) = start_move(&s).await;
    s.fake.complete_all();
    let end = end_record(&s.files).await;
    assert_eq!(end["outcome"], "applied", "{end}");
    assert_eq!(
        end["trigger"], "executor",
        "ended under the process that started it"
    );
    eventually("the intent cleared", || {
        s.kube
            .configmaps
            .get(NS, CM)
            .filter(|o| o["data"].get("action").is_none())
    })
    .await;
    assert_cleared(&s, "bin-a");
    let ended: jiff::Timestamp = s.kube.configmaps.data(NS, CM, "cooldowns").unwrap()["cluster"]
        ["at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    run.kill9();
    // The local audit log is gone (a new pod, another replica): only the ConfigMap knows.
    std::fs::remove_dir_all(s.files.path("audit")).unwrap();
    let alters_before = s
        .fake
        .writes()
        .iter()
        .filter(|(_, r)| matches!(r, Req::Alter(_)))
        .count();

    let run = start(&s, "bin-b");
    s.fake.kill(3);
    let starts = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let (code, b) = post(
        &client(),
        &run,
        payload(
            "firing",
            vec![broker_alert_at(
                "firing",
                "d3",
                "KafkaBrokerDown",
                "prod",
                "3",
                &starts.to_string(),
            )],
        ),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{b}\n{}", run.dump());
    assert_eq!(b["results"][0]["outcome"], "skipped", "{b}\n{}", run.dump());
    assert_eq!(b["results"][0]["reason"], "cluster_cooldown", "{b}");
    let rec = audit_lines(&s.files.audit_path())
        .into_iter()
        .find(|r| r["fingerprint"] == "d3")
        .unwrap();
    // The interval counts from the end recorded in the ConfigMap: most of the hour is left.
    let left: u64 = rec["message"]
        .as_str()
        .unwrap()
        .strip_prefix("the cluster was acted on recently; ")
        .and_then(|m| m.split_once("s left of cluster_cooldown"))
        .map(|(n, _)| n.parse().unwrap())
        .unwrap_or_else(|| panic!("{rec}"));
    assert!((3000..=3600).contains(&left), "{rec}");
    let state: Value = client()
        .get(run.url("/api/v1/state"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let prod = &state["broker_remediation"][0];
    assert_eq!(prod["last_action"]["broker"], 4, "{prod}");
    assert_eq!(prod["last_action"]["at"], ended.to_string(), "{prod}");
    let alters_after = s
        .fake
        .writes()
        .iter()
        .filter(|(_, r)| matches!(r, Req::Alter(_)))
        .count();
    assert_eq!(alters_after, alters_before, "nothing was moved");
    assert!(action(&s).is_none());
}

const HOUR_AGO: &str = "2027-01-15T07:00:00Z";

#[tokio::test]
async fn nothing_starts_when_the_intent_cannot_be_written() {
    let fake = FakeKafka::dead_broker_4_with_operator_throttles().await;
    let files = Files::new();
    files.add_brokers(&format!(
        "  - {{cluster: prod, backend: kafka, kafka: {{bootstrap_servers: ['{}'], request_timeout: 2s}}, settle_time: 0s, poll_interval: 20ms, throttle_bytes_per_second: {RATE}}}\n",
        fake.bootstrap()
    ));
    let kube = fake_kube();
    let cms = kube.configmaps.clone();
    let h = harness_with(&files, kube, |_| {}).await;
    let alert = || {
        payload(
            "firing",
            vec![broker_alert_at(
                "firing",
                "d4",
                "KafkaBrokerDown",
                "prod",
                "4",
                HOUR_AGO,
            )],
        )
    };
    let last_record = || audit_lines(&files.audit_path()).pop().unwrap();
    let kafka_writes = || fake.writes().len();

    // 403: the ServiceAccount may not create ConfigMaps.
    cms.fail("POST", Some(403));
    let (code, b) = h.alerts(&alert()).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["results"][0]["outcome"], "failed", "{b}");
    assert_eq!(b["results"][0]["reason"], "kube_forbidden", "{b}");
    let r = last_record();
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.starts_with("not starting replace_replicas on broker 4: its intent could not be written to ConfigMap default/medic-actuator-intent-prod, and nothing acts without it: forbidden: missing RBAC permission: verb \"create\" on resource \"configmaps\" in namespace \"default\""),
        "{msg}"
    );
    assert_eq!(kafka_writes(), 0, "no throttle, no reassignment");
    assert!(cms.get("default", CM).is_none());
    let refused: Vec<(String, u16)> = cms
        .writes()
        .iter()
        .map(|w| (w.method.clone(), w.code))
        .collect();
    assert_eq!(
        refused,
        vec![("POST".to_string(), 403)],
        "one create, refused, not retried"
    );

    // 500: retried with backoff (2 attempts in the harness), then unavailable.
    cms.fail("POST", Some(500));
    let posts = cms.writes().len();
    let (_, b) = h.alerts(&alert()).await;
    assert_eq!(b["results"][0]["outcome"], "failed", "{b}");
    assert_eq!(b["results"][0]["reason"], "kube_unavailable", "{b}");
    assert_eq!(cms.writes().len() - posts, 2, "{:?}", cms.writes());
    assert!(last_record()["message"]
        .as_str()
        .unwrap()
        .contains("kubernetes API unavailable after 2 attempts: HTTP 500"));
    assert_eq!(kafka_writes(), 0);

    // 409 on create: another replica wrote it first; this one does not act.
    cms.fail("POST", Some(409));
    let (_, b) = h.alerts(&alert()).await;
    assert_eq!(b["results"][0]["outcome"], "skipped", "{b}");
    assert_eq!(b["results"][0]["reason"], "kube_conflict", "{b}");
    assert!(last_record()["message"]
        .as_str()
        .unwrap()
        .contains("was changed by someone else since it was read"));
    assert_eq!(kafka_writes(), 0);

    // A 409 skip answered the delivery (a repeat is a duplicate, which needs no look at the
    // ConfigMap); the re-evaluation tries again, and the read itself is refused now.
    cms.fail("POST", None);
    cms.fail("GET", Some(403));
    let (_, b) = h.alerts(&alert()).await;
    assert_eq!(b["results"][0]["reason"], "duplicate", "{b}");
    let records = audit_lines(&files.audit_path()).len();
    assert_eq!(h.app.api.engine.reevaluate().await.unwrap(), 0);
    let r = last_record();
    assert_eq!(audit_lines(&files.audit_path()).len(), records + 1, "{r}");
    assert_eq!(r["trigger"], "reevaluate", "{r}");
    assert_eq!(r["outcome"], "failed", "{r}");
    assert_eq!(r["reason"], "kube_forbidden", "{r}");
    assert!(
        r["message"].as_str().unwrap().starts_with("cannot reconcile the intent of broker actions in ConfigMap default/medic-actuator-intent-prod (read it, and take over an action it records), so nothing starts on the cluster until that succeeds: forbidden: missing RBAC permission: verb \"get\" on resource \"configmaps\""),
        "{r}"
    );
    assert_eq!(kafka_writes(), 0);

    // The API answers again: the next round starts it, its intent first.
    cms.fail("GET", None);
    assert_eq!(h.app.api.engine.reevaluate().await.unwrap(), 1);
    let r = last_record();
    assert_eq!(r["outcome"], "applied", "{r}");
    assert_eq!(r["phase"], "started", "{r}");
    let a = cms.data("default", CM, "action").unwrap();
    assert_eq!(a["phase"], "started", "{a}");
    assert_eq!(a["by"], "actuator-test");
    assert!(kafka_writes() > 0);
}
