//! HTTP API: warp filters, typed rejections and the one `recover`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::Semaphore;
use warp::http::{HeaderMap, StatusCode};
use warp::{Filter, Rejection, Reply};

use crate::alert::parse_payload;
use crate::audit::{read_log, AuditQuery, MAX_LIMIT};
use crate::auth::Auth;
use crate::engine::Engine;
use crate::telemetry::{self, Telemetry};

/// Everything the handlers need.
pub struct Api {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Credentials.
    pub auth: Auth,
    /// Metrics.
    pub telemetry: Arc<Telemetry>,
    /// Largest body.
    pub body_limit: u64,
    /// What KEDA's External Scaler answers from (fed by the webhook).
    pub keda: Arc<crate::keda::KedaHub>,
}

/// Typed rejections; `recover` turns them into `{"error": code, "message": ...}`.
#[derive(Debug)]
pub enum ApiError {
    /// 401.
    Unauthorized,
    /// 400.
    BadRequest(String),
    /// 413.
    PayloadTooLarge(u64),
    /// 503: a retry could help.
    Unavailable(String),
    /// 500.
    Internal(String),
}

impl warp::reject::Reject for ApiError {}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

fn json_status<T: Serialize>(body: &T, status: StatusCode) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// The one place rejections become responses.
pub async fn recover(r: Rejection) -> Result<warp::reply::Response, Infallible> {
    let (status, code, message) = if let Some(e) = r.find::<ApiError>() {
        match e {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or invalid credentials".to_string(),
            ),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone()),
            ApiError::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body is larger than the limit of {limit} bytes"),
            ),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m.clone()),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", m.clone()),
        }
    } else if r.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint".into(),
        )
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this endpoint".into(),
        )
    } else if let Some(e) = r.find::<warp::reject::InvalidQuery>() {
        (StatusCode::BAD_REQUEST, "bad_request", e.to_string())
    } else if let Some(e) = r.find::<warp::reject::InvalidHeader>() {
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid request header {:?}", e.name()),
        )
    } else if let Some(e) = r.find::<warp::reject::MissingHeader>() {
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("missing request header {:?}", e.name()),
        )
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "a Content-Length header is required".into(),
        )
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is too large".into(),
        )
    } else if r.find::<warp::reject::UnsupportedMediaType>().is_some() {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the request's Content-Type is not supported".into(),
        )
    } else {
        tracing::warn!(rejection = ?r, "unhandled rejection");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{r:?}"),
        )
    };
    let mut resp = json_status(
        &ErrorBody {
            error: code,
            message,
        },
        status,
    );
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            warp::http::header::WWW_AUTHENTICATE,
            warp::http::HeaderValue::from_static(
                "Bearer realm=\"medic-actuator\", Basic realm=\"medic-actuator\"",
            ),
        );
    }
    Ok(resp)
}

fn with_api(api: Arc<Api>) -> impl Filter<Extract = (Arc<Api>,), Error = Infallible> + Clone {
    warp::any().map(move || api.clone())
}

/// Whether the request's `Authorization` header is accepted. The raw bytes are read: a value
/// that is not UTF-8 (e.g. byte 0xff) cannot hold valid credentials, so it is a 401 like any
/// wrong token (unless authentication is off).
fn authorized(auth: &Auth, headers: &HeaderMap) -> bool {
    match headers.get(warp::http::header::AUTHORIZATION) {
        None => auth.check(None),
        Some(v) => match std::str::from_utf8(v.as_bytes()) {
            Ok(text) => auth.check(Some(text)),
            Err(_) => auth.is_open(),
        },
    }
}

fn authenticated(api: Arc<Api>) -> impl Filter<Extract = (Arc<Api>,), Error = Rejection> + Clone {
    with_api(api).and(warp::header::headers_cloned()).and_then(
        |api: Arc<Api>, headers: HeaderMap| async move {
            if authorized(&api.auth, &headers) {
                Ok(api)
            } else {
                Err(warp::reject::custom(ApiError::Unauthorized))
            }
        },
    )
}

