//! Kubernetes adapter: the Deployment scale subresource and the cooldown annotation, via `kube`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::Client;

use super::{Autoscaler, KubeError, ScaleApi, TargetView};
use crate::decide::LastAction;
use crate::policy::DeploymentRef;

mod min_replicas;
pub use min_replicas::{min_field, AutoscalerView, ORIGINAL_MIN_ANNOTATION};

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

/// How long a namespace's autoscaler list is reused unless set otherwise.
pub const DEFAULT_AUTOSCALER_CACHE_TTL: Duration = Duration::from_secs(30);

/// An autoscaler and the object its `spec.scaleTargetRef` names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ScaleOwner {
    autoscaler: Autoscaler,
    kind: String,
    name: String,
    api_version: Option<String>,
}

impl ScaleOwner {
    /// Whether the reference names the Deployment `name` (kind Deployment; apiVersion in the
    /// apps group, the old extensions group, or without a group).
    fn manages(&self, name: &str) -> bool {
        let group = match self.api_version.as_deref() {
            None => "",
            Some(v) => v.split_once('/').map_or("", |(g, _)| g),
        };
        self.kind == "Deployment"
            && self.name == name
            && matches!(group, "" | "apps" | "extensions")
    }
}

/// Per namespace: when the autoscalers were listed, and what was found.
type AutoscalerCache = Arc<Mutex<HashMap<String, (Instant, Arc<Vec<ScaleOwner>>)>>>;

/// The real adapter.
#[derive(Clone)]
pub struct KubeScaler {
    client: Client,
    backoff: Backoff,
    observer: Option<RequestObserver>,
    autoscaler_ttl: Duration,
    autoscalers: AutoscalerCache,
}

/// The KEDA ScaledObject resource (a CRD: not typed in k8s-openapi).
fn scaled_object_resource() -> ApiResource {
    ApiResource {
        group: "keda.sh".into(),
        version: "v1alpha1".into(),
        api_version: "keda.sh/v1alpha1".into(),
        kind: "ScaledObject".into(),
        plural: "scaledobjects".into(),
    }
}

