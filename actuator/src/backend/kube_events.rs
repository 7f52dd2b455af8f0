//! Kubernetes Events for scale actions, as the HorizontalPodAutoscaler and KEDA record theirs:
//! `kubectl describe deployment` and `kubectl get events` show what kafka-medic did and why.
//!
//! Every durable audit record of a scale (`scale_up`/`scale_down`, applied or failed) becomes
//! one core/v1 Event on its Deployment (`POST /api/v1/namespaces/{ns}/events`), reason
//! [`EVENT_REASON`], type Normal (Warning for a failed scale), message = the audit record's
//! message. Events are best effort: they go through a bounded queue to one background task,
//! so the scale decision and the webhook's answer never wait for them; a refusal, a time-out
//! or a full queue is logged and counted (`medic_actuator_kube_events_total{result}`), never
//! retried.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::Client;
use metrics::Counter;
use tokio::sync::mpsc;

use super::kube::{RequestObserver, FIELD_MANAGER};
use crate::audit::{Action, AuditRecord, Outcome};
use crate::telemetry::{self, Telemetry};

/// The Event reason of every scale action.
pub const EVENT_REASON: &str = "KafkaMedicScaled";
/// `source.component` and `reportingComponent`.
pub const REPORTING_COMPONENT: &str = "medic-actuator";
/// Events waiting to be sent at most; beyond it they are dropped and counted.
pub const EVENT_QUEUE: usize = 1024;
/// Longest name of an object (a DNS subdomain).
const MAX_NAME: usize = 253;

/// Whether a record is a scale action that gets an Event: action `scale_up` or `scale_down`,
/// outcome `applied` or `failed`, with a target.
pub fn is_scale(record: &AuditRecord) -> bool {
    matches!(record.action, Action::ScaleUp | Action::ScaleDown)
        && matches!(record.outcome, Outcome::Applied | Outcome::Failed)
        && record.target.is_some()
}

/// The Event for a durable audit record, if it is a scale action: `target` set, action
/// `scale_up` or `scale_down`, outcome `applied` (Normal) or `failed` (Warning). `uid` is the
/// Deployment's, when known; `instance` the reporting instance (pod name); `nanos` makes the
/// name unique (`<deployment>.<hex>`, as client-go's recorder names them).
pub fn scale_event(
    record: &AuditRecord,
    uid: Option<&str>,
    instance: &str,
    nanos: i128,
) -> Option<Event> {
    if !matches!(record.action, Action::ScaleUp | Action::ScaleDown) {
        return None;
    }
    let type_ = match record.outcome {
        Outcome::Applied => "Normal",
        Outcome::Failed => "Warning",
        Outcome::Skipped | Outcome::DryRun => return None,
    };
    let (namespace, name) = record.target.as_deref()?.split_once('/')?;
    let suffix = format!(".{:x}", nanos.max(0));
    let prefix: String = name.chars().take(MAX_NAME - suffix.len()).collect();
    Some(Event {
        metadata: ObjectMeta {
            name: Some(format!("{prefix}{suffix}")),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            uid: uid.map(str::to_string),
            ..ObjectReference::default()
        },
        reason: Some(EVENT_REASON.into()),
        message: Some(record.message.clone()),
        type_: Some(type_.into()),
        action: Some(record.action.as_str().into()),
        count: Some(1),
        first_timestamp: Some(Time(record.ts)),
        last_timestamp: Some(Time(record.ts)),
        source: Some(EventSource {
            component: Some(REPORTING_COMPONENT.into()),
            host: None,
        }),
        reporting_component: Some(REPORTING_COMPONENT.into()),
        reporting_instance: Some(instance.to_string()),
        ..Event::default()
    })
}

struct Counters {
    created: Counter,
    failed: Counter,
    dropped: Counter,
}

/// The Event queue and its sender task. Cheap to share (`Arc`); [`ScaleEvents::offer`] never
/// waits.
pub struct ScaleEvents {
    tx: Mutex<Option<mpsc::Sender<Event>>>,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Deployment uids by `namespace/name`, as last read (one per policy target).
    uids: Mutex<HashMap<String, String>>,
    instance: String,
    counters: Arc<Counters>,
    /// Events queued or being sent.
    pending: Arc<AtomicUsize>,
}

