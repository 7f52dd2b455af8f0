//! `on_autoscaler: raise_min_replicas`, the Kubernetes half: GET a HorizontalPodAutoscaler
//! (`autoscaling/v2`) or KEDA ScaledObject (`keda.sh/v1alpha1`), and one merge PATCH that sets
//! its minimum and its original-minimum annotation together, with the object's
//! resourceVersion as precondition (a 409 means it changed since the read).

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};

use super::{scaled_object_resource, KubeScaler, FIELD_MANAGER};
use crate::backend::{Autoscaler, KubeError};
use crate::policy::DeploymentRef;

/// The autoscaler annotation holding its minimum from before kafka-medic raised it (a decimal
/// integer). Present exactly while the minimum is raised; it is what a restart, or another
/// replica, restores.
pub const ORIGINAL_MIN_ANNOTATION: &str = "kafka-medic.io/original-min-replicas";

/// An autoscaler's minimum, maximum and original-minimum annotation, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoscalerView {
    /// The object's resourceVersion (precondition of the write).
    pub resource_version: String,
    /// `spec.minReplicas` (default 1), or `spec.minReplicaCount` (default 0).
    pub min_replicas: u32,
    /// `spec.maxReplicas`, or `spec.maxReplicaCount` (default 100).
    pub max_replicas: u32,
    /// The raw value of [`ORIGINAL_MIN_ANNOTATION`], if set.
    pub original: Option<String>,
}

impl AutoscalerView {
    /// The remembered original minimum: `Ok(None)` when not raised, `Err` (a sentence) when
    /// the annotation is not a replica count.
    pub fn original_min(&self) -> Result<Option<u32>, String> {
        match &self.original {
            None => Ok(None),
            Some(raw) => raw.trim().parse::<u32>().map(Some).map_err(|_| {
                format!("annotation {ORIGINAL_MIN_ANNOTATION} is {raw:?}, not a replica count")
            }),
        }
    }
}

/// How one kind of autoscaler spells its bounds.
struct Shape {
    resource: ApiResource,
    plural: &'static str,
    min_field: &'static str,
    max_field: &'static str,
    default_min: u32,
    default_max: u32,
}

fn shape(a: &Autoscaler) -> Shape {
    if a.kind == "ScaledObject" {
        Shape {
            resource: scaled_object_resource(),
            plural: "scaledobjects",
            min_field: "minReplicaCount",
            max_field: "maxReplicaCount",
            // KEDA's defaults.
            default_min: 0,
            default_max: 100,
        }
    } else {
        Shape {
            resource: ApiResource {
                group: "autoscaling".into(),
                version: "v2".into(),
                api_version: "autoscaling/v2".into(),
                kind: "HorizontalPodAutoscaler".into(),
                plural: "horizontalpodautoscalers".into(),
            },
            plural: "horizontalpodautoscalers",
            min_field: "minReplicas",
            max_field: "maxReplicas",
            // The API server defaults minReplicas to 1; maxReplicas is required.
            default_min: 1,
            default_max: 1,
        }
    }
}

/// The field holding the minimum of this kind of autoscaler (for messages).
pub fn min_field(a: &Autoscaler) -> &'static str {
    shape(a).min_field
}

