//! One connection: the request tracking that tells busy from idle, and the serving loop with
//! its timeouts.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::table::{RequestGuard, Shared};
use crate::CloseReason;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A tower service made a hyper one that marks the connection busy from the request until its
/// response body is written.
pub(crate) struct Tracked<S> {
    inner: S,
    conn: Arc<Shared>,
}

impl<S> Tracked<S> {
    pub(crate) fn new(inner: S, conn: Arc<Shared>) -> Self {
        Self { inner, conn }
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
{
    type Response = Response<Guarded<B>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = self.conn.start_request();
        let mut svc = self.inner.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| svc.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            let resp = svc.call(req).await.map_err(Into::into)?;
            Ok(resp.map(|body| Guarded {
                inner: Box::pin(body),
                _guard: guard,
            }))
        })
    }
}

/// A response body that keeps its connection busy until hyper drops it (written or failed).
pub(crate) struct Guarded<B> {
    inner: Pin<Box<B>>,
    _guard: RequestGuard,
}

impl<B: http_body::Body> http_body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.get_mut().inner.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Limits one connection works under.
#[derive(Clone)]
pub(crate) struct Limits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
}

/// Serve one connection until the client closes it, a timeout closes it, it is evicted, or
/// shutdown closes it; returns why the server closed it, if it did.
pub(crate) async fn run<S, B>(
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    svc: Tracked<S>,
    limits: Limits,
    stop: watch::Receiver<bool>,
) -> Option<CloseReason>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let conn = svc.conn.clone();
    let serve = async {
        match tls {
            Some(acceptor) => {
                match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(s)) => http1(TokioIo::new(s), svc, &limits, stop).await,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        None
                    }
                    Err(_) => Some(CloseReason::HeaderTimeout),
                }
            }
            None => http1(TokioIo::new(stream), svc, &limits, stop).await,
        }
    };
    tokio::select! {
        r = serve => r,
        _ = conn.close.notified() => Some(CloseReason::Evicted),
        _ = idle(&conn, limits.idle_timeout) => Some(CloseReason::Idle),
    }
}

/// Completes once the connection has had no request in flight for `timeout`.
async fn idle(conn: &Shared, timeout: Duration) {
    let mut deadline = Instant::now() + timeout;
    loop {
        tokio::time::sleep_until(deadline).await;
        let now = Instant::now();
        deadline = match conn.idle_since() {
            Some(since) if now.saturating_duration_since(since) >= timeout => return,
            Some(since) => since + timeout,
            None => now + timeout,
        };
    }
}

async fn http1<I, S, B>(
    io: I,
    svc: Tracked<S>,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
) -> Option<CloseReason>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let shared = svc.conn.clone();
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            // The connection first: a request that has arrived is dispatched (and counted busy)
            // before a shutdown looks at it.
            biased;
            r = conn.as_mut() => break r,
            _ = stop.changed(), if !stopping => {
                stopping = true;
                if !shared.busy() {
                    // Idle, or a request head still incomplete: close now.
                    return None;
                }
                // Finish the request in flight, then close.
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    match result {
        Ok(()) => None,
        Err(e) if e.is_timeout() => Some(CloseReason::HeaderTimeout),
        Err(e) => {
            tracing::debug!(error = %e, "connection error");
            None
        }
    }
}
