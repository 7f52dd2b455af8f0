//! The `cruise-control` backend: Cruise Control's REST API plans and executes.
//!
//! | action | endpoint |
//! |---|---|
//! | leadership off an overloaded broker | `POST demote_broker?brokerid=B` |
//! | replicas off an overloaded or full broker | `POST rebalance?excluded_brokers_for_replica_move=B,..&excluded_brokers_for_leadership=B,..` |
//! | a dead broker | `POST remove_broker?brokerid=B` (or `fix_offline_replicas`) |
//! | a time-out | `POST stop_proposal_execution` |
//!
//! Long requests are asynchronous: 202 with a `User-Task-ID` header, then
//! `GET user_tasks?user_task_ids=ID` until `Completed` or `CompletedWithError`. Anything in
//! progress is read from `GET state?substates=executor`. Every request sends `json=true`, and
//! the actions send `dryrun`, `reason` and the caps as Cruise Control's concurrency limits.

use base64::Engine as _;
use futures::future::BoxFuture;
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};

use super::remediation::{
    BackendError, Observation, Progress, RemediationBackend, Request, Started,
};
use crate::broker::planner::PlanKind;
use crate::broker::policy::{BackendKind, CruiseControlConnection, DownEndpoint};

/// Prefix of the task id of an action taken over without a recorded User-Task-ID.
const UNRECORDED: &str = "unrecorded-";

/// The Cruise Control client.
pub struct CruiseControl {
    http: reqwest::Client,
    base: String,
    auth: Option<String>,
    dry_run: bool,
    down: DownEndpoint,
}

fn read_secret(path: &std::path::Path, key: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end().to_string())
        .map_err(|e| format!("cruise_control.{key} {}: {e}", path.display()))
}

