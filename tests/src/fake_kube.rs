//! A stateful fake of the Kubernetes API for the actuator: Deployments with replicas,
//! annotations and a resourceVersion, served by wiremock on 127.0.0.1. It answers the requests
//! medic-actuator sends (see actuator/README.md, "Cooldown persistence"):
//!
//! - `GET .../deployments/{name}` (PartialObjectMetadata: the annotations and resourceVersion),
//! - `GET .../deployments/{name}/scale` (`spec.replicas`),
//! - `PATCH .../deployments/{name}` merge patch of the cooldown annotation, rejected with 409 if
//!   it carries a `metadata.resourceVersion` that is not the current one,
//! - `PATCH .../deployments/{name}/scale` merge patch of `spec.replicas`,
//! - `GET /apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers` and
//!   `GET /apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects` (the lists a test added with
//!   `add_hpa` / `add_scaled_object`; ScaledObjects answer 404, as on a cluster without KEDA,
//!   after `set_keda_installed(false)`),
//!
//! and records every request with its arrival time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{json, Value};
use wiremock::matchers::path_regex;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The actuator's cooldown annotation.
pub const ANNOTATION: &str = "kafka-medic.io/last-scale";

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct KubeRequest {
    /// Arrival time.
    pub at: SystemTime,
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    /// The JSON body (Null if none).
    pub body: Value,
    /// The status code answered.
    pub status: u16,
}

impl KubeRequest {
    /// A PATCH of the scale subresource.
    pub fn is_scale_patch(&self) -> bool {
        self.method == "PATCH" && self.path.ends_with("/scale")
    }

    /// Arrival as seconds since the Unix epoch.
    pub fn unix(&self) -> f64 {
        self.at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }

    /// The replicas a scale PATCH asked for.
    pub fn replicas(&self) -> Option<u32> {
        self.body["spec"]["replicas"].as_u64().map(|r| r as u32)
    }
}

#[derive(Debug, Clone)]
struct Deployment {
    replicas: u32,
    rv: u64,
    annotations: BTreeMap<String, String>,
}

/// A HorizontalPodAutoscaler or ScaledObject: its name and `spec.scaleTargetRef`.
#[derive(Debug, Clone)]
struct Autoscaler {
    namespace: String,
    name: String,
    scale_target_ref: Value,
}

#[derive(Default)]
struct State {
    deployments: HashMap<(String, String), Deployment>,
    /// Requests on Deployments (what `requests()` returns).
    requests: Vec<KubeRequest>,
    /// HPA and ScaledObject lists, kept apart so that "no request" still means "the Deployments
    /// were never touched" although the actuator lists autoscalers at start-up.
    lists: Vec<KubeRequest>,
    hpas: Vec<Autoscaler>,
    scaled_objects: Vec<Autoscaler>,
    /// ScaledObjects are not served (404), as on a cluster without KEDA.
    keda_absent: bool,
    /// Every HPA list answers this status (403, 503, ...) instead of the list.
    hpa_list_fault: Option<u16>,
}

#[derive(Clone, Default)]
struct Responder(Arc<Mutex<State>>);

fn status(code: u16, reason: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    }))
}