impl ScaleEvents {
    /// Start the sender task (inside a tokio runtime). Each POST is bounded by `timeout`.
    pub fn start(
        client: Client,
        instance: String,
        timeout: Duration,
        telemetry: &Telemetry,
        observer: Option<RequestObserver>,
    ) -> Arc<Self> {
        let result = |r: &str| telemetry.counter(telemetry::KUBE_EVENTS, &[("result", r.into())]);
        let counters = Arc::new(Counters {
            created: result("created"),
            failed: result("failed"),
            dropped: result("dropped"),
        });
        for c in [&counters.created, &counters.failed, &counters.dropped] {
            c.increment(0);
        }
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let pending = Arc::new(AtomicUsize::new(0));
        let worker = tokio::spawn(send_all(
            rx,
            client,
            timeout,
            observer,
            counters.clone(),
            pending.clone(),
        ));
        Arc::new(Self {
            tx: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
            uids: Mutex::new(HashMap::new()),
            instance,
            counters,
            pending,
        })
    }

    /// Remember a Deployment's uid (from a read), for the Events that name it.
    pub fn note_uid(&self, target: &str, uid: &str) {
        if let Ok(mut uids) = self.uids.lock() {
            if uids.get(target).map(String::as_str) != Some(uid) {
                uids.insert(target.to_string(), uid.to_string());
            }
        }
    }

    /// Queue the Event of a durable audit record, if it is a scale action (see
    /// [`scale_event`]). A full queue drops it (logged, counted).
    pub fn offer(&self, record: &AuditRecord) {
        let uid = record
            .target
            .as_ref()
            .and_then(|t| self.uids.lock().ok()?.get(t).cloned());
        let nanos = jiff::Timestamp::now().as_nanosecond();
        let Some(event) = scale_event(record, uid.as_deref(), &self.instance, nanos) else {
            return;
        };
        let tx = self.tx.lock().ok().and_then(|t| t.clone());
        let Some(tx) = tx else {
            self.counters.dropped.increment(1);
            tracing::warn!(target = ?record.target, "Kubernetes Event not sent: shutting down");
            return;
        };
        self.pending.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = tx.try_send(event) {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            self.counters.dropped.increment(1);
            tracing::warn!(target = ?record.target, error = %e, queue = EVENT_QUEUE, "Kubernetes Event dropped: the queue is full");
        }
    }

    /// Events queued or being sent.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Stop taking Events and wait up to `grace` for the queued ones. Returns how many were not
    /// sent (logged).
    pub async fn close(&self, grace: Duration) -> usize {
        drop(self.tx.lock().ok().and_then(|mut t| t.take()));
        let worker = self.worker.lock().ok().and_then(|mut w| w.take());
        let Some(mut worker) = worker else {
            return 0;
        };
        if tokio::time::timeout(grace, &mut worker).await.is_err() {
            worker.abort();
            let left = self.pending();
            tracing::warn!(
                unsent = left,
                "Kubernetes Events still queued after the shutdown grace period were not sent"
            );
            return left;
        }
        0
    }
}

