//! The `cruise-control` backend against a wiremock Cruise Control that asserts each request
//! (method, path, every query parameter, the auth header) and plays the asynchronous task flow:
//! 202 + User-Task-ID, then user_tasks until Completed, CompletedWithError, or a time-out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use support::harness::*;
use support::*;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const HOUR_AGO: &str = "2027-01-15T07:00:00Z";
const BASE: &str = "/kafkacruisecontrol";

/// user_tasks: the statuses each task reports, one per poll (the last one repeats).
#[derive(Clone, Default)]
struct Tasks(Arc<Mutex<HashMap<String, VecDeque<&'static str>>>>);

impl Respond for Tasks {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let id = req
            .url
            .query_pairs()
            .find(|(k, _)| k == "user_task_ids")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        let mut m = self.0.lock().unwrap();
        let tasks = match m.get_mut(&id) {
            Some(q) => {
                let s = if q.len() > 1 {
                    q.pop_front().unwrap()
                } else {
                    q[0]
                };
                vec![
                    json!({"UserTaskId": id, "RequestURL": "POST /kafkacruisecontrol/x", "ClientIdentity": "127.0.0.1", "StartMs": "1", "Status": s}),
                ]
            }
            None => vec![],
        };
        ResponseTemplate::new(200).set_body_json(json!({"userTasks": tasks, "version": 1}))
    }
}

/// Executor state, settable.
#[derive(Clone)]
struct ExecState(Arc<Mutex<Value>>);

impl Respond for ExecState {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        ResponseTemplate::new(200)
            .set_body_json(json!({"ExecutorState": self.0.lock().unwrap().clone(), "version": 1}))
    }
}

struct Cc {
    server: MockServer,
    tasks: Tasks,
    exec: ExecState,
}

impl Cc {
    async fn start() -> Self {
        let server = MockServer::start().await;
        let tasks = Tasks::default();
        let exec = ExecState(Arc::new(Mutex::new(
            json!({"state": "NO_TASK_IN_PROGRESS"}),
        )));
        Mock::given(method("GET"))
            .and(path(format!("{BASE}/state")))
            .respond_with(exec.clone())
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("{BASE}/user_tasks")))
            .respond_with(tasks.clone())
            .mount(&server)
            .await;
        Cc {
            server,
            tasks,
            exec,
        }
    }

    /// POST `endpoint` answers `status` with `task` in User-Task-ID; the task then reports
    /// `statuses`.
    async fn action(
        &self,
        endpoint: &str,
        status: u16,
        task: &str,
        body: Value,
        statuses: &[&'static str],
    ) {
        Mock::given(method("POST"))
            .and(path(format!("{BASE}/{endpoint}")))
            .respond_with(
                ResponseTemplate::new(status)
                    .insert_header("User-Task-ID", task)
                    .set_body_json(body),
            )
            .mount(&self.server)
            .await;
        self.tasks
            .0
            .lock()
            .unwrap()
            .insert(task.to_string(), statuses.iter().copied().collect());
    }

    /// Every request: (method, path without the base, query pairs, authorization header).
    async fn requests(&self) -> Vec<(String, String, BTreeMap<String, String>, String)> {
        self.server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.method.to_string(),
                    r.url.path().trim_start_matches(BASE).to_string(),
                    r.url
                        .query_pairs()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    r.headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    async fn posts(&self) -> Vec<(String, BTreeMap<String, String>)> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r.0 == "POST")
            .map(|r| (r.1, r.2))
            .collect()
    }
}

fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn setup(cc: &Cc, extra: &str) -> (Files, Harness) {
    let files = Files::new();
    std::fs::write(files.path("cc-password"), "s3cret\n").unwrap();
    files.add_brokers(&format!(
        "  - {{cluster: prod, backend: cruise-control, cruise_control: {{url: '{}{BASE}', basic_username: medic, basic_password_file: '{}'}}, expected_brokers: 10, settle_time: 0s, poll_interval: 20ms{extra}}}\n",
        cc.server.uri(),
        files.path("cc-password").display()
    ));
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    (files, h)
}

fn alert(fp: &str, name: &str, broker: &str) -> Vec<u8> {
    payload(
        "firing",
        vec![broker_alert_at(
            "firing", fp, name, "prod", broker, HOUR_AGO,
        )],
    )
}