fn list(ids: &[i32]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl CruiseControl {
    /// A client for `conn` (secrets are read here).
    pub fn new(conn: &CruiseControlConnection) -> Result<Self, String> {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .timeout(conn.request_timeout)
            .connect_timeout(conn.request_timeout)
            .build()
            .map_err(|e| format!("cruise_control.url {:?}: {e}", conn.url))?;
        let auth = match (
            &conn.basic_username,
            &conn.basic_password_file,
            &conn.bearer_token_file,
        ) {
            (Some(u), Some(p), _) => {
                let pw = read_secret(p, "basic_password_file")?;
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{pw}"))
                ))
            }
            (_, _, Some(t)) => Some(format!("Bearer {}", read_secret(t, "bearer_token_file")?)),
            _ => None,
        };
        Url::parse(&conn.url).map_err(|e| format!("cruise_control.url {:?}: {e}", conn.url))?;
        Ok(Self {
            http,
            base: conn.url.trim_end_matches('/').to_string(),
            auth,
            dry_run: conn.dry_run,
            down: conn.broker_down_endpoint,
        })
    }

    async fn send(
        &self,
        method: Method,
        endpoint: &str,
        params: &[(&str, String)],
    ) -> Result<(StatusCode, Option<String>, Value), BackendError> {
        let mut url = Url::parse(&format!("{}/{endpoint}", self.base))
            .map_err(|e| BackendError::Refused(format!("bad Cruise Control URL: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            q.append_pair("json", "true");
        }
        let mut req = self
            .http
            .request(method.clone(), url)
            .header("accept", "application/json");
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        let what = format!("{method} {endpoint}");
        let resp = req.send().await.map_err(|e| {
            BackendError::Unavailable(format!("Cruise Control {what}: {}", chain(&e)))
        })?;
        let status = resp.status();
        let task_id = resp
            .headers()
            .get("User-Task-ID")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await.map_err(|e| {
            BackendError::Unavailable(format!("Cruise Control {what}: reading the answer: {e}"))
        })?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            json!({"errorMessage": String::from_utf8_lossy(&bytes).chars().take(300).collect::<String>()})
        });
        if status.is_success() {
            return Ok((status, task_id, body));
        }
        let msg = body
            .get("errorMessage")
            .or_else(|| body.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let text = format!("Cruise Control {what}: HTTP {}: {msg}", status.as_u16());
        Err(match status.as_u16() {
            401 | 403 => BackendError::Refused(format!(
                "{text} (check the cruise_control credentials and Cruise Control's security settings)"
            )),
            500..=599 | 429 => BackendError::Unavailable(text),
            _ => BackendError::Refused(text),
        })
    }

    async fn executor_state(&self) -> Result<Option<String>, BackendError> {
        let (_, _, body) = self
            .send(Method::GET, "state", &[("substates", "executor".into())])
            .await?;
        let ex = body.get("ExecutorState").ok_or_else(|| {
            BackendError::Refused("Cruise Control state has no ExecutorState".into())
        })?;
        let state = ex.get("state").and_then(Value::as_str).unwrap_or("UNKNOWN");
        if state == "NO_TASK_IN_PROGRESS" {
            return Ok(None);
        }
        let task = ex
            .get("triggeredUserTaskId")
            .and_then(Value::as_str)
            .map(|t| format!(" (user task {t})"))
            .unwrap_or_default();
        Ok(Some(format!("Cruise Control executor is {state}{task}")))
    }

    fn action(&self, req: &Request) -> (&'static str, Vec<(&'static str, String)>) {
        let l = &req.limits;
        let mut params: Vec<(&'static str, String)> = vec![
            ("dryrun", self.dry_run.to_string()),
            ("reason", req.reason.clone()),
        ];
        let mut others = vec![req.broker];
        others.extend(req.exclude.iter().copied());
        let throttle = req
            .throttle
            .map(|t| ("replication_throttle", t.to_string()));
        let endpoint = match req.kind {
            PlanKind::MoveLeadership => {
                params.push(("brokerid", req.broker.to_string()));
                params.push((
                    "concurrent_leader_movements",
                    l.max_leader_moves.to_string(),
                ));
                "demote_broker"
            }
            PlanKind::MoveReplicas => {
                params.push(("excluded_brokers_for_replica_move", list(&others)));
                params.push(("excluded_brokers_for_leadership", list(&others)));
                params.push((
                    "concurrent_partition_movements_per_broker",
                    l.max_moves_per_broker.to_string(),
                ));
                params.push((
                    "concurrent_leader_movements",
                    l.max_leader_moves.to_string(),
                ));
                params.extend(throttle);
                "rebalance"
            }
            PlanKind::ReplaceReplicas => {
                let endpoint = match self.down {
                    DownEndpoint::RemoveBroker => {
                        params.push(("brokerid", req.broker.to_string()));
                        "remove_broker"
                    }
                    DownEndpoint::FixOfflineReplicas => "fix_offline_replicas",
                };
                if !req.exclude.is_empty() {
                    params.push(("excluded_brokers_for_replica_move", list(&req.exclude)));
                }
                params.push((
                    "concurrent_partition_movements_per_broker",
                    l.max_moves_per_broker.to_string(),
                ));
                params.push((
                    "concurrent_leader_movements",
                    l.max_leader_moves.to_string(),
                ));
                params.extend(throttle);
                endpoint
            }
        };
        (endpoint, params)
    }

    async fn start_inner(&self, req: &Request) -> Result<Started, BackendError> {
        let (endpoint, params) = self.action(req);
        let (status, task, body) = self.send(Method::POST, endpoint, &params).await?;
        let asked: serde_json::Map<String, Value> = params
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect();
        let summary = json!({
            "endpoint": endpoint,
            "params": asked,
            "status": status.as_u16(),
            "summary": body.get("summary").cloned().unwrap_or(Value::Null),
        });
        if self.dry_run {
            return Ok(Started {
                task_id: task.unwrap_or_else(|| "dryrun".into()),
                summary: Some(summary),
                note: (status == StatusCode::ACCEPTED).then(|| {
                    "Cruise Control is still computing the proposal; see its user_tasks".into()
                }),
                proposal_only: true,
            });
        }
        let task_id = task.ok_or_else(|| {
            BackendError::Refused(format!(
                "Cruise Control {endpoint} answered {} without a User-Task-ID header",
                status.as_u16()
            ))
        })?;
        Ok(Started {
            task_id,
            summary: Some(summary),
            note: None,
            proposal_only: false,
        })
    }

    async fn poll_inner(&self, id: &str) -> Result<Progress, BackendError> {
        if id.starts_with(UNRECORDED) {
            // Taken over without its User-Task-ID: Cruise Control's executor is all there is.
            return Ok(match self.executor_state().await? {
                None => Progress::Done(format!(
                    "Cruise Control's executor is idle (task {id}: its User-Task-ID was never recorded)"
                )),
                Some(s) => Progress::Running(format!("{s} (task {id}: its User-Task-ID was never recorded)")),
            });
        }
        let (_, _, body) = self
            .send(Method::GET, "user_tasks", &[("user_task_ids", id.into())])
            .await?;
        let status = body
            .get("userTasks")
            .and_then(Value::as_array)
            .and_then(|tasks| {
                tasks
                    .iter()
                    .find(|t| t.get("UserTaskId").and_then(Value::as_str) == Some(id))
            })
            .and_then(|t| t.get("Status").and_then(Value::as_str))
            .map(str::to_string);
        Ok(match status.as_deref() {
            Some("Completed") => Progress::Done(format!("Cruise Control task {id} completed")),
            Some("CompletedWithError") => Progress::Failed(BackendError::Refused(format!(
                "Cruise Control task {id} completed with an error (see Cruise Control's log)"
            ))),
            Some("Active") => Progress::Running(format!(
                "Cruise Control task {id} is computing the proposal"
            )),
            Some(s) => Progress::Running(format!("Cruise Control task {id} is {s}")),
            // Expired or Cruise Control restarted: the executor says whether anything runs.
            None => match self.executor_state().await? {
                None => Progress::Done(format!(
                    "Cruise Control no longer lists task {id} and its executor is idle"
                )),
                Some(s) => Progress::Running(format!("task {id} not listed; {s}")),
            },
        })
    }

    async fn cancel_inner(&self, id: &str) -> Result<String, BackendError> {
        self.send(Method::POST, "stop_proposal_execution", &[])
            .await?;
        Ok(format!(
            "asked Cruise Control to stop the execution of task {id} (stop_proposal_execution)"
        ))
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(&format!(": {x}"));
        src = x.source();
    }
    s
}