/// The sender task: one Event at a time, in order.
async fn send_all(
    mut rx: mpsc::Receiver<Event>,
    client: Client,
    timeout: Duration,
    observer: Option<RequestObserver>,
    counters: Arc<Counters>,
    pending: Arc<AtomicUsize>,
) {
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    while let Some(event) = rx.recv().await {
        let ns = event.metadata.namespace.clone().unwrap_or_default();
        let deployment = event.involved_object.name.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, api.create(&pp, &event)).await;
        let code = match &result {
            Ok(Ok(_)) => "201".to_string(),
            Ok(Err(kube::Error::Api(s))) => s.code.to_string(),
            Ok(Err(_)) | Err(_) => "error".to_string(),
        };
        if let Some(obs) = &observer {
            obs("create", "events", &code, started.elapsed());
        }
        match result {
            Ok(Ok(_)) => counters.created.increment(1),
            Ok(Err(kube::Error::Api(s))) if s.code == 403 => {
                counters.failed.increment(1);
                tracing::warn!(namespace = %ns, %deployment, error = %s.message, "Kubernetes Event refused: missing RBAC permission: verb \"create\" on resource \"events\" (core group) in namespace {ns:?}");
            }
            Ok(Err(e)) => {
                counters.failed.increment(1);
                tracing::warn!(namespace = %ns, %deployment, error = %e, "Kubernetes Event refused");
            }
            Err(_) => {
                counters.failed.increment(1);
                tracing::warn!(namespace = %ns, %deployment, timeout = ?timeout, "Kubernetes Event not created in time");
            }
        }
        pending.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::decide::Trigger;
    use crate::reason::ReasonCode;
    use jiff::Timestamp;

    fn record(outcome: Outcome, action: Action) -> AuditRecord {
        AuditRecord {
            target: Some("shop/orders-consumer".into()),
            message: "scaled shop/orders-consumer from 2 to 4".into(),
            ..AuditRecord::new(
                Timestamp::from_second(1_800_000_000).unwrap(),
                "actuator-0",
                Trigger::Webhook,
                outcome,
                action,
            )
        }
    }

    #[test]
    fn an_applied_scale_is_a_normal_event_on_its_deployment() {
        let ev = scale_event(
            &record(Outcome::Applied, Action::ScaleUp),
            Some("u-1"),
            "actuator-0",
            0xabc,
        )
        .unwrap();
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["metadata"]["name"], "orders-consumer.abc");
        assert_eq!(v["metadata"]["namespace"], "shop");
        assert_eq!(
            v["involvedObject"],
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "orders-consumer", "namespace": "shop", "uid": "u-1"})
        );
        assert_eq!(v["reason"], "KafkaMedicScaled");
        assert_eq!(v["type"], "Normal");
        assert_eq!(v["message"], "scaled shop/orders-consumer from 2 to 4");
        assert_eq!(v["source"]["component"], "medic-actuator");
        assert_eq!(v["reportingComponent"], "medic-actuator");
        assert_eq!(v["reportingInstance"], "actuator-0");
        assert_eq!(v["firstTimestamp"], "2027-01-15T08:00:00Z");
        assert_eq!(v["count"], 1);
    }

    #[test]
    fn a_failed_scale_is_a_warning_and_nothing_else_is_an_event() {
        let failed = AuditRecord {
            reason: Some(ReasonCode::KubeForbidden),
            ..record(Outcome::Failed, Action::ScaleDown)
        };
        let ev = scale_event(&failed, None, "a", 1).unwrap();
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.involved_object.uid, None);
        for (outcome, action) in [
            (Outcome::Skipped, Action::None),
            (Outcome::Skipped, Action::ScaleUp),
            (Outcome::DryRun, Action::ScaleUp),
            (Outcome::Applied, Action::Pause),
            (Outcome::Applied, Action::MoveLeadership),
            (Outcome::Failed, Action::None),
        ] {
            assert!(
                scale_event(&record(outcome, action), None, "a", 1).is_none(),
                "{outcome:?} {action:?}"
            );
        }
        let no_target = AuditRecord {
            target: None,
            ..record(Outcome::Applied, Action::ScaleUp)
        };
        assert!(scale_event(&no_target, None, "a", 1).is_none());
    }

    #[test]
    fn long_names_stay_within_the_name_limit() {
        let long = AuditRecord {
            target: Some(format!("ns/{}", "d".repeat(253))),
            ..record(Outcome::Applied, Action::ScaleUp)
        };
        let ev = scale_event(&long, None, "a", i128::from(u64::MAX)).unwrap();
        let name = ev.metadata.name.unwrap();
        assert_eq!(name.len(), 253);
        assert!(name.ends_with(".ffffffffffffffff"), "{name}");
        assert_eq!(ev.involved_object.name.unwrap().len(), 253);
    }
}