/// The `Content-Length` header, if any; a value that is not a number is a 400 naming it.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(warp::http::header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    std::str::from_utf8(v.as_bytes())
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Content-Length header {:?} is not a number of bytes",
                String::from_utf8_lossy(v.as_bytes())
            ))
        })
}

async fn read_limited<S, B>(
    limit: u64,
    length: Option<u64>,
    mut body: S,
) -> Result<Bytes, Rejection>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    if length.is_some_and(|l| l > limit) {
        return Err(warp::reject::custom(ApiError::PayloadTooLarge(limit)));
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            warp::reject::custom(ApiError::BadRequest(format!("reading body: {e}")))
        })?;
        if buf.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(warp::reject::custom(ApiError::PayloadTooLarge(limit)));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            buf.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

fn body(api: Arc<Api>) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    let limit = api.body_limit;
    warp::header::headers_cloned()
        .and(warp::body::stream())
        .and_then(move |headers: HeaderMap, s| async move {
            let len = content_length(&headers).map_err(warp::reject::custom)?;
            read_limited(limit, len, Box::pin(s)).await
        })
}

async fn post_alerts(api: Arc<Api>, body: Bytes) -> Result<warp::reply::Response, Rejection> {
    let (payload, alerts) = parse_payload(&body)
        .map_err(|e| warp::reject::custom(ApiError::BadRequest(e.to_string())))?;
    let count = alerts.len();
    // KEDA's view first: a StreamIsActive push must not wait for the decisions. Like the
    // decisions, it runs on a tracked task, so a client that hangs up cannot cut it between the
    // state change and its audit record.
    let (keda, engine, noted) = (api.keda.clone(), api.engine.clone(), alerts.clone());
    let note = api
        .engine
        .spawn_tracked(async move { keda.note_webhook(&engine, &noted).await });
    match note.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(warp::reject::custom(ApiError::Internal(format!(
                "{e}; the KEDA state change was not recorded, retry"
            ))))
        }
        Err(e) => {
            return Err(warp::reject::custom(ApiError::Internal(format!(
                "the KEDA state task ended without an answer: {e}; retry"
            ))))
        }
    }
    // The decision runs on a task of its own: if the client hangs up, it still finishes and is
    // audited; this request only waits for its answer.
    let results = api.engine.submit(alerts).await.map_err(|e| {
        warp::reject::custom(ApiError::Internal(format!(
            "{e}; the decision was not recorded, retry"
        )))
    })?;
    if let Some(r) = results.iter().find(|r| r.retryable) {
        return Err(warp::reject::custom(ApiError::Unavailable(format!(
            "alert {} on {}: {} (audited as seq {}); retry later",
            r.fingerprint,
            r.target.as_deref().unwrap_or("-"),
            r.reason.map_or("failed", |c| c.as_str()),
            r.seq
        ))));
    }
    Ok(json_status(
        &serde_json::json!({
            "status": "ok",
            "group_key": payload.group_key,
            "alerts": count,
            "results": results,
        }),
        StatusCode::OK,
    ))
}

async fn post_pause(api: Arc<Api>, on: bool) -> Result<warp::reply::Response, Rejection> {
    let seq = api
        .engine
        .set_paused(on)
        .await
        .map_err(|e| warp::reject::custom(ApiError::Internal(e.to_string())))?;
    Ok(json_status(
        &serde_json::json!({"paused": on, "seq": seq}),
        StatusCode::OK,
    ))
}

fn enum_value<T: serde::de::DeserializeOwned>(k: &str, v: &str, what: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(v.to_string()))
        .map_err(|_| format!("{k}={v:?} is not a valid {what}"))
}

/// Decode one `application/x-www-form-urlencoded` component: `+` is a space, `%XX` a byte,
/// and the result must be UTF-8.
fn form_decode(s: &str) -> Result<String, String> {
    let raw = s.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("{s:?} has a `%` not followed by two hex digits"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// The query string as ordered (name, value) pairs; a malformed encoding is an error naming it.
fn query_pairs(raw: &str) -> Result<Vec<(String, String)>, String> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = form_decode(k).map_err(|e| format!("query parameter name {e}"))?;
            let v = form_decode(v).map_err(|e| format!("query parameter {k:?}: value {e}"))?;
            Ok((k, v))
        })
        .collect()
}

