//! Webhook benchmark: 3 concurrent senders POST Alertmanager payloads over loopback HTTP to a
//! real medic-actuator server (in-process), backed by a wiremock Kubernetes API and the durable
//! audit log (write + fdatasync before each answer, group commit). Also measures the disk's
//! fsync ceiling in the same run, in the same directory.
//!
//! Run: `cargo bench -p medic-actuator --bench webhook` (options via env: BENCH_SECONDS,
//! BENCH_DIR for the audit directory, default `bench-audit/` next to the bench binary).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)] // the bench drives the webhook path only; the support module serves every test
mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use medic_actuator::{App, Config};
use support::*;

const SENDERS: usize = 3;
const TARGETS: usize = 30;

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("nproc {cores}, CPU {cpu}, kernel {kernel}")
}

/// Sequential 256-byte append + fdatasync, the same pattern as one audit commit.
fn fsync_ceiling(dir: &std::path::Path, secs: f64) -> (f64, Duration) {
    let path = dir.join("fsync-probe.log");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let line = [b'x'; 255];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f.write_all(&line).unwrap();
        f.write_all(b"\n").unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    let el = start.elapsed();
    let _ = std::fs::remove_file(&path);
    (n as f64 / el.as_secs_f64(), el / n.max(1) as u32)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

struct RunResult {
    webhooks: usize,
    alerts: usize,
    wall: Duration,
    lat: Vec<Duration>,
    fsyncs: u64,
}

async fn run(url: String, per_webhook: usize, secs: f64, app: &App, tag: &str) -> RunResult {
    let fsyncs_before = app.api.engine.audit().fsyncs();
    let stop = Arc::new(AtomicBool::new(false));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let url = url.clone();
        let stop = stop.clone();
        let lat = lat.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let mut mine = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let alerts = (0..per_webhook)
                    .map(|k| {
                        let n = i * per_webhook + k;
                        lag_alert(
                            "firing",
                            &format!("{tag}-{s}-{n}"),
                            "prod",
                            &format!("g{}", n % TARGETS),
                            Some(5000),
                        )
                    })
                    .collect();
                let body = payload("firing", alerts);
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
                let _ = r.bytes().await.unwrap();
                mine.push(t.elapsed());
                i += 1;
            }
            lat.lock().unwrap().extend(mine);
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let wall = start.elapsed();
    let mut lat = std::mem::take(&mut *lat.lock().unwrap());
    lat.sort_unstable();
    let webhooks = lat.len();
    RunResult {
        webhooks,
        alerts: webhooks * per_webhook,
        wall,
        lat,
        fsyncs: app.api.engine.audit().fsyncs() - fsyncs_before,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async_main());
}

async fn async_main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secs: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8.0);
    // Default: next to the bench binary (the cargo target dir), a real disk rather than a tmpfs.
    let base = std::env::var("BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("bench-audit")))
                .unwrap_or_else(std::env::temp_dir)
        });
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();

    let kube = FakeKube::default();
    let mut policies = String::from("policies:\n");
    for i in 0..TARGETS {
        kube.add("bench", &format!("consumer-{i}"), 1);
        policies.push_str(&format!(
            "  - {{cluster: prod, consumergroup: g{i}, deployment: {{namespace: bench, name: consumer-{i}}}, max_replicas: 50}}\n"
        ));
    }
    let kube_server = kube.start().await;
    std::fs::write(dir.path().join("policies.yaml"), policies).unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        policies_file: Some(dir.path().join("policies.yaml")),
        instance: Some("bench".into()),
        ..Config::default()
    };
    c.auth.bearer_token_file = Some(dir.path().join("token"));
    c.audit.path = dir.path().join("audit/audit.log");
    c.audit.max_bytes = 64 * 1024 * 1024;
    c.kubernetes.api_url = Some(kube_server.uri());
    let app = Arc::new(App::build(c, &BTreeMap::new()).await.unwrap());
    let listener = app.bind().await.unwrap();
    let url = format!("http://{}/api/v1/alerts", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server_app = app.clone();
    let server = tokio::spawn(async move {
        server_app
            .serve(listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });

    println!("machine: {}", machine());
    println!(
        "audit directory: {} (same filesystem as the probe)",
        dir.path().display()
    );
    let (ceiling, fsync_lat) = fsync_ceiling(dir.path(), 3.0);
    // Warm up connections and the first scale of every target.
    let _ = run(url.clone(), 1, 1.0, &app, "warm").await;
    let single = run(url.clone(), 1, secs, &app, "one").await;
    let grouped = run(url.clone(), 10, secs, &app, "ten").await;
    let (ceiling_after, fsync_lat_after) = fsync_ceiling(dir.path(), 3.0);
    let _ = tx.send(());
    let _ = server.await;

    println!();
    println!("| run | webhooks | alerts | alerts/s | p50 ms | p90 ms | p99 ms | max ms | fsyncs | records/fsync |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, r) in [
        ("1 alert per webhook", &single),
        ("10 alerts per webhook", &grouped),
    ] {
        println!(
            "| {name} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {:.2} |",
            r.webhooks,
            r.alerts,
            r.alerts as f64 / r.wall.as_secs_f64(),
            ms(pct(&r.lat, 0.50)),
            ms(pct(&r.lat, 0.90)),
            ms(pct(&r.lat, 0.99)),
            ms(r.lat.last().copied().unwrap_or_default()),
            r.fsyncs,
            r.alerts as f64 / r.fsyncs.max(1) as f64,
        );
    }
    println!();
    println!(
        "fsync ceiling (256 B append + fdatasync, one writer): {ceiling:.0}/s before the runs (mean {} ms), {ceiling_after:.0}/s after (mean {} ms)",
        ms(fsync_lat),
        ms(fsync_lat_after)
    );
    for (name, r) in [
        ("1 alert per webhook", &single),
        ("10 alerts per webhook", &grouped),
    ] {
        println!(
            "{name}: {:.0} fsyncs/s achieved by the audit writer",
            r.fsyncs as f64 / r.wall.as_secs_f64()
        );
    }
    println!("senders: {SENDERS} concurrent, keep-alive, {secs} s per run; targets: {TARGETS}; kube: wiremock (2 GETs per decision + claim and scale PATCH on actions)");
    let records = std::fs::read_to_string(dir.path().join("audit/audit.log"))
        .map(|t| t.lines().count())
        .unwrap_or(0);
    println!(
        "audit records written: {records}; kube requests served: {}",
        kube.reads() + kube.writes().len()
    );
}
