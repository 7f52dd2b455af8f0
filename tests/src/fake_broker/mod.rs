//! A protocol-level fake Kafka cluster: N loopback listeners (tokio) that decode requests with
//! `kafka-protocol` and answer from an in-memory [`Table`], fast enough that a client
//! benchmarked against it at 20,000 groups x 100,000 partitions measures itself, not the fake.
//!
//! # Starting one
//! ```ignore
//! use medic_e2e::fake_broker::{FakeCluster, Group, Member};
//! let cluster = FakeCluster::builder()
//!     .brokers(3)                      // ids 0, 1, 2 on 127.0.0.1:<ports picked at run time>
//!     .authenticator(Arc::new(my_auth)) // optional: SASL required on every connection
//!     .start()
//!     .await;
//! let bootstrap = cluster.bootstrap(); // "127.0.0.1:p0,127.0.0.1:p1,127.0.0.1:p2"
//! ```
//! Dropping the [`FakeCluster`] closes the listeners and every open connection.
//!
//! # The table (mutable while running)
//! [`FakeCluster::update`] gives `&mut Table`, [`FakeCluster::read`] `&Table`:
//! - topics: [`Table::add_topic`] (leaders round-robin), [`Table::add_topic_with`],
//!   [`Table::append`] (n records at a timestamp: Fetch returns record batches carrying it),
//!   [`Table::set_log_start`], [`Table::set_leader`], [`Table::delete_topic`];
//! - groups: [`Table::put_group`] with [`Group::classic`]/[`Group::consumer`]`(coordinator)`
//!   `.state(..)`, `.member(`[`Member::new`]`("m1").assign("t", &[0, 1]))`, `.commit("t", 0, 5)`;
//!   [`Table::commit`], [`Table::group_mut`], [`Table::remove_group`];
//! - versions: [`Table::set_api_versions`], [`Table::remove_api`] (to play an older broker).
//!
//! # What it answers, and how strictly
//! ApiVersions (exact ranges from [`KAFKA_4_API_VERSIONS`]; an ApiVersions request above them
//! gets UNSUPPORTED_VERSION with the ranges, any other request outside its range closes the
//! connection, as Kafka does), Metadata, FindCoordinator, ListGroups v0–v5 (states and types
//! filters, group type in v5), DescribeGroups, ConsumerGroupDescribe, OffsetFetch (v8+ batched,
//! older per group), ListOffsets (-1 latest, -2 earliest, a timestamp), Fetch (record batches
//! with the table's timestamps, at most `partition_max_bytes` of them after the first batch),
//! SaslHandshake v1 + SaslAuthenticate.
//! - A group request to a broker that is not the group's coordinator: NOT_COORDINATOR; a
//!   partition request to a broker that is not its leader: NOT_LEADER_OR_FOLLOWER.
//! - As Kafka 4: ConsumerGroupDescribe of a classic group is GROUP_ID_NOT_FOUND ("Group g is not
//!   a consumer group."), of an unknown one GROUP_ID_NOT_FOUND ("Group g not found.").
//!   DescribeGroups v6 of a consumer group is GROUP_ID_NOT_FOUND ("Group g is not a classic
//!   group."), of an unknown one GROUP_ID_NOT_FOUND ("Group g not found."); before v6 both are
//!   state `Dead` with no error and no members. OffsetFetch of an unknown group: no error, no
//!   offsets.
//! - With an authenticator: ApiVersions, SaslHandshake and SaslAuthenticate are allowed before
//!   authentication, anything else closes the connection. A failed SaslAuthenticate is answered
//!   with the authenticator's error, then the connection is closed. `session_lifetime_ms` from
//!   [`AuthOk`] is returned (v1+) and enforced: once past it, a request other than
//!   SaslHandshake/SaslAuthenticate (re-authentication, KIP-368) closes the connection and is
//!   counted in [`FakeCluster::expired_sessions_closed`]. A re-authentication must name the same
//!   principal.
//!
//! # The request log
//! [`FakeCluster::requests`] lists every request received, refused ones included:
//! [`RequestRecord`] (broker, API key, version, client_id, the connection's SASL principal at
//! that moment, connection number). [`FakeCluster::wait_for`] waits (no sleep) until the log
//! satisfies a predicate; [`FakeCluster::clear_requests`] empties it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod answer;
pub mod auth;
pub mod oauthbearer;
pub mod server;
pub mod table;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use auth::{AuthError, AuthOk, Authenticator};
/// API keys, to filter the request log ([`RequestRecord::is`]).
pub use kafka_protocol::messages::ApiKey;
pub use table::{Group, GroupType, Member, Partition, Table, Topic, KAFKA_4_API_VERSIONS};

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// The broker id whose listener got it.
    pub broker: i32,
    pub api_key: i16,
    pub version: i16,
    pub client_id: Option<String>,
    /// The SASL principal the connection had authenticated as when the request arrived.
    pub principal: Option<String>,
    /// Connections are numbered from 1 in the order they were accepted (cluster-wide).
    pub connection: u64,
}

