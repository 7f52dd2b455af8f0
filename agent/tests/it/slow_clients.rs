//! The medic-agent binary under a slowloris flood: connections that never finish their request
//! head are closed (header-read timeout, or evicted at the connection cap), and /healthz keeps
//! answering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use medic_e2e::{get, sample, wait_until, Tansu};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::AgentProcess;

const CAP: usize = 32;

/// GET `path` with every step bounded by `limit`; the status code, or why there is none.
async fn get_within(port: u16, path: &str, limit: Duration) -> Result<u16, String> {
    let t0 = Instant::now();
    let answer = tokio::time::timeout(limit, async {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or(format!("no status line in {text:?}"))
    })
    .await;
    answer.unwrap_or_else(|_| Err(format!("no answer within {:?}", t0.elapsed())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unfinished_requests_is_closed_and_healthz_answers() {
    let tansu = Tansu::start();
    let (agent, port) = AgentProcess::new(&tansu.bootstrap())
        .args(&["--http-max-connections", &CAP.to_string()])
        .args(&["--http-header-read-timeout", "1s"])
        .start();
    tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(30), "/healthz 200", || {
            medic_e2e::http::request(port, "GET", "/healthz", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        })
    })
    .await
    .unwrap();

    let mut flooders = Vec::new();
    for _ in 0..4 * CAP {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"GET /healthz HT").await.unwrap();
        flooders.push(s);
    }
    let status = get_within(port, "/healthz", Duration::from_secs(3)).await;
    assert_eq!(status, Ok(200), "during the flood\n{}", agent.describe());

    // Every flooder is closed: the oldest at once (evicted), the rest by the 1s header-read
    // timeout; the deadline leaves a margin for a loaded machine.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    let reads = flooders.into_iter().map(|mut s| async move {
        let mut buf = [0u8; 256];
        tokio::time::timeout_at(deadline, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    });
    let closed = futures::future::join_all(reads)
        .await
        .into_iter()
        .filter(|c| *c)
        .count();
    assert_eq!(
        closed,
        4 * CAP,
        "flooders closed within 6s\n{}",
        agent.describe()
    );

    let text = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(10), "every close counted", || {
            let t = get(port, "/metrics").body;
            let n = |reason: &str| {
                sample(
                    &t,
                    &format!("medic_agent_http_connections_closed_total{{cluster=\"e2e\",reason=\"{reason}\"}}"),
                )
                .or_else(|| {
                    sample(
                        &t,
                        &format!("medic_agent_http_connections_closed_total{{reason=\"{reason}\",cluster=\"e2e\"}}"),
                    )
                })
                .unwrap_or(0.0)
            };
            (n("evicted") >= (3 * CAP) as f64
                && n("evicted") + n("header_timeout") >= (4 * CAP) as f64
                && n("refused") == 0.0)
                .then_some(t)
        })
    })
    .await
    .unwrap();
    assert!(
        text.contains("# TYPE medic_agent_http_connections_open gauge"),
        "{text}"
    );
}