/// The query string, or "" when the URL has none.
fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

fn parse_audit_query(raw: &str) -> Result<AuditQuery, String> {
    let mut out = AuditQuery::default();
    let mut seen: Vec<String> = Vec::new();
    for (k, v) in query_pairs(raw)? {
        if seen.contains(&k) {
            return Err(format!(
                "query parameter {k:?} is given more than once; give it once"
            ));
        }
        match k.as_str() {
            "target" => out.target = Some(v),
            "action" => out.action = Some(enum_value(&k, &v, "action (scale_up, scale_down, none, pause, resume, move_leadership, move_replicas, replace_replicas, acquire_leadership, lose_leadership, release_leadership, config_reload)")?),
            "outcome" => out.outcome = Some(enum_value(&k, &v, "outcome (applied, skipped, failed, dry_run)")?),
            "reason" => out.reason = Some(v),
            "cluster" => out.cluster = Some(v),
            "broker" => out.broker = Some(v),
            "since" => out.since = Some(v.parse().map_err(|e| format!("since={v:?}: {e}"))?),
            "until" => out.until = Some(v.parse().map_err(|e| format!("until={v:?}: {e}"))?),
            "limit" => {
                let n = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        format!("limit={v:?}: must be a whole number from 1 to {MAX_LIMIT}")
                    })?;
                out.limit = Some(n);
            }
            _ => {
                return Err(format!(
                    "unknown query parameter {k:?}; expected target, action, outcome, reason, cluster, broker, since, until, limit"
                ))
            }
        }
        seen.push(k);
    }
    Ok(out)
}

/// At most `max` audit reads run at once, each on a blocking thread (never on the runtime's
/// workers); a request finding them all busy waits up to `wait`, then gets 503.
#[derive(Clone)]
pub struct AuditReaders {
    permits: Arc<Semaphore>,
    max: usize,
    wait: Duration,
}

/// Audit reads that may run at once.
pub const AUDIT_READERS: usize = 4;
/// How long an audit read waits for a free reader before a 503.
pub const AUDIT_READ_WAIT: Duration = Duration::from_secs(5);

impl AuditReaders {
    /// `max` readers at once; others wait up to `wait`.
    pub fn new(max: usize, wait: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
            wait,
        }
    }

    /// Run `read` on a blocking thread once a reader is free. The permit is held by the blocking
    /// task, so a client that hangs up does not free a reader that is still reading.
    pub async fn run<T, F>(&self, read: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                ApiError::Unavailable(format!(
                    "{} audit reads are already running and none finished within {:?}; retry later",
                    self.max, self.wait
                ))
            })?
            .map_err(|_| ApiError::Internal("the audit reader limit is closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            read()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("audit read task: {e}")))
    }
}

async fn get_audit(
    api: Arc<Api>,
    raw: String,
    readers: AuditReaders,
) -> Result<warp::reply::Response, Rejection> {
    let query =
        parse_audit_query(&raw).map_err(|m| warp::reject::custom(ApiError::BadRequest(m)))?;
    let opts = api.engine.audit().options().clone();
    let page = readers
        .run(move || read_log(&opts.path, opts.max_files, &query))
        .await
        .map_err(warp::reject::custom)?
        .map_err(|e| warp::reject::custom(ApiError::Internal(e.to_string())))?;
    Ok(json_status(&page, StatusCode::OK))
}

async fn get_state(api: Arc<Api>) -> Result<warp::reply::Response, Rejection> {
    Ok(json_status(&api.engine.state().await, StatusCode::OK))
}

async fn get_healthz(api: Arc<Api>) -> Result<warp::reply::Response, Rejection> {
    let audit_ok = api.engine.audit().healthy();
    let body = serde_json::json!({
        "status": if audit_ok { "ok" } else { "unhealthy" },
        "audit": if audit_ok { "ok".to_string() } else { "the last audit write failed; webhooks are answered 500 until a write succeeds".to_string() },
        "paused": api.engine.paused(),
        "dry_run": api.engine.dry_run(),
        "leader": api.engine.leadership().status(),
        // Reloads: a rejected one shows its error here; the process goes on with the old policies.
        "config": api.engine.config_status(),
    });
    let status = if audit_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(json_status(&body, status))
}