/// A 404 on a list means the API is not served (KEDA's CRD not installed): nothing to find.
async fn none_if_not_served<T>(
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<Option<T>, kube::Error> {
    match call.await {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// The API group of a resource the actuator uses (for RBAC messages).
fn group_of(resource: &str) -> &'static str {
    match resource {
        "horizontalpodautoscalers" => "autoscaling",
        "scaledobjects" => "keda.sh",
        _ => "apps",
    }
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
            autoscaler_ttl: DEFAULT_AUTOSCALER_CACHE_TTL,
            autoscalers: AutoscalerCache::default(),
        }
    }

    /// Reuse a namespace's autoscaler list for `ttl` (0: list before every scaling decision).
    pub fn with_autoscaler_cache_ttl(mut self, ttl: Duration) -> Self {
        self.autoscaler_ttl = ttl;
        self
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
                        group: group_of(resource),
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
        let uid = meta.metadata.uid.clone();
        let raw = meta
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(COOLDOWN_ANNOTATION));
        let last_action = match raw {
            None => None,
            Some(s) => match serde_json::from_str::<LastAction>(s) {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::warn!(%target, error = %e, "ignoring unparsable cooldown annotation");
                    None
                }
            },
        };
        Ok(TargetView {
            replicas,
            resource_version,
            last_action,
            uid,
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

    /// The HPAs and ScaledObjects of the target's namespace, from the cache if fresh. Failed
    /// lists are not cached.
    async fn namespace_autoscalers(
        &self,
        target: &DeploymentRef,
    ) -> Result<Arc<Vec<ScaleOwner>>, KubeError> {
        let ns = &target.namespace;
        {
            let cache = self.autoscalers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, owners)) = cache.get(ns) {
                if at.elapsed() < self.autoscaler_ttl {
                    return Ok(owners.clone());
                }
            }
        }
        let lp = ListParams::default();
        let hpa_api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), ns);
        let so_api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), ns, &scaled_object_resource());
        let hpas = self.with_backoff("list", "horizontalpodautoscalers", target, || {
            none_if_not_served(hpa_api.list(&lp))
        });
        let sos = self.with_backoff("list", "scaledobjects", target, || {
            none_if_not_served(so_api.list(&lp))
        });
        let (hpas, sos) = futures::future::try_join(hpas, sos).await?;
        let mut owners = Vec::new();
        for hpa in hpas.map(|l| l.items).unwrap_or_default() {
            let r = hpa.spec.scale_target_ref;
            owners.push(ScaleOwner {
                autoscaler: Autoscaler {
                    kind: "HorizontalPodAutoscaler",
                    namespace: ns.clone(),
                    name: hpa.metadata.name.unwrap_or_default(),
                },
                kind: r.kind,
                name: r.name,
                api_version: r.api_version,
            });
        }
        if sos.is_none() {
            tracing::debug!(namespace = %ns, "ScaledObjects are not served (KEDA not installed)");
        }
        for so in sos.map(|l| l.items).unwrap_or_default() {
            let r = &so.data["spec"]["scaleTargetRef"];
            let Some(name) = r["name"].as_str() else {
                continue;
            };
            owners.push(ScaleOwner {
                autoscaler: Autoscaler {
                    kind: "ScaledObject",
                    namespace: ns.clone(),
                    name: so.metadata.name.clone().unwrap_or_default(),
                },
                // KEDA's defaults: kind Deployment, apiVersion apps/v1.
                kind: r["kind"].as_str().unwrap_or("Deployment").to_string(),
                name: name.to_string(),
                api_version: r["apiVersion"].as_str().map(str::to_string),
            });
        }
        let owners = Arc::new(owners);
        self.autoscalers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ns.clone(), (Instant::now(), owners.clone()));
        Ok(owners)
    }

    async fn autoscaler_impl(
        &self,
        target: &DeploymentRef,
    ) -> Result<Option<Autoscaler>, KubeError> {
        let owners = self.namespace_autoscalers(target).await?;
        Ok(owners
            .iter()
            .find(|o| o.manages(&target.name))
            .map(|o| o.autoscaler.clone()))
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

    fn autoscaler<'a>(
        &'a self,
        target: &'a DeploymentRef,
    ) -> BoxFuture<'a, Result<Option<Autoscaler>, KubeError>> {
        Box::pin(self.autoscaler_impl(target))
    }

    fn read_autoscaler<'a>(
        &'a self,
        autoscaler: &'a Autoscaler,
    ) -> BoxFuture<'a, Result<AutoscalerView, KubeError>> {
        Box::pin(self.read_autoscaler_impl(autoscaler))
    }

    fn set_autoscaler_min<'a>(
        &'a self,
        autoscaler: &'a Autoscaler,
        resource_version: &'a str,
        min: u32,
        original: Option<u32>,
    ) -> BoxFuture<'a, Result<(), KubeError>> {
        Box::pin(self.set_autoscaler_min_impl(autoscaler, resource_version, min, original))
    }
}

/// The one way the Kubernetes client is built. With `api_url`, a plain-HTTP API server (tests,
/// benchmarks, `kubectl proxy`); without, the environment: KUBECONFIG or ~/.kube/config, else
/// the in-cluster ServiceAccount (`kube::Config::infer`). Both get the same settings.
pub async fn client(api_url: Option<&str>, timeout: Duration) -> Result<Client, String> {
    let config = match api_url {
        Some(url) => {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| format!("kubernetes.api_url {url:?}: {e}"))?;
            kube::Config::new(uri)
        }
        None => kube::Config::infer().await.map_err(|e| {
            format!("cannot find Kubernetes credentials (in-cluster or kubeconfig): {e}")
        })?,
    };
    let config = with_settings(config, timeout);
    Client::try_from(config).map_err(|e| match api_url {
        Some(url) => format!("kubernetes.api_url {url:?}: {e}"),
        None => format!("kubernetes client (in-cluster or kubeconfig): {e}"),
    })
}

