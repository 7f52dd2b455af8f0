//! A fake Prometheus query API answering the broker-alert queries the way a real Prometheus
//! does: `ALERTS{alertstate="firing",alertname=~"KafkaBroker.*"}` with one series per firing
//! alert (its labels plus `__name__` and `alertstate`), and
//! `ALERTS_FOR_STATE{alertname=~"KafkaBroker.*"}` with the time each became active. It can be
//! taken down (503 to every query). Every query is recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// One firing alert: its labels and when it became active (Unix seconds).
#[derive(Debug, Clone)]
pub struct Firing {
    pub labels: BTreeMap<String, String>,
    pub active_at: i64,
}

#[derive(Default)]
pub struct PromAlertsState {
    pub firing: Vec<Firing>,
    pub down: bool,
    pub queries: Vec<String>,
}

#[derive(Clone, Default)]
pub struct FakePromAlerts {
    pub state: Arc<Mutex<PromAlertsState>>,
}

impl FakePromAlerts {
    /// A firing broker alert `name` on `cluster`/`broker`, active since `active_at`.
    pub fn fire(&self, name: &str, cluster: &str, broker: &str, active_at: i64) {
        let labels = [
            ("alertname", name),
            ("cluster", cluster),
            ("broker", broker),
            ("severity", "warning"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        self.state
            .lock()
            .unwrap()
            .firing
            .push(Firing { labels, active_at });
    }

    /// No alert fires any more.
    pub fn clear(&self) {
        self.state.lock().unwrap().firing.clear();
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    pub fn queries(&self) -> Vec<String> {
        self.state.lock().unwrap().queries.clone()
    }

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

impl Respond for FakePromAlerts {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let q = req
            .url
            .query_pairs()
            .find(|(k, _)| k == "query")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        let mut s = self.state.lock().unwrap();
        s.queries.push(q.clone());
        if s.down {
            return ResponseTemplate::new(503).set_body_string("Service Unavailable");
        }
        let series = |f: &Firing, name: &str, state: Option<&str>, value: String| -> Value {
            let mut metric: serde_json::Map<String, Value> = f
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            metric.insert("__name__".into(), json!(name));
            if let Some(st) = state {
                metric.insert("alertstate".into(), json!(st));
            }
            json!({"metric": metric, "value": [1_800_000_000.0, value]})
        };
        let result: Vec<Value> = if q == r#"ALERTS{alertstate="firing",alertname=~"KafkaBroker.*"}"# {
            s.firing
                .iter()
                .map(|f| series(f, "ALERTS", Some("firing"), "1".into()))
                .collect()
        } else if q == r#"ALERTS_FOR_STATE{alertname=~"KafkaBroker.*"}"# {
            s.firing
                .iter()
                .map(|f| series(f, "ALERTS_FOR_STATE", None, f.active_at.to_string()))
                .collect()
        } else {
            Vec::new()
        };
        ResponseTemplate::new(200).set_body_json(
            json!({"status": "success", "data": {"resultType": "vector", "result": result}}),
        )
    }
}
