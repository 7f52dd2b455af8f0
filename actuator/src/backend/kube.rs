//! Kubernetes adapter: the Deployment scale subresource and the cooldown annotation, via `kube`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;

use super::{KubeError, ScaleApi, TargetView};
use crate::decide::LastAction;
use crate::policy::DeploymentRef;

/// The field manager named on every write.
pub const FIELD_MANAGER: &str = "medic-actuator";
/// The Deployment annotation holding the last action (cooldown state shared by replicas).
pub const COOLDOWN_ANNOTATION: &str = "kafka-medic.io/last-scale";

/// Called after every API request: verb, resource, HTTP status code (or "error"), duration.
pub type RequestObserver = Arc<dyn Fn(&'static str, &'static str, &str, Duration) + Send + Sync>;

/// Retry settings for 5xx, 429 and transport errors.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Attempts in total (at least 1).
    pub attempts: u32,
    /// Delay before the first retry; doubled each time.
    pub base: Duration,
    /// Longest delay between attempts.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            attempts: 4,
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        }
    }
}

/// The real adapter.
#[derive(Clone)]
pub struct KubeScaler {
    client: Client,
    backoff: Backoff,
    observer: Option<RequestObserver>,
}

enum Attempt<T> {
    Done(T),
    Retry(String),
    Fail(KubeError),
}

impl KubeScaler {
    /// Wrap a kube client.
    pub fn new(client: Client, backoff: Backoff, observer: Option<RequestObserver>) -> Self {
        Self {
            client,
            backoff,
            observer,
        }
    }

    fn api(&self, ns: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn classify<T>(
        result: Result<T, kube::Error>,
        verb: &'static str,
        resource: &'static str,
        target: &DeploymentRef,
    ) -> (Attempt<T>, String) {
        match result {
            Ok(v) => (Attempt::Done(v), "200".into()),
            Err(kube::Error::Api(status)) => {
                let code = status.code;
                let message = status.message.clone();
                let attempt = match code {
                    409 => Attempt::Fail(KubeError::Conflict {
                        resource,
                        target: target.to_string(),
                        message,
                    }),
                    403 => Attempt::Fail(KubeError::Forbidden {
                        verb,
                        resource,
                        namespace: target.namespace.clone(),
                        message,
                    }),
                    404 => Attempt::Fail(KubeError::NotFound {
                        target: target.to_string(),
                    }),
                    429 | 500..=599 => Attempt::Retry(format!("HTTP {code}: {message}")),
                    _ => Attempt::Fail(KubeError::Refused {
                        verb,
                        resource,
                        code,
                        message,
                    }),
                };
                (attempt, code.to_string())
            }
            Err(e @ (kube::Error::HyperError(_) | kube::Error::Service(_))) => {
                (Attempt::Retry(e.to_string()), "error".into())
            }
            Err(e) => (
                Attempt::Fail(KubeError::Refused {
                    verb,
                    resource,
                    code: 0,
                    message: e.to_string(),
                }),
                "error".into(),
            ),
        }
    }

    async fn with_backoff<T, F, Fut>(
        &self,
        verb: &'static str,
        resource: &'static str,
        target: &DeploymentRef,
        mut call: F,
    ) -> Result<T, KubeError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let attempts = self.backoff.attempts.max(1);
        let mut delay = self.backoff.base;
        let mut last = String::new();
        for attempt in 1..=attempts {
            let started = Instant::now();
            let result = call().await;
            let (outcome, code) = Self::classify(result, verb, resource, target);
            if let Some(obs) = &self.observer {
                obs(verb, resource, &code, started.elapsed());
            }
            match outcome {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(msg) => {
                    tracing::warn!(%target, verb, resource, attempt, error = %msg, "kubernetes request failed; backing off");
                    last = msg;
                    if attempt < attempts {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(self.backoff.max);
                    }
                }
            }
        }
        Err(KubeError::Unavailable {
            attempts,
            message: last,
        })
    }