/// The settings every client gets, whatever its source.
fn with_settings(mut config: kube::Config, timeout: Duration) -> kube::Config {
    // We retry ourselves (bounded, measured, audited; `kubernetes.retry_attempts`); kube's own
    // retry layer would multiply the attempts and their delays, under the target's lock.
    config.default_retry = false;
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    config.connect_timeout = Some(timeout);
    config
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
        let client =
            futures::executor::block_on(client(Some(&server.uri()), Duration::from_secs(2)))
                .unwrap();
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
                uid: None,
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

    const HPAS: &str = "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers";
    const SOS: &str = "/apis/keda.sh/v1alpha1/namespaces/shop/scaledobjects";

    fn hpa(name: &str, kind: &str, target: &str, api_version: Option<&str>) -> serde_json::Value {
        let mut r = serde_json::json!({"kind": kind, "name": target});
        if let Some(v) = api_version {
            r["apiVersion"] = v.into();
        }
        serde_json::json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"scaleTargetRef": r, "minReplicas": 1, "maxReplicas": 5}
        })
    }

    fn list(api_version: &str, kind: &str, items: Vec<serde_json::Value>) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "7"},
            "items": items
        }))
    }

    async fn mount_lists(
        server: &MockServer,
        hpas: Vec<serde_json::Value>,
        sos: Option<Vec<serde_json::Value>>,
        times: u64,
    ) {
        Mock::given(method("GET"))
            .and(path(HPAS))
            .respond_with(list("autoscaling/v2", "HorizontalPodAutoscalerList", hpas))
            .expect(times)
            .mount(server)
            .await;
        let so = match sos {
            Some(items) => list("keda.sh/v1alpha1", "ScaledObjectList", items),
            // What an API server answers for a resource it does not serve.
            None => ResponseTemplate::new(404).set_body_string("404 page not found"),
        };
        Mock::given(method("GET"))
            .and(path(SOS))
            .respond_with(so)
            .expect(times)
            .mount(server)
            .await;
    }

    #[tokio::test]
    async fn finds_the_hpa_whose_scale_target_ref_is_the_deployment() {
        let server = MockServer::start().await;
        let hpas = vec![
            hpa("other-hpa", "Deployment", "other-consumer", Some("apps/v1")),
            hpa("sts-hpa", "StatefulSet", "orders-consumer", Some("apps/v1")),
            hpa(
                "foreign-hpa",
                "Deployment",
                "orders-consumer",
                Some("example.com/v1"),
            ),
            hpa(
                "orders-hpa",
                "Deployment",
                "orders-consumer",
                Some("apps/v1"),
            ),
        ];
        mount_lists(&server, hpas, Some(vec![]), 1).await;
        let found = scaler(&server).autoscaler(&target()).await.unwrap();
        assert_eq!(
            found.map(|a| a.to_string()).as_deref(),
            Some("HorizontalPodAutoscaler shop/orders-hpa")
        );
    }

    #[tokio::test]
    async fn an_hpa_without_api_version_counts_and_others_do_not() {
        let server = MockServer::start().await;
        let hpas = vec![
            hpa("other-hpa", "Deployment", "other-consumer", None),
            hpa("orders-hpa", "Deployment", "orders-consumer", None),
        ];
        mount_lists(&server, hpas, Some(vec![]), 1).await;
        let s = scaler(&server);
        let found = s.autoscaler(&target()).await.unwrap().unwrap();
        assert_eq!(found.name, "orders-hpa");
        let unmanaged = DeploymentRef {
            namespace: "shop".into(),
            name: "payments-consumer".into(),
        };
        assert_eq!(s.autoscaler(&unmanaged).await.unwrap(), None);
    }

    #[tokio::test]
    async fn finds_a_scaled_object_whose_kind_defaults_to_deployment() {
        let server = MockServer::start().await;
        let sos = vec![
            serde_json::json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                "metadata": {"name": "job-so", "namespace": "shop"},
                "spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "orders-consumer"}}}),
            serde_json::json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                "metadata": {"name": "orders-so", "namespace": "shop"},
                "spec": {"scaleTargetRef": {"name": "orders-consumer"}}}),
        ];
        mount_lists(&server, vec![], Some(sos), 1).await;
        let found = scaler(&server).autoscaler(&target()).await.unwrap();
        assert_eq!(
            found,
            Some(Autoscaler {
                kind: "ScaledObject",
                namespace: "shop".into(),
                name: "orders-so".into()
            })
        );
    }

    #[tokio::test]
    async fn scaled_objects_not_served_means_none() {
        let server = MockServer::start().await;
        mount_lists(
            &server,
            vec![hpa("other-hpa", "Deployment", "other", Some("apps/v1"))],
            None,
            1,
        )
        .await;
        assert_eq!(scaler(&server).autoscaler(&target()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_namespace_list_is_cached_for_the_ttl() {
        let server = MockServer::start().await;
        mount_lists(&server, vec![], None, 1).await;
        let s = scaler(&server);
        assert_eq!(s.autoscaler(&target()).await.unwrap(), None);
        assert_eq!(s.autoscaler(&target()).await.unwrap(), None);
        // `expect(1)` on both lists is checked when the server drops.
    }

    #[tokio::test]
    async fn a_zero_ttl_lists_every_time() {
        let server = MockServer::start().await;
        mount_lists(&server, vec![], None, 2).await;
        let s = scaler(&server).with_autoscaler_cache_ttl(Duration::ZERO);
        assert_eq!(s.autoscaler(&target()).await.unwrap(), None);
        assert_eq!(s.autoscaler(&target()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_forbidden_list_is_an_error_naming_the_verb_and_group() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(HPAS))
            .respond_with(status(
                403,
                "Forbidden",
                "cannot list resource \"horizontalpodautoscalers\"",
            ))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(SOS))
            .respond_with(list("keda.sh/v1alpha1", "ScaledObjectList", vec![]))
            .mount(&server)
            .await;
        let err = scaler(&server).autoscaler(&target()).await.unwrap_err();
        assert_eq!(err.code(), "kube_forbidden");
        assert!(!err.retryable());
        let msg = err.to_string();
        assert!(
            msg.starts_with("forbidden: missing RBAC permission: verb \"list\" on resource \"horizontalpodautoscalers\" in namespace \"shop\" (group \"autoscaling\")"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_failed_list_is_retried_then_an_error_and_not_cached() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(HPAS))
            .respond_with(status(503, "ServiceUnavailable", "etcd is sad"))
            .up_to_n_times(3)
            .expect(3)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(HPAS))
            .respond_with(list(
                "autoscaling/v2",
                "HorizontalPodAutoscalerList",
                vec![hpa(
                    "orders-hpa",
                    "Deployment",
                    "orders-consumer",
                    Some("apps/v1"),
                )],
            ))
            .expect(1)
            .mount(&server)
            .await;
        // Listed once or twice: the first call may drop it when the HPA list fails.
        Mock::given(method("GET"))
            .and(path(SOS))
            .respond_with(list("keda.sh/v1alpha1", "ScaledObjectList", vec![]))
            .mount(&server)
            .await;
        let s = scaler(&server);
        let err = s.autoscaler(&target()).await.unwrap_err();
        assert_eq!(
            err,
            KubeError::Unavailable {
                attempts: 3,
                message: "HTTP 503: etcd is sad".into()
            }
        );
        assert!(err.retryable());
        // The failure was not cached: the next call lists again and finds the HPA.
        let found = s.autoscaler(&target()).await.unwrap().unwrap();
        assert_eq!(found.name, "orders-hpa");
    }

    #[test]
    fn every_client_gets_the_same_settings() {
        let c = with_settings(
            kube::Config::new("http://127.0.0.1:1".parse().unwrap()),
            Duration::from_secs(3),
        );
        assert!(!c.default_retry);
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.read_timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.write_timeout, Some(Duration::from_secs(3)));
    }
}
