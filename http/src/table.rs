//! The open connections, oldest first, and the choice of which one makes room at the cap.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

/// What one connection shares with the accept loop and its request guards.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Requests whose response has not been fully written yet.
    in_flight: AtomicUsize,
    /// When the last request finished (or the connection was accepted).
    idle_since: Mutex<Instant>,
    /// Signalled to close the connection (eviction).
    pub(crate) close: Notify,
}

impl Shared {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(now),
            close: Notify::new(),
        }
    }

    /// True while a request is in flight.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Since when the connection has had no request in flight; `None` while busy.
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        if self.busy() {
            return None;
        }
        Some(match self.idle_since.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        })
    }

    /// A request started; the returned guard ends it when dropped.
    pub(crate) fn start_request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }
}

/// Marks its connection busy until dropped (when the response body is done).
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<Shared>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        // Set the time before the count drops, so an idle reader never sees a stale time.
        let now = Instant::now();
        match self.0.idle_since.lock() {
            Ok(mut g) => *g = now,
            Err(p) => *p.into_inner() = now,
        }
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The outcome of admitting a new connection.
#[derive(Debug)]
pub(crate) enum Admit {
    /// Admitted under this id.
    Room(u64),
    /// Admitted under this id after taking `victim` (the oldest idle connection) out of the
    /// table; the caller signals it to close.
    Evicted(u64, Arc<Shared>),
    /// At the cap with every connection busy: close the new one.
    Refused,
}

/// Open connections by accept order (ids only grow, so the first entry is the oldest).
#[derive(Debug)]
pub(crate) struct Table {
    cap: usize,
    next_id: u64,
    conns: BTreeMap<u64, Arc<Shared>>,
}

impl Table {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            next_id: 0,
            conns: BTreeMap::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Admit `conn`, making room at the cap by taking out the oldest connection with no
    /// request in flight.
    pub(crate) fn admit(&mut self, conn: Arc<Shared>) -> Admit {
        let victim = if self.conns.len() >= self.cap {
            let Some(id) = self
                .conns
                .iter()
                .find(|(_, c)| !c.busy())
                .map(|(id, _)| *id)
            else {
                return Admit::Refused;
            };
            self.conns.remove(&id)
        } else {
            None
        };
        let id = self.next_id;
        self.next_id += 1;
        self.conns.insert(id, conn);
        match victim {
            Some(v) => Admit::Evicted(id, v),
            None => Admit::Room(id),
        }
    }

    /// Forget a closed connection (a no-op if it was evicted).
    pub(crate) fn remove(&mut self, id: u64) {
        self.conns.remove(&id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn conn() -> Arc<Shared> {
        Arc::new(Shared::new(Instant::now()))
    }

    #[test]
    fn below_the_cap_every_connection_is_admitted() {
        let mut t = Table::new(3);
        for want in 0..3 {
            assert!(matches!(t.admit(conn()), Admit::Room(id) if id == want));
        }
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_is_evicted_not_a_busy_one() {
        let mut t = Table::new(3);
        let (a, b, c) = (conn(), conn(), conn());
        t.admit(a.clone());
        t.admit(b.clone());
        t.admit(c.clone());
        let _busy = a.start_request(); // the oldest is busy: it stays
        let Admit::Evicted(id, victim) = t.admit(conn()) else {
            panic!("expected an eviction")
        };
        assert_eq!(id, 3);
        assert!(Arc::ptr_eq(&victim, &b), "the oldest idle one is b");
        assert_eq!(t.len(), 3);
        // Next in line is c (a is still busy).
        let Admit::Evicted(_, victim) = t.admit(conn()) else {
            panic!("expected an eviction")
        };
        assert!(Arc::ptr_eq(&victim, &c));
    }

    #[test]
    fn a_connection_idle_again_after_a_request_can_be_evicted() {
        let mut t = Table::new(1);
        let a = conn();
        t.admit(a.clone());
        let guard = a.start_request();
        assert!(matches!(t.admit(conn()), Admit::Refused));
        assert_eq!(a.idle_since(), None, "busy");
        drop(guard);
        assert!(a.idle_since().is_some());
        assert!(matches!(t.admit(conn()), Admit::Evicted(_, v) if Arc::ptr_eq(&v, &a)));
    }

    #[test]
    fn a_full_table_of_busy_connections_refuses_the_new_one() {
        let mut t = Table::new(2);
        let (a, b) = (conn(), conn());
        t.admit(a.clone());
        t.admit(b.clone());
        let _ga = a.start_request();
        let _gb = b.start_request();
        assert!(matches!(t.admit(conn()), Admit::Refused));
        assert_eq!(t.len(), 2, "nothing was taken out");
        t.remove(0);
        assert!(matches!(t.admit(conn()), Admit::Room(2)));
    }
}
