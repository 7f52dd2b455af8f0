//! KEDA push benchmark: how long after a webhook is sent does KEDA hear of the change?
//!
//! It starts the built `medic-actuator` binary (the bench profile's build, as a separate
//! process, as in production) with `keda.listen` on, one `scaler: keda` policy, bearer auth, the
//! durable audit log on a real disk and a fake Kubernetes API (never called for a keda policy;
//! the bench checks it got no request). A tonic client (standing in for KEDA) holds one
//! `StreamIsActive` open; an HTTP client then sends `KafkaConsumerLagPersistent` webhooks that
//! alternate firing / resolved for the policy's group, one at a time. Each transition is timed
//! from the moment the request is sent to the arrival of the `StreamIsActive` message saying
//! the new state, and separately to the webhook's 200.
//!
//! Run: `cargo bench -p medic-actuator --bench keda_push` (env: BENCH_TRANSITIONS, default
//! 1000 = 500 firing/resolved alternations; BENCH_GAP_MS, a pause between transitions,
//! default 0; BENCH_DIR for the audit directory, default `bench-audit/` next to the bench
//! binary). A second run does the same with one `IsActive` call on the same gRPC connection
//! before each webhook, as KEDA does when it polls a scaler between pushes (KEDA keeps one
//! connection per scaler address); BENCH_POLL=0 skips it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use medic_actuator::keda::proto::external_scaler_client::ExternalScalerClient;
use medic_actuator::keda::proto::{IsActiveResponse, ScaledObjectRef};
use medic_e2e::fake_kube::FakeKube;
use medic_e2e::{free_port, wait_for_port, Server};
use serde_json::json;
use tonic::transport::Channel;

const TOKEN: &str = "bench-token-4b1d9e0c2a7f";
const WARM_UP: usize = 20;

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|kb| kb.parse::<f64>().ok())
                })
        })
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!(
        "nproc {cores}, CPU {cpu}, {mem} RAM, kernel {kernel}, load average {load} at the start"
    )
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

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// An Alertmanager v4 webhook with one lag alert for prod/orders.
fn webhook(status: &str, fingerprint: &str, n: usize) -> Vec<u8> {
    let starts = jiff::Timestamp::now();
    let alert = json!({
        "status": status,
        "labels": {"alertname": "KafkaConsumerLagPersistent", "cluster": "prod",
                   "consumergroup": "orders", "severity": "warning"},
        "annotations": {"summary": "lag", "lag_offsets": format!("{}", 5000 + n)},
        "startsAt": starts.to_string(),
        "endsAt": if status == "resolved" { starts.to_string() } else { "0001-01-01T00:00:00Z".into() },
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    });
    serde_json::to_vec(&json!({
        "receiver": "kafka-medic-actuator", "status": status, "alerts": [alert],
        "groupLabels": {"alertname": "KafkaConsumerLagPersistent", "cluster": "prod",
                        "consumergroup": "orders"},
        "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "version": "4", "groupKey": "{}:{alertname=\"KafkaConsumerLagPersistent\"}",
        "truncatedAlerts": 0
    }))
    .unwrap()
}

struct Timings {
    push: Vec<Duration>,
    answer: Vec<Duration>,
    push_first: usize,
}

async fn measure(
    http_port: u16,
    keda_port: u16,
    transitions: usize,
    gap: Duration,
    poll: bool,
) -> (Timings, Option<Timings>) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .no_proxy()
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{http_port}/api/v1/alerts");
    let mut keda = ExternalScalerClient::connect(format!("http://127.0.0.1:{keda_port}"))
        .await
        .unwrap();
    let so = ScaledObjectRef {
        name: "orders".into(),
        namespace: "shop".into(),
        scaler_metadata: HashMap::from([
            ("cluster".to_string(), "prod".to_string()),
            ("consumergroup".to_string(), "orders".to_string()),
        ]),
    };
    let mut stream = keda
        .stream_is_active(so.clone())
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().expect("the current state");
    assert!(!first.result, "nothing fires at the start");
    let _warm = run(&http, &url, &mut stream, None, WARM_UP, gap).await;

    let plain = run(&http, &url, &mut stream, None, transitions, gap).await;
    let polled = if poll {
        Some(
            run(
                &http,
                &url,
                &mut stream,
                Some((&mut keda, &so)),
                transitions,
                gap,
            )
            .await,
        )
    } else {
        None
    };
    (plain, polled)
}