async fn wait_completed(files: &Files, n: usize) -> Value {
    for _ in 0..500 {
        let done: Vec<Value> = audit_lines(&files.audit_path())
            .into_iter()
            .filter(|r| r["phase"] == "completed")
            .collect();
        if done.len() >= n {
            return done[n - 1].clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "no completion {n}:\n{:#?}",
        audit_lines(&files.audit_path())
    );
}

#[tokio::test]
async fn demote_then_rebalance_through_the_async_task_flow() {
    let cc = Cc::start().await;
    let progress = json!({"progress": [{"operation": "Demote brokers", "operationProgress": [{"step": "AWAITING_CLUSTER_MODEL", "description": "", "time-in-ms": 3, "completionPercentage": 0.0}]}], "version": 1});
    cc.action(
        "demote_broker",
        202,
        "task-demote",
        progress.clone(),
        &["Active", "InExecution", "Completed"],
    )
    .await;
    cc.action(
        "rebalance",
        202,
        "task-rebalance",
        progress,
        &["InExecution", "Completed"],
    )
    .await;
    let (files, h) = setup(&cc, "").await;
    // Broker 5 is down (for a minute: inside its grace period): it must not receive replicas
    // or leadership from the rebalance.
    let (_, b) = h
        .alerts(&payload(
            "firing",
            vec![broker_alert_at(
                "firing",
                "k5",
                "KafkaBrokerDown",
                "prod",
                "5",
                "2027-01-15T07:59:00Z",
            )],
        ))
        .await;
    assert_eq!(b["results"][0]["reason"], "grace_period", "{b}");
    let (s, b) = h.alerts(&alert("o3", "KafkaBrokerOverloaded", "3")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["results"][0]["outcome"], "applied", "{b}");
    assert_eq!(b["results"][0]["action"], "move_leadership");
    let done = wait_completed(&files, 1).await;
    assert_eq!(done["outcome"], "applied", "{done}");
    assert_eq!(done["task_id"], "task-demote");
    assert!(
        done["message"]
            .as_str()
            .unwrap()
            .ends_with("completed: Cruise Control task task-demote completed"),
        "{done}"
    );

    // Still overloaded after the leadership move and its broker cooldown: replicas move.
    h.advance(30 * 60);
    h.app.api.engine.reevaluate().await.unwrap();
    let done = wait_completed(&files, 2).await;
    assert_eq!(done["action"], "move_replicas", "{done}");
    assert_eq!(done["outcome"], "applied");

    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("medic:s3cret")
    );
    let reqs = cc.requests().await;
    assert!(
        reqs.iter().all(|r| r.3 == basic),
        "auth on every request: {reqs:#?}"
    );
    let state = (
        "GET".to_string(),
        "/state".to_string(),
        q(&[("substates", "executor"), ("json", "true")]),
        basic.clone(),
    );
    let poll = |id: &str| {
        (
            "GET".to_string(),
            "/user_tasks".to_string(),
            q(&[("user_task_ids", id), ("json", "true")]),
            basic.clone(),
        )
    };
    let demote = (
        "POST".to_string(),
        "/demote_broker".to_string(),
        q(&[
            ("brokerid", "3"),
            ("dryrun", "false"),
            (
                "reason",
                "medic-actuator: KafkaBrokerOverloaded broker 3 (prod)",
            ),
            ("concurrent_leader_movements", "1000"),
            ("json", "true"),
        ]),
        basic.clone(),
    );
    let rebalance = (
        "POST".to_string(),
        "/rebalance".to_string(),
        q(&[
            ("dryrun", "false"),
            (
                "reason",
                "medic-actuator: KafkaBrokerOverloaded broker 3 (prod)",
            ),
            ("excluded_brokers_for_replica_move", "3,5"),
            ("excluded_brokers_for_leadership", "3,5"),
            ("concurrent_partition_movements_per_broker", "5"),
            ("concurrent_leader_movements", "1000"),
            ("json", "true"),
        ]),
        basic.clone(),
    );
    // Broker 5's grace period ends at the re-evaluation too, but the rebalance (older alert,
    // first) is running by then: one action at a time.
    let want = vec![
        state.clone(),
        demote,
        poll("task-demote"),
        poll("task-demote"),
        poll("task-demote"),
        state,
        rebalance,
        poll("task-rebalance"),
        poll("task-rebalance"),
    ];
    assert_eq!(reqs, want);

    let started = &audit_lines(&files.audit_path())
        .into_iter()
        .find(|r| r["phase"] == "started")
        .unwrap();
    assert_eq!(started["backend"], "cruise-control");
    assert_eq!(started["plan"]["endpoint"], "demote_broker");
    assert_eq!(started["plan"]["status"], 202);
    assert_eq!(started["plan"]["params"]["brokerid"], "3");
}