impl RemediationBackend for CruiseControl {
    fn kind(&self) -> BackendKind {
        BackendKind::CruiseControl
    }

    fn observe(&self, _sizes: bool) -> BoxFuture<'_, Result<Observation, BackendError>> {
        Box::pin(async move {
            Ok(Observation {
                model: None,
                in_progress: self.executor_state().await?,
                brokers: None,
            })
        })
    }

    fn start<'a>(&'a self, req: &'a Request) -> BoxFuture<'a, Result<Started, BackendError>> {
        Box::pin(self.start_inner(req))
    }

    fn poll<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Progress, BackendError>> {
        Box::pin(self.poll_inner(task_id))
    }

    fn cancel<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<String, BackendError>> {
        Box::pin(self.cancel_inner(task_id))
    }

    /// Cruise Control's tasks live in Cruise Control: polling `user_tasks` works from any
    /// process. Without a recorded User-Task-ID (the process stopped before Cruise Control
    /// answered), only its executor's state says whether anything still runs.
    fn resume<'a>(
        &'a self,
        action: &'a crate::intent::ActionIntent,
    ) -> BoxFuture<'a, Result<String, BackendError>> {
        Box::pin(async move {
            Ok(action
                .task_id
                .clone()
                .unwrap_or_else(|| format!("{UNRECORDED}{}", action.id)))
        })
    }
}