    async fn read_impl(&self, target: &DeploymentRef) -> Result<TargetView, KubeError> {
        let api = self.api(&target.namespace);
        let meta = self.with_backoff("get", "deployments", target, || {
            api.get_metadata(&target.name)
        });
        let scale = self.with_backoff("get", "deployments/scale", target, || {
            api.get_scale(&target.name)
        });
        let (meta, scale) = futures::future::try_join(meta, scale).await?;
        let replicas = scale
            .spec
            .and_then(|s| s.replicas)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(0);
        let resource_version = meta.metadata.resource_version.unwrap_or_default();
        let raw = meta
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(COOLDOWN_ANNOTATION));
        let (last_action, annotation_invalid) = match raw {
            None => (None, false),
            Some(s) => match serde_json::from_str::<LastAction>(s) {
                Ok(a) => (Some(a), false),
                Err(e) => {
                    tracing::warn!(%target, error = %e, "ignoring unparsable cooldown annotation");
                    (None, true)
                }
            },
        };
        Ok(TargetView {
            replicas,
            resource_version,
            last_action,
            annotation_invalid,
        })
    }

    async fn claim_impl(
        &self,
        target: &DeploymentRef,
        resource_version: &str,
        action: &LastAction,
    ) -> Result<(), KubeError> {
        let api = self.api(&target.namespace);
        let value = serde_json::to_string(action).map_err(|e| KubeError::Refused {
            verb: "patch",
            resource: "deployments",
            code: 0,
            message: e.to_string(),
        })?;
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": resource_version,
                "annotations": { COOLDOWN_ANNOTATION: value },
            }
        });
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let patch = Patch::Merge(&patch);
        self.with_backoff("patch", "deployments", target, || {
            api.patch_metadata(&target.name, &pp, &patch)
        })
        .await
        .map(|_| ())
    }

    async fn scale_impl(&self, target: &DeploymentRef, replicas: u32) -> Result<(), KubeError> {
        let api = self.api(&target.namespace);
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let patch = Patch::Merge(&patch);
        self.with_backoff("patch", "deployments/scale", target, || {
            api.patch_scale(&target.name, &pp, &patch)
        })
        .await
        .map(|_| ())
    }
}

impl ScaleApi for KubeScaler {
    fn read<'a>(
        &'a self,
        target: &'a DeploymentRef,
    ) -> BoxFuture<'a, Result<TargetView, KubeError>> {
        Box::pin(self.read_impl(target))
    }

    fn claim<'a>(
        &'a self,
        target: &'a DeploymentRef,
        resource_version: &'a str,
        action: &'a LastAction,
    ) -> BoxFuture<'a, Result<(), KubeError>> {
        Box::pin(self.claim_impl(target, resource_version, action))
    }

    fn scale<'a>(
        &'a self,
        target: &'a DeploymentRef,
        replicas: u32,
    ) -> BoxFuture<'a, Result<(), KubeError>> {
        Box::pin(self.scale_impl(target, replicas))
    }
}

/// A client for a plain-HTTP API server URL (tests, benchmarks, `kubectl proxy`).
pub fn client_for_url(url: &str, timeout: Duration) -> Result<Client, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("kubernetes.api_url {url:?}: {e}"))?;
    let mut config = kube::Config::new(uri);
    // We retry ourselves (bounded, measured, audited); kube's own retry layer would hide it.
    config.default_retry = false;
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    config.connect_timeout = Some(timeout);
    Client::try_from(config).map_err(|e| format!("kubernetes.api_url {url:?}: {e}"))
}

