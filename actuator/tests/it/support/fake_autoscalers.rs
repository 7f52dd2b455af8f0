//! A strict fake of the autoscaler APIs, mounted on the fake Kubernetes API server next to the
//! Deployments (`support::FakeKube`): HorizontalPodAutoscalers (`autoscaling/v2`) and KEDA
//! ScaledObjects (`keda.sh/v1alpha1`) as whole JSON objects with a resourceVersion.
//!
//! - `GET .../{plural}` lists a namespace's objects, `GET .../{plural}/{name}` reads one (404 if
//!   unknown);
//! - `PATCH .../{plural}/{name}` must be `application/merge-patch+json` (else 415); a
//!   `metadata.resourceVersion` other than the current one is a 409; the rest is applied as an
//!   RFC 7386 merge patch (a `null` removes the key); annotation values must be strings (400)
//!   and the minimum may not exceed the maximum (422), as the API server (and KEDA's webhook)
//!   refuse; every accepted write bumps the resourceVersion;
//! - anything else is a 405.
//!
//! Every request is recorded with its answer; `race_writes(n)` makes the next `n` PATCHes find
//! the object changed by someone else (as the HPA controller's status updates do), and
//! `set_write_fault` answers every PATCH with a status.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::matchers::path_regex;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The autoscaler annotation holding the original minimum.
pub const ORIGINAL: &str = "kafka-medic.io/original-min-replicas";

pub const HPAS: &str = "horizontalpodautoscalers";
pub const SCALED_OBJECTS: &str = "scaledobjects";

/// One request as it arrived, with the status answered.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscalerRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
    pub status: u16,
}

#[derive(Debug, Clone)]
struct Object {
    value: Value,
    rv: u64,
}

#[derive(Default)]
struct State {
    /// (plural, namespace, name) -> object.
    objects: BTreeMap<(String, String, String), Object>,
    requests: Vec<AutoscalerRequest>,
    races: usize,
    write_fault: Option<u16>,
}

#[derive(Clone, Default)]
pub struct FakeAutoscalers {
    state: Arc<Mutex<State>>,
}

fn status(code: u16, reason: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    }))
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn group_version(plural: &str) -> &'static str {
    if plural == HPAS {
        "autoscaling/v2"
    } else {
        "keda.sh/v1alpha1"
    }
}

/// The (minimum, maximum) fields of a kind, with their defaults.
fn bounds(plural: &str) -> (&'static str, u64, &'static str, u64) {
    if plural == HPAS {
        ("minReplicas", 1, "maxReplicas", 0)
    } else {
        ("minReplicaCount", 0, "maxReplicaCount", 100)
    }
}

impl FakeAutoscalers {
    /// Serve the autoscaler paths on `server`.
    pub async fn mount(&self, server: &MockServer) {
        Mock::given(path_regex(
            r"^/apis/(autoscaling/v2|keda\.sh/v1alpha1)/namespaces/[^/]+/(horizontalpodautoscalers|scaledobjects)(/[^/]+)?$",
        ))
        .respond_with(self.clone())
        .mount(server)
        .await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, plural: &str, ns: &str, name: &str, kind: &str, spec: Value) {
        let value = json!({
            "apiVersion": group_version(plural), "kind": kind,
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
            "spec": spec,
        });
        self.lock().objects.insert(
            (plural.into(), ns.into(), name.into()),
            Object { value, rv: 500 },
        );
    }

