//! The HTTP endpoints: `/metrics`, `/healthz` and `/api/v1/groups`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::snapshot::{health, SnapshotCell};

/// What the handlers read.
pub(crate) struct AppState {
    pub(crate) snapshot: Arc<SnapshotCell>,
    pub(crate) prometheus: Option<PrometheusHandle>,
    pub(crate) cluster: String,
    pub(crate) mode: String,
    pub(crate) stale_after: Duration,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Filters of `GET /api/v1/groups`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct GroupQuery {
    /// Only this group.
    pub(crate) group: Option<String>,
    /// Only this topic.
    pub(crate) topic: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

/// All routes.
pub(crate) fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let with = warp::any().map(move || state.clone());
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(warp::header::optional::<String>("accept-encoding"))
        .and(with.clone())
        .map(|enc: Option<String>, s: Arc<AppState>| {
            metrics_reply(&s, enc.as_deref().is_some_and(accepts_gzip))
        });
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .and(with.clone())
        .map(|s: Arc<AppState>| {
            let h = health(
                &s.snapshot.load(),
                now(),
                s.stale_after,
                &s.cluster,
                &s.mode,
            );
            let code = if h.healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            warp::reply::with_status(warp::reply::json(&h), code)
        });
    let groups = warp::path!("api" / "v1" / "groups")
        .and(warp::get())
        .and(warp::query::<GroupQuery>())
        .and(with)
        .map(|q: GroupQuery, s: Arc<AppState>| {
            let snap = s.snapshot.load();
            let mut report = (*snap.report).clone();
            if let Some(g) = &q.group {
                report.groups.retain(|x| &x.group == g);
            }
            if let Some(t) = &q.topic {
                for g in &mut report.groups {
                    g.topics.retain(|x| &x.topic == t);
                }
                report.groups.retain(|g| !g.topics.is_empty());
            }
            warp::reply::json(&serde_json::json!({
                "cluster": s.cluster,
                "collected_at": snap.last_success,
                "snapshot_age_seconds": snap.last_success.map(|t| (now() - t).max(0.0)),
                "groups": report.groups,
                "skipped": report.skipped,
            }))
        });
    metrics.or(healthz).or(groups).recover(recover)
}

/// Whether an `Accept-Encoding` value accepts gzip (`gzip` or `*`, with a q-value above 0).
pub(crate) fn accepts_gzip(header: &str) -> bool {
    header.split(',').any(|c| {
        let mut parts = c.split(';').map(str::trim);
        let coding = parts.next().unwrap_or_default();
        let q = parts
            .find_map(|p| p.strip_prefix("q="))
            .map_or(Some(1.0), |q| q.parse::<f64>().ok());
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q.is_some_and(|q| q > 0.0)
    })
}

/// `/metrics`: gzip for clients that accept it (Prometheus does), the held compressed lag text
/// followed by the rest compressed now; plain text, decompressed now, for the others.
fn metrics_reply(s: &AppState, gzip: bool) -> warp::reply::Response {
    let snap = s.snapshot.load();
    let tail = scrape_tail(s, &snap);
    let builder = warp::http::Response::builder()
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .header("vary", "accept-encoding");
    let built = if gzip {
        builder
            .header("content-encoding", "gzip")
            .body(snap.lag_text.gzip_with(&tail).into())
    } else {
        let mut text = snap.lag_text.text();
        text.push_str(&tail);
        builder.body(text.into())
    };
    built.unwrap_or_else(|e| {
        warp::reply::with_status(e.to_string(), StatusCode::INTERNAL_SERVER_ERROR).into_response()
    })
}

/// The whole `/metrics` page as text (tests).
#[cfg(test)]
pub(crate) fn metrics_text(s: &AppState) -> String {
    let snap = s.snapshot.load();
    let mut text = snap.lag_text.text();
    text.push_str(&scrape_tail(s, &snap));
    text
}

/// What follows the held lag text: the broker families, the scrape-time gauges, and the
/// agent's own metrics.
fn scrape_tail(s: &AppState, snap: &crate::snapshot::Snapshot) -> String {
    let mut out = String::with_capacity(snap.broker_text.len() + 4096);
    out.push_str(&snap.broker_text);
    let cluster = crate::render::escape(&s.cluster);
    let t = now();
    out.push_str("# HELP medic_agent_snapshot_age_seconds Seconds since the served lag snapshot was collected; grows while Kafka is unreachable.\n# TYPE medic_agent_snapshot_age_seconds gauge\n");
    match snap.last_success {
        Some(ls) => out.push_str(&format!(
            "medic_agent_snapshot_age_seconds{{cluster=\"{cluster}\"}} {}\n",
            (t - ls).max(0.0)
        )),
        None => out.push_str(&format!(
            "medic_agent_snapshot_age_seconds{{cluster=\"{cluster}\"}} NaN\n"
        )),
    }
    out.push_str("# HELP medic_agent_last_success_timestamp_seconds Unix time of the last successful collection.\n# TYPE medic_agent_last_success_timestamp_seconds gauge\n");
    out.push_str(&format!(
        "medic_agent_last_success_timestamp_seconds{{cluster=\"{cluster}\"}} {}\n",
        snap.last_success.unwrap_or(0.0)
    ));
    out.push_str("# HELP medic_agent_healthy 1 while /healthz answers 200, else 0.\n# TYPE medic_agent_healthy gauge\n");
    let h = health(snap, t, s.stale_after, &s.cluster, &s.mode);
    out.push_str(&format!(
        "medic_agent_healthy{{cluster=\"{cluster}\"}} {}\n",
        u8::from(h.healthy)
    ));
    if let Some(p) = &s.prometheus {
        out.push_str(&p.render());
    }
    out
}

async fn recover(r: Rejection) -> Result<impl Reply, Infallible> {
    let (code, error, message) = if r.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint; try /metrics, /healthz or /api/v1/groups".to_string(),
        )
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "only GET is served".to_string(),
        )
    } else if let Some(e) = r.find::<warp::reject::InvalidQuery>() {
        (StatusCode::BAD_REQUEST, "bad_query", e.to_string())
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{r:?}"),
        )
    };
    Ok(warp::reply::with_status(
        warp::reply::json(&ErrorBody { error, message }),
        code,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lag::{partition_report, GroupReport, LagReport, TopicReport};
    use crate::snapshot::Snapshot;

    fn state(snapshot: Snapshot) -> Arc<AppState> {
        let cell = Arc::new(SnapshotCell::default());
        cell.store(snapshot);
        Arc::new(AppState {
            snapshot: cell,
            prometheus: None,
            cluster: "c1".into(),
            mode: "cluster".into(),
            stale_after: Duration::from_secs(30),
        })
    }

    fn report() -> LagReport {
        let topic = |name: &str, lag_end: i64| TopicReport {
            topic: name.into(),
            lag: lag_end - 1,
            lag_max: lag_end - 1,
            lag_seconds_max: None,
            consumption_rate: None,
            drain_seconds: None,
            partitions: vec![partition_report(0, 1, lag_end, 0.0, None, None)],
        };
        LagReport {
            cluster: "c1".into(),
            collected_at: now(),
            groups: vec![
                GroupReport {
                    group: "a".into(),
                    state: "Stable".into(),
                    coordinator: 1,
                    info: Default::default(),
                    topics: vec![topic("t1", 5), topic("t2", 3)],
                },
                GroupReport {
                    group: "b".into(),
                    state: "Empty".into(),
                    coordinator: 1,
                    info: Default::default(),
                    topics: vec![topic("t1", 9)],
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn accept_encoding_values() {
        for (h, gzip) in [
            ("gzip", true),
            ("identity, gzip;q=0.5", true),
            ("GZIP", true),
            ("*", true),
            ("br, deflate", false),
            ("gzip;q=0", false),
            ("gzip;q=0.0, identity", false),
            ("", false),
        ] {
            assert_eq!(accepts_gzip(h), gzip, "{h:?}");
        }
    }

    #[tokio::test]
    async fn healthz_is_503_with_a_reason_until_a_collection_succeeds() {
        let s = state(Snapshot {
            last_error: Some("cannot read cluster metadata".into()),
            ..Default::default()
        });
        let r = warp::test::request()
            .path("/healthz")
            .reply(&routes(s))
            .await;
        assert_eq!(r.status(), 503);
        let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(body["status"], "unhealthy");
        assert_eq!(
            body["reason"],
            "no collection has succeeded yet; last error: cannot read cluster metadata"
        );

        let s = state(Snapshot {
            last_success: Some(now()),
            ..Default::default()
        });
        let r = warp::test::request()
            .path("/healthz")
            .reply(&routes(s))
            .await;
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(
            (body["status"].as_str(), body["cluster"].as_str()),
            (Some("ok"), Some("c1"))
        );
    }

    #[tokio::test]
    async fn groups_endpoint_filters_by_group_and_topic() {
        let snap = Snapshot {
            report: Arc::new(report()),
            last_success: Some(now()),
            ..Default::default()
        };
        let s = state(snap);
        let r = warp::test::request()
            .path("/api/v1/groups?topic=t1")
            .reply(&routes(s.clone()))
            .await;
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        let groups = body["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0]["topics"].as_array().unwrap().len(), 1);
        assert_eq!(groups[1]["topics"][0]["partitions"][0]["lag"], 8);
        assert_eq!(groups[1]["state"], "Empty");

        let r = warp::test::request()
            .path("/api/v1/groups?group=a&topic=t2")
            .reply(&routes(s.clone()))
            .await;
        let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(body["groups"][0]["topics"][0]["topic"], "t2");
        assert_eq!(
            body["groups"][0]["topics"][0]["partitions"][0]["committed_offset"],
            1
        );
        assert_eq!(
            body["groups"][0]["topics"][0]["partitions"][0]["lag_seconds_source"],
            "pending"
        );
    }

    #[tokio::test]
    async fn metrics_serves_the_snapshot_and_unknown_paths_get_json_errors() {
        let snap = Snapshot {
            lag_text: Arc::new("kafka_consumergroup_lag{x=\"1\"} 5\n".into()),
            last_success: Some(now() - 12.0),
            last_error: Some("down".into()),
            ..Default::default()
        };
        let s = state(snap);
        let r = warp::test::request()
            .path("/metrics")
            .reply(&routes(s.clone()))
            .await;
        assert_eq!(r.status(), 200);
        let text = String::from_utf8(r.body().to_vec()).unwrap();
        assert!(text.starts_with("kafka_consumergroup_lag{x=\"1\"} 5\n"));
        let age: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("medic_agent_snapshot_age_seconds{cluster=\"c1\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((12.0..14.0).contains(&age), "{age}");
        assert!(text.contains("medic_agent_healthy{cluster=\"c1\"} 0\n"));

        let without_age = |t: &str| {
            t.lines()
                .filter(|l| !l.starts_with("medic_agent_snapshot_age_seconds{"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(without_age(&text), without_age(&metrics_text(&s)));
        assert_eq!(r.headers().get("content-encoding"), None);

        // A client that accepts gzip (Prometheus) gets the same page, gzip-encoded.
        let r = warp::test::request()
            .path("/metrics")
            .header("accept-encoding", "gzip")
            .reply(&routes(s.clone()))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-encoding"], "gzip");
        assert_eq!(r.headers()["vary"], "accept-encoding");
        let mut unzipped = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(&r.body()[..]),
            &mut unzipped,
        )
        .unwrap();
        assert!(
            unzipped.starts_with("kafka_consumergroup_lag{x=\"1\"} 5\n"),
            "{unzipped}"
        );
        assert!(
            unzipped.contains("medic_agent_healthy{cluster=\"c1\"} 0\n"),
            "{unzipped}"
        );

        let r = warp::test::request()
            .path("/nope")
            .reply(&routes(s.clone()))
            .await;
        assert_eq!(r.status(), 404);
        let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(body["error"], "not_found");
        let r = warp::test::request()
            .method("POST")
            .path("/metrics")
            .reply(&routes(s))
            .await;
        assert_eq!(r.status(), 405);
    }
}
