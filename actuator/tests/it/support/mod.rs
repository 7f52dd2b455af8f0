//! Shared test helpers: a stateful fake Kubernetes API on wiremock, a fake Prometheus, payloads.

pub mod configmap;
pub mod fake_autoscalers;
pub mod fake_configmap;
pub mod fake_events;
pub mod fake_kafka;
pub mod fake_lease;
pub mod fake_prom_alerts;
pub mod harness;
pub mod process;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const ANNOTATION: &str = "kafka-medic.io/last-scale";

/// One recorded write.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

#[derive(Debug, Clone)]
pub struct Dep {
    pub replicas: u32,
    pub rv: u64,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Default)]
pub struct KubeState {
    pub deps: HashMap<(String, String), Dep>,
    pub writes: Vec<Write>,
    pub reads: usize,
    /// Responses forced onto the next scale PATCHes (status code, reason).
    pub scale_faults: VecDeque<(u16, &'static str)>,
    /// Bump the resourceVersion right before the next N claims (another writer got there).
    pub claim_races: usize,
    /// Delay every answer by this much.
    pub delay: std::time::Duration,
}

/// A fake API server holding Deployments; GETs and PATCHes work as on a real one, including
/// the resourceVersion precondition on merge patches.
#[derive(Clone, Default)]
pub struct FakeKube {
    pub state: Arc<Mutex<KubeState>>,
    /// The ConfigMap API on the same server (the intent of broker actions).
    pub configmaps: fake_configmap::FakeConfigMaps,
}

fn status(code: u16, reason: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason, "code": code
    }))
}

impl FakeKube {
    pub fn add(&self, ns: &str, name: &str, replicas: u32) {
        self.state.lock().unwrap().deps.insert(
            (ns.into(), name.into()),
            Dep {
                replicas,
                rv: 100,
                annotations: BTreeMap::new(),
            },
        );
    }

    pub fn replicas(&self, ns: &str, name: &str) -> u32 {
        self.state.lock().unwrap().deps[&(ns.to_string(), name.to_string())].replicas
    }

    pub fn annotation(&self, ns: &str, name: &str) -> Option<Value> {
        let s = self.state.lock().unwrap();
        s.deps[&(ns.to_string(), name.to_string())]
            .annotations
            .get(ANNOTATION)
            .map(|a| serde_json::from_str(a).unwrap())
    }

    pub fn writes(&self) -> Vec<Write> {
        self.state.lock().unwrap().writes.clone()
    }

    pub fn scale_writes(&self) -> Vec<Write> {
        self.writes()
            .into_iter()
            .filter(|w| w.path.ends_with("/scale"))
            .collect()
    }

    pub fn reads(&self) -> usize {
        self.state.lock().unwrap().reads
    }

    pub async fn start(&self) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(path_regex(
            r"^/apis/apps/v1/namespaces/[^/]+/deployments/[^/]+(/scale)?$",
        ))
        .respond_with(self.clone())
        .mount(&server)
        .await;
        self.configmaps.mount(&server).await;
        server
    }
}

impl Respond for FakeKube {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let parts: Vec<&str> = req.url.path().split('/').collect();
        // ["", "apis", "apps", "v1", "namespaces", ns, "deployments", name, ("scale")]
        let (ns, name) = (parts[5].to_string(), parts[7].to_string());
        let is_scale = parts.len() == 9;
        let mut s = self.state.lock().unwrap();
        let delay = s.delay;
        let method = req.method.to_string();
        if method == "PATCH" {
            s.writes.push(Write {
                method: method.clone(),
                path: req.url.path().to_string(),
                query: req.url.query().unwrap_or("").to_string(),
                content_type: req
                    .headers
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default(),
                body: serde_json::from_slice(&req.body).unwrap_or(Value::Null),
            });
        } else {
            s.reads += 1;
        }
        if method == "PATCH" && is_scale {
            if let Some((code, reason)) = s.scale_faults.pop_front() {
                return status(code, reason, &format!("injected {code}"));
            }
        }
        let race = method == "PATCH" && !is_scale && s.claim_races > 0;
        if race {
            s.claim_races -= 1;
        }
        let Some(dep) = s.deps.get_mut(&(ns.clone(), name.clone())) else {
            return status(
                404,
                "NotFound",
                &format!("deployments.apps \"{name}\" not found"),
            );
        };
        if race {
            dep.rv += 1;
        }
        match (method.as_str(), is_scale) {
            ("GET", false) => {}
            ("GET", true) => {}
            ("PATCH", false) => {
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                if let Some(rv) = body["metadata"]["resourceVersion"].as_str() {
                    if rv != dep.rv.to_string() {
                        return status(409, "Conflict", "Operation cannot be fulfilled on deployments.apps: the object has been modified; please apply your changes to the latest version and try again");
                    }
                }
                if let Some(a) = body["metadata"]["annotations"].as_object() {
                    for (k, v) in a {
                        dep.annotations
                            .insert(k.clone(), v.as_str().unwrap().to_string());
                    }
                }
                dep.rv += 1;
            }
            ("PATCH", true) => {
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                dep.replicas = body["spec"]["replicas"].as_u64().unwrap() as u32;
                dep.rv += 1;
            }
            _ => return status(405, "MethodNotAllowed", "no"),
        }
        let meta = json!({
            "name": name, "namespace": ns, "resourceVersion": dep.rv.to_string(),
            "uid": format!("uid-{ns}-{name}"),
            "annotations": dep.annotations,
        });
        let respond = |t: ResponseTemplate| t.set_delay(delay);
        if is_scale {
            respond(ResponseTemplate::new(200).set_body_json(json!({
                "apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": meta,
                "spec": {"replicas": dep.replicas}, "status": {"replicas": dep.replicas}
            })))
        } else {
            respond(ResponseTemplate::new(200).set_body_json(json!({
                "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": meta
            })))
        }
    }
}

