//! High availability end to end, on the real binary: two actuator processes with leader election
//! (lease_duration 3s, renew_deadline 2s, retry_period 500ms) share one fake API server (Leases,
//! ConfigMaps for the intent of broker actions, Deployments; each replica reaches it through an
//! endpoint of its own that can be cut off), one protocol-level fake Kafka cluster behind a
//! `kafka` broker policy with a replication throttle, and one fake Prometheus answering `ALERTS`.
//!
//! - A broker alert notified to the follower only is audited `not_leader` there and acted on
//!   once, by the leader, from `ALERTS`.
//! - kill -9 of the leader mid-move: the other takes over within lease_duration + retry_period,
//!   follows the move from its intent (no second start), removes exactly the recorded throttle,
//!   audits the end as `recovery` and clears the intent.
//! - A leader cut off from the API as an alert fires steps down at renew_deadline; the other
//!   takes over only after lease_duration and starts the one move; never two leaders.
//! - A decision writing its intent through an API outage when its replica is deposed starts
//!   nothing, even when the API answers it again after the other replica took over.
//!
//! Which process sent a Kafka request is read from the fake's side: it records the client's
//! TCP port of every request, and `/proc` tells which actuator process holds that socket.

use crate::support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jiff::{SignedDuration, Timestamp};
use kafka_protocol::messages::ApiKey;
use serde_json::{json, Value};
use support::fake_kafka::{FakeKafka, Req};
use support::fake_lease::{assert_disjoint, intervals, Cut, Endpoint, LeaseApi, LeaseRequest};
use support::fake_prom_alerts::FakePromAlerts;
use support::harness::{fake_kube, metric};
use support::process::{post, Running};
use support::*;

const LEASE: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(500);
/// Slack for a loaded 2-core CI machine on bounds that are upper limits of a wait.
const LOAD_MARGIN: Duration = Duration::from_secs(2);
/// How late a timer that fires at a deadline may run on a loaded machine.
const TIMER_SLACK: Duration = Duration::from_millis(750);
const NS: &str = "medic";
const LEASE_NAME: &str = "medic-actuator";
const CM: &str = "medic-actuator-intent-prod";
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const RATE: &str = "1048576";
/// The settings of the Kubernetes client of most tests: requests time out after 2s, two
/// attempts.
const KUBE: &str = "retry_backoff: 10ms, retry_attempts: 2, request_timeout: 2s";

/// Polls `f` until it gives a value (a generous deadline: CI is a loaded 2-core machine).
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Throttles = BTreeMap<(i8, String), BTreeMap<String, String>>;

/// The operator's throttles, as `kafka_cluster` set them.
fn operators_throttles() -> Throttles {
    let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    BTreeMap::from([
        (
            (TOPIC, "other".to_string()),
            one("leader.replication.throttled.replicas", "0:1,0:2"),
        ),
        (
            (TOPIC, "logs".to_string()),
            one("follower.replication.throttled.replicas", "2:3"),
        ),
        (
            (BROKER, "5".to_string()),
            one("leader.replication.throttled.rate", "999"),
        ),
    ])
}