    /// An HPA scaling the Deployment `target` (`minReplicas` left out when `None`).
    pub fn add_hpa(&self, ns: &str, name: &str, target: &str, min: Option<u32>, max: u32) {
        let mut spec = json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "maxReplicas": max,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}],
        });
        if let Some(m) = min {
            spec["minReplicas"] = json!(m);
        }
        self.insert(HPAS, ns, name, "HorizontalPodAutoscaler", spec);
    }

    /// A ScaledObject scaling the Deployment `target` (KEDA's defaults when `None`).
    pub fn add_scaled_object(
        &self,
        ns: &str,
        name: &str,
        target: &str,
        min: Option<u32>,
        max: Option<u32>,
    ) {
        let mut spec = json!({
            "scaleTargetRef": {"name": target},
            "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "80"}}],
        });
        if let Some(m) = min {
            spec["minReplicaCount"] = json!(m);
        }
        if let Some(m) = max {
            spec["maxReplicaCount"] = json!(m);
        }
        self.insert(SCALED_OBJECTS, ns, name, "ScaledObject", spec);
    }

    /// The object as it is now (with its resourceVersion), or Null.
    pub fn object(&self, plural: &str, ns: &str, name: &str) -> Value {
        let s = self.lock();
        match s.objects.get(&(plural.into(), ns.into(), name.into())) {
            Some(o) => {
                let mut v = o.value.clone();
                v["metadata"]["resourceVersion"] = json!(o.rv.to_string());
                v
            }
            None => Value::Null,
        }
    }

    /// The minimum field as stored (None when absent).
    pub fn min(&self, plural: &str, ns: &str, name: &str) -> Option<u64> {
        let (field, ..) = bounds(plural);
        self.object(plural, ns, name)["spec"][field].as_u64()
    }

    /// The original-minimum annotation (None when absent).
    pub fn original(&self, plural: &str, ns: &str, name: &str) -> Option<String> {
        self.object(plural, ns, name)["metadata"]["annotations"][ORIGINAL]
            .as_str()
            .map(str::to_string)
    }

    /// Set an annotation as someone else would (bumps the resourceVersion).
    pub fn annotate(&self, plural: &str, ns: &str, name: &str, key: &str, value: &str) {
        let mut s = self.lock();
        let o = s
            .objects
            .get_mut(&(plural.into(), ns.into(), name.into()))
            .unwrap();
        o.value["metadata"]["annotations"][key] = json!(value);
        o.rv += 1;
    }

    /// Delete an object (its namespace's list no longer shows it).
    pub fn remove(&self, plural: &str, ns: &str, name: &str) {
        self.lock()
            .objects
            .remove(&(plural.into(), ns.into(), name.into()));
    }

    /// The next `n` PATCHes find the object changed since it was read (409).
    pub fn race_writes(&self, n: usize) {
        self.lock().races = n;
    }

    /// Answer every PATCH with `code` (a Status), or normally again with None.
    pub fn set_write_fault(&self, code: Option<u16>) {
        self.lock().write_fault = code;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<AutoscalerRequest> {
        self.lock().requests.clone()
    }

    /// Every PATCH so far (whatever its answer).
    pub fn patches(&self) -> Vec<AutoscalerRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "PATCH")
            .collect()
    }

    /// GETs of single objects (not lists) so far.
    pub fn object_reads(&self) -> Vec<AutoscalerRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.split('/').count() == 8)
            .collect()
    }

    fn answer(&self, req: &Request, body: &Value) -> (u16, ResponseTemplate) {
        let parts: Vec<&str> = req.url.path().split('/').collect();
        // ["", "apis", group, version, "namespaces", ns, plural, (name)]
        let (ns, plural) = (parts[5].to_string(), parts[6].to_string());
        let api_version = format!("{}/{}", parts[2], parts[3]);
        if api_version != group_version(&plural) {
            return (
                404,
                status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            );
        }
        let method = req.method.to_string();
        let mut s = self.lock();
        let Some(name) = parts.get(7).map(|n| n.to_string()) else {
            if method != "GET" {
                return (405, status(405, "MethodNotAllowed", "method not allowed"));
            }
            let items: Vec<Value> = s
                .objects
                .iter()
                .filter(|((p, n, _), _)| *p == plural && *n == ns)
                .map(|(_, o)| {
                    let mut v = o.value.clone();
                    v["metadata"]["resourceVersion"] = json!(o.rv.to_string());
                    v
                })
                .collect();
            let kind = if plural == HPAS {
                "HorizontalPodAutoscalerList"
            } else {
                "ScaledObjectList"
            };
            return (
                200,
                ResponseTemplate::new(200).set_body_json(json!({
                    "apiVersion": api_version, "kind": kind,
                    "metadata": {"resourceVersion": "1"}, "items": items,
                })),
            );
        };
        let key = (plural.clone(), ns.clone(), name.clone());
        let races = s.races;
        let fault = s.write_fault;
        let not_found = status(404, "NotFound", &format!("{plural} \"{name}\" not found"));
        match method.as_str() {
            "GET" => {}
            "PATCH" => {
                if let Some(code) = fault {
                    return (
                        code,
                        status(
                            code,
                            "Injected",
                            &format!("injected {code} on {plural} \"{name}\""),
                        ),
                    );
                }
                let content_type = req
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if content_type != "application/merge-patch+json" {
                    return (
                        415,
                        status(
                            415,
                            "UnsupportedMediaType",
                            &format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json; got {content_type:?}"),
                        ),
                    );
                }
                if !body.is_object() {
                    return (
                        400,
                        status(400, "BadRequest", "the patch is not a JSON object"),
                    );
                }
                if races > 0 {
                    s.races -= 1;
                }
                let Some(o) = s.objects.get_mut(&key) else {
                    return (404, not_found);
                };
                if races > 0 {
                    o.rv += 1;
                }
                if let Some(rv) = body["metadata"].get("resourceVersion") {
                    if rv.as_str() != Some(o.rv.to_string().as_str()) {
                        return (409, status(409, "Conflict", &format!("Operation cannot be fulfilled on {plural} \"{name}\": the object has been modified; please apply your changes to the latest version and try again")));
                    }
                }
                if let Some(a) = body["metadata"]["annotations"].as_object() {
                    if a.values().any(|v| !v.is_string() && !v.is_null()) {
                        return (400, status(400, "BadRequest", "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.annotations of type string"));
                    }
                }
                let mut patch = body.clone();
                if let Some(m) = patch["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                let mut next = o.value.clone();
                merge(&mut next, &patch);
                let (min_field, min_default, max_field, max_default) = bounds(&plural);
                let min = next["spec"][min_field].as_u64().unwrap_or(min_default);
                let max = next["spec"][max_field].as_u64().unwrap_or(max_default);
                if min > max {
                    return (422, status(422, "Invalid", &format!("{plural} \"{name}\" is invalid: spec.{min_field}: Invalid value: {min}: must be less than or equal to {max_field}")));
                }
                if next["metadata"]["annotations"]
                    .as_object()
                    .is_some_and(|a| a.is_empty())
                {
                    if let Some(m) = next["metadata"].as_object_mut() {
                        m.remove("annotations");
                    }
                }
                o.value = next;
                o.rv += 1;
            }
            _ => return (405, status(405, "MethodNotAllowed", "method not allowed")),
        }
        let Some(o) = s.objects.get(&key) else {
            return (404, not_found);
        };
        let mut v = o.value.clone();
        v["metadata"]["resourceVersion"] = json!(o.rv.to_string());
        (200, ResponseTemplate::new(200).set_body_json(v))
    }
}

impl Respond for FakeAutoscalers {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let (code, template) = self.answer(req, &body);
        self.lock().requests.push(AutoscalerRequest {
            method: req.method.to_string(),
            path: req.url.path().to_string(),
            query: req.url.query().unwrap_or("").to_string(),
            content_type: req
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            body,
            status: code,
        });
        template
    }
}