async fn get_metrics(api: Arc<Api>) -> Result<warp::reply::Response, Rejection> {
    api.engine.refresh_gauges();
    Ok(warp::reply::with_header(
        api.telemetry.render(),
        "content-type",
        "text/plain; version=0.0.4; charset=utf-8",
    )
    .into_response())
}

/// All routes, with the one `recover` and webhook accounting by result.
pub fn routes(api: Arc<Api>) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let v1 = warp::path("api").and(warp::path("v1"));
    let readers = AuditReaders::new(AUDIT_READERS, AUDIT_READ_WAIT);
    let alerts = v1
        .and(warp::path("alerts"))
        .and(warp::path::end())
        .and(warp::post())
        .and(authenticated(api.clone()))
        .and(body(api.clone()))
        .and_then(post_alerts);
    let pause = v1
        .and(warp::path("pause"))
        .and(warp::path::end())
        .and(warp::post())
        .and(authenticated(api.clone()))
        .and_then(|api| post_pause(api, true));
    let resume = v1
        .and(warp::path("resume"))
        .and(warp::path::end())
        .and(warp::post())
        .and(authenticated(api.clone()))
        .and_then(|api| post_pause(api, false));
    let audit = v1
        .and(warp::path("audit"))
        .and(warp::path::end())
        .and(warp::get())
        .and(authenticated(api.clone()))
        .and(raw_query())
        .and(warp::any().map(move || readers.clone()))
        .and_then(get_audit);
    let state = v1
        .and(warp::path("state"))
        .and(warp::path::end())
        .and(warp::get())
        .and(authenticated(api.clone()))
        .and_then(get_state);
    let healthz = warp::path("healthz")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_api(api.clone()))
        .and_then(get_healthz);
    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_api(api.clone()))
        .and_then(get_metrics);
    let t = api.telemetry.clone();
    let log = warp::log::custom(move |info: warp::log::Info<'_>| {
        if info.path() == "/api/v1/alerts" {
            t.webhook(
                telemetry::webhook_result(info.status().as_u16()),
                info.elapsed(),
            );
        }
    });
    alerts
        .or(pause)
        .unify()
        .or(resume)
        .unify()
        .or(audit)
        .unify()
        .or(state)
        .unify()
        .or(healthz)
        .unify()
        .or(metrics)
        .unify()
        .recover(recover)
        .unify()
        .with(log)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn audit_query_is_parsed_strictly() {
        let q =
            parse_audit_query("target=shop%2Forders+x&limit=1000&reason=&outcome=applied").unwrap();
        assert_eq!(q.target.as_deref(), Some("shop/orders x"));
        assert_eq!(q.limit, Some(1000));
        assert_eq!(q.reason.as_deref(), Some(""));
        assert!(parse_audit_query("").unwrap().limit.is_none());
        let cases = [
            ("limit=0", "limit=\"0\": must be a whole number from 1 to 1000"),
            ("limit=1001", "limit=\"1001\": must be a whole number from 1 to 1000"),
            ("limit=-1", "limit=\"-1\": must be a whole number from 1 to 1000"),
            ("limit=", "limit=\"\": must be a whole number from 1 to 1000"),
            (
                "limit=5&target=a&limit=6",
                "query parameter \"limit\" is given more than once; give it once",
            ),
            (
                "target=a&target=a",
                "query parameter \"target\" is given more than once; give it once",
            ),
            (
                "target=%ff",
                "query parameter \"target\": value \"%ff\" is not UTF-8 once decoded",
            ),
            (
                "target=%zz",
                "query parameter \"target\": value \"%zz\" has a `%` not followed by two hex digits",
            ),
            (
                "target=%+f",
                "query parameter \"target\": value \"%+f\" has a `%` not followed by two hex digits",
            ),
            (
                "lim%it=1",
                "query parameter name \"lim%it\" has a `%` not followed by two hex digits",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_audit_query(raw).unwrap_err(), want, "{raw}");
        }
    }

    #[test]
    fn authorization_bytes_that_are_not_utf8_are_invalid_credentials() {
        let auth = Auth::new(Some("tok"), None, false);
        let mut h = HeaderMap::new();
        assert!(!authorized(&auth, &h));
        h.insert(
            warp::http::header::AUTHORIZATION,
            warp::http::HeaderValue::from_bytes(b"Bearer tok\xff").unwrap(),
        );
        assert!(!authorized(&auth, &h));
        h.insert(
            warp::http::header::AUTHORIZATION,
            warp::http::HeaderValue::from_static("Bearer tok"),
        );
        assert!(authorized(&auth, &h));
        let open = Auth::new(None, None, true);
        h.insert(
            warp::http::header::AUTHORIZATION,
            warp::http::HeaderValue::from_bytes(b"\xff").unwrap(),
        );
        assert!(authorized(&open, &h), "no authentication configured");
    }

    async fn reply_of<F>(r: warp::test::RequestBuilder, f: &F) -> (u16, serde_json::Value)
    where
        F: Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone + 'static,
    {
        let resp = r.reply(&f.clone().recover(recover).unify()).await;
        let body = serde_json::from_slice(resp.body()).unwrap();
        (resp.status().as_u16(), body)
    }

    fn ok() -> warp::reply::Response {
        warp::reply::reply().into_response()
    }

    /// warp's own rejections on client input become 4xx in the JSON shape, never 500.
    #[tokio::test]
    async fn warp_rejections_of_client_input_are_4xx() {
        let typed = warp::header::<u64>("x-count").map(|_: u64| ok());
        let sized = warp::body::content_length_limit(8)
            .and(warp::body::bytes())
            .map(|_: Bytes| ok());
        let json = warp::body::json::<serde_json::Value>().map(|_: serde_json::Value| ok());
        let post = || warp::test::request().method("POST");
        let cases = [
            (
                reply_of(warp::test::request().header("x-count", "many"), &typed).await,
                (400, "bad_request", "invalid request header \"x-count\""),
            ),
            (
                reply_of(warp::test::request(), &typed).await,
                (400, "bad_request", "missing request header \"x-count\""),
            ),
            (
                reply_of(post(), &sized).await,
                (
                    411,
                    "length_required",
                    "a Content-Length header is required",
                ),
            ),
            (
                reply_of(post().body("0123456789"), &sized).await,
                (413, "payload_too_large", "request body is too large"),
            ),
            (
                reply_of(
                    post().header("content-type", "text/plain").body("{}"),
                    &json,
                )
                .await,
                (
                    415,
                    "unsupported_media_type",
                    "the request's Content-Type is not supported",
                ),
            ),
        ];
        for ((status, body), (want_status, code, message)) in cases {
            assert_eq!(
                (status, body),
                (
                    want_status,
                    serde_json::json!({"error": code, "message": message})
                )
            );
        }
    }

    #[tokio::test]
    async fn audit_readers_are_bounded_and_the_rest_get_503() {
        let readers = AuditReaders::new(1, Duration::from_secs(1));
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let busy = {
            let readers = readers.clone();
            tokio::spawn(async move {
                readers
                    .run(move || {
                        started_tx.send(()).unwrap();
                        release_rx.recv().unwrap();
                        "first"
                    })
                    .await
            })
        };
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        let Err(ApiError::Unavailable(m)) = readers.run(|| "second").await else {
            panic!("the second reader must be refused while the first runs")
        };
        assert_eq!(
            m,
            "1 audit reads are already running and none finished within 1s; retry later"
        );
        // A waiting reader runs as soon as the running one ends.
        let waiting = {
            let readers = readers.clone();
            tokio::spawn(async move { readers.run(|| "third").await })
        };
        release_tx.send(()).unwrap();
        assert_eq!(busy.await.unwrap().unwrap(), "first");
        assert_eq!(waiting.await.unwrap().unwrap(), "third");
    }
}