#[tokio::test]
async fn dead_broker_uses_remove_broker_and_an_error_ending_fails_audited() {
    let cc = Cc::start().await;
    cc.action(
        "remove_broker",
        202,
        "task-rm",
        json!({"progress": []}),
        &["InExecution", "CompletedWithError"],
    )
    .await;
    let (files, h) = setup(&cc, ", throttle_bytes_per_second: 1000000").await;
    let (_, b) = h.alerts(&alert("d7", "KafkaBrokerDown", "7")).await;
    assert_eq!(b["results"][0]["action"], "replace_replicas", "{b}");
    assert_eq!(b["results"][0]["outcome"], "applied");
    let done = wait_completed(&files, 1).await;
    assert_eq!(done["outcome"], "failed", "{done}");
    assert_eq!(done["reason"], "backend_refused");
    assert!(done["message"].as_str().unwrap().ends_with(
        "failed: refused: Cruise Control task task-rm completed with an error (see Cruise Control's log)"
    ));
    assert_eq!(
        cc.posts().await,
        vec![(
            "/remove_broker".to_string(),
            q(&[
                ("dryrun", "false"),
                ("reason", "medic-actuator: KafkaBrokerDown broker 7 (prod)"),
                ("brokerid", "7"),
                ("concurrent_partition_movements_per_broker", "5"),
                ("concurrent_leader_movements", "1000"),
                ("replication_throttle", "1000000"),
                ("json", "true"),
            ])
        )]
    );
}

#[tokio::test]
async fn a_task_past_its_time_out_is_stopped() {
    let cc = Cc::start().await;
    cc.action(
        "demote_broker",
        202,
        "task-slow",
        json!({}),
        &["InExecution"],
    )
    .await;
    Mock::given(method("POST"))
        .and(path(format!("{BASE}/stop_proposal_execution")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"message": "Proposal execution stopped.", "version": 1})),
        )
        .expect(1)
        .mount(&cc.server)
        .await;
    let (files, h) = setup(&cc, ", reassignment_timeout: 150ms").await;
    h.alerts(&alert("o3", "KafkaBrokerOverloaded", "3")).await;
    let done = wait_completed(&files, 1).await;
    assert_eq!(done["outcome"], "failed", "{done}");
    assert_eq!(done["reason"], "reassignment_timeout");
    let msg = done["message"].as_str().unwrap();
    assert!(
        msg.contains("still running after reassignment_timeout 150ms")
            && msg.ends_with("asked Cruise Control to stop the execution of task task-slow (stop_proposal_execution)"),
        "{msg}"
    );
    let posts: Vec<String> = cc.posts().await.into_iter().map(|p| p.0).collect();
    assert_eq!(posts, vec!["/demote_broker", "/stop_proposal_execution"]);
}

#[tokio::test]
async fn a_busy_executor_blocks_until_it_is_idle() {
    let cc = Cc::start().await;
    cc.action("demote_broker", 202, "t1", json!({}), &["Completed"])
        .await;
    *cc.exec.0.lock().unwrap() = json!({"state": "INTER_BROKER_REPLICA_MOVEMENT_TASK_IN_PROGRESS", "triggeredUserTaskId": "someone-else"});
    let (files, h) = setup(&cc, "").await;
    let (_, b) = h.alerts(&alert("o3", "KafkaBrokerOverloaded", "3")).await;
    assert_eq!(b["results"][0]["reason"], "reassignment_in_progress", "{b}");
    assert_eq!(
        audit_lines(&files.audit_path())[0]["message"],
        "a reassignment is in progress: Cruise Control executor is INTER_BROKER_REPLICA_MOVEMENT_TASK_IN_PROGRESS (user task someone-else)"
    );
    assert!(cc.posts().await.is_empty());
    *cc.exec.0.lock().unwrap() = json!({"state": "NO_TASK_IN_PROGRESS"});
    h.app.api.engine.reevaluate().await.unwrap();
    assert_eq!(
        cc.posts().await.len(),
        1,
        "acted on once the executor was idle"
    );
}