impl Responder {
    /// The list of HPAs or ScaledObjects of a namespace.
    fn list(&self, req: &Request) -> (u16, ResponseTemplate) {
        let parts: Vec<&str> = req.url.path().split('/').collect();
        // ["", "apis", group, version, "namespaces", ns, resource]
        let (api_version, ns, resource) =
            (format!("{}/{}", parts[2], parts[3]), parts[5], parts[6]);
        if req.method.as_str() != "GET" {
            return (405, status(405, "MethodNotAllowed", "method not allowed"));
        }
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(code), "horizontalpodautoscalers") = (s.hpa_list_fault, resource) {
            let message = format!("injected {code} on horizontalpodautoscalers.autoscaling");
            return (code, status(code, "Injected", &message));
        }
        let (kind, objects) = if resource == "horizontalpodautoscalers" {
            ("HorizontalPodAutoscaler", &s.hpas)
        } else if s.keda_absent {
            return (
                404,
                ResponseTemplate::new(404).set_body_string("404 page not found"),
            );
        } else {
            ("ScaledObject", &s.scaled_objects)
        };
        let items: Vec<Value> = objects
            .iter()
            .filter(|a| a.namespace == ns)
            .map(|a| {
                let mut spec = json!({"scaleTargetRef": a.scale_target_ref});
                if kind == "HorizontalPodAutoscaler" {
                    spec["maxReplicas"] = json!(10);
                }
                json!({
                    "apiVersion": api_version, "kind": kind,
                    "metadata": {"name": a.name, "namespace": a.namespace},
                    "spec": spec,
                })
            })
            .collect();
        (
            200,
            ResponseTemplate::new(200).set_body_json(json!({
                "apiVersion": api_version, "kind": format!("{kind}List"),
                "metadata": {"resourceVersion": "1"}, "items": items,
            })),
        )
    }

    fn answer(&self, req: &Request, body: &Value) -> (u16, ResponseTemplate) {
        if !req.url.path().starts_with("/apis/apps/") {
            return self.list(req);
        }
        let parts: Vec<&str> = req.url.path().split('/').collect();
        // ["", "apis", "apps", "v1", "namespaces", ns, "deployments", name, ("scale")]
        let (ns, name) = (parts[5].to_string(), parts[7].to_string());
        let is_scale = parts.len() == 9;
        let method = req.method.to_string();
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(dep) = s.deployments.get_mut(&(ns.clone(), name.clone())) else {
            return (
                404,
                status(
                    404,
                    "NotFound",
                    &format!("deployments.apps \"{name}\" not found"),
                ),
            );
        };
        match (method.as_str(), is_scale) {
            ("GET", _) => {}
            ("PATCH", false) => {
                if let Some(rv) = body["metadata"]["resourceVersion"].as_str() {
                    if rv != dep.rv.to_string() {
                        return (409, status(409, "Conflict", "Operation cannot be fulfilled on deployments.apps: the object has been modified; please apply your changes to the latest version and try again"));
                    }
                }
                if let Some(a) = body["metadata"]["annotations"].as_object() {
                    for (k, v) in a {
                        match v.as_str() {
                            Some(v) => dep.annotations.insert(k.clone(), v.to_string()),
                            None => dep.annotations.remove(k),
                        };
                    }
                }
                dep.rv += 1;
            }
            ("PATCH", true) => {
                let Some(r) = body["spec"]["replicas"].as_u64() else {
                    return (422, status(422, "Invalid", "spec.replicas: Required value"));
                };
                dep.replicas = r as u32;
                dep.rv += 1;
            }
            _ => return (405, status(405, "MethodNotAllowed", "method not allowed")),
        }
        let meta = json!({
            "name": name, "namespace": ns, "resourceVersion": dep.rv.to_string(),
            "annotations": dep.annotations,
        });
        let t = if is_scale {
            ResponseTemplate::new(200).set_body_json(json!({
                "apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": meta,
                "spec": {"replicas": dep.replicas}, "status": {"replicas": dep.replicas}
            }))
        } else {
            ResponseTemplate::new(200).set_body_json(json!({
                "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": meta
            }))
        };
        (200, t)
    }
}

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let at = SystemTime::now();
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let (code, template) = self.answer(req, &body);
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let is_list = !req.url.path().starts_with("/apis/apps/");
        let log = if is_list {
            &mut s.lists
        } else {
            &mut s.requests
        };
        log.push(KubeRequest {
            at,
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

/// The fake API server; it stops when dropped.
pub struct FakeKube {
    state: Responder,
    server: Option<MockServer>,
    rt: tokio::runtime::Runtime,
}

impl FakeKube {
    /// Starts the server on 127.0.0.1 (a port picked by the OS).
    pub fn start() -> FakeKube {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let state = Responder::default();
        let server = rt.block_on(async {
            let server = MockServer::start().await;
            Mock::given(path_regex(
                r"^/apis/apps/v1/namespaces/[^/]+/deployments/[^/]+(/scale)?$",
            ))
            .respond_with(state.clone())
            .mount(&server)
            .await;
            Mock::given(path_regex(
                r"^/apis/(autoscaling/v2/namespaces/[^/]+/horizontalpodautoscalers|keda\.sh/v1alpha1/namespaces/[^/]+/scaledobjects)$",
            ))
            .respond_with(state.clone())
            .mount(&server)
            .await;
            server
        });
        FakeKube {
            state,
            server: Some(server),
            rt,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.server.as_ref().map(|s| s.uri()).unwrap_or_default()
    }

    /// Adds (or replaces) a Deployment.
    pub fn add(&self, namespace: &str, name: &str, replicas: u32) {
        self.lock().deployments.insert(
            (namespace.into(), name.into()),
            Deployment {
                replicas,
                rv: 1000,
                annotations: BTreeMap::new(),
            },
        );
    }

    /// Adds a HorizontalPodAutoscaler (`autoscaling/v2`) whose `spec.scaleTargetRef` is
    /// `{apiVersion: apps/v1, kind: target_kind, name: target_name}`.
    pub fn add_hpa(&self, namespace: &str, name: &str, target_kind: &str, target_name: &str) {
        self.lock().hpas.push(Autoscaler {
            namespace: namespace.into(),
            name: name.into(),
            scale_target_ref: json!({"apiVersion": "apps/v1", "kind": target_kind, "name": target_name}),
        });
    }

    /// Adds a KEDA ScaledObject whose `spec.scaleTargetRef` is `{name: target_name}` (kind
    /// defaults to Deployment in KEDA).
    pub fn add_scaled_object(&self, namespace: &str, name: &str, target_name: &str) {
        self.lock().scaled_objects.push(Autoscaler {
            namespace: namespace.into(),
            name: name.into(),
            scale_target_ref: json!({"name": target_name}),
        });
    }

    /// With `false`, ScaledObject lists answer 404 (the CRD is not installed). Default: true.
    pub fn set_keda_installed(&self, installed: bool) {
        self.lock().keda_absent = !installed;
    }

    /// Make every HPA list answer `code` (a Status body), or answer normally again with None.
    pub fn set_hpa_list_fault(&self, code: Option<u16>) {
        self.lock().hpa_list_fault = code;
    }

    /// Requests for HPA or ScaledObject lists so far (not in `requests()`).
    pub fn autoscaler_lists(&self) -> Vec<KubeRequest> {
        self.lock().lists.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `spec.replicas` of a Deployment.
    pub fn replicas(&self, namespace: &str, name: &str) -> u32 {
        self.lock().deployments[&(namespace.to_string(), name.to_string())].replicas
    }

    /// A function that reads a Deployment's replicas, usable from another thread.
    pub fn replicas_reader(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Fn() -> u32 + Send + 'static {
        let state = self.state.0.clone();
        let key = (namespace.to_string(), name.to_string());
        move || {
            state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .deployments
                .get(&key)
                .map_or(0, |d| d.replicas)
        }
    }

    /// The cooldown annotation, parsed.
    pub fn annotation(&self, namespace: &str, name: &str) -> Option<Value> {
        self.lock().deployments[&(namespace.to_string(), name.to_string())]
            .annotations
            .get(ANNOTATION)
            .and_then(|a| serde_json::from_str(a).ok())
    }

    /// Every request on a Deployment so far, in arrival order (autoscaler lists: see
    /// `autoscaler_lists`).
    pub fn requests(&self) -> Vec<KubeRequest> {
        self.lock().requests.clone()
    }

    /// Every PATCH so far (annotation claims and scales).
    pub fn patches(&self) -> Vec<KubeRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "PATCH")
            .collect()
    }

    /// Scale PATCHes of one Deployment that were answered 200.
    pub fn scale_patches(&self, namespace: &str, name: &str) -> Vec<KubeRequest> {
        let path = format!("/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale");
        self.requests()
            .into_iter()
            .filter(|r| r.is_scale_patch() && r.path == path && r.status == 200)
            .collect()
    }

    /// A summary of every request, for failure messages.
    pub fn describe(&self) -> String {
        let mut s = String::from("--- fake kube API requests ---\n");
        let mut all = self.requests();
        all.extend(self.autoscaler_lists());
        all.sort_by_key(|r| r.at);
        for r in all {
            s.push_str(&format!(
                "{:.3} {} {}?{} -> {} {}\n",
                r.unix(),
                r.method,
                r.path,
                r.query,
                r.status,
                if r.body.is_null() {
                    String::new()
                } else {
                    r.body.to_string()
                }
            ));
        }
        s
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.describe());
        }
        let server = self.server.take();
        self.rt.block_on(async move { drop(server) });
    }
}
