//! HTTP API: warp filters, typed rejections and the one `recover`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::Serialize;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::alert::parse_payload;
use crate::audit::{read_log, AuditQuery};
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

fn authenticated(api: Arc<Api>) -> impl Filter<Extract = (Arc<Api>,), Error = Rejection> + Clone {
    with_api(api)
        .and(warp::header::optional::<String>("authorization"))
        .and_then(|api: Arc<Api>, header: Option<String>| async move {
            if api.auth.check(header.as_deref()) {
                Ok(api)
            } else {
                Err(warp::reject::custom(ApiError::Unauthorized))
            }
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
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(
            move |len: Option<u64>, s| async move { read_limited(limit, len, Box::pin(s)).await },
        )
}

async fn post_alerts(api: Arc<Api>, body: Bytes) -> Result<warp::reply::Response, Rejection> {
    let (payload, alerts) = parse_payload(&body)
        .map_err(|e| warp::reject::custom(ApiError::BadRequest(e.to_string())))?;
    let results = api.engine.handle_alerts(&alerts).await.map_err(|e| {
        warp::reject::custom(ApiError::Internal(format!(
            "{e}; the decision was not recorded, retry"
        )))
    })?;
    if let Some(r) = results.iter().find(|r| r.retryable) {
        return Err(warp::reject::custom(ApiError::Unavailable(format!(
            "alert {} on {}: {} (audited as seq {}); retry later",
            r.fingerprint,
            r.target.as_deref().unwrap_or("-"),
            r.reason.as_deref().unwrap_or("failed"),
            r.seq
        ))));
    }
    Ok(json_status(
        &serde_json::json!({
            "status": "ok",
            "group_key": payload.group_key,
            "alerts": alerts.len(),
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

fn parse_audit_query(q: HashMap<String, String>) -> Result<AuditQuery, String> {
    let mut out = AuditQuery::default();
    for (k, v) in q {
        match k.as_str() {
            "target" => out.target = Some(v),
            "action" => out.action = Some(enum_value(&k, &v, "action (scale_up, scale_down, none, pause, resume, move_leadership, move_replicas, replace_replicas)")?),
            "outcome" => out.outcome = Some(enum_value(&k, &v, "outcome (applied, skipped, failed, dry_run)")?),
            "reason" => out.reason = Some(v),
            "cluster" => out.cluster = Some(v),
            "broker" => out.broker = Some(v),
            "since" => out.since = Some(v.parse().map_err(|e| format!("since={v:?}: {e}"))?),
            "until" => out.until = Some(v.parse().map_err(|e| format!("until={v:?}: {e}"))?),
            "limit" => out.limit = Some(v.parse().map_err(|e| format!("limit={v:?}: {e}"))?),
            _ => {
                return Err(format!(
                    "unknown query parameter {k:?}; expected target, action, outcome, reason, cluster, broker, since, until, limit"
                ))
            }
        }
    }
    Ok(out)
}

async fn get_audit(
    api: Arc<Api>,
    q: HashMap<String, String>,
) -> Result<warp::reply::Response, Rejection> {
    let query = parse_audit_query(q).map_err(|m| warp::reject::custom(ApiError::BadRequest(m)))?;
    let opts = api.engine.audit().options().clone();
    let page = tokio::task::spawn_blocking(move || read_log(&opts.path, opts.max_files, &query))
        .await
        .map_err(|e| warp::reject::custom(ApiError::Internal(e.to_string())))?
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
        .and(warp::query::<HashMap<String, String>>())
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