/// `n` transitions, alternating firing and resolved, one at a time.
async fn run(
    http: &reqwest::Client,
    url: &str,
    stream: &mut tonic::Streaming<IsActiveResponse>,
    mut poll: Option<(&mut ExternalScalerClient<Channel>, &ScaledObjectRef)>,
    n: usize,
    gap: Duration,
) -> Timings {
    let mut t = Timings {
        push: Vec::with_capacity(n),
        answer: Vec::with_capacity(n),
        push_first: 0,
    };
    for i in 0..n {
        let firing = i % 2 == 0;
        let status = if firing { "firing" } else { "resolved" };
        // One fingerprint per firing/resolved pair, with its own startsAt.
        let body = webhook(status, &format!("fp-{}-{}-{}", n, poll.is_some(), i / 2), i);
        if let Some((client, so)) = poll.as_mut() {
            let r = client.is_active((*so).clone()).await.unwrap().into_inner();
            assert_eq!(r.result, !firing, "transition {i}: the state before");
        }
        let t0 = Instant::now();
        let send = async {
            let r = http
                .post(url)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let code = r.status();
            let text = r.text().await.unwrap();
            assert_eq!(code, 200, "{text}");
            assert!(text.contains("scaled_by_keda"), "{text}");
            t0.elapsed()
        };
        let push = async {
            let m = stream
                .message()
                .await
                .unwrap()
                .expect("the stream stays open");
            let at = t0.elapsed();
            assert_eq!(m.result, firing, "transition {i}: the pushed state");
            at
        };
        let (answer, pushed) = tokio::join!(send, push);
        t.push.push(pushed);
        t.answer.push(answer);
        if pushed <= answer {
            t.push_first += 1;
        }
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
    t.push.sort_unstable();
    t.answer.sort_unstable();
    t
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let transitions: usize = env_num("BENCH_TRANSITIONS", 1000usize).max(2) / 2 * 2;
    let gap = Duration::from_millis(env_num("BENCH_GAP_MS", 0u64));
    let poll = env_num("BENCH_POLL", 1u8) != 0;
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
    println!("machine: {}", machine());

    let kube = FakeKube::start();
    kube.add("shop", "orders-consumer", 2);
    let (http_port, keda_port) = (free_port(), free_port());
    let path = |f: &str| dir.path().join(f);
    std::fs::write(path("token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        path("policies.yaml"),
        "policies:\n  - cluster: prod\n    consumergroup: orders\n    deployment: {namespace: shop, name: orders-consumer}\n    lag_per_replica: 1000\n    scaler: keda\n",
    )
    .unwrap();
    std::fs::write(
        path("actuator.yaml"),
        format!(
            "listen: 127.0.0.1:{http_port}\npolicies_file: {}\ninstance: bench\nauth: {{bearer_token_file: {}}}\naudit: {{path: {}, max_bytes: 67108864}}\nkubernetes: {{api_url: \"{}\"}}\nkeda: {{listen: \"127.0.0.1:{keda_port}\"}}\nlog_format: json\n",
            path("policies.yaml").display(),
            path("token").display(),
            path("audit/audit.log").display(),
            kube.url(),
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_medic-actuator");
    let mut actuator = Server::start(
        "medic-actuator",
        std::path::Path::new(bin),
        &[
            "--config".into(),
            path("actuator.yaml").display().to_string(),
        ],
    );
    for port in [http_port, keda_port] {
        assert!(
            wait_for_port(port, Duration::from_secs(20)),
            "medic-actuator did not listen on {port}\n{}",
            actuator.describe()
        );
    }
    println!(
        "actuator: {bin} (separate process); audit log: {}",
        path("audit/audit.log").display()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let (plain, polled) = rt.block_on(measure(http_port, keda_port, transitions, gap, poll));
    let wall = started.elapsed();
    drop(rt);
    let code = actuator.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{}", actuator.describe());
    let records = std::fs::read_to_string(path("audit/audit.log"))
        .map(|t| t.lines().count())
        .unwrap_or(0);

    println!();
    println!(
        "{transitions} transitions ({} firing/resolved alternations) per run after {WARM_UP} warm-up ones, one at a time, pause {} ms between them; {:.1} s in all",
        transitions / 2,
        gap.as_millis(),
        wall.as_secs_f64()
    );
    println!();
    println!("| run | from the webhook sent to | n | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|");
    let mut runs = vec![("stream only", &plain)];
    if let Some(p) = &polled {
        runs.push(("IsActive before each webhook", p));
    }
    for (run, t) in &runs {
        for (name, v) in [
            ("the StreamIsActive message", &t.push),
            ("the webhook's 200", &t.answer),
        ] {
            println!(
                "| {run} | {name} | {} | {} | {} | {} | {} |",
                v.len(),
                ms(pct(v, 0.50)),
                ms(pct(v, 0.90)),
                ms(pct(v, 0.99)),
                ms(v.last().copied().unwrap_or_default())
            );
        }
    }
    println!();
    for (run, t) in &runs {
        println!(
            "{run}: the push arrived before the 200 in {} of {} transitions",
            t.push_first,
            t.push.len()
        );
    }
    println!(
        "audit records written: {records} (2 per transition, warm-up included: the keda change, then the webhook's scaled_by_keda decision); kube requests on the Deployment: {}",
        kube.requests().len()
    );
    assert!(
        kube.requests().is_empty(),
        "a scaler: keda Deployment was read or written\n{}",
        kube.describe()
    );
}
