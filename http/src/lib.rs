//! The HTTP/1 server both kafka-medic binaries use.
//!
//! [`Server::serve`] accepts connections on a `TcpListener` (optionally through TLS) and serves a
//! tower service (a `warp::service(..)`) on each, so that slow or idle clients cannot exhaust the
//! process:
//! - a **header-read timeout**: a connection must deliver a complete request head within it
//!   (also between keep-alive requests, and for the TLS handshake);
//! - an **idle timeout**: a connection with no request in flight for that long is closed;
//! - a **connection cap**, kept below the open-file limit (`RLIMIT_NOFILE`) minus a reserve so
//!   that `accept()` never fails with EMFILE. At the cap, the oldest connection with no request
//!   in flight is closed to make room; if every connection is busy, the new one is closed;
//! - **graceful shutdown**: requests in flight finish, idle connections close, and whatever is
//!   left after the grace period is dropped.
//!
//! Closed connections are counted by [`CloseReason`] in `Stats` and reported to an
//! [`Observer`], which each binary turns into its own metrics.
//!
//! Why not `warp::serve`: warp 0.4 serves without TLS, without a shutdown grace period and
//! without any of the limits above, and hyper-util's auto server has no connection cap or
//! eviction either; this module is the one place both binaries get them, the same way.

mod conn;
mod server;
mod table;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub use server::Server;

/// The serving limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Time a connection has to send a complete request head (and to finish a TLS handshake).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Most connections open at once (lowered to fit the open-file limit).
    pub max_connections: usize,
    /// On shutdown, how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Default of `header_read_timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

impl Settings {
    /// Every problem with the settings; `prefix` is how the caller names its keys
    /// (`"http."` for `http.idle_timeout`, `"http_"` for `http_idle_timeout`).
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        for (key, d) in [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if d < Duration::from_millis(100) {
                p.push(format!("{prefix}{key}: {d:?} is below 100ms"));
            }
        }
        if self.max_connections == 0 {
            p.push(format!("{prefix}max_connections: 0 must be at least 1"));
        }
        p
    }
}

/// File descriptors kept free for everything but client connections (the listener, logs, the
/// audit files, Kafka and Kubernetes clients).
pub(crate) const FD_RESERVE: u64 = 64;

/// The connection cap: `max_connections`, lowered so that open connections plus
/// [`FD_RESERVE`] stay within the soft open-file limit `nofile` (half of it when it is tiny).
pub(crate) fn connection_cap(max_connections: usize, nofile: Option<u64>) -> usize {
    let max = max_connections.max(1);
    let Some(limit) = nofile else {
        return max;
    };
    let room = if limit > 2 * FD_RESERVE {
        limit - FD_RESERVE
    } else {
        limit / 2
    };
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    max.min(room).max(1)
}

/// The process's soft open-file limit, if it can be read and is finite.
pub(crate) fn nofile_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft != RLIM_INFINITY => Some(soft),
        _ => None,
    }
}

/// Why the server closed a connection (a client's own close is not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// No complete request head (or TLS handshake) within `header_read_timeout`.
    HeaderTimeout,
    /// No request in flight for `idle_timeout`.
    Idle,
    /// Closed at the cap to make room for a new connection (it had no request in flight).
    Evicted,
    /// A new connection closed at once: at the cap and every connection busy.
    Refused,
}

impl CloseReason {
    /// Every reason, in label order.
    pub const ALL: [CloseReason; 4] = [
        CloseReason::HeaderTimeout,
        CloseReason::Idle,
        CloseReason::Evicted,
        CloseReason::Refused,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::Idle => "idle",
            CloseReason::Evicted => "evicted",
            CloseReason::Refused => "refused",
        }
    }

    fn index(self) -> usize {
        match self {
            CloseReason::HeaderTimeout => 0,
            CloseReason::Idle => 1,
            CloseReason::Evicted => 2,
            CloseReason::Refused => 3,
        }
    }
}

/// Receives connection events, to export them as metrics.
pub trait Observer: Send + Sync {
    /// The number of open connections changed.
    fn connections_open(&self, open: usize);
    /// The server closed a connection.
    fn connection_closed(&self, reason: CloseReason);
}

/// Connection counts, readable while the server runs.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    open: AtomicUsize,
    closed: [AtomicU64; 4],
}

impl Stats {
    /// Connections open now (accepted and not yet closed).
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed by the server for `reason` so far.
    #[cfg(test)]
    pub(crate) fn closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason.index()].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_open_file_limit() {
        assert_eq!(connection_cap(1024, None), 1024, "no limit");
        assert_eq!(connection_cap(1024, Some(1 << 20)), 1024, "a high limit");
        assert_eq!(
            connection_cap(1024, Some(256)),
            256 - 64,
            "the reserve is kept"
        );
        assert_eq!(connection_cap(1024, Some(100)), 50, "half of a tiny limit");
        assert_eq!(connection_cap(0, None), 1, "never zero");
        assert_eq!(connection_cap(5, Some(1)), 1);
    }

    #[test]
    fn settings_problems_name_the_key_and_value() {
        let s = Settings {
            header_read_timeout: Duration::from_millis(10),
            idle_timeout: Duration::ZERO,
            max_connections: 0,
            ..Settings::default()
        };
        assert_eq!(
            s.problems("http."),
            vec![
                "http.header_read_timeout: 10ms is below 100ms".to_string(),
                "http.idle_timeout: 0ns is below 100ms".into(),
                "http.max_connections: 0 must be at least 1".into(),
            ]
        );
        assert!(Settings::default().problems("http_").is_empty());
    }
}