/// A fake Prometheus answering the lag query for (cluster, group) with a settable value.
#[derive(Clone, Default)]
pub struct FakeProm {
    pub lag: Arc<Mutex<HashMap<(String, String), f64>>>,
    pub broker_alert: Arc<Mutex<Option<String>>>,
    /// Groups whose `KafkaConsumerLagPersistent` fires in `ALERTS` (as a real Prometheus shows
    /// them: `__name__`, `alertname`, `alertstate`, `cluster`, `consumergroup`, `severity`).
    pub lag_alerts: Arc<Mutex<std::collections::BTreeSet<(String, String)>>>,
    /// `cluster_consumergroup:kafka_consumergroup_lag_seconds:max` per group.
    pub lag_seconds: Arc<Mutex<HashMap<(String, String), f64>>>,
    /// While set, every query gets 503.
    pub down: Arc<std::sync::atomic::AtomicBool>,
    /// `ALERTS` queries for `KafkaConsumerLagPersistent` received (counted before answering).
    pub lag_alert_queries: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeProm {
    /// Show (or stop showing) the group's `KafkaConsumerLagPersistent` firing in `ALERTS`.
    pub fn set_lag_alert(&self, cluster: &str, group: &str, firing: bool) {
        let mut alerts = self.lag_alerts.lock().unwrap();
        let key = (cluster.to_string(), group.to_string());
        if firing {
            alerts.insert(key);
        } else {
            alerts.remove(&key);
        }
    }

    pub fn set_lag_seconds(&self, cluster: &str, group: &str, v: f64) {
        self.lag_seconds
            .lock()
            .unwrap()
            .insert((cluster.into(), group.into()), v);
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn lag_alert_queries(&self) -> usize {
        self.lag_alert_queries
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn set_lag(&self, cluster: &str, group: &str, v: f64) {
        self.lag
            .lock()
            .unwrap()
            .insert((cluster.into(), group.into()), v);
    }
}

impl Respond for FakeProm {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let q = req
            .url
            .query_pairs()
            .find(|(k, _)| k == "query")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        let mut result = Vec::new();
        let lag_alerts =
            q.starts_with("ALERTS") && q.contains("alertname=\"KafkaConsumerLagPersistent\"");
        if lag_alerts {
            self.lag_alert_queries
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return ResponseTemplate::new(503).set_body_string("Service Unavailable");
        }
        if lag_alerts {
            for (c, g) in self.lag_alerts.lock().unwrap().iter() {
                result.push(json!({"metric": {
                    "__name__": "ALERTS", "alertname": "KafkaConsumerLagPersistent",
                    "alertstate": "firing", "cluster": c, "consumergroup": g, "severity": "warning"
                }, "value": [0, "1"]}));
            }
        } else if q.starts_with("cluster_consumergroup:kafka_consumergroup_lag_seconds:max{") {
            for ((c, g), v) in self.lag_seconds.lock().unwrap().iter() {
                if q.contains(&format!("cluster=\"{c}\",consumergroup=\"{g}\"")) {
                    result.push(json!({"metric": {"cluster": c, "consumergroup": g}, "value": [0, v.to_string()]}));
                }
            }
        } else if q.starts_with("ALERTS") {
            if let Some(name) = self.broker_alert.lock().unwrap().clone() {
                result.push(json!({"metric": {"alertname": name}, "value": [0, "1"]}));
            }
        } else {
            for ((c, g), v) in self.lag.lock().unwrap().iter() {
                if q.contains(&format!("cluster=\"{c}\",consumergroup=\"{g}\""))
                    && q.starts_with("cluster_consumergroup:")
                {
                    result.push(json!({"metric": {"cluster": c, "consumergroup": g}, "value": [0, v.to_string()]}));
                }
            }
        }
        ResponseTemplate::new(200).set_body_json(
            json!({"status": "success", "data": {"resultType": "vector", "result": result}}),
        )
    }
}

impl FakeProm {
    pub async fn start(&self) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v1/query"))
            .respond_with(self.clone())
            .mount(&server)
            .await;
        server
    }
}

/// An alert as Alertmanager puts it in `alerts`.
pub fn lag_alert(status: &str, fp: &str, cluster: &str, group: &str, lag: Option<u64>) -> Value {
    let mut annotations =
        json!({"summary": "lag", "description": "lag", "runbook_url": "http://r"});
    if let Some(l) = lag {
        annotations["lag_offsets"] = json!(l.to_string());
    }
    json!({
        "status": status,
        "labels": {"alertname": "KafkaConsumerLagPersistent", "cluster": cluster, "consumergroup": group, "severity": "warning"},
        "annotations": annotations,
        "startsAt": "2026-11-22T03:32:35.536Z",
        "endsAt": if status == "resolved" { "2026-11-22T03:52:35.536Z" } else { "0001-01-01T00:00:00Z" },
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fp
    })
}

pub fn broker_alert(status: &str, fp: &str, name: &str, cluster: &str) -> Value {
    json!({
        "status": status,
        "labels": {"alertname": name, "cluster": cluster, "broker": "1", "severity": "critical"},
        "annotations": {"summary": "broker"},
        "startsAt": "2026-11-22T03:32:35.536Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fp
    })
}

/// A broker alert for `broker`, started at `starts_at` (RFC 3339); `path` for disk pressure.
pub fn broker_alert_at(
    status: &str,
    fp: &str,
    name: &str,
    cluster: &str,
    broker: &str,
    starts_at: &str,
) -> Value {
    let mut labels =
        json!({"alertname": name, "cluster": cluster, "broker": broker, "severity": "warning"});
    if name == "KafkaBrokerDiskPressure" {
        labels["path"] = json!("/var/lib/kafka/data");
    }
    json!({
        "status": status,
        "labels": labels,
        "annotations": {"summary": "broker", "description": "broker", "runbook_url": "http://r"},
        "startsAt": starts_at,
        "endsAt": if status == "resolved" { "2027-01-15T09:00:00Z" } else { "0001-01-01T00:00:00Z" },
        "fingerprint": fp
    })
}

/// A version 4 payload around `alerts`.
pub fn payload(status: &str, alerts: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "receiver": "medic-actuator", "status": status, "alerts": alerts,
        "groupLabels": {"alertname": "KafkaConsumerLagPersistent"}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "version": "4",
        "groupKey": "{}:{alertname=\"KafkaConsumerLagPersistent\"}", "truncatedAlerts": 0
    }))
    .unwrap()
}

pub const TOKEN: &str = "test-token-0123456789";

/// Files for a config: policies (prod/orders -> shop/orders-consumer, prod/billing ->
/// billing/billing-consumer), a token, and an audit directory.
pub struct Files {
    pub dir: tempfile::TempDir,
}

impl Files {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("policies.yaml"),
            r#"policies:
  - cluster: prod
    consumergroup: orders
    deployment: {namespace: shop, name: orders-consumer}
    min_replicas: 1
    max_replicas: 10
    lag_per_replica: 1000
    scale_up_cooldown: 1m
    scale_down_cooldown: 5m
    max_step: 2
    lag_threshold: 5000
    sustain: 2m
  - cluster: prod
    consumergroup: billing
    deployment: {namespace: billing, name: billing-consumer}
    max_step: 3
"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Append a `brokers:` section (YAML, its entries indented by two spaces) to the policies.
    pub fn add_brokers(&self, yaml: &str) {
        let p = self.path("policies.yaml");
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str("brokers:\n");
        text.push_str(yaml);
        std::fs::write(&p, text).unwrap();
    }

    pub fn audit_path(&self) -> PathBuf {
        self.path("audit/audit.log")
    }
}

/// Audit lines as JSON values.
pub fn audit_lines(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(t) => t
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}
