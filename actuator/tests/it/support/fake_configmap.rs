//! A stateful, strict ConfigMap API (core/v1, namespaced) on wiremock, mounted next to
//! `FakeKube` on the same server: GET (item and list), POST, PUT and DELETE behave as on a real
//! API server. resourceVersion increments on every write; a POST of an existing name is a 409
//! AlreadyExists, a PUT or DELETE whose resourceVersion is not the current one a 409 Conflict,
//! a missing object a 404, a malformed body a 400 and an invalid name or data a 422. Every
//! request is recorded; a method can be made to fail with a given status (403, 500, ...).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::matchers::path_regex;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const PATHS: &str = r"^/api/v1/namespaces/[^/]+/configmaps(/[^/]+)?$";

/// One request as received, with the status it got.
#[derive(Debug, Clone)]
pub struct CmRequest {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub code: u16,
}

#[derive(Default)]
pub struct CmState {
    /// (namespace, name) -> the stored object.
    pub objects: BTreeMap<(String, String), Value>,
    /// The last resourceVersion given out (shared by all objects, as etcd's revision).
    pub revision: u64,
    pub requests: Vec<CmRequest>,
    /// Every request with this method gets this status (and changes nothing).
    pub faults: BTreeMap<String, u16>,
}

/// The fake ConfigMap API.
#[derive(Clone, Default)]
pub struct FakeConfigMaps {
    pub state: Arc<Mutex<CmState>>,
}

/// A status code and the answer with it.
type Answer = (u16, ResponseTemplate);

fn status(code: u16, reason: &str, message: &str) -> Answer {
    let t = ResponseTemplate::new(code).set_body_json(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    }));
    (code, t)
}

fn ok(code: u16, body: Value) -> Answer {
    (code, ResponseTemplate::new(code).set_body_json(body))
}

/// A DNS-1123 subdomain, as the API server checks object names.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && label.as_bytes()[0].is_ascii_alphanumeric()
                && label.as_bytes()[label.len() - 1].is_ascii_alphanumeric()
        })
}

impl FakeConfigMaps {
    /// Serve the ConfigMap API on `server`.
    pub async fn mount(&self, server: &MockServer) {
        Mock::given(path_regex(PATHS))
            .respond_with(self.clone())
            .mount(server)
            .await;
    }

    /// The stored object, if any.
    pub fn get(&self, ns: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// `data[key]` of the object, parsed as JSON (None: no object or no such key).
    pub fn data(&self, ns: &str, name: &str, key: &str) -> Option<Value> {
        let obj = self.get(ns, name)?;
        let text = obj["data"][key].as_str()?;
        Some(serde_json::from_str(text).unwrap())
    }

    /// Change `data[key]` as an operator (or another replica) would: a new resourceVersion.
    pub fn set_data(&self, ns: &str, name: &str, key: &str, value: &Value) {
        let mut st = self.state.lock().unwrap();
        st.revision += 1;
        let rv = st.revision.to_string();
        let obj = st
            .objects
            .get_mut(&(ns.to_string(), name.to_string()))
            .expect("no such configmap");
        obj["data"][key] = Value::String(value.to_string());
        obj["metadata"]["resourceVersion"] = Value::String(rv);
    }

    /// Answer every `method` request with `code` from now on (None: normal again).
    pub fn fail(&self, method: &str, code: Option<u16>) {
        let mut st = self.state.lock().unwrap();
        match code {
            Some(c) => st.faults.insert(method.to_string(), c),
            None => st.faults.remove(method),
        };
    }

    pub fn requests(&self) -> Vec<CmRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests that changed something (or tried to): POST, PUT, DELETE.
    pub fn writes(&self) -> Vec<CmRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }
}

