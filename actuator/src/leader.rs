//! Who may act on brokers and run the periodic work: the replica that holds the Lease.
//!
//! [`Leadership`] is the read side every part of the actuator consults. Without leader election
//! (a single replica) it is [`Leadership::always`]; with it, the election loop
//! ([`election::Election`]) owns the sending half and flips it.
//!
//! The election is client-go's algorithm over a `coordination.k8s.io/v1` Lease, written with
//! resourceVersion preconditions (GET; POST to create; PUT to renew or take over; a 409 means
//! someone else wrote first), with local fencing: the leader stops acting when it has not renewed
//! for `renew_deadline`, before its Lease can expire, whether or not the API answers.

mod config;
pub mod election;
pub mod lease;

use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::watch;

pub use config::{LeaderElectionConfig, DEFAULT_LEASE_NAME};
pub use election::{Election, ElectionSettings};
pub use lease::{KubeLeases, LeaseError, LeaseStore};

/// What the election knows besides the flag: for `/healthz` and `/api/v1/state`.
#[derive(Debug, Clone, Default)]
pub struct ElectionInfo {
    /// This replica's identity in the Lease.
    pub identity: String,
    /// The Lease, `namespace/name`.
    pub lease: String,
    /// The holder as last observed (this replica while it leads); `None` when unknown or
    /// released.
    pub holder: Option<String>,
    /// When this replica's leadership last changed (acquired, lost or released).
    pub since: Option<Timestamp>,
}

/// The `leader` object of `/healthz` and `/api/v1/state`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaderStatus {
    /// Whether leader election runs (off: this replica always leads).
    pub enabled: bool,
    /// Whether this replica leads right now.
    pub is_leader: bool,
    /// The holder as last observed.
    pub holder: Option<String>,
    /// This replica's identity.
    pub identity: Option<String>,
    /// The Lease, `namespace/name`.
    pub lease: Option<String>,
    /// When this replica's leadership last changed.
    pub since: Option<Timestamp>,
}

/// A view of this replica's leadership. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
    info: Option<Arc<Mutex<ElectionInfo>>>,
}

impl Leadership {
    /// A replica that leads for as long as it runs (leader election off).
    pub fn always() -> Self {
        let (_tx, rx) = watch::channel(true);
        Self { rx, info: None }
    }

    /// Leadership as the election loop reports it through `rx`.
    pub fn from_receiver(rx: watch::Receiver<bool>) -> Self {
        Self { rx, info: None }
    }

    /// Leadership as an election reports it: the flag, and what it knows of the Lease.
    pub fn elected(rx: watch::Receiver<bool>, info: Arc<Mutex<ElectionInfo>>) -> Self {
        Self {
            rx,
            info: Some(info),
        }
    }

    /// Whether this replica leads right now.
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// A receiver to wait on changes (`changed()`), e.g. to reconcile on becoming leader.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }

    /// The `leader` object of `/healthz` and `/api/v1/state`.
    pub fn status(&self) -> LeaderStatus {
        let is_leader = self.is_leader();
        let Some(info) = &self.info else {
            return LeaderStatus {
                enabled: false,
                is_leader,
                holder: None,
                identity: None,
                lease: None,
                since: None,
            };
        };
        let info = info.lock().unwrap_or_else(|e| e.into_inner()).clone();
        LeaderStatus {
            enabled: true,
            is_leader,
            holder: info.holder,
            identity: Some(info.identity),
            lease: Some(info.lease),
            since: info.since,
        }
    }
}

/// The election the config asks for, and the view of it the engine consults; `None` with
/// leader election off (then this replica always leads, and `medic_actuator_leader{instance}`
/// says so). The election's client is its own (one connection pool, not shared with scaling),
/// built like every client (retry off) with requests bounded by
/// [`lease::request_timeout`].
pub(crate) async fn from_config(
    config: &crate::Config,
    env: &std::collections::BTreeMap<String, String>,
    journal: Arc<crate::engine::Recorder>,
    observer: Option<crate::backend::kube::RequestObserver>,
    clock: crate::engine::Clock,
) -> Result<Option<(Election, Leadership)>, crate::app::AppError> {
    use crate::app::AppError;
    let le = &config.leader_election;
    let telemetry = journal.telemetry.clone();
    if !le.enabled {
        telemetry
            .gauge(
                crate::telemetry::LEADER,
                &[("instance", config.instance_name(env))],
            )
            .set(1.0);
        return Ok(None);
    }
    let identity = le.identity(env).map_err(AppError::LeaderElection)?;
    let k = &config.kubernetes;
    let timeout = lease::request_timeout(k.request_timeout, le.renew_deadline);
    let client = crate::backend::kube::client(k.api_url.as_deref(), timeout)
        .await
        .map_err(AppError::Client)?;
    let namespace = le.namespace(env, client.default_namespace());
    let store = Arc::new(KubeLeases::new(
        client,
        &namespace,
        &le.lease_name,
        observer,
    ));
    let settings = ElectionSettings {
        identity,
        namespace,
        lease_name: le.lease_name.clone(),
        lease_duration: le.lease_duration,
        renew_deadline: le.renew_deadline,
        retry_period: le.retry_period,
        request_timeout: timeout,
        instance: config.instance_name(env),
        dry_run: config.dry_run,
    };
    Ok(Some(Election::new(
        settings, store, journal, &telemetry, clock,
    )))
}