fn count(v: &serde_json::Value, default: u32) -> u32 {
    v.as_u64()
        .map_or(default, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

impl KubeScaler {
    fn autoscaler_api(&self, a: &Autoscaler) -> (Api<DynamicObject>, Shape, DeploymentRef) {
        let s = shape(a);
        let api = Api::namespaced_with(self.client.clone(), &a.namespace, &s.resource);
        // Errors name the object as `namespace/name`.
        let at = DeploymentRef {
            namespace: a.namespace.clone(),
            name: a.name.clone(),
        };
        (api, s, at)
    }

    pub(super) async fn read_autoscaler_impl(
        &self,
        a: &Autoscaler,
    ) -> Result<AutoscalerView, KubeError> {
        let (api, s, at) = self.autoscaler_api(a);
        let obj = self
            .with_backoff("get", s.plural, &at, || api.get(&a.name))
            .await?;
        let spec = &obj.data["spec"];
        Ok(AutoscalerView {
            resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
            min_replicas: count(&spec[s.min_field], s.default_min),
            max_replicas: count(&spec[s.max_field], s.default_max),
            original: obj
                .metadata
                .annotations
                .as_ref()
                .and_then(|m| m.get(ORIGINAL_MIN_ANNOTATION))
                .cloned(),
        })
    }

    pub(super) async fn set_autoscaler_min_impl(
        &self,
        a: &Autoscaler,
        resource_version: &str,
        min: u32,
        original: Option<u32>,
    ) -> Result<(), KubeError> {
        let (api, s, at) = self.autoscaler_api(a);
        // One write: the minimum and the annotation change together or not at all. `null`
        // removes the annotation (JSON merge patch).
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": resource_version,
                "annotations": { ORIGINAL_MIN_ANNOTATION: original.map(|o| o.to_string()) },
            },
            "spec": { s.min_field: min },
        });
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let patch = Patch::Merge(&patch);
        self.with_backoff("patch", s.plural, &at, || api.patch(&a.name, &pp, &patch))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::backend::kube::{client, Backoff};
    use std::time::Duration;
    use wiremock::matchers::{body_json, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const HPA: &str = "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers/orders-hpa";
    const SO: &str = "/apis/keda.sh/v1alpha1/namespaces/shop/scaledobjects/orders-so";

    fn scaler(server: &MockServer) -> KubeScaler {
        let client =
            futures::executor::block_on(client(Some(&server.uri()), Duration::from_secs(2)))
                .unwrap();
        KubeScaler::new(
            client,
            Backoff {
                attempts: 2,
                base: Duration::from_millis(5),
                max: Duration::from_millis(20),
            },
            None,
        )
    }

    fn hpa() -> Autoscaler {
        Autoscaler {
            kind: "HorizontalPodAutoscaler",
            namespace: "shop".into(),
            name: "orders-hpa".into(),
        }
    }

    fn so() -> Autoscaler {
        Autoscaler {
            kind: "ScaledObject",
            namespace: "shop".into(),
            name: "orders-so".into(),
        }
    }

    fn hpa_body(rv: &str, min: u32, annotation: Option<&str>) -> serde_json::Value {
        let mut meta =
            serde_json::json!({"name": "orders-hpa", "namespace": "shop", "resourceVersion": rv});
        if let Some(a) = annotation {
            meta["annotations"] = serde_json::json!({ ORIGINAL_MIN_ANNOTATION: a });
        }
        serde_json::json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta,
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "orders-consumer"},
                     "minReplicas": min, "maxReplicas": 8}
        })
    }

    fn status(code: u16, reason: &str, message: &str) -> ResponseTemplate {
        ResponseTemplate::new(code).set_body_json(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": message, "reason": reason, "code": code
        }))
    }

    #[tokio::test]
    async fn reads_an_hpa_and_writes_minimum_and_annotation_in_one_patch() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(HPA))
            .respond_with(ResponseTemplate::new(200).set_body_json(hpa_body("71", 2, None)))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .and(path(HPA))
            .and(query_param("fieldManager", FIELD_MANAGER))
            .and(header("content-type", "application/merge-patch+json"))
            .and(body_json(serde_json::json!({
                "metadata": {"resourceVersion": "71", "annotations": {ORIGINAL_MIN_ANNOTATION: "2"}},
                "spec": {"minReplicas": 5}
            })))
            .respond_with(ResponseTemplate::new(200).set_body_json(hpa_body("72", 5, Some("2"))))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .and(path(HPA))
            .and(body_json(serde_json::json!({
                "metadata": {"resourceVersion": "72", "annotations": {ORIGINAL_MIN_ANNOTATION: null}},
                "spec": {"minReplicas": 2}
            })))
            .respond_with(ResponseTemplate::new(200).set_body_json(hpa_body("73", 2, None)))
            .expect(1)
            .mount(&server)
            .await;
        let s = scaler(&server);
        let view = s.read_autoscaler_impl(&hpa()).await.unwrap();
        assert_eq!(
            view,
            AutoscalerView {
                resource_version: "71".into(),
                min_replicas: 2,
                max_replicas: 8,
                original: None,
            }
        );
        assert_eq!(view.original_min(), Ok(None));
        s.set_autoscaler_min_impl(&hpa(), "71", 5, Some(2))
            .await
            .unwrap();
        s.set_autoscaler_min_impl(&hpa(), "72", 2, None)
            .await
            .unwrap();
        assert_eq!(min_field(&hpa()), "minReplicas");
    }

    #[tokio::test]
    async fn a_scaled_object_has_keda_defaults_and_its_own_field() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(SO))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                "metadata": {"name": "orders-so", "namespace": "shop", "resourceVersion": "9",
                             "annotations": {ORIGINAL_MIN_ANNOTATION: "0"}},
                "spec": {"scaleTargetRef": {"name": "orders-consumer"}}
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .and(path(SO))
            .and(header("content-type", "application/merge-patch+json"))
            .and(body_json(serde_json::json!({
                "metadata": {"resourceVersion": "9", "annotations": {ORIGINAL_MIN_ANNOTATION: "0"}},
                "spec": {"minReplicaCount": 3}
            })))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                "metadata": {"name": "orders-so", "namespace": "shop", "resourceVersion": "10"},
                "spec": {"minReplicaCount": 3}
            })))
            .expect(1)
            .mount(&server)
            .await;
        let s = scaler(&server);
        let view = s.read_autoscaler_impl(&so()).await.unwrap();
        assert_eq!((view.min_replicas, view.max_replicas), (0, 100));
        assert_eq!(view.original_min(), Ok(Some(0)));
        s.set_autoscaler_min_impl(&so(), "9", 3, Some(0))
            .await
            .unwrap();
        assert_eq!(min_field(&so()), "minReplicaCount");
    }

    #[tokio::test]
    async fn conflicts_and_refusals_name_the_autoscaler_resource() {
        let server = MockServer::start().await;
        Mock::given(method("PATCH"))
            .and(path(HPA))
            .respond_with(status(409, "Conflict", "the object has been modified"))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .and(path(SO))
            .respond_with(status(
                403,
                "Forbidden",
                "cannot patch resource \"scaledobjects\"",
            ))
            .expect(1)
            .mount(&server)
            .await;
        let s = scaler(&server);
        let err = s
            .set_autoscaler_min_impl(&hpa(), "71", 5, Some(2))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            KubeError::Conflict {
                resource: "horizontalpodautoscalers",
                target: "shop/orders-hpa".into(),
                message: "the object has been modified".into(),
            }
        );
        let err = s
            .set_autoscaler_min_impl(&so(), "9", 3, Some(0))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "kube_forbidden");
        assert!(
            err.to_string().starts_with(
                "forbidden: missing RBAC permission: verb \"patch\" on resource \"scaledobjects\" in namespace \"shop\" (group \"keda.sh\")"
            ),
            "{err}"
        );
    }

    #[test]
    fn an_unparsable_annotation_is_an_error_naming_it() {
        let view = AutoscalerView {
            resource_version: "1".into(),
            min_replicas: 4,
            max_replicas: 8,
            original: Some("two".into()),
        };
        assert_eq!(
            view.original_min(),
            Err(
                "annotation kafka-medic.io/original-min-replicas is \"two\", not a replica count"
                    .into()
            )
        );
    }
}