#[tokio::test]
async fn failures_to_start_are_audited_with_cruise_controls_message() {
    let cc = Cc::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{BASE}/demote_broker")))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"errorMessage": "java.lang.IllegalStateException: Insufficient valid windows\n\tat com.linkedin...", "version": 1})))
        .up_to_n_times(1)
        .mount(&cc.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{BASE}/demote_broker")))
        .respond_with(ResponseTemplate::new(401).set_body_string("Unauthorized"))
        .mount(&cc.server)
        .await;
    let (files, h) = setup(&cc, ", cluster_cooldown: 1m").await;
    let (_, b) = h.alerts(&alert("o3", "KafkaBrokerOverloaded", "3")).await;
    assert_eq!(b["results"][0]["outcome"], "failed", "{b}");
    assert_eq!(b["results"][0]["reason"], "backend_unavailable");
    assert_eq!(
        audit_lines(&files.audit_path())[0]["message"],
        "move_leadership on broker 3 was not started: unavailable: Cruise Control POST demote_broker: HTTP 500: java.lang.IllegalStateException: Insufficient valid windows"
    );
    // A failed start consumes the cluster interval: no retry at the next re-evaluation.
    h.app.api.engine.reevaluate().await.unwrap();
    assert_eq!(cc.posts().await.len(), 1);
    h.advance(60);
    h.app.api.engine.reevaluate().await.unwrap();
    let last = audit_lines(&files.audit_path()).pop().unwrap();
    assert_eq!(last["reason"], "backend_refused", "{last}");
    assert_eq!(
        last["message"],
        "move_leadership on broker 3 was not started: refused: Cruise Control POST demote_broker: HTTP 401: Unauthorized (check the cruise_control credentials and Cruise Control's security settings)"
    );
}

#[tokio::test]
async fn an_unreachable_cruise_control_is_unavailable_audited() {
    let files = Files::new();
    // Port 1 on loopback: nothing listens there.
    files.add_brokers("  - {cluster: prod, backend: cruise-control, cruise_control: {url: 'http://127.0.0.1:1/kafkacruisecontrol', request_timeout: 2s}, expected_brokers: 10, settle_time: 0s}\n");
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let (_, b) = h.alerts(&alert("o3", "KafkaBrokerOverloaded", "3")).await;
    assert_eq!(b["results"][0]["outcome"], "failed", "{b}");
    assert_eq!(b["results"][0]["reason"], "backend_unavailable");
    let last = audit_lines(&files.audit_path()).pop().unwrap();
    assert!(last["message"]
        .as_str()
        .unwrap()
        .starts_with("cannot read the cluster's state, so nothing starts: unavailable: Cruise Control GET state: "), "{last}");
}

#[tokio::test]
async fn cruise_controls_own_dry_run_records_its_proposal() {
    let cc = Cc::start().await;
    cc.action(
        "demote_broker",
        200,
        "task-dry",
        json!({"summary": {"numReplicaMovements": 0, "numLeaderMovements": 25, "dataToMoveMB": 0, "numIntraBrokerReplicaMovements": 0}, "goalSummary": [], "version": 1}),
        &["Completed"],
    )
    .await;
    let (files, h) = setup(&cc, "").await;
    // The setup has dry_run off in the cruise_control section; a second cluster entry would
    // need another name, so switch it on by rewriting the file.
    drop(h);
    let p = files.path("policies.yaml");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "basic_username: medic,",
        "basic_username: medic, dry_run: true,",
    );
    std::fs::write(&p, text).unwrap();
    let h = harness_with(&files, fake_kube(), |_| {}).await;
    let (_, b) = h.alerts(&alert("o3", "KafkaBrokerOverloaded", "3")).await;
    assert_eq!(b["results"][0]["outcome"], "dry_run", "{b}");
    let r = &audit_lines(&files.audit_path())[0];
    assert_eq!(r["plan"]["summary"]["numLeaderMovements"], 25);
    assert_eq!(r["plan"]["params"]["dryrun"], "true");
    assert_eq!(r["dry_run"], true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let polls = cc
        .requests()
        .await
        .iter()
        .filter(|r| r.1 == "/user_tasks")
        .count();
    assert_eq!(polls, 0, "nothing to poll for a proposal");
}