fn respond(st: &mut CmState, req: &Request) -> Answer {
    let parts: Vec<&str> = req.url.path().split('/').collect();
    // ["", "api", "v1", "namespaces", ns, "configmaps", (name)]
    let ns = parts[4].to_string();
    let item = parts.get(6).map(|s| s.to_string());
    let method = req.method.to_string();
    if let Some(code) = st.faults.get(&method) {
        return status(*code, "Injected", &format!("injected {code} for {method}"));
    }
    let body: Option<Value> = if req.body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(v) => Some(v),
            Err(e) => return status(400, "BadRequest", &format!("malformed body: {e}")),
        }
    };
    // A ConfigMap sent to be stored: kind, name and data checked as the API server does.
    let check = |obj: &Value, path_name: Option<&str>| -> Result<String, Box<Answer>> {
        if !obj.is_object() || obj["kind"] != "ConfigMap" || obj["apiVersion"] != "v1" {
            return Err(Box::new(status(
                400,
                "BadRequest",
                "the body is not a v1 ConfigMap",
            )));
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if !valid_name(&name) {
            return Err(Box::new(status(
                422,
                "Invalid",
                &format!("metadata.name {name:?}: a lowercase RFC 1123 subdomain is required"),
            )));
        }
        if let Some(n) = obj["metadata"]["namespace"].as_str() {
            if n != ns {
                return Err(Box::new(status(
                    400,
                    "BadRequest",
                    "the namespace of the object does not match the namespace of the request",
                )));
            }
        }
        if path_name.is_some_and(|p| p != name) {
            return Err(Box::new(status(
                400,
                "BadRequest",
                "the name of the object does not match the name in the URL",
            )));
        }
        if let Some(data) = obj.get("data").filter(|d| !d.is_null()) {
            let ok = data
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !ok {
                return Err(Box::new(status(
                    422,
                    "Invalid",
                    "data: values must be strings",
                )));
            }
        }
        Ok(name)
    };
    let stored = |obj: &Value, name: &str, rv: u64, created: Option<&Value>| -> Value {
        let mut o = obj.clone();
        o["metadata"]["namespace"] = json!(ns);
        o["metadata"]["resourceVersion"] = json!(rv.to_string());
        o["metadata"]["uid"] = created
            .map(|c| c["metadata"]["uid"].clone())
            .unwrap_or_else(|| json!(format!("uid-{ns}-{name}-{rv}")));
        o
    };
    match (method.as_str(), item) {
        ("GET", None) => {
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|((n, _), _)| *n == ns)
                .map(|(_, o)| o.clone())
                .collect();
            ok(
                200,
                json!({
                    "kind": "ConfigMapList", "apiVersion": "v1",
                    "metadata": {"resourceVersion": st.revision.to_string()}, "items": items
                }),
            )
        }
        ("GET", Some(name)) => match st.objects.get(&(ns.clone(), name.clone())) {
            Some(o) => ok(200, o.clone()),
            None => status(404, "NotFound", &format!("configmaps \"{name}\" not found")),
        },
        ("POST", None) => {
            let Some(obj) = body else {
                return status(400, "BadRequest", "no body");
            };
            let name = match check(&obj, None) {
                Ok(n) => n,
                Err(r) => return *r,
            };
            if obj["metadata"]["resourceVersion"].is_string() {
                return status(
                    400,
                    "BadRequest",
                    "resourceVersion should not be set on objects to be created",
                );
            }
            let key = (ns.clone(), name.clone());
            if st.objects.contains_key(&key) {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("configmaps \"{name}\" already exists"),
                );
            }
            st.revision += 1;
            let o = stored(&obj, &name, st.revision, None);
            st.objects.insert(key, o.clone());
            ok(201, o)
        }
        ("PUT", Some(path_name)) => {
            let Some(obj) = body else {
                return status(400, "BadRequest", "no body");
            };
            let name = match check(&obj, Some(&path_name)) {
                Ok(n) => n,
                Err(r) => return *r,
            };
            let key = (ns.clone(), name.clone());
            let Some(current) = st.objects.get(&key).cloned() else {
                return status(404, "NotFound", &format!("configmaps \"{name}\" not found"));
            };
            if let Some(rv) = obj["metadata"]["resourceVersion"].as_str() {
                if current["metadata"]["resourceVersion"] != rv {
                    return status(409, "Conflict", &format!("Operation cannot be fulfilled on configmaps \"{name}\": the object has been modified; please apply your changes to the latest version and try again"));
                }
            }
            st.revision += 1;
            let o = stored(&obj, &name, st.revision, Some(&current));
            st.objects.insert(key, o.clone());
            ok(200, o)
        }
        ("DELETE", Some(name)) => {
            let key = (ns.clone(), name.clone());
            let Some(current) = st.objects.get(&key).cloned() else {
                return status(404, "NotFound", &format!("configmaps \"{name}\" not found"));
            };
            if let Some(rv) = body
                .as_ref()
                .and_then(|b| b["preconditions"]["resourceVersion"].as_str())
            {
                if current["metadata"]["resourceVersion"] != rv {
                    return status(409, "Conflict", &format!("Operation cannot be fulfilled on configmaps \"{name}\": the resource version does not match"));
                }
            }
            st.objects.remove(&key);
            ok(
                200,
                json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": name, "kind": "configmaps"}
                }),
            )
        }
        (m, _) => status(
            405,
            "MethodNotAllowed",
            &format!("{m} is not supported here"),
        ),
    }
}

impl Respond for FakeConfigMaps {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut st = self.state.lock().unwrap();
        let (code, answer) = respond(&mut st, req);
        st.requests.push(CmRequest {
            method: req.method.to_string(),
            path: req.url.path().to_string(),
            body: serde_json::from_slice(&req.body).unwrap_or(Value::Null),
            code,
        });
        answer
    }
}
