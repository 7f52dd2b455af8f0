//! A stateful, strict fake of the `coordination.k8s.io/v1` Lease API.
//!
//! One [`LeaseApi`] holds the Leases; each replica reaches it through its own [`Endpoint`] (a
//! MockServer of its own, sharing the state), which can be cut off — no answer at all, or 503 —
//! to partition that replica from the API while the others still reach it. An endpoint can also
//! serve a [`FakeKube`]'s Deployments and ConfigMaps (the intent of broker actions), cut off
//! with it.
//!
//! Like the API server: every write gets the next resourceVersion; GET of a missing Lease is
//! 404; POST of an existing name is 409 AlreadyExists; PUT with a stale
//! `metadata.resourceVersion` is 409 Conflict, of a missing Lease 404; a body that is not JSON,
//! not a `coordination.k8s.io/v1` Lease, without `spec`, with a time that is not RFC 3339 or a
//! name or namespace other than the URL's is 400. Stricter than the API server: a PUT without
//! `metadata.resourceVersion` (an unconditional write) is 400, since the actuator must never
//! write one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jiff::Timestamp;
use serde_json::{json, Value};
use wiremock::matchers::path_regex;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::fake_configmap::FakeConfigMaps;
use super::FakeKube;

const LEASES: &str = r"^/apis/coordination\.k8s\.io/v1/namespaces/[^/]+/leases(/[^/]+)?$";

/// One request that reached the fake (cut-off ones included).
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// The endpoint's client (the replica).
    pub client: String,
    pub method: String,
    pub path: String,
    /// The answer's status (0: cut off, no answer).
    pub status: u16,
    pub at: Instant,
    pub wall: SystemTime,
    /// The Lease as stored (writes) or returned (GET), if any.
    pub lease: Option<Value>,
}

impl LeaseRequest {
    pub fn rv(&self) -> Option<u64> {
        self.lease.as_ref()?["metadata"]["resourceVersion"]
            .as_str()?
            .parse()
            .ok()
    }

    pub fn holder(&self) -> Option<&str> {
        self.lease.as_ref()?["spec"]["holderIdentity"].as_str()
    }

    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT")
    }

    /// A write the API server applied.
    pub fn applied(&self) -> bool {
        self.is_write() && (200..300).contains(&self.status)
    }
}

#[derive(Default)]
pub struct LeaseState {
    pub leases: BTreeMap<(String, String), Value>,
    pub rv: u64,
    pub log: Vec<LeaseRequest>,
}

/// The shared Lease store.
#[derive(Clone, Default)]
pub struct LeaseApi {
    pub state: Arc<Mutex<LeaseState>>,
}

/// How an endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Normally.
    No,
    /// Never (the request hangs until the client gives up).
    Hang,
    /// 503 to everything.
    Unavailable,
}

/// One replica's way to the API.
pub struct Endpoint {
    pub server: MockServer,
    cut: Arc<Mutex<Cut>>,
}

impl Endpoint {
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    pub fn set(&self, cut: Cut) {
        *self.cut.lock().unwrap() = cut;
    }
}

fn status(code: u16, reason: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason, "code": code
    }))
}

fn cut_answer(cut: Cut) -> Option<ResponseTemplate> {
    match cut {
        Cut::No => None,
        Cut::Hang => Some(ResponseTemplate::new(504).set_delay(Duration::from_secs(600))),
        Cut::Unavailable => Some(status(
            503,
            "ServiceUnavailable",
            "injected: the API server is unreachable from this replica",
        )),
    }
}