/// The operator's throttles plus the replace_replicas move's: logs-1 [1,4] -> [1,3] and logs-0
/// [4,1,2] -> [1,3,2], the rate on the live brokers taking part (1, 2, 3).
fn with_ours() -> Throttles {
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

/// A throttle removal: (resource type, name, config, operation, value).
type Removal = (i8, String, String, i8, Option<String>);

/// The SUBTRACT/DELETE config operations in `writes`, sorted.
fn removals(writes: &[(i32, Req)]) -> Vec<Removal> {
    let mut out: Vec<Removal> = writes
        .iter()
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

/// The removals that undo exactly the throttle an intent records: SUBTRACT of its
/// `partition:broker` entries per topic config, DELETE of its per-broker configs.
fn removals_of(throttle: &Value) -> Vec<Removal> {
    let mut out = Vec::new();
    for (topic, configs) in throttle["topics"].as_object().unwrap() {
        for (name, entries) in configs.as_object().unwrap() {
            let entries: Vec<&str> = entries
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap())
                .collect();
            out.push((
                TOPIC,
                topic.clone(),
                name.clone(),
                3,
                Some(entries.join(",")),
            ));
        }
    }
    for (broker, configs) in throttle["brokers"].as_object().unwrap() {
        for name in configs.as_object().unwrap().keys() {
            out.push((BROKER, broker.clone(), name.clone(), 1, None));
        }
    }
    out.sort();
    out
}

/// The partitions and target replicas of every AlterPartitionReassignments request, in order.
fn alters(fake: &FakeKafka) -> Vec<Vec<(String, i32, Option<Vec<i32>>)>> {
    fake.writes()
        .into_iter()
        .filter_map(|(_, r)| match r {
            Req::Alter(a) => {
                let mut parts: Vec<_> = a
                    .topics
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
                    .collect();
                parts.sort();
                Some(parts)
            }
            _ => None,
        })
        .collect()
}

/// The one reassignment start every test expects: broker 4's replicas replaced.
fn the_start() -> Vec<(String, i32, Option<Vec<i32>>)> {
    vec![
        ("logs".to_string(), 0, Some(vec![1, 3, 2])),
        ("logs".to_string(), 1, Some(vec![1, 3])),
    ]
}

/// The TCP port of `addr` (`host:port` in hex, as `/proc/net/tcp` writes it).
fn hex_port(addr: &str) -> Option<u16> {
    addr.rsplit(':')
        .next()
        .and_then(|p| u16::from_str_radix(p, 16).ok())
}

/// Which of `pids` holds the client end of the loopback connection from `port` to one of
/// `servers` (the fake brokers), from `/proc/net/tcp*` (socket inodes) and `/proc/<pid>/fd`.
fn owner_of(port: u16, servers: &[u16], pids: &[(&'static str, u32)]) -> Option<&'static str> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[9] == "0" {
                continue;
            }
            if hex_port(f[1]) == Some(port) && hex_port(f[2]).is_some_and(|p| servers.contains(&p))
            {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    pids.iter()
        .find(|(_, pid)| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
                })
        })
        .map(|(id, _)| *id)
}

struct Replica {
    id: &'static str,
    run: Option<Running>,
    endpoint: Endpoint,
    audit: PathBuf,
}

impl Replica {
    fn run(&self) -> &Running {
        self.run.as_ref().expect("the replica runs")
    }

    fn dump(&self) -> String {
        self.run
            .as_ref()
            .map(Running::dump)
            .unwrap_or_else(|| format!("{} is not running", self.id))
    }

    fn records(&self) -> Vec<Value> {
        audit_lines(&self.audit)
    }

    /// Its leadership records: (action, ts).
    fn leadership(&self) -> Vec<(String, Timestamp)> {
        self.records()
            .into_iter()
            .filter(|r| r["trigger"] == "election")
            .map(|r| {
                (
                    r["action"].as_str().unwrap().to_string(),
                    r["ts"].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    /// Records of the broker action's start (`phase: started`).
    fn starts(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["phase"] == "started")
            .collect()
    }
}

/// Two replicas and the fakes they share. The replicas come first, so they are killed before
/// the fakes and the files go.
struct Ha {
    reps: [Replica; 2],
    http: reqwest::Client,
    api: LeaseApi,
    kube: FakeKube,
    kafka: FakeKafka,
    prom: FakePromAlerts,
    _prom_server: wiremock::MockServer,
    _files: Files,
}

fn config(files: &Files, id: &str, api: &str, prom: &str, kube: &str) -> (PathBuf, PathBuf) {
    let dir = files.path(id);
    std::fs::create_dir_all(&dir).unwrap();
    let audit = dir.join("audit.log");
    let p = dir.join("actuator.yaml");
    std::fs::write(
        &p,
        format!(
            "listen: 127.0.0.1:0\npolicies_file: {}\ninstance: {id}\nauth: {{bearer_token_file: {}}}\naudit: {{path: {}}}\nkubernetes: {{api_url: \"{api}\", {kube}}}\nprometheus: {{url: \"{prom}\"}}\nreevaluate_interval: 1s\nleader_election: {{enabled: true, identity: {id}, namespace: {NS}, lease_name: {LEASE_NAME}, lease_duration: 3s, renew_deadline: 2s, retry_period: 500ms}}\n",
            files.path("policies.yaml").display(),
            files.path("token").display(),
            audit.display(),
        ),
    )
    .unwrap();
    (p, audit)
}

impl Ha {
    /// Two replicas `actuator-a` and `actuator-b` with the Kubernetes client settings
    /// `kube_settings` (the inside of `kubernetes: {...}` besides `api_url`).
    async fn start(kube_settings: &str) -> Self {
        let kafka = FakeKafka::dead_broker_4_with_operator_throttles().await;
        let files = Files::new();
        files.add_brokers(&format!(
            "  - {{cluster: prod, backend: kafka, kafka: {{bootstrap_servers: ['{}'], request_timeout: 2s}}, settle_time: 0s, down_grace: 0s, poll_interval: 100ms, reassignment_timeout: 1h, throttle_bytes_per_second: {RATE}}}\n",
            kafka.bootstrap()
        ));
        let prom = FakePromAlerts::default();
        let prom_server = prom.start().await;
        let api = LeaseApi::default();
        let kube = fake_kube();
        let mut reps = Vec::new();
        for id in ["actuator-a", "actuator-b"] {
            let endpoint = api.endpoint(id, Some(&kube)).await;
            let (path, audit) = config(
                &files,
                id,
                &endpoint.uri(),
                &prom_server.uri(),
                kube_settings,
            );
            let run = Running::start_with(&[], &[("POD_NAMESPACE", Path::new(NS))], &path);
            reps.push(Replica {
                id,
                run: Some(run),
                endpoint,
                audit,
            });
        }
        let reps: [Replica; 2] = reps.try_into().ok().unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Long enough for a decision that waits out the API's time-outs.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Self {
            reps,
            http,
            api,
            kube,
            kafka,
            prom,
            _prom_server: prom_server,
            _files: files,
        }
    }

    async fn get(&self, i: usize, path: &str) -> Option<Value> {
        let run = self.reps[i].run.as_ref()?;
        let r = self
            .http
            .get(run.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?;
        if r.status() != 200 {
            return None;
        }
        r.json().await.ok()
    }

    async fn state(&self, i: usize) -> Value {
        self.get(i, "/api/v1/state")
            .await
            .unwrap_or_else(|| panic!("no state from {}\n{}", self.reps[i].id, self.reps[i].dump()))
    }

    async fn metrics(&self, i: usize) -> String {
        self.http
            .get(self.reps[i].run().url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until exactly one replica leads and the other has seen it hold the Lease:
    /// (leader, follower).
    async fn elected(&self) -> (usize, usize) {
        let l = eventually(60, "one replica to lead", || async {
            let (a, b) = (self.state(0).await, self.state(1).await);
            match (
                a["leader"]["is_leader"].as_bool(),
                b["leader"]["is_leader"].as_bool(),
            ) {
                (Some(true), Some(true)) => panic!("both lead: {a} {b}"),
                (Some(true), _) => Some(0),
                (_, Some(true)) => Some(1),
                _ => None,
            }
        })
        .await;
        let (f, lid) = (1 - l, self.reps[l].id);
        eventually(30, "the follower to see the holder", || async {
            (self.state(f).await["leader"]["holder"] == lid).then_some(())
        })
        .await;
        (l, f)
    }

    /// The first audit record of replica `i` matching `f`.
    async fn record(&self, i: usize, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let r = &self.reps[i];
        let found = eventually(60, &format!("{} to audit {what}", r.id), || async {
            r.records().into_iter().find(|x| f(x))
        })
        .await;
        found
    }

    /// `data.action` of the cluster's intent.
    fn intent(&self) -> Option<Value> {
        self.kube.configmaps.data(NS, CM, "action")
    }

    /// `ALERTS` queries answered so far (only a leader asks).
    fn alerts_queries(&self) -> usize {
        self.prom
            .queries()
            .iter()
            .filter(|q| q.starts_with("ALERTS{"))
            .count()
    }

    /// Waits for `n` more re-evaluation rounds of the leader (each reads `ALERTS`).
    async fn rounds(&self, n: usize) {
        let from = self.alerts_queries();
        eventually(60, &format!("{n} more rounds of the leader"), || async {
            (self.alerts_queries() >= from + n).then_some(())
        })
        .await;
    }

    /// The replica (by id) that sent each Kafka request so far, as (API key, sender); `None`
    /// for a connection no running replica holds (closed, or its process gone).
    fn senders(&self) -> Vec<(i16, Option<&'static str>)> {
        let servers = self.kafka.ports();
        let pids: Vec<(&'static str, u32)> = self
            .reps
            .iter()
            .filter_map(|r| r.run.as_ref().map(|run| (r.id, run.child.id())))
            .collect();
        let mut by_port: HashMap<u16, Option<&'static str>> = HashMap::new();
        self.kafka
            .peers()
            .into_iter()
            .map(|(key, port)| {
                let who = *by_port
                    .entry(port)
                    .or_insert_with(|| owner_of(port, &servers, &pids));
                (key, who)
            })
            .collect()
    }

    fn last_write_by(&self, id: &str) -> LeaseRequest {
        self.api
            .applied()
            .into_iter()
            .rfind(|r| r.client == id)
            .unwrap_or_else(|| panic!("no Lease write by {id}"))
    }

    fn takeover_by(&self, id: &str) -> LeaseRequest {
        self.api
            .applied()
            .into_iter()
            .find(|r| r.client == id && r.holder() == Some(id))
            .unwrap_or_else(|| panic!("no Lease write by {id} naming itself"))
    }
}

/// A KafkaBrokerDown for broker 4 as Prometheus and Alertmanager name it (labels alertname,
/// cluster, broker, severity), active for an hour (past `down_grace`).
struct DownAlert {
    active: Timestamp,
    fingerprint: String,
}

impl DownAlert {
    fn new() -> Self {
        let labels: BTreeMap<String, String> = [
            ("alertname", "KafkaBrokerDown"),
            ("broker", "4"),
            ("cluster", "prod"),
            ("severity", "warning"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let now = Timestamp::now().as_second();
        Self {
            active: Timestamp::from_second(now - 3600).unwrap(),
            fingerprint: medic_actuator::alert::fingerprint(&labels),
        }
    }

    /// Prometheus shows it firing.
    fn fire(&self, prom: &FakePromAlerts) {
        prom.fire("KafkaBrokerDown", "prod", "4", self.active.as_second());
    }

    /// Alertmanager's notification of it.
    fn webhook(&self) -> Vec<u8> {
        payload(
            "firing",
            vec![broker_alert_at(
                "firing",
                &self.fingerprint,
                "KafkaBrokerDown",
                "prod",
                "4",
                &self.active.to_string(),
            )],
        )
    }
}

/// Checks the start record of the move and its intent (by `by`, phase started, the plan and
/// exactly the throttle set on the fake). Returns the intent.
fn check_start(ha: &Ha, start: &Value, by: &str, alert: &DownAlert) -> Value {
    for (field, want) in [
        ("trigger", json!("reevaluate")),
        ("outcome", json!("applied")),
        ("action", json!("replace_replicas")),
        ("instance", json!(by)),
        ("cluster", json!("prod")),
        ("broker", json!("4")),
        ("alertname", json!("KafkaBrokerDown")),
        ("fingerprint", json!(alert.fingerprint)),
        ("backend", json!("kafka")),
        ("replica_moves", json!(2)),
    ] {
        assert_eq!(start[field], want, "{field}: {start:#}");
    }
    // The alert starts when the leader first saw it firing in ALERTS: after it went pending
    // (ALERTS_FOR_STATE) and no later than this decision.
    let starts: Timestamp = start["starts_at"].as_str().unwrap().parse().unwrap();
    let decided: Timestamp = start["ts"].as_str().unwrap().parse().unwrap();
    assert!(
        starts >= alert.active && starts <= decided,
        "starts_at {starts}: {start:#}"
    );
    let task = start["task_id"].as_str().unwrap();
    assert!(task.starts_with("kafka-"), "{start:#}");
    let a = ha.intent().expect("the intent of the running action");
    assert_eq!(a["phase"], "started", "{a:#}");
    assert_eq!(a["by"], by, "{a:#}");
    assert_eq!(a["task_id"], task, "{a:#}");
    assert_eq!(a["kind"], "replace_replicas", "{a:#}");
    assert_eq!(a["broker"], 4, "{a:#}");
    assert_eq!(a["alert"]["fingerprint"], alert.fingerprint.as_str());
    assert_eq!(a["alert"]["starts_at"], start["starts_at"]);
    assert!(a.get("recovered_by").is_none(), "{a:#}");
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
        "the intent names exactly the throttle set"
    );
    let mut moving = ha.kafka.ongoing();
    moving.sort();
    assert_eq!(
        moving,
        vec![("logs".to_string(), 0), ("logs".to_string(), 1)],
        "the reassignment runs"
    );
    assert_eq!(ha.kafka.throttles(), with_ours(), "the throttle is set");
    assert_eq!(
        alters(&ha.kafka),
        vec![the_start()],
        "one reassignment start"
    );
    a
}

fn wall(t: SystemTime) -> Timestamp {
    Timestamp::try_from(t).unwrap()
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap()
}

const ALTER: i16 = ApiKey::AlterPartitionReassignments as i16;
const LIST: i16 = ApiKey::ListPartitionReassignments as i16;

/// A series of the Kafka request counter of a replica.
fn kafka_requests(metrics: &str, api: &str) -> f64 {
    metric(
        metrics,
        &format!("medic_actuator_kafka_requests_total{{api=\"{api}\",outcome=\"ok\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_alert_received_only_by_the_follower_is_acted_on_by_the_leader() {
    let ha = Ha::start(KUBE).await;
    let (l, f) = ha.elected().await;
    let (lid, fid) = (ha.reps[l].id, ha.reps[f].id);
    assert!(ha.kafka.requests().is_empty(), "nothing read Kafka yet");

    // The alert fires in Prometheus, and Alertmanager notifies the follower only.
    let alert = DownAlert::new();
    alert.fire(&ha.prom);
    let (s, body) = post(&ha.http, ha.reps[f].run(), alert.webhook())
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    let result = &body["results"][0];
    assert_eq!(body["results"].as_array().unwrap().len(), 1, "{body}");
    for (field, want) in [
        ("fingerprint", alert.fingerprint.as_str()),
        ("cluster", "prod"),
        ("broker", "4"),
        ("outcome", "skipped"),
        ("action", "none"),
        ("reason", "not_leader"),
    ] {
        assert_eq!(result[field], want, "{field}: {body}");
    }
    let skip = ha.reps[f]
        .records()
        .into_iter()
        .find(|r| r["alertname"] == "KafkaBrokerDown")
        .unwrap();
    assert_eq!(skip["seq"], result["seq"]);
    assert_eq!(skip["trigger"], "webhook");
    assert_eq!(skip["instance"], fid);
    assert_eq!(
        skip["message"],
        "this replica does not hold the leader Lease; only the leader acts on brokers"
    );

    // The leader acts on it from ALERTS: one reassignment, its intent first.
    let start = ha
        .record(l, "the start of the move", |r| r["phase"] == "started")
        .await;
    check_start(&ha, &start, lid, &alert);
    let state = ha.state(l).await;
    let prod = &state["broker_remediation"][0];
    assert_eq!(prod["running"]["task_id"], start["task_id"], "{prod:#}");
    let tracked = prod["tracked_alerts"].as_array().unwrap();
    assert_eq!(tracked.len(), 1, "{prod:#}");
    assert_eq!(tracked[0]["origin"], "prometheus", "{prod:#}");
    assert_eq!(tracked[0]["fingerprint"], alert.fingerprint.as_str());
    // The follower keeps tracking the alert it was sent, and runs nothing.
    let state = ha.state(f).await;
    let prod = &state["broker_remediation"][0];
    assert!(prod["running"].is_null(), "{prod:#}");
    assert_eq!(prod["tracked_alerts"][0]["origin"], "webhook", "{prod:#}");

    // The leader's next rounds see its own move running; three more rounds start nothing.
    let held = ha
        .record(l, "the alert held by the running move", |r| {
            r["reason"] == "remediation_in_progress"
        })
        .await;
    assert_eq!(held["trigger"], "reevaluate", "{held:#}");
    ha.rounds(3).await;
    assert_eq!(
        alters(&ha.kafka),
        vec![the_start()],
        "one reassignment start"
    );
    assert_eq!(ha.reps[l].starts().len(), 1, "{:#?}", ha.reps[l].records());
    assert!(
        ha.reps[f].starts().is_empty(),
        "{:#?}",
        ha.reps[f].records()
    );

    // Every Kafka request came from the leader's process; the follower sent none.
    let senders = ha.senders();
    assert!(senders.iter().any(|(k, _)| *k == ALTER), "{senders:?}");
    let strangers: Vec<_> = senders
        .iter()
        .filter(|(_, who)| *who != Some(lid))
        .collect();
    assert!(
        strangers.is_empty(),
        "Kafka requests not sent by the leader {lid}: {strangers:?} of {senders:?}"
    );
    assert_eq!(
        senders.iter().filter(|(k, _)| *k == ALTER).count(),
        1,
        "{senders:?}"
    );
    let (ml, mf) = (ha.metrics(l).await, ha.metrics(f).await);
    assert_eq!(
        kafka_requests(&ml, "alter_partition_reassignments"),
        1.0,
        "{ml}"
    );
    assert!(
        !mf.contains("medic_actuator_kafka_requests_total{"),
        "the follower sent Kafka requests:\n{mf}"
    );
    assert_eq!(ha.intent().unwrap()["by"], lid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_move_hands_the_move_to_the_other_replica() {
    let mut ha = Ha::start(KUBE).await;
    let (l, f) = ha.elected().await;
    let (lid, fid) = (ha.reps[l].id, ha.reps[f].id);

    // A move runs: throttle set, reassignment in progress on the fake, intent recorded.
    let alert = DownAlert::new();
    alert.fire(&ha.prom);
    let start = ha
        .record(l, "the start of the move", |r| r["phase"] == "started")
        .await;
    let intent = check_start(&ha, &start, lid, &alert);
    let task = start["task_id"].as_str().unwrap().to_string();
    let senders = ha.senders();
    assert_eq!(
        senders
            .iter()
            .filter(|(k, _)| *k == ALTER)
            .collect::<Vec<_>>(),
        vec![&(ALTER, Some(lid))],
        "the start came from the leader's process"
    );
    let writes_before = ha.kafka.writes().len();
    let requests_before = ha.kafka.peers().len();
    // The leader's connections: a poll it had sent when killed may still be logged after this.
    let old_ports: Vec<u16> = ha
        .kafka
        .peers()
        .iter()
        .zip(&senders)
        .filter(|(_, (_, who))| *who == Some(lid))
        .map(|((_, port), _)| *port)
        .collect();

    // kill -9 the leader: no release; the other replica waits out the Lease.
    let killed = Instant::now();
    ha.reps[l].run.take().unwrap().kill9();
    eventually(60, "the other replica to lead", || async {
        (ha.state(f).await["leader"]["is_leader"] == true).then_some(())
    })
    .await;
    let last = ha.last_write_by(lid);
    let take = ha.takeover_by(fid);
    let (after_kill, after_last) = (take.at - killed, take.at - last.at);
    println!(
        "takeover after kill -9 of the leader mid-move: {after_kill:?} after the kill, {after_last:?} after its last renewal (lease_duration {LEASE:?}, retry_period {RETRY:?})"
    );
    assert!(
        after_last >= LEASE,
        "taken over {after_last:?} after the holder's last renewal, before lease_duration"
    );
    assert!(
        after_kill <= LEASE + RETRY + LOAD_MARGIN,
        "takeover took {after_kill:?}\n{}",
        ha.reps[f].dump()
    );
    assert_eq!(
        ha.api.lease(NS, LEASE_NAME).unwrap()["spec"]["leaseTransitions"],
        1
    );

    // It takes the move over from the intent (a write with a precondition) and follows it:
    // no second start, the throttle stays while the partitions move.
    let taken = eventually(60, "the takeover recorded in the intent", || async {
        ha.intent().filter(|a| a["recovered_by"] == fid)
    })
    .await;
    for key in [
        "id",
        "task_id",
        "by",
        "started_at",
        "deadline",
        "moves",
        "throttle",
    ] {
        assert_eq!(taken[key], intent[key], "{key}: {taken:#}");
    }
    assert_eq!(taken["phase"], "started");
    let state = ha.state(f).await;
    let running = &state["broker_remediation"][0]["running"];
    assert_eq!(running["task_id"], task.as_str(), "{state:#}");
    assert_eq!(running["recovered_from"], lid, "{state:#}");
    eventually(60, "the new leader to poll the reassignment", || async {
        let polls = ha.kafka.peers()[requests_before..]
            .iter()
            .filter(|(k, _)| *k == LIST)
            .count();
        (polls >= 3).then_some(())
    })
    .await;
    assert_eq!(
        ha.kafka.throttles(),
        with_ours(),
        "not removed under a move"
    );
    assert_eq!(ha.kafka.ongoing().len(), 2);
    assert_eq!(ha.kafka.writes().len(), writes_before, "nothing new sent");
    assert!(
        ha.reps[f].starts().is_empty(),
        "{:#?}",
        ha.reps[f].records()
    );
    assert!(!ha.reps[f]
        .records()
        .iter()
        .any(|r| r["phase"] == "completed"));

    // The move completes: the new leader ends it, removes exactly the intent's throttle, audits
    // the end as recovered and clears the intent.
    ha.kafka.complete_all();
    let end = ha
        .record(f, "the end of the move", |r| r["phase"] == "completed")
        .await;
    for (field, want) in [
        ("trigger", json!("recovery")),
        ("outcome", json!("applied")),
        ("action", json!("replace_replicas")),
        ("instance", json!(fid)),
        ("task_id", json!(task)),
        ("broker", json!("4")),
        ("fingerprint", json!(alert.fingerprint)),
    ] {
        assert_eq!(end[field], want, "{field}: {end:#}");
    }
    let msg = end["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "recovered by {fid}: replace_replicas on broker 4 (task {task}, started {} by {lid}) completed: 2 partitions reassigned; throttle removed",
            intent["started_at"].as_str().unwrap()
        )),
        "{msg}"
    );
    assert_eq!(
        ha.kafka.throttles(),
        operators_throttles(),
        "only ours removed"
    );
    let after = ha.kafka.writes()[writes_before..].to_vec();
    assert_eq!(removals(&after), removals_of(&intent["throttle"]));
    assert_eq!(
        removals(&ha.kafka.writes()),
        removals_of(&intent["throttle"]),
        "the only removals"
    );
    assert_eq!(ha.kafka.replicas("logs", 0), vec![1, 3, 2]);
    assert_eq!(ha.kafka.replicas("logs", 1), vec![1, 3]);
    let cleared = eventually(60, "the intent cleared", || async {
        ha.kube
            .configmaps
            .get(NS, CM)
            .filter(|o| o["data"].get("action").is_none())
    })
    .await;
    let cooldowns: Value =
        serde_json::from_str(cleared["data"]["cooldowns"].as_str().unwrap()).unwrap();
    assert_eq!(cooldowns["cluster"]["by"], fid, "{cooldowns:#}");
    assert_eq!(cooldowns["cluster"]["kind"], "replace_replicas");
    assert_eq!(cooldowns["brokers"]["4"], cooldowns["cluster"]);

    // The alert still fires: the cluster interval holds it, and across the whole run the fake
    // got one reassignment start. Every request since the kill came from the new leader.
    let held = ha
        .record(f, "the alert held by the cluster interval", |r| {
            r["reason"] == "cluster_cooldown"
        })
        .await;
    assert_eq!(held["trigger"], "reevaluate");
    ha.rounds(3).await;
    assert_eq!(
        alters(&ha.kafka),
        vec![the_start()],
        "one reassignment start"
    );
    assert!(
        ha.reps[f].starts().is_empty(),
        "{:#?}",
        ha.reps[f].records()
    );
    let senders = ha.senders();
    let peers = ha.kafka.peers();
    let strangers: Vec<_> = senders[requests_before..]
        .iter()
        .zip(&peers[requests_before..])
        .filter(|((key, who), (_, port))| {
            let in_flight_poll = old_ports.contains(port) && *key == LIST;
            *who != Some(fid) && !in_flight_poll
        })
        .collect();
    assert!(
        strangers.is_empty(),
        "requests since the kill not sent by {fid}: {strangers:?}"
    );
    let m = ha.metrics(f).await;
    assert_eq!(
        kafka_requests(&m, "alter_partition_reassignments"),
        0.0,
        "{m}"
    );
}

/// Both replicas' `is_leader`, sampled side by side from `/api/v1/state` until dropped.
struct Sampler {
    samples: Arc<Mutex<Vec<(Instant, [bool; 2])>>>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Sampler {
    fn start(ha: &Ha, order: [usize; 2]) -> Self {
        let samples: Arc<Mutex<Vec<(Instant, [bool; 2])>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let urls = order.map(|i| ha.reps[i].run().url("/api/v1/state"));
        let c = ha.http.clone();
        let task = {
            let (samples, stop) = (samples.clone(), stop.clone());
            tokio::spawn(async move {
                let get = |u: String| {
                    let c = c.clone();
                    async move {
                        let r = c.get(u).bearer_auth(TOKEN).send().await.ok()?;
                        r.json::<Value>().await.ok()
                    }
                };
                while !stop.load(Ordering::SeqCst) {
                    let (x, y) = futures::join!(get(urls[0].clone()), get(urls[1].clone()));
                    if let (Some(x), Some(y)) = (x, y) {
                        let flags = [
                            x["leader"]["is_leader"] == true,
                            y["leader"]["is_leader"] == true,
                        ];
                        samples.lock().unwrap().push((Instant::now(), flags));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        Self {
            samples,
            stop,
            task: Some(task),
        }
    }

    /// Waits for a sample matching `f`.
    async fn wait(&self, what: &str, f: impl Fn(&[bool; 2]) -> bool) {
        eventually(30, what, || async {
            self.samples
                .lock()
                .unwrap()
                .iter()
                .any(|(_, s)| f(s))
                .then_some(())
        })
        .await;
    }

    async fn finish(mut self) -> Vec<(Instant, [bool; 2])> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.take().unwrap().await.unwrap();
        self.samples.lock().unwrap().clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_stops_before_the_other_starts() {
    let ha = Ha::start(KUBE).await;
    let (l, f) = ha.elected().await;
    let (lid, fid) = (ha.reps[l].id, ha.reps[f].id);
    let sampler = Sampler::start(&ha, [l, f]);
    // Seen leading before the cut: once its decision waits on the API, its /api/v1/state waits
    // for the cluster that decision holds.
    sampler
        .wait("a sample of the leader leading", |s| *s == [true, false])
        .await;

    // The leader loses the API (Leases, ConfigMaps, Deployments: no answer at all) as the alert
    // fires: Prometheus shows it, and Alertmanager notifies the cut-off leader.
    ha.reps[l].endpoint.set(Cut::Hang);
    let alert = DownAlert::new();
    alert.fire(&ha.prom);
    let webhook = {
        let (http, url, body) = (
            ha.http.clone(),
            ha.reps[l].run().url("/api/v1/alerts"),
            alert.webhook(),
        );
        tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };

    // It steps down at renew_deadline after its last successful renewal, before its Lease can
    // expire.
    let lost = ha
        .record(l, "lose_leadership", |r| r["action"] == "lose_leadership")
        .await;
    let lost_at: Timestamp = lost["ts"].as_str().unwrap().parse().unwrap();
    let last = ha.last_write_by(lid);
    let stepped = lost_at.duration_since(wall(last.wall));
    println!(
        "the cut-off leader stepped down {stepped:#} after its last successful renewal (renew_deadline {RENEW:?}, lease_duration {LEASE:?})"
    );
    assert!(
        stepped <= signed(RENEW + TIMER_SLACK),
        "stepped down {stepped:#} after its last renewal, past renew_deadline"
    );
    assert!(
        stepped < signed(LEASE),
        "stepped down {stepped:#} after its last renewal: its Lease could have expired first"
    );
    assert!(
        stepped >= SignedDuration::from_secs(1),
        "stepped down only {stepped:#} after its last renewal, long before renew_deadline"
    );
    let message = lost["message"].as_str().unwrap();
    assert!(
        message.starts_with("stepped down from the Lease medic/medic-actuator: not renewed for renew_deadline 2s (last error: unavailable: "),
        "{message}"
    );

    // The other takes over only once the record has not changed for lease_duration since it
    // first saw its last version, after the cut-off leader stopped.
    let acquired = ha
        .record(f, "acquire_leadership", |r| {
            r["action"] == "acquire_leadership"
        })
        .await;
    let take = ha.takeover_by(fid);
    let seen = ha
        .api
        .log()
        .into_iter()
        .find(|r| r.client == fid && r.method == "GET" && r.rv() == last.rv())
        .expect("the follower read the leader's last version");
    let waited = take.at - seen.at;
    println!(
        "takeover {waited:?} after the other first saw the last version, {:?} after the last renewal",
        take.at - last.at
    );
    assert!(
        waited >= LEASE,
        "took over {waited:?} after first seeing the last version"
    );
    assert!(
        waited <= LEASE + RETRY + LOAD_MARGIN,
        "took over only {waited:?} after first seeing the last version"
    );
    assert!(
        wall(take.wall) > lost_at,
        "took over at {} before the old leader stopped at {lost_at}",
        wall(take.wall)
    );
    let acquired_at: Timestamp = acquired["ts"].as_str().unwrap().parse().unwrap();
    assert!(acquired_at > lost_at);

    // The new leader starts the one move; the cut-off one started nothing.
    let start = ha
        .record(f, "the start of the move", |r| r["phase"] == "started")
        .await;
    check_start(&ha, &start, fid, &alert);
    let started_at: Timestamp = start["ts"].as_str().unwrap().parse().unwrap();
    assert!(started_at > acquired_at);
    let (s, body) = webhook.await.unwrap();
    assert_eq!(s, 200, "{body}");
    let r = &body["results"][0];
    println!(
        "the cut-off leader's webhook decision: {} {}",
        r["outcome"], r["reason"]
    );
    match (r["outcome"].as_str(), r["reason"].as_str()) {
        // Its decision ran while it still led: the intent could not be read, nothing started.
        (Some("failed"), Some("kube_unavailable")) => {}
        // A round of its own took the cluster first and failed so; by then it had stepped down.
        (Some("skipped"), Some("not_leader")) => {}
        other => panic!("the cut-off leader's decision: {other:?}: {body}"),
    }
    let refused = ha.reps[l]
        .records()
        .into_iter()
        .find(|r| r["reason"] == "kube_unavailable")
        .unwrap_or_else(|| panic!("{:#?}", ha.reps[l].records()));
    assert!(
        refused["message"].as_str().unwrap().starts_with(
            "not starting replace_replicas on broker 4: the intent of broker actions could not be read from ConfigMap medic/medic-actuator-intent-prod, and nothing acts without it"
        ),
        "{refused:#}"
    );
    assert!(
        ha.reps[l].starts().is_empty(),
        "{:#?}",
        ha.reps[l].records()
    );

    ha.kafka.complete_all();
    let end = ha
        .record(f, "the end of the move", |r| r["phase"] == "completed")
        .await;
    assert_eq!(end["trigger"], "executor", "{end:#}");
    assert_eq!(end["outcome"], "applied", "{end:#}");
    eventually(60, "the intent cleared", || async {
        ha.kube
            .configmaps
            .get(NS, CM)
            .filter(|o| o["data"].get("action").is_none())
    })
    .await;
    assert_eq!(ha.kafka.throttles(), operators_throttles());

    // Heal: the old leader sees the new holder and stays a follower.
    ha.reps[l].endpoint.set(Cut::No);
    eventually(30, "the old leader to see the new holder", || async {
        let v = ha.state(l).await;
        (v["leader"]["holder"] == fid && v["leader"]["is_leader"] == false).then_some(())
    })
    .await;
    let healed = ha.api.applied().len();
    eventually(30, "four more renewals", || async {
        (ha.api.applied()[healed..]
            .iter()
            .filter(|r| r.client == fid)
            .count()
            >= 4)
            .then_some(())
    })
    .await;
    ha.rounds(2).await;

    let samples = sampler.finish().await;
    let both: Vec<_> = samples.iter().filter(|(_, s)| s[0] && s[1]).collect();
    assert!(both.is_empty(), "both lead at once: {} samples", both.len());
    let first_new = samples
        .iter()
        .position(|(_, s)| s[1])
        .expect("samples of the new leader");
    assert!(
        samples[..first_new].iter().any(|(_, s)| s[0]),
        "no sample of the old leader leading"
    );
    assert!(
        samples[first_new..].iter().all(|(_, s)| !s[0]),
        "the old leader led again"
    );
    println!(
        "{} samples of both replicas, never two leaders",
        samples.len()
    );
    assert!(samples.len() >= 20, "too few samples: {}", samples.len());
    assert_disjoint(
        &intervals(&ha.reps[l].leadership()),
        &intervals(&ha.reps[f].leadership()),
    );
    assert_eq!(ha.reps[f].leadership().len(), 1);

    // One move, started by the new leader; the cut-off one never wrote to Kafka.
    assert_eq!(
        alters(&ha.kafka),
        vec![the_start()],
        "one reassignment start"
    );
    let senders = ha.senders();
    let alter_by: Vec<_> = senders.iter().filter(|(k, _)| *k == ALTER).collect();
    assert_eq!(alter_by, vec![&(ALTER, Some(fid))], "{senders:?}");
    let ml = ha.metrics(l).await;
    for api in [
        "alter_partition_reassignments",
        "incremental_alter_configs",
        "elect_leaders",
    ] {
        assert_eq!(kafka_requests(&ml, api), 0.0, "{api}\n{ml}");
    }
    assert!(
        ha.reps[l].starts().is_empty(),
        "{:#?}",
        ha.reps[l].records()
    );
    assert_eq!(ha.reps[f].starts().len(), 1, "{:#?}", ha.reps[f].records());
}

/// A decision that was already writing its intent when its replica lost the API (and with it
/// the Lease) must not start the action once another replica leads, even if the API answers it
/// again then: the intent write retries through the outage (here 503s, eight attempts about 2s
/// apart), the replica steps down, the other takes over, and only then is the API back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_in_flight_when_its_leader_is_deposed_starts_nothing() {
    let ha = Ha::start("retry_backoff: 1s, retry_attempts: 8, request_timeout: 2s").await;
    let (l, f) = ha.elected().await;
    let (lid, fid) = (ha.reps[l].id, ha.reps[f].id);

    // Alertmanager notifies the leader only (Prometheus shows nothing), as the API starts
    // answering it 503.
    ha.reps[l].endpoint.set(Cut::Unavailable);
    // From now on every ConfigMap request that gets through is the other replica's.
    let cm_requests = ha.kube.configmaps.requests().len();
    let alert = DownAlert::new();
    let webhook = {
        let (http, url, body) = (
            ha.http.clone(),
            ha.reps[l].run().url("/api/v1/alerts"),
            alert.webhook(),
        );
        tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    let lost = ha
        .record(l, "lose_leadership", |r| r["action"] == "lose_leadership")
        .await;
    ha.record(f, "acquire_leadership", |r| {
        r["action"] == "acquire_leadership"
    })
    .await;
    // The new leader has read the intent (nothing recorded) on becoming leader.
    eventually(30, "the new leader to reconcile", || async {
        ha.kube.configmaps.requests()[cm_requests..]
            .iter()
            .any(|r| r.method == "GET")
            .then_some(())
    })
    .await;
    // The decision is still retrying its read of the intent; the API answers it again.
    assert!(!webhook.is_finished(), "the decision ended before the heal");
    ha.reps[l].endpoint.set(Cut::No);
    let (s, body) = webhook.await.unwrap();
    assert_eq!(s, 200, "{body}");
    let r = &body["results"][0];
    let record = ha.reps[l]
        .records()
        .into_iter()
        .find(|x| x["alertname"] == "KafkaBrokerDown")
        .unwrap();
    println!(
        "the deposed leader's decision: {} {} ({})",
        record["outcome"], record["reason"], record["message"]
    );
    let lost_at: Timestamp = lost["ts"].as_str().unwrap().parse().unwrap();
    assert!(
        ha.kafka.writes().is_empty(),
        "{lid} stopped leading at {lost_at} and sent Kafka writes anyway: {:?}\n{record:#}",
        alters(&ha.kafka)
    );
    assert_eq!(r["outcome"], "skipped", "{body}");
    assert_eq!(r["reason"], "not_leader", "{body}");
    assert_eq!(r["action"], "none", "{body}");
    assert_eq!(record["seq"], r["seq"]);
    // The read of the intent began while it led (the API was cut a moment before the
    // webhook); a process stalled past renew_deadline before the read is caught earlier.
    let message = record["message"].as_str().unwrap();
    assert!(
        [
            "not starting replace_replicas on broker 4: this replica stopped leading while its intent was written; the intent is removed and nothing starts",
            "not starting replace_replicas on broker 4: this replica stopped leading while it looked at the cluster",
        ]
        .contains(&message),
        "{record:#}"
    );
    assert!(
        ha.reps[l].starts().is_empty(),
        "{:#?}",
        ha.reps[l].records()
    );
    assert!(
        ha.reps[f].starts().is_empty(),
        "{:#?}",
        ha.reps[f].records()
    );
    // The intent it wrote is gone again: nothing runs on the cluster.
    let obj = ha.kube.configmaps.get(NS, CM).expect("the intent object");
    assert!(obj["data"].get("action").is_none(), "{obj:#}");
    let state = ha.state(f).await;
    assert_eq!(state["leader"]["is_leader"], true);
    assert!(
        state["broker_remediation"][0]["running"].is_null(),
        "{state:#}"
    );
    assert_eq!(ha.api.holder(NS, LEASE_NAME).as_deref(), Some(fid));
}
