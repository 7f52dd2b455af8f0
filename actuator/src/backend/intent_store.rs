//! The intent of broker actions in Kubernetes: one ConfigMap per cluster in the actuator's
//! namespace (see `crate::intent`). Reads are GETs; writes are a POST (create: 409 when it
//! exists) or a PUT carrying the resourceVersion read (409 when anyone changed it since). 5xx,
//! 429 and transport errors get the same bounded backoff as the scale requests.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::Client;

use super::kube::{Backoff, RequestObserver, FIELD_MANAGER};
use super::KubeError;
use crate::intent::{
    configmap_name, ClusterIntent, IntentStore, Stored, CLUSTER_ANNOTATION, MANAGED_BY,
    MANAGED_BY_LABEL,
};

const RESOURCE: &str = "configmaps";

/// The ConfigMap store.
#[derive(Clone)]
pub struct KubeIntentStore {
    client: Client,
    namespace: String,
    backoff: Backoff,
    observer: Option<RequestObserver>,
}

enum Attempt<T> {
    Done(T),
    Retry(String),
    Fail(KubeError),
}

impl KubeIntentStore {
    /// A store in `namespace` (the actuator's own).
    pub fn new(
        client: Client,
        namespace: String,
        backoff: Backoff,
        observer: Option<RequestObserver>,
    ) -> Self {
        Self {
            client,
            namespace,
            backoff,
            observer,
        }
    }

    /// The namespace the intents are kept in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn api(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn classify<T>(
        &self,
        result: Result<T, kube::Error>,
        verb: &'static str,
        name: &str,
    ) -> (Attempt<T>, String) {
        match result {
            Ok(v) => (Attempt::Done(v), "200".into()),
            Err(kube::Error::Api(status)) => {
                let code = status.code;
                let message = status.message.clone();
                let attempt = match code {
                    409 => Attempt::Fail(KubeError::Conflict {
                        resource: RESOURCE,
                        target: format!("{}/{name}", self.namespace),
                        message,
                    }),
                    403 => Attempt::Fail(KubeError::Forbidden {
                        verb,
                        resource: RESOURCE,
                        group: "",
                        namespace: self.namespace.clone(),
                        message,
                    }),
                    429 | 500..=599 => Attempt::Retry(format!("HTTP {code}: {message}")),
                    _ => Attempt::Fail(KubeError::Refused {
                        verb,
                        resource: RESOURCE,
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
                    resource: RESOURCE,
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
        name: &str,
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
            let (outcome, code) = self.classify(result, verb, name);
            if let Some(obs) = &self.observer {
                obs(verb, RESOURCE, &code, started.elapsed());
            }
            match outcome {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(msg) => {
                    tracing::warn!(namespace = %self.namespace, name, verb, attempt, error = %msg, "kubernetes request on the intent ConfigMap failed; backing off");
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

    async fn read_impl(&self, cluster: &str) -> Result<Option<Stored>, KubeError> {
        let name = configmap_name(cluster);
        let api = self.api();
        let Some(cm) = self
            .with_backoff("get", &name, || api.get_opt(&name))
            .await?
        else {
            return Ok(None);
        };
        let refused = |message: String| KubeError::Refused {
            verb: "get",
            resource: RESOURCE,
            code: 0,
            message: format!("configmap {}/{name}: {message}", self.namespace),
        };
        let owner = cm
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CLUSTER_ANNOTATION));
        if let Some(owner) = owner.filter(|o| o.as_str() != cluster) {
            return Err(refused(format!(
                "it holds the intent of cluster {owner:?}, not {cluster:?} (two cluster names map to one object name)"
            )));
        }
        let intent = ClusterIntent::from_data(&cm.data.unwrap_or_default()).map_err(refused)?;
        if let Some(a) = intent.action.as_ref().filter(|a| a.cluster != cluster) {
            return Err(refused(format!(
                "its action belongs to cluster {:?}, not {cluster:?}",
                a.cluster
            )));
        }
        Ok(Some(Stored {
            intent,
            version: cm.metadata.resource_version.unwrap_or_default(),
        }))
    }

    async fn write_impl(
        &self,
        cluster: &str,
        intent: &ClusterIntent,
        version: Option<&str>,
    ) -> Result<String, KubeError> {
        let name = configmap_name(cluster);
        let data = intent.to_data().map_err(|message| KubeError::Refused {
            verb: if version.is_some() {
                "update"
            } else {
                "create"
            },
            resource: RESOURCE,
            code: 0,
            message,
        })?;
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY_LABEL.to_string(),
                    MANAGED_BY.to_string(),
                )])),
                annotations: Some(BTreeMap::from([(
                    CLUSTER_ANNOTATION.to_string(),
                    cluster.to_string(),
                )])),
                resource_version: version.map(str::to_string),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        };
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let api = self.api();
        let written = match version {
            None => {
                self.with_backoff("create", &name, || api.create(&pp, &cm))
                    .await?
            }
            Some(_) => match self
                .with_backoff("update", &name, || api.replace(&name, &pp, &cm))
                .await
            {
                // Deleted since it was read: someone else changed it, as for a 409.
                Err(KubeError::Refused {
                    code: 404, message, ..
                }) => {
                    return Err(KubeError::Conflict {
                        resource: RESOURCE,
                        target: format!("{}/{name}", self.namespace),
                        message: format!("deleted since it was read: {message}"),
                    })
                }
                other => other?,
            },
        };
        Ok(written.metadata.resource_version.unwrap_or_default())
    }
}

impl IntentStore for KubeIntentStore {
    fn location(&self, cluster: &str) -> String {
        format!("{}/{}", self.namespace, configmap_name(cluster))
    }

    fn read<'a>(&'a self, cluster: &'a str) -> BoxFuture<'a, Result<Option<Stored>, KubeError>> {
        Box::pin(self.read_impl(cluster))
    }

    fn write<'a>(
        &'a self,
        cluster: &'a str,
        intent: &'a ClusterIntent,
        version: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, KubeError>> {
        Box::pin(self.write_impl(cluster, intent, version))
    }
}
