//! The accept loop: admit or make room, spawn the connection, shut down gracefully.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::conn::{self, BoxError, Limits, Tracked};
use crate::table::{Admit, Shared, Table};
use crate::{connection_cap, nofile_limit, CloseReason, Observer, Settings, Stats};

/// Pause after a failed `accept()` (EMFILE and the like) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// An HTTP/1 server with timeouts and a connection cap; see the crate docs.
pub struct Server {
    settings: Settings,
    cap: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
    observer: Option<Arc<dyn Observer>>,
    stats: Arc<Stats>,
}

impl Server {
    /// A server with these settings; the cap is fitted to the process's open-file limit.
    pub fn new(settings: Settings) -> Self {
        Self::with_nofile(settings, nofile_limit())
    }

    /// As `new`, with the open-file limit given (`None`: unlimited).
    pub(crate) fn with_nofile(settings: Settings, nofile: Option<u64>) -> Self {
        let cap = connection_cap(settings.max_connections, nofile);
        Self {
            settings,
            cap,
            tls: None,
            observer: None,
            stats: Arc::new(Stats::default()),
        }
    }

    /// Serve TLS with this acceptor.
    pub fn tls(mut self, acceptor: Option<tokio_rustls::TlsAcceptor>) -> Self {
        self.tls = acceptor;
        self
    }

    /// Report connection events to `observer`.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        observer.connections_open(0);
        self.observer = Some(observer);
        self
    }

    /// The connection cap in force: `max_connections`, or less to fit the open-file limit.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The live connection counts.
    #[cfg(test)]
    pub(crate) fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Serve `service` on `listener` until `shutdown` completes, then stop accepting, let the
    /// requests in flight finish within the grace period, and close every connection.
    pub async fn serve<S, B>(
        self,
        listener: TcpListener,
        service: S,
        shutdown: impl Future<Output = ()>,
    ) where
        S: tower_service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        if self.cap < self.settings.max_connections {
            tracing::warn!(
                max_connections = self.settings.max_connections,
                cap = self.cap,
                nofile = nofile_limit(),
                "max_connections lowered to stay below the open-file limit"
            );
        }
        let events = Events {
            stats: self.stats.clone(),
            observer: self.observer.clone(),
            closed_one: Arc::new(Notify::new()),
        };
        let limits = Limits {
            header_read_timeout: self.settings.header_read_timeout,
            idle_timeout: self.settings.idle_timeout,
        };
        let table = Arc::new(Mutex::new(Table::new(self.cap)));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut conns = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        'accept: loop {
            while conns.try_join_next().is_some() {}
            // An evicted connection holds its socket until its task runs: wait for that before
            // accepting more, so open sockets stay within the cap plus the one just accepted
            // (and accept never hits EMFILE), however fast connections arrive.
            while events.stats.open() > self.cap {
                tokio::select! {
                    _ = &mut shutdown => break 'accept,
                    _ = events.closed_one.notified() => {}
                }
            }
            let (stream, _peer) = tokio::select! {
                _ = &mut shutdown => break 'accept,
                accepted = listener.accept() => match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, open = events.stats.open(), "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let shared = Arc::new(Shared::new(Instant::now()));
            let admitted = match table.lock() {
                Ok(mut t) => t.admit(shared.clone()),
                Err(p) => p.into_inner().admit(shared.clone()),
            };
            let id = match admitted {
                Admit::Room(id) => id,
                Admit::Evicted(id, victim) => {
                    victim.close.notify_one();
                    id
                }
                Admit::Refused => {
                    drop(stream);
                    tracing::debug!(cap = self.cap, "every connection busy: new one refused");
                    events.closed(CloseReason::Refused);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let open = OpenGuard::new(events.clone());
            let svc = Tracked::new(service.clone(), shared);
            let table = table.clone();
            let (tls, limits, stop) = (self.tls.clone(), limits.clone(), stop_rx.clone());
            conns.spawn(async move {
                let reason = conn::run(stream, tls, svc, limits, stop).await;
                match table.lock() {
                    Ok(mut t) => t.remove(id),
                    Err(p) => p.into_inner().remove(id),
                }
                if let Some(r) = reason {
                    open.events.closed(r);
                }
                drop(open);
            });
        }
        // Stop accepting; idle connections close, requests in flight finish (an action they
        // started gets audited), and whatever is left after the grace period is dropped.
        drop(listener);
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(self.settings.shutdown_grace, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = conns.len(),
                "connections still open after the shutdown grace period"
            );
        }
        conns.shutdown().await;
    }
}

