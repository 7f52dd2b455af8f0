//! The `log-only` backend: plans from the metadata when a Kafka connection is configured, never
//! changes anything.

use futures::future::BoxFuture;

use super::remediation::{
    BackendError, Observation, Progress, RemediationBackend, Request, Started,
};
use crate::broker::policy::BackendKind;

/// `log-only`: plans from the metadata when a Kafka connection is configured, never changes
/// anything.
pub struct LogOnly {
    reader: Option<Box<dyn RemediationBackend>>,
}

impl LogOnly {
    /// With an optional metadata reader (a `kafka` backend that is only asked to observe).
    pub fn new(reader: Option<Box<dyn RemediationBackend>>) -> Self {
        Self { reader }
    }
}

impl RemediationBackend for LogOnly {
    fn kind(&self) -> BackendKind {
        BackendKind::LogOnly
    }

    fn observe(&self, sizes: bool) -> BoxFuture<'_, Result<Observation, BackendError>> {
        Box::pin(async move {
            match &self.reader {
                Some(r) => r.observe(sizes).await,
                None => Ok(Observation::default()),
            }
        })
    }

    fn start<'a>(&'a self, _req: &'a Request) -> BoxFuture<'a, Result<Started, BackendError>> {
        Box::pin(async {
            Err(BackendError::Refused(
                "the log-only backend never changes the cluster".into(),
            ))
        })
    }

    fn poll<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Progress, BackendError>> {
        Box::pin(async move {
            Err(BackendError::Refused(format!(
                "the log-only backend runs no task ({task_id})"
            )))
        })
    }

    fn cancel<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<String, BackendError>> {
        Box::pin(async move {
            Err(BackendError::Refused(format!(
                "the log-only backend runs no task ({task_id})"
            )))
        })
    }
}