/// A Lease body's problems, as the API server's validation would name them.
fn invalid(body: &Value, ns: &str, name: Option<&str>) -> Option<String> {
    if body["apiVersion"] != "coordination.k8s.io/v1" || body["kind"] != "Lease" {
        return Some(format!(
            "expected apiVersion coordination.k8s.io/v1 kind Lease, got {} {}",
            body["apiVersion"], body["kind"]
        ));
    }
    let Some(meta_name) = body["metadata"]["name"].as_str() else {
        return Some("metadata.name: Required value".into());
    };
    if name.is_some_and(|n| n != meta_name) {
        return Some(format!(
            "metadata.name: Invalid value: {meta_name:?}: does not match the name in the URL"
        ));
    }
    if let Some(body_ns) = body["metadata"]["namespace"].as_str() {
        if body_ns != ns {
            return Some(format!(
                "metadata.namespace: Invalid value: {body_ns:?}: does not match the namespace in the URL"
            ));
        }
    }
    let spec = &body["spec"];
    if !spec.is_object() {
        return Some("spec: Required value".into());
    }
    for key in ["acquireTime", "renewTime"] {
        if let Some(t) = spec.get(key).filter(|v| !v.is_null()) {
            let ok = t
                .as_str()
                .is_some_and(|s| s.parse::<jiff::Timestamp>().is_ok());
            if !ok {
                return Some(format!(
                    "spec.{key}: Invalid value: {t}: not an RFC 3339 time"
                ));
            }
        }
    }
    for key in ["leaseDurationSeconds", "leaseTransitions"] {
        if let Some(v) = spec.get(key).filter(|v| !v.is_null()) {
            if !v.is_i64() {
                return Some(format!("spec.{key}: Invalid value: {v}: not an integer"));
            }
        }
    }
    None
}