/// Where connection events go.
#[derive(Clone)]
struct Events {
    stats: Arc<Stats>,
    observer: Option<Arc<dyn Observer>>,
    /// Signalled when a connection's task ends.
    closed_one: Arc<Notify>,
}

impl Events {
    fn closed(&self, reason: CloseReason) {
        self.stats.closed[reason.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(o) = &self.observer {
            o.connection_closed(reason);
        }
    }

    fn open_changed(&self, delta: isize) {
        let open = if delta > 0 {
            self.stats.open.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.stats
                .open
                .fetch_sub(1, Ordering::Relaxed)
                .saturating_sub(1)
        };
        if let Some(o) = &self.observer {
            o.connections_open(open);
        }
    }
}

/// Counts a connection open from accept until its task ends (or is aborted).
struct OpenGuard {
    events: Events,
}

impl OpenGuard {
    fn new(events: Events) -> Self {
        events.open_changed(1);
        Self { events }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.events.open_changed(-1);
        self.events.closed_one.notify_one();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{mpsc, oneshot, Semaphore};
    use warp::Filter;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(10);

    /// A running test server: `/fast` answers "ok"; `/slow` reports that it started, then
    /// waits for a permit of `release`.
    struct Running {
        addr: SocketAddr,
        stats: Arc<Stats>,
        started: mpsc::UnboundedReceiver<()>,
        release: Arc<Semaphore>,
        stop: Option<oneshot::Sender<()>>,
        done: tokio::task::JoinHandle<()>,
    }

    async fn start(settings: Settings) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (started_tx, started) = mpsc::unbounded_channel();
        let release = Arc::new(Semaphore::new(0));
        let r = release.clone();
        let slow = warp::path("slow").then(move || {
            let (tx, r) = (started_tx.clone(), r.clone());
            async move {
                let _ = tx.send(());
                let _permit = r.acquire().await;
                "slow done"
            }
        });
        let fast = warp::path("fast").map(|| "ok");
        let server = Server::with_nofile(settings, None);
        let stats = server.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(
            server.serve(listener, warp::service(slow.or(fast)), async move {
                let _ = stopped.await;
            }),
        );
        Running {
            addr,
            stats,
            started,
            release,
            stop: Some(stop),
            done,
        }
    }

    fn settings(cap: usize, header: Duration, idle: Duration) -> Settings {
        Settings {
            header_read_timeout: header,
            idle_timeout: idle,
            max_connections: cap,
            shutdown_grace: DEADLINE,
        }
    }