impl RequestRecord {
    pub fn is(&self, api: ApiKey) -> bool {
        self.api_key == api as i16
    }
}

/// State shared by the listeners and the handle.
pub(crate) struct Shared {
    pub(crate) table: RwLock<Table>,
    pub(crate) log: Mutex<Vec<RequestRecord>>,
    pub(crate) logged: Notify,
    pub(crate) expired_closed: AtomicU64,
    pub(crate) next_connection: AtomicU64,
    pub(crate) authenticator: Option<Arc<dyn Authenticator>>,
}

impl Shared {
    pub(crate) fn record(&self, r: RequestRecord) {
        self.log.lock().unwrap().push(r);
        self.logged.notify_waiters();
    }
}

/// Builds a [`FakeCluster`].
#[derive(Default)]
pub struct FakeClusterBuilder {
    brokers: usize,
    authenticator: Option<Arc<dyn Authenticator>>,
}

impl FakeClusterBuilder {
    /// Number of brokers (ids 0..n); 1 by default.
    pub fn brokers(mut self, n: usize) -> Self {
        self.brokers = n;
        self
    }

    /// Require SASL through this authenticator on every connection.
    pub fn authenticator(mut self, a: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(a);
        self
    }

    /// Binds one listener per broker on 127.0.0.1 (ports picked at run time) and serves.
    pub async fn start(self) -> FakeCluster {
        let n = self.brokers.max(1);
        let mut listeners = Vec::with_capacity(n);
        for id in 0..n as i32 {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            listeners.push((id, port, l));
        }
        let shared = Arc::new(Shared {
            table: RwLock::new(Table::new(
                listeners.iter().map(|(id, port, _)| (*id, *port)).collect(),
            )),
            log: Mutex::new(Vec::new()),
            logged: Notify::new(),
            expired_closed: AtomicU64::new(0),
            next_connection: AtomicU64::new(0),
            authenticator: self.authenticator,
        });
        let tasks = listeners
            .into_iter()
            .map(|(id, _, l)| tokio::spawn(server::accept_loop(l, id, shared.clone())))
            .collect();
        FakeCluster { shared, tasks }
    }
}

/// A running fake cluster; stopped (listeners and connections closed) on drop.
pub struct FakeCluster {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FakeCluster {
    pub fn builder() -> FakeClusterBuilder {
        FakeClusterBuilder::default()
    }

    /// `127.0.0.1:p0,127.0.0.1:p1,...` in broker id order.
    pub fn bootstrap(&self) -> String {
        self.read(|t| {
            t.brokers
                .iter()
                .map(|(_, p)| format!("127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    /// `127.0.0.1:port` of broker `id`.
    pub fn addr(&self, id: i32) -> String {
        self.read(|t| {
            let (_, p) = t
                .brokers
                .iter()
                .find(|(b, _)| *b == id)
                .unwrap_or_else(|| panic!("fake cluster: no broker {id}"));
            format!("127.0.0.1:{p}")
        })
    }

    /// Broker ids, in order.
    pub fn broker_ids(&self) -> Vec<i32> {
        self.read(|t| t.brokers.iter().map(|(id, _)| *id).collect())
    }

    /// Reads the table.
    pub fn read<T>(&self, f: impl FnOnce(&Table) -> T) -> T {
        f(&self.shared.table.read().unwrap())
    }

    /// Changes the table; the next request sees the change.
    pub fn update<T>(&self, f: impl FnOnce(&mut Table) -> T) -> T {
        f(&mut self.shared.table.write().unwrap())
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Requests for `api`, in arrival order.
    pub fn requests_for(&self, api: ApiKey) -> Vec<RequestRecord> {
        self.shared
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.is(api))
            .cloned()
            .collect()
    }

    pub fn clear_requests(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// Connections closed because a request came after their SASL session expired.
    pub fn expired_sessions_closed(&self) -> u64 {
        self.shared.expired_closed.load(Ordering::SeqCst)
    }

    /// Waits until `pred` holds for the request log, at most `timeout`; panics with the log if
    /// it never does.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&[RequestRecord]) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.logged.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if pred(&self.shared.log.lock().unwrap()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "fake cluster: condition not met within {timeout:?}; requests: {:#?}",
                    self.requests()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