/// A client from the environment: in-cluster ServiceAccount, else KUBECONFIG / ~/.kube/config.
pub async fn client_inferred(timeout: Duration) -> Result<Client, String> {
    let mut config = kube::Config::infer().await.map_err(|e| {
        format!("cannot find Kubernetes credentials (in-cluster or kubeconfig): {e}")
    })?;
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    Client::try_from(config).map_err(|e| format!("kubernetes client: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::decide::Direction;
    use jiff::Timestamp;
    use wiremock::matchers::{body_json, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn target() -> DeploymentRef {
        DeploymentRef {
            namespace: "shop".into(),
            name: "orders-consumer".into(),
        }
    }

    fn scaler(server: &MockServer) -> KubeScaler {
        let client = client_for_url(&server.uri(), Duration::from_secs(2)).unwrap();
        KubeScaler::new(
            client,
            Backoff {
                attempts: 3,
                base: Duration::from_millis(5),
                max: Duration::from_millis(20),
            },
            None,
        )
    }

    const DEPLOY: &str = "/apis/apps/v1/namespaces/shop/deployments/orders-consumer";
    const SCALE: &str = "/apis/apps/v1/namespaces/shop/deployments/orders-consumer/scale";

    fn meta_body(rv: &str, annotation: Option<&str>) -> serde_json::Value {
        let mut meta = serde_json::json!({"name": "orders-consumer", "namespace": "shop", "resourceVersion": rv});
        if let Some(a) = annotation {
            meta["annotations"] = serde_json::json!({ COOLDOWN_ANNOTATION: a });
        }
        serde_json::json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": meta})
    }

    fn scale_body(replicas: i32) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "orders-consumer", "namespace": "shop", "resourceVersion": "41"},
            "spec": {"replicas": replicas}, "status": {"replicas": replicas}
        })
    }

    fn action() -> LastAction {
        LastAction {
            at: Timestamp::from_second(1_800_000_000).unwrap(),
            direction: Direction::Up,
            from: 2,
            to: 4,
            alert: "fp:firing:2027-01-15T08:00:00Z".into(),
            by: "pod-a".into(),
        }
    }

    #[tokio::test]
    async fn read_gets_metadata_and_scale() {
        let server = MockServer::start().await;
        let ann = serde_json::to_string(&action()).unwrap();
        Mock::given(method("GET"))
            .and(path(DEPLOY))
            .and(header(
                "accept",
                "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(meta_body("41", Some(&ann))))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(SCALE))
            .respond_with(ResponseTemplate::new(200).set_body_json(scale_body(3)))
            .expect(1)
            .mount(&server)
            .await;
        let view = scaler(&server).read(&target()).await.unwrap();
        assert_eq!(
            view,
            TargetView {
                replicas: 3,
                resource_version: "41".into(),
                last_action: Some(action()),
                annotation_invalid: false
            }
        );
    }

    #[tokio::test]
    async fn claim_and_scale_send_exact_patches() {
        let server = MockServer::start().await;
        let ann = serde_json::to_string(&action()).unwrap();
        Mock::given(method("PATCH"))
            .and(path(DEPLOY))
            .and(query_param("fieldManager", FIELD_MANAGER))
            .and(header("content-type", "application/merge-patch+json"))
            .and(body_json(serde_json::json!({
                "metadata": {"resourceVersion": "41", "annotations": {COOLDOWN_ANNOTATION: ann}}
            })))
            .respond_with(ResponseTemplate::new(200).set_body_json(meta_body("42", Some(&ann))))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .and(path(SCALE))
            .and(query_param("fieldManager", FIELD_MANAGER))
            .and(header("content-type", "application/merge-patch+json"))
            .and(body_json(serde_json::json!({"spec": {"replicas": 4}})))
            .respond_with(ResponseTemplate::new(200).set_body_json(scale_body(4)))
            .expect(1)
            .mount(&server)
            .await;
        let s = scaler(&server);
        s.claim(&target(), "41", &action()).await.unwrap();
        s.scale(&target(), 4).await.unwrap();
    }

    fn status(code: u16, reason: &str, message: &str) -> ResponseTemplate {
        ResponseTemplate::new(code).set_body_json(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": message, "reason": reason, "code": code
        }))
    }

    #[tokio::test]
    async fn forbidden_names_the_rbac_verb_and_resource() {
        let server = MockServer::start().await;
        Mock::given(method("PATCH"))
            .and(path(SCALE))
            .respond_with(status(403, "Forbidden", "deployments.apps \"orders-consumer\" is forbidden: User \"system:serviceaccount:medic:actuator\" cannot patch resource \"deployments/scale\""))
            .expect(1)
            .mount(&server)
            .await;
        let err = scaler(&server).scale(&target(), 4).await.unwrap_err();
        assert_eq!(err.code(), "kube_forbidden");
        assert!(!err.retryable());
        let msg = err.to_string();
        assert!(
            msg.starts_with("forbidden: missing RBAC permission: verb \"patch\" on resource \"deployments/scale\" in namespace \"shop\""),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn server_errors_back_off_then_give_up() {
        let server = MockServer::start().await;
        Mock::given(method("PATCH"))
            .and(path(SCALE))
            .respond_with(status(503, "ServiceUnavailable", "etcd is sad"))
            .expect(3)
            .mount(&server)
            .await;
        let err = scaler(&server).scale(&target(), 4).await.unwrap_err();
        assert_eq!(
            err,
            KubeError::Unavailable {
                attempts: 3,
                message: "HTTP 503: etcd is sad".into()
            }
        );
        assert!(err.retryable());
    }

    #[tokio::test]
    async fn a_server_error_then_success_is_retried() {
        let server = MockServer::start().await;
        Mock::given(method("PATCH"))
            .and(path(SCALE))
            .respond_with(status(500, "InternalError", "blip"))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .and(path(SCALE))
            .respond_with(ResponseTemplate::new(200).set_body_json(scale_body(4)))
            .expect(1)
            .mount(&server)
            .await;
        scaler(&server).scale(&target(), 4).await.unwrap();
    }

    #[tokio::test]
    async fn conflict_and_not_found_are_not_retried() {
        let server = MockServer::start().await;
        Mock::given(method("PATCH"))
            .and(path(DEPLOY))
            .respond_with(status(409, "Conflict", "the object has been modified"))
            .expect(1)
            .mount(&server)
            .await;
        // read() sends both GETs at once and stops at the first error, so no exact counts here.
        Mock::given(method("GET"))
            .and(path(SCALE))
            .respond_with(status(404, "NotFound", "not found"))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(DEPLOY))
            .respond_with(status(404, "NotFound", "not found"))
            .mount(&server)
            .await;
        let s = scaler(&server);
        let err = s.claim(&target(), "41", &action()).await.unwrap_err();
        assert_eq!(err.code(), "kube_conflict");
        let err = s.read(&target()).await.unwrap_err();
        assert_eq!(
            err,
            KubeError::NotFound {
                target: "shop/orders-consumer".into()
            }
        );
    }
}