    async fn send(addr: SocketAddr, bytes: &str) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes.as_bytes()).await.unwrap();
        s
    }

    /// Reads until the server closes the connection; returns what it sent and when it closed.
    async fn until_closed(s: &mut TcpStream) -> (String, Instant) {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let read = tokio::time::timeout(DEADLINE, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(
            read.is_ok(),
            "the server did not close the connection within {DEADLINE:?}; got {:?}",
            String::from_utf8_lossy(&got)
        );
        (String::from_utf8_lossy(&got).into_owned(), Instant::now())
    }

    /// Reads one response of known body `body` from a kept-alive connection.
    async fn response(s: &mut TcpStream, body: &str) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        tokio::time::timeout(DEADLINE, async {
            while !String::from_utf8_lossy(&got).ends_with(&format!("\r\n\r\n{body}")) {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no response; got {:?}", String::from_utf8_lossy(&got)));
        String::from_utf8_lossy(&got).into_owned()
    }

    async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    const SLOW: &str = "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n";
    const FAST: &str = "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n";
    const HALF: &str = "GET /fast HT";
    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_is_closed_not_the_busy_one() {
        let mut srv = start(settings(3, LONG, LONG)).await;
        let mut busy = send(srv.addr, SLOW).await;
        srv.started.recv().await.unwrap();
        let mut older = send(srv.addr, HALF).await;
        wait_for("two open", || srv.stats.open() == 2).await;
        let mut newer = send(srv.addr, HALF).await;
        wait_for("three open", || srv.stats.open() == 3).await;

        // A fourth connection takes the place of the oldest idle one.
        let mut fresh = send(srv.addr, FAST).await;
        let r = response(&mut fresh, "ok").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let (got, _) = until_closed(&mut older).await;
        assert_eq!(got, "", "evicted without an answer");
        assert_eq!(srv.stats.closed(CloseReason::Evicted), 1);

        // The busy one and the newer idle one are still there.
        srv.release.add_permits(1);
        let r = response(&mut busy, "slow done").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        newer.write_all(b"TP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        let r = response(&mut newer, "ok").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert_eq!(srv.stats.closed(CloseReason::Refused), 0);
    }

    #[tokio::test]
    async fn at_the_cap_with_every_connection_busy_the_new_one_is_refused() {
        let mut srv = start(settings(2, LONG, LONG)).await;
        let mut a = send(srv.addr, SLOW).await;
        let mut b = send(srv.addr, SLOW).await;
        srv.started.recv().await.unwrap();
        srv.started.recv().await.unwrap();

        let mut refused = send(srv.addr, FAST).await;
        let (got, _) = until_closed(&mut refused).await;
        assert_eq!(got, "", "closed without an answer");
        assert_eq!(srv.stats.closed(CloseReason::Refused), 1);
        assert_eq!(srv.stats.closed(CloseReason::Evicted), 0);
        assert_eq!(srv.stats.open(), 2);

        srv.release.add_permits(2);
        for s in [&mut a, &mut b] {
            let r = response(s, "slow done").await;
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        }
        // Idle again: a new connection now finds room.
        let mut c = send(srv.addr, FAST).await;
        let r = response(&mut c, "ok").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
        let idle = Duration::from_millis(400);
        let srv = start(settings(8, LONG, idle)).await;
        let mut s = send(srv.addr, FAST).await;
        let r = response(&mut s, "ok").await;
        let answered = Instant::now();
        assert!(!r.contains("connection: close"), "kept alive: {r}");
        let (got, closed) = until_closed(&mut s).await;
        assert_eq!(got, "");
        assert!(
            closed - answered >= idle - Duration::from_millis(50),
            "closed after {:?}, before the idle timeout {idle:?}",
            closed - answered
        );
        assert_eq!(srv.stats.closed(CloseReason::Idle), 1);
        assert_eq!(srv.stats.closed(CloseReason::HeaderTimeout), 0);
        wait_for("no connection open", || srv.stats.open() == 0).await;
    }

    #[tokio::test]
    async fn a_busy_connection_is_not_idle() {
        let idle = Duration::from_millis(300);
        let mut srv = start(settings(8, LONG, idle)).await;
        let mut s = send(srv.addr, SLOW).await;
        srv.started.recv().await.unwrap();
        // Busy for three idle timeouts: the response still arrives.
        let t0 = Instant::now();
        wait_for("three idle timeouts", || t0.elapsed() >= idle * 3).await;
        srv.release.add_permits(1);
        let r = response(&mut s, "slow done").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert_eq!(srv.stats.closed(CloseReason::Idle), 0);
    }

    #[tokio::test]
    async fn an_incomplete_request_head_is_closed_after_the_header_read_timeout() {
        let header = Duration::from_millis(400);
        let srv = start(settings(8, header, LONG)).await;
        let opened = Instant::now();
        let mut s = send(srv.addr, HALF).await;
        let (got, closed) = until_closed(&mut s).await;
        assert!(
            closed - opened >= header - Duration::from_millis(50),
            "closed after {:?}",
            closed - opened
        );
        assert!(!got.contains(" 200 "), "{got}");
        wait_for("counted", || {
            srv.stats.closed(CloseReason::HeaderTimeout) == 1
        })
        .await;
        assert_eq!(srv.stats.closed(CloseReason::Idle), 0);
    }

    #[tokio::test]
    async fn shutdown_finishes_the_request_in_flight_and_closes_idle_connections() {
        let mut srv = start(settings(8, LONG, LONG)).await;
        let mut busy = send(srv.addr, SLOW).await;
        srv.started.recv().await.unwrap();
        let mut idle = send(srv.addr, HALF).await;
        wait_for("two open", || srv.stats.open() == 2).await;

        let _ = srv.stop.take().unwrap().send(());
        let (got, _) = until_closed(&mut idle).await;
        assert_eq!(got, "");
        assert!(!srv.done.is_finished(), "a request is still in flight");
        srv.release.add_permits(1);
        let (got, _) = until_closed(&mut busy).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(got.ends_with("slow done"), "{got}");
        tokio::time::timeout(DEADLINE, &mut srv.done)
            .await
            .expect("serve returns after the drain")
            .unwrap();
        assert_eq!(srv.stats.open(), 0);
        assert!(
            TcpStream::connect(srv.addr).await.is_err(),
            "no longer listening"
        );
    }
}