impl LeaseApi {
    /// An endpoint for `client`, serving the Leases and, if given, `kube`'s Deployments and
    /// ConfigMaps.
    pub async fn endpoint(&self, client: &str, kube: Option<&FakeKube>) -> Endpoint {
        let server = MockServer::start().await;
        let cut = Arc::new(Mutex::new(Cut::No));
        Mock::given(path_regex(LEASES))
            .respond_with(Serve {
                api: self.clone(),
                client: client.to_string(),
                cut: cut.clone(),
            })
            .mount(&server)
            .await;
        if let Some(kube) = kube {
            Mock::given(path_regex(
                r"^/apis/apps/v1/namespaces/[^/]+/deployments/[^/]+(/scale)?$",
            ))
            .respond_with(CutKube {
                kube: kube.clone(),
                cut: cut.clone(),
            })
            .mount(&server)
            .await;
            Mock::given(path_regex(
                r"^/api/v1/namespaces/[^/]+/configmaps(/[^/]+)?$",
            ))
            .respond_with(CutConfigMaps {
                configmaps: kube.configmaps.clone(),
                cut: cut.clone(),
            })
            .mount(&server)
            .await;
        }
        Endpoint { server, cut }
    }

    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .leases
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    pub fn holder(&self, ns: &str, name: &str) -> Option<String> {
        self.lease(ns, name)?["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_string)
    }

    pub fn log(&self) -> Vec<LeaseRequest> {
        self.state.lock().unwrap().log.clone()
    }

    /// Writes the server applied, oldest first.
    pub fn applied(&self) -> Vec<LeaseRequest> {
        self.log().into_iter().filter(|r| r.applied()).collect()
    }

    fn handle(&self, req: &Request) -> (ResponseTemplate, u16, Option<Value>) {
        let parts: Vec<&str> = req.url.path().split('/').collect();
        // ["", "apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases", (name)]
        let ns = parts[5].to_string();
        let name = parts.get(7).map(|s| s.to_string());
        let mut s = self.state.lock().unwrap();
        let method = req.method.as_str();
        let body = || serde_json::from_slice::<Value>(&req.body);
        match (method, name) {
            ("GET", Some(name)) => match s.leases.get(&(ns, name.clone())) {
                Some(l) => (
                    ResponseTemplate::new(200).set_body_json(l),
                    200,
                    Some(l.clone()),
                ),
                None => (
                    status(
                        404,
                        "NotFound",
                        &format!("leases.coordination.k8s.io {name:?} not found"),
                    ),
                    404,
                    None,
                ),
            },
            ("POST", None) => {
                let Ok(mut lease) = body() else {
                    return (status(400, "BadRequest", "the body is not JSON"), 400, None);
                };
                if let Some(why) = invalid(&lease, &ns, None) {
                    return (status(400, "BadRequest", &why), 400, None);
                }
                let name = lease["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if s.leases.contains_key(&(ns.clone(), name.clone())) {
                    return (
                        status(
                            409,
                            "AlreadyExists",
                            &format!("leases.coordination.k8s.io {name:?} already exists"),
                        ),
                        409,
                        None,
                    );
                }
                s.rv += 1;
                lease["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                lease["metadata"]["namespace"] = json!(ns);
                lease["metadata"]["uid"] = json!(format!("uid-{name}"));
                s.leases.insert((ns, name), lease.clone());
                (
                    ResponseTemplate::new(201).set_body_json(&lease),
                    201,
                    Some(lease),
                )
            }
            ("PUT", Some(name)) => {
                let Ok(mut lease) = body() else {
                    return (status(400, "BadRequest", "the body is not JSON"), 400, None);
                };
                if let Some(why) = invalid(&lease, &ns, Some(&name)) {
                    return (status(400, "BadRequest", &why), 400, None);
                }
                let Some(sent_rv) = lease["metadata"]["resourceVersion"]
                    .as_str()
                    .map(str::to_string)
                else {
                    return (
                        status(400, "BadRequest", "fake: metadata.resourceVersion is required (the actuator must never write a Lease unconditionally)"),
                        400,
                        None,
                    );
                };
                let rv = s.rv;
                let Some(current) = s.leases.get_mut(&(ns, name.clone())) else {
                    return (
                        status(
                            404,
                            "NotFound",
                            &format!("leases.coordination.k8s.io {name:?} not found"),
                        ),
                        404,
                        None,
                    );
                };
                if current["metadata"]["resourceVersion"].as_str() != Some(sent_rv.as_str()) {
                    return (
                        status(409, "Conflict", &format!("Operation cannot be fulfilled on leases.coordination.k8s.io {name:?}: the object has been modified; please apply your changes to the latest version and try again")),
                        409,
                        None,
                    );
                }
                lease["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
                lease["metadata"]["uid"] = current["metadata"]["uid"].clone();
                *current = lease.clone();
                s.rv = rv + 1;
                (
                    ResponseTemplate::new(200).set_body_json(&lease),
                    200,
                    Some(lease),
                )
            }
            _ => (
                status(
                    405,
                    "MethodNotAllowed",
                    &format!("{method} is not served here"),
                ),
                405,
                None,
            ),
        }
    }
}

struct Serve {
    api: LeaseApi,
    client: String,
    cut: Arc<Mutex<Cut>>,
}

impl Respond for Serve {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let (at, wall) = (Instant::now(), SystemTime::now());
        let cut = *self.cut.lock().unwrap();
        let (answer, code, lease) = match cut_answer(cut) {
            Some(a) => (a, if cut == Cut::Hang { 0 } else { 503 }, None),
            None => self.api.handle(req),
        };
        self.api.state.lock().unwrap().log.push(LeaseRequest {
            client: self.client.clone(),
            method: req.method.to_string(),
            path: req.url.path().to_string(),
            status: code,
            at,
            wall,
            lease,
        });
        answer
    }
}

/// A FakeKube behind the same switch.
struct CutKube {
    kube: FakeKube,
    cut: Arc<Mutex<Cut>>,
}

impl Respond for CutKube {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let cut = *self.cut.lock().unwrap();
        cut_answer(cut).unwrap_or_else(|| self.kube.respond(req))
    }
}

/// A FakeKube's ConfigMaps behind the same switch (a cut-off request is not recorded).
struct CutConfigMaps {
    configmaps: FakeConfigMaps,
    cut: Arc<Mutex<Cut>>,
}

impl Respond for CutConfigMaps {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let cut = *self.cut.lock().unwrap();
        cut_answer(cut).unwrap_or_else(|| self.configmaps.respond(req))
    }
}

/// Leadership intervals from a replica's audit records: [acquired, lost or released).
pub fn intervals(records: &[(String, Timestamp)]) -> Vec<(Timestamp, Option<Timestamp>)> {
    let mut out = Vec::new();
    let mut open: Option<Timestamp> = None;
    for (action, ts) in records {
        match action.as_str() {
            "acquire_leadership" => open = open.or(Some(*ts)),
            "lose_leadership" | "release_leadership" => {
                if let Some(start) = open.take() {
                    out.push((start, Some(*ts)));
                }
            }
            other => panic!("unexpected leadership action {other}"),
        }
    }
    if let Some(start) = open {
        out.push((start, None));
    }
    out
}

/// Fails if two replicas' leadership intervals overlap.
pub fn assert_disjoint(a: &[(Timestamp, Option<Timestamp>)], b: &[(Timestamp, Option<Timestamp>)]) {
    for (s1, e1) in a {
        for (s2, e2) in b {
            let overlap = e1.is_none_or(|e1| *s2 < e1) && e2.is_none_or(|e2| *s1 < e2);
            assert!(
                !overlap,
                "leadership intervals overlap: {s1}..{e1:?} and {s2}..{e2:?}"
            );
        }
    }
}
