//! The real binary under a slowloris flood: connections that never finish their request head
//! are closed (header-read timeout, or evicted at the connection cap), and /healthz keeps
//! answering, also with a low open-file limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use support::process::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens `n` connections that send half a request line and nothing else.
async fn flood(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HT").await.unwrap();
        conns.push(s);
    }
    conns
}

/// How many of `conns` the server closes (EOF or reset) within `within`, each read on its own.
async fn closed_within(conns: Vec<TcpStream>, within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    let reads = conns.into_iter().map(|mut s| async move {
        let mut buf = [0u8; 256];
        tokio::time::timeout_at(deadline, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // an error answer, then the close
                }
            }
        })
        .await
        .is_ok()
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .filter(|closed| *closed)
        .count()
}

async fn healthz(run: &Running) -> Result<u16, String> {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let t0 = Instant::now();
    c.get(run.url("/healthz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("GET /healthz failed after {:?}: {e}", t0.elapsed()))
}

/// The value of one series in a scrape, 0 if absent.
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unfinished_requests_is_closed_and_healthz_answers() {
    let files = Files::new();
    let kube = FakeKube::default();
    let server = kube.start().await;
    let cfg = write_config(
        &files,
        &server.uri(),
        "http: {header_read_timeout: 1s, max_connections: 32}\n",
    );
    let run = Running::start(&cfg);
    let _ = client(); // installs the TLS provider reqwest needs

    let flooders = flood(&run.addr, 4 * 32).await;
    let flooded = Instant::now();
    let status = healthz(&run).await;
    assert_eq!(status, Ok(200), "during the flood\n{}", run.dump());

    // Every flooder is closed: the oldest at once (evicted at the cap), the rest by the
    // 1s header-read timeout. Deadline: the timeout plus a margin for a loaded machine.
    let closed = closed_within(flooders, Duration::from_secs(6)).await;
    assert_eq!(
        closed,
        4 * 32,
        "flooders the server closed within 6s of the flood ({:?} ago)\n{}",
        flooded.elapsed(),
        run.dump()
    );

    let c = client();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut evicted, mut timed_out) = (0.0, 0.0);
    while Instant::now() < deadline {
        text = c
            .get(run.url("/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        evicted = series(
            &text,
            "medic_actuator_http_connections_closed_total{reason=\"evicted\"}",
        );
        timed_out = series(
            &text,
            "medic_actuator_http_connections_closed_total{reason=\"header_timeout\"}",
        );
        if evicted + timed_out >= 128.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(evicted >= 128.0 - 32.0, "evicted {evicted}\n{text}");
    assert!(evicted + timed_out >= 128.0, "{text}");
    assert!(
        text.contains("medic_actuator_http_connections_closed_total{reason=\"refused\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("# HELP medic_actuator_http_connections_open HTTP connections open."),
        "{text}"
    );
    assert!(
        series(&text, "medic_actuator_http_connections_open") >= 1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_low_open_file_limit_a_flood_does_not_starve_healthz() {
    let files = Files::new();
    let kube = FakeKube::default();
    let server = kube.start().await;
    // Default limits (10s header timeout, 1024 connections); only 128 files may be open.
    let cfg = write_config(&files, &server.uri(), "");
    let run = Running::start_with(&["prlimit", "--nofile=128:128", "--"], &[], &cfg);
    let _ = client();

    let flooders = flood(&run.addr, 300).await;
    let status = healthz(&run).await;
    assert_eq!(status, Ok(200), "during the flood\n{}", run.dump());
    // The server made room by closing the oldest flooders, and never failed to accept.
    let closed = closed_within(flooders, Duration::from_millis(500)).await;
    assert!(closed >= 300 - 64, "closed {closed} of 300\n{}", run.dump());
    let log = run.dump();
    assert!(!log.contains("accept failed"), "{log}");
    assert!(
        log.contains("max_connections lowered to stay below the open-file limit"),
        "{log}"
    );
}
