//! A stateful fake of the core/v1 Events API (`/api/v1/namespaces/{ns}/events`), strict like the
//! real one: the body must be a v1 Event of the request's namespace with an `involvedObject` (of
//! that namespace) and a `reason` (400 otherwise), a name (422), and a name not yet taken (409).
//! It can be told to refuse creates with 403 as a ServiceAccount without the RBAC verb gets.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::matchers::path_regex;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// One refused request: HTTP code and the Status message.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: u16,
    pub message: String,
}

#[derive(Default)]
pub struct EventsState {
    /// Created Events, as stored (with uid, resourceVersion, creationTimestamp), in order.
    pub events: Vec<Value>,
    /// Requests answered with an error, in order.
    pub refused: Vec<Refusal>,
    /// Answer every create with 403 Forbidden (no RBAC `create` on `events`).
    pub forbid: bool,
    /// Delay every answer by this much (an API server that does not answer in time).
    pub delay: std::time::Duration,
    next_rv: u64,
}

#[derive(Clone, Default)]
pub struct FakeEvents {
    pub state: Arc<Mutex<EventsState>>,
}

fn status(code: u16, reason: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    }))
}

impl FakeEvents {
    /// Serve the Events API on `server` (next to the other fakes).
    pub async fn mount(&self, server: &MockServer) {
        Mock::given(path_regex(r"^/api/v1/namespaces/[^/]+/events(/[^/]+)?$"))
            .respond_with(self.clone())
            .mount(server)
            .await;
    }

    /// The Events created so far.
    pub fn events(&self) -> Vec<Value> {
        self.state.lock().unwrap().events.clone()
    }

    /// The requests refused so far.
    pub fn refused(&self) -> Vec<Refusal> {
        self.state.lock().unwrap().refused.clone()
    }

    /// Refuse every create with 403 from now on.
    pub fn forbid(&self) {
        self.state.lock().unwrap().forbid = true;
    }

    fn create(&self, ns: &str, body: &[u8]) -> Result<Value, (u16, &'static str, String)> {
        let mut s = self.state.lock().unwrap();
        if s.forbid {
            return Err((403, "Forbidden", format!("events is forbidden: User \"system:serviceaccount:medic:medic-actuator\" cannot create resource \"events\" in API group \"\" in the namespace \"{ns}\"")));
        }
        let bad = |m: String| (400, "BadRequest", m);
        let mut ev: Value = serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "the body of the request was in an unknown format: {e}"
            ))
        })?;
        if !ev.is_object() {
            return Err(bad("the body is not an object".into()));
        }
        if ev["apiVersion"] != "v1" || ev["kind"] != "Event" {
            return Err(bad(format!(
                "not a v1 Event: apiVersion {} kind {}",
                ev["apiVersion"], ev["kind"]
            )));
        }
        if let Some(n) = ev["metadata"]["namespace"].as_str() {
            if n != ns {
                return Err(bad("the namespace of the provided object does not match the namespace sent on the request".into()));
            }
        }
        if !ev["involvedObject"].is_object() {
            return Err(bad(
                "Event is invalid: involvedObject: Required value".into()
            ));
        }
        if ev["reason"].as_str().is_none_or(str::is_empty) {
            return Err(bad("Event is invalid: reason: Required value".into()));
        }
        let invalid = |m: String| (422, "Invalid", m);
        if ev["involvedObject"]["namespace"] != ns {
            return Err(invalid(format!(
                "Event is invalid: involvedObject.namespace: Invalid value: {}: does not match event.namespace",
                ev["involvedObject"]["namespace"]
            )));
        }
        let Some(name) = ev["metadata"]["name"].as_str().map(str::to_string) else {
            return Err(invalid(
                "Event is invalid: metadata.name: Required value: name or generateName is required"
                    .into(),
            ));
        };
        if s.events
            .iter()
            .any(|e| e["metadata"]["namespace"] == ns && e["metadata"]["name"] == name.as_str())
        {
            return Err((
                409,
                "AlreadyExists",
                format!("events \"{name}\" already exists"),
            ));
        }
        s.next_rv += 1;
        let rv = s.next_rv;
        ev["metadata"]["namespace"] = json!(ns);
        ev["metadata"]["uid"] = json!(format!("event-uid-{rv}"));
        ev["metadata"]["resourceVersion"] = json!(rv.to_string());
        ev["metadata"]["creationTimestamp"] = json!("2027-01-15T08:00:00Z");
        s.events.push(ev.clone());
        Ok(ev)
    }
}

impl Respond for FakeEvents {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let parts: Vec<&str> = req.url.path().split('/').collect();
        // ["", "api", "v1", "namespaces", ns, "events", (name)]
        let ns = parts[4].to_string();
        let delay = self.state.lock().unwrap().delay;
        let answer = match (req.method.as_str(), parts.len()) {
            ("POST", 6) => self.create(&ns, &req.body),
            ("GET", 6) => {
                let items: Vec<Value> = self
                    .events()
                    .into_iter()
                    .filter(|e| e["metadata"]["namespace"] == ns.as_str())
                    .collect();
                return ResponseTemplate::new(200).set_body_json(json!({
                    "kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": items
                }));
            }
            _ => Err((405, "MethodNotAllowed", "not supported by the fake".into())),
        };
        match answer {
            Ok(ev) => ResponseTemplate::new(201)
                .set_body_json(ev)
                .set_delay(delay),
            Err((code, reason, message)) => {
                self.state.lock().unwrap().refused.push(Refusal {
                    code,
                    message: message.clone(),
                });
                status(code, reason, &message).set_delay(delay)
            }
        }
    }
}
