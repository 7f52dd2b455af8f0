//! The Lease API as the election needs it: one named Lease, read, created and replaced with
//! resourceVersion preconditions. [`LeaseStore`] is the seam the election's tests replace.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use kube::Client;

use crate::backend::kube::{RequestObserver, FIELD_MANAGER};

/// Why a Lease request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// 409: someone else wrote first (a stale resourceVersion, or a create of a Lease that
    /// exists).
    #[error("conflict: {0}")]
    Conflict(String),
    /// 403: the ServiceAccount lacks a permission.
    #[error("forbidden: missing RBAC permission: verb {verb:?} on resource \"leases\" (group \"coordination.k8s.io\") in namespace {namespace:?}: {message}")]
    Forbidden {
        /// get, create or update.
        verb: &'static str,
        /// The Lease's namespace.
        namespace: String,
        /// The API server's message.
        message: String,
    },
    /// No answer in time, a transport error, 5xx or 429.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Any other refusal (404 on an update, 400, 422, ...).
    #[error("refused with HTTP {code}: {message}")]
    Refused {
        /// HTTP status (0: not an HTTP answer).
        code: u16,
        /// The API server's message.
        message: String,
    },
}

/// One Lease: read it, create it, replace it (the write carries `metadata.resourceVersion`).
pub trait LeaseStore: Send + Sync {
    /// GET; `None` when it does not exist (404).
    fn get(&self) -> BoxFuture<'_, Result<Option<Lease>, LeaseError>>;
    /// POST; [`LeaseError::Conflict`] when it exists.
    fn create<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>>;
    /// PUT with the resourceVersion in `lease.metadata`; [`LeaseError::Conflict`] when it is
    /// stale.
    fn replace<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>>;
}

/// The Lease through the Kubernetes API.
pub struct KubeLeases {
    api: Api<Lease>,
    namespace: String,
    name: String,
    observer: Option<RequestObserver>,
}

impl KubeLeases {
    /// The Lease `namespace/name` through `client` (build it with
    /// [`crate::backend::kube::client`]: retry off, timeouts set).
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        observer: Option<RequestObserver>,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            observer,
        }
    }

    fn classify<T>(
        &self,
        verb: &'static str,
        started: Instant,
        result: Result<T, kube::Error>,
    ) -> Result<T, LeaseError> {
        let (code, out) = match result {
            Ok(v) => ("200".to_string(), Ok(v)),
            Err(kube::Error::Api(status)) => {
                let code = status.code;
                let message = status.message.clone();
                let e = match code {
                    409 => LeaseError::Conflict(message),
                    403 => LeaseError::Forbidden {
                        verb,
                        namespace: self.namespace.clone(),
                        message,
                    },
                    429 | 500..=599 => LeaseError::Unavailable(format!("HTTP {code}: {message}")),
                    _ => LeaseError::Refused { code, message },
                };
                (code.to_string(), Err(e))
            }
            Err(e @ (kube::Error::HyperError(_) | kube::Error::Service(_))) => (
                "error".to_string(),
                Err(LeaseError::Unavailable(e.to_string())),
            ),
            Err(e) => (
                "error".to_string(),
                Err(LeaseError::Refused {
                    code: 0,
                    message: e.to_string(),
                }),
            ),
        };
        if let Some(obs) = &self.observer {
            obs(verb, "leases", &code, started.elapsed());
        }
        out
    }
}

impl LeaseStore for KubeLeases {
    fn get(&self) -> BoxFuture<'_, Result<Option<Lease>, LeaseError>> {
        Box::pin(async move {
            let started = Instant::now();
            let r = self.api.get_opt(&self.name).await;
            self.classify("get", started, r)
        })
    }

    fn create<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        Box::pin(async move {
            let started = Instant::now();
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            let r = self.api.create(&pp, lease).await;
            self.classify("create", started, r)
        })
    }

    fn replace<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        Box::pin(async move {
            let started = Instant::now();
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            let r = self.api.replace(&self.name, &pp, lease).await;
            self.classify("update", started, r)
        })
    }
}

/// The per-request time-out of the election's client: `kubernetes.request_timeout`, but at
/// most half of `renew_deadline`, so that a hung request leaves room for another attempt.
pub fn request_timeout(kube_timeout: Duration, renew_deadline: Duration) -> Duration {
    kube_timeout.min(renew_deadline / 2)
}
