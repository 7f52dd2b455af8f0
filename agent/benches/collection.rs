//! Collection cost, medic-agent versus the naive approach, against a real tansu broker.
//!
//! `cargo bench -p medic-agent --bench collection` prints a Markdown table. For each size
//! (1,000 groups over 5,000 partitions, and 10x fewer) it runs:
//! - the real `medic-agent` binary (cluster mode, 1 s interval) and reads its own metrics:
//!   wall time per collection (first, cold, and the mean of the following warm ones), Kafka
//!   requests per collection, CPU seconds per collection and peak RSS (VmHWM) of the process;
//! - the naive approach in this process, on consumers created beforehand (not timed): one
//!   rdkafka consumer per group calling `committed_offsets`, and `fetch_watermarks` per
//!   partition.
//!
//! Set `MEDIC_BENCH_SIZES=100x500` (groups x partitions, comma-separated) to change the sizes.
//! Set `MEDIC_BENCH_NAIVE=0` to skip the naive comparison: at 3,000 groups x 15,000 partitions
//! its untimed warm-up alone (3,000 rdkafka clients bootstrapping) takes minutes and its RSS
//! reaches gigabytes, so the large tansu row is measured for the agent only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use medic_e2e::{free_port, get, sample, wait_until, Server, Tansu};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const PARTITIONS_PER_TOPIC: i32 = 50;
const PARTITIONS_PER_GROUP: i32 = 5;

struct Layout {
    groups: usize,
    partitions: usize,
}

impl Layout {
    fn topics(&self) -> usize {
        self.partitions / PARTITIONS_PER_TOPIC as usize
    }
    /// The partitions group `g` commits on: 5 consecutive partitions of one topic, so that
    /// every partition has exactly one group.
    fn of_group(&self, g: usize) -> Vec<(String, i32)> {
        let first = g * PARTITIONS_PER_GROUP as usize;
        (0..PARTITIONS_PER_GROUP as usize)
            .map(|k| {
                let global = (first + k) % self.partitions;
                (
                    format!("bench-{}", global / PARTITIONS_PER_TOPIC as usize),
                    (global % PARTITIONS_PER_TOPIC as usize) as i32,
                )
            })
            .collect()
    }
}

fn setup(b: &str, l: &Layout) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", b)
        .create()
        .unwrap();
    let topics: Vec<String> = (0..l.topics()).map(|t| format!("bench-{t}")).collect();
    for chunk in topics.chunks(50) {
        let new: Vec<NewTopic> = chunk
            .iter()
            .map(|t| NewTopic::new(t, PARTITIONS_PER_TOPIC, TopicReplication::Fixed(1)))
            .collect();
        futures::executor::block_on(admin.create_topics(&new, &AdminOptions::new())).unwrap();
    }
    // Two records per partition, each its own batch (tansu's high watermark is only right
    // for single-record batches).
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", b)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .create()
        .unwrap();
    for round in 0..2 {
        for t in &topics {
            for part in 0..PARTITIONS_PER_TOPIC {
                p.send(
                    BaseRecord::<(), str>::to(t)
                        .partition(part)
                        .payload(if round == 0 { "a" } else { "b" }),
                )
                .map_err(|(e, _)| e)
                .unwrap();
            }
        }
        p.flush(Duration::from_secs(120)).unwrap();
    }
    // Every group commits offset 1 on its partitions: lag 1 everywhere.
    for g in 0..l.groups {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", b)
            .set("group.id", format!("bench-group-{g}"))
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for (t, p) in l.of_group(g) {
            tpl.add_partition_offset(&t, p, Offset::Offset(1)).unwrap();
        }
        c.commit(&tpl, CommitMode::Sync).unwrap();
    }
}

struct Row {
    approach: &'static str,
    size: String,
    cold_ms: f64,
    warm_ms: f64,
    requests: f64,
    cpu_s: f64,
    rss_mb: f64,
    checked: String,
}

fn proc_status(pid: u32, key: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn proc_cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn bench_agent(b: &str, l: &Layout) -> Row {
    let port = free_port();
    let args: Vec<String> = [
        "--bootstrap-servers",
        b,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--cluster",
        "bench",
        "--interval",
        "2s",
        "--request-timeout",
        "30s",
        "--log-format",
        "text",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let agent = Server::start(
        "medic-agent",
        &PathBuf::from(env!("CARGO_BIN_EXE_medic-agent")),
        &args,
    );
    let pid = agent.pid().unwrap();
    let successes = |t: &str| {
        sample(
            t,
            "medic_agent_collections_total{result=\"success\",cluster=\"bench\"}",
        )
        .or_else(|| {
            sample(
                t,
                "medic_agent_collections_total{cluster=\"bench\",result=\"success\"}",
            )
        })
        .unwrap_or(0.0)
    };
    let snapshot = |n: f64| {
        wait_until(Duration::from_secs(300), "agent collections", || {
            let t = medic_e2e::http::request(port, "GET", "/metrics", &[], b"")
                .ok()?
                .body;
            (successes(&t) >= n).then_some(t)
        })
    };
    let t1 = snapshot(1.0);
    let cpu1 = proc_cpu_seconds(pid);
    let sum1 = metric_sum(&t1, "medic_agent_collection_duration_seconds_sum");
    let req1 = metric_sum(&t1, "medic_agent_kafka_requests_total");
    let warm_n = 5.0;
    let t2 = snapshot(1.0 + warm_n);
    let cpu2 = proc_cpu_seconds(pid);
    let n2 = successes(&t2);
    let sum2 = metric_sum(&t2, "medic_agent_collection_duration_seconds_sum");
    let req2 = metric_sum(&t2, "medic_agent_kafka_requests_total");
    let warm = n2 - 1.0;
    let groups = sample(&t2, "medic_agent_groups{cluster=\"bench\"}").unwrap_or(0.0);
    let parts = sample(&t2, "medic_agent_partitions{cluster=\"bench\"}").unwrap_or(0.0);
    let lag_total = metric_sum(&t2, "kafka_consumergroup_lag{");
    let pending = sample(&t2, "medic_agent_lag_seconds_pending{cluster=\"bench\"}").unwrap_or(-1.0);
    assert_eq!(get(port, "/healthz").status, 200);
    let rss = proc_status(pid, "VmHWM:") / 1024.0;
    // Where the warm collections' wall time went: mean time per request, by API.
    let mut per_api = Vec::new();
    for api in [
        "metadata",
        "list_groups",
        "offset_fetch",
        "list_offsets",
        "fetch",
    ] {
        let key = |t: &str, suffix: &str| {
            t.lines()
                .filter(|l| {
                    l.starts_with(&format!(
                        "medic_agent_kafka_request_duration_seconds_{suffix}"
                    )) && l.contains(&format!("api=\"{api}\""))
                })
                .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
                .sum::<f64>()
        };
        let n = key(&t2, "count") - key(&t1, "count");
        if n > 0.0 {
            per_api.push(format!(
                "{api} {:.0} ms x{:.0}",
                (key(&t2, "sum") - key(&t1, "sum")) / n * 1000.0,
                n / warm
            ));
        }
    }
    drop(agent);
    Row {
        approach: "medic-agent",
        size: format!("{} groups / {} partitions", l.groups, l.partitions),
        cold_ms: sum1 * 1000.0,
        warm_ms: (sum2 - sum1) / warm * 1000.0,
        requests: (req2 - req1) / warm,
        cpu_s: (cpu2 - cpu1) / warm,
        rss_mb: rss,
        checked: format!(
            "{groups} groups, {parts} partitions, total lag {lag_total}, {pending} pending; per request: {}",
            per_api.join(", ")
        ),
    }
}

fn bench_naive(b: &str, l: &Layout) -> Row {
    // Untimed: one consumer per group, created up front as a long-running exporter would.
    let rss_before = proc_status(std::process::id(), "VmRSS:");
    let consumers: Vec<(BaseConsumer, TopicPartitionList)> = (0..l.groups)
        .map(|g| {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", b)
                .set("group.id", format!("bench-group-{g}"))
                .create()
                .unwrap();
            let mut tpl = TopicPartitionList::new();
            for (t, p) in l.of_group(g) {
                tpl.add_partition(&t, p);
            }
            (c, tpl)
        })
        .collect();
    // Untimed warm-up: let every client finish bootstrapping (1,000 clients fetching metadata
    // at once can queue for a while on a 2-core machine) and learn its group coordinator.
    let warm_start = Instant::now();
    for (c, tpl) in &consumers {
        let _ = c.committed_offsets(tpl.clone(), Duration::from_secs(60));
    }
    eprintln!(
        "naive warm-up (untimed) took {:.1}s",
        warm_start.elapsed().as_secs_f64()
    );
    let mut runs = Vec::new();
    let mut cpu = Vec::new();
    let mut total_lag = 0i64;
    let mut failures = 0usize;
    let mut first_error = String::new();
    for _ in 0..2 {
        let usage0 = rusage_seconds();
        let start = Instant::now();
        total_lag = 0;
        let mut ends: HashMap<(String, i32), i64> = HashMap::new();
        for (c, tpl) in &consumers {
            let committed = match c.committed_offsets(tpl.clone(), Duration::from_secs(30)) {
                Ok(c) => c,
                Err(e) => {
                    note(&mut failures, &mut first_error, e);
                    continue;
                }
            };
            for e in committed.elements() {
                let key = (e.topic().to_string(), e.partition());
                let high = match ends.get(&key) {
                    Some(h) => *h,
                    None => {
                        match c.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(30))
                        {
                            Ok((_, h)) => {
                                ends.insert(key, h);
                                h
                            }
                            Err(e) => {
                                note(&mut failures, &mut first_error, e);
                                continue;
                            }
                        }
                    }
                };
                if let Offset::Offset(o) = e.offset() {
                    total_lag += (high - o).max(0);
                }
            }
        }
        runs.push(start.elapsed().as_secs_f64());
        cpu.push(rusage_seconds() - usage0);
    }
    let rss_after = proc_status(std::process::id(), "VmRSS:");
    drop(consumers);
    Row {
        approach: "naive (consumer per group, watermarks per partition)",
        size: format!("{} groups / {} partitions", l.groups, l.partitions),
        cold_ms: runs[0] * 1000.0,
        warm_ms: runs[1] * 1000.0,
        // committed_offsets: FindCoordinator + OffsetFetch per group (coordinator cached after
        // the first run); fetch_watermarks: ListOffsets for the low and the high mark.
        requests: (l.groups + 2 * l.partitions) as f64,
        cpu_s: cpu[1],
        rss_mb: (rss_after - rss_before) / 1024.0,
        checked: if failures == 0 {
            format!("total lag {total_lag}")
        } else {
            format!(
                "total lag {total_lag}; {failures} calls failed over 2 runs (first: {first_error})"
            )
        },
    }
}

/// Counts a failed naive call and keeps the first error's text.
fn note(failures: &mut usize, first: &mut String, e: impl std::fmt::Display) {
    *failures += 1;
    if first.is_empty() {
        *first = e.to_string();
    }
}

fn rusage_seconds() -> f64 {
    // The whole process: the consumers' own threads do the work.
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        / 100.0
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: run only
    // when asked to bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sizes: Vec<(usize, usize)> = std::env::var("MEDIC_BENCH_SIZES")
        .unwrap_or_else(|_| "100x500,1000x5000".into())
        .split(',')
        .filter_map(|s| s.split_once('x'))
        .map(|(g, p)| (g.parse().unwrap(), p.parse().unwrap()))
        .collect();
    let mut rows = Vec::new();
    for (groups, partitions) in sizes {
        let layout = Layout { groups, partitions };
        let tansu = Tansu::start();
        let b = tansu.bootstrap();
        let t = Instant::now();
        setup(&b, &layout);
        eprintln!(
            "set up {groups} groups / {partitions} partitions in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        let r = bench_agent(&b, &layout);
        eprintln!(
            "{} {}: cold {:.0} ms, warm {:.0} ms, {:.0} requests, {:.1} MB",
            r.approach, r.size, r.cold_ms, r.warm_ms, r.requests, r.rss_mb
        );
        rows.push(r);
        if std::env::var("MEDIC_BENCH_NAIVE").is_ok_and(|v| v == "0") {
            eprintln!("naive comparison skipped (MEDIC_BENCH_NAIVE=0)");
            continue;
        }
        let r = bench_naive(&b, &layout);
        eprintln!(
            "{} {}: cold {:.0} ms, warm {:.0} ms, {}",
            r.approach, r.size, r.cold_ms, r.warm_ms, r.checked
        );
        rows.push(r);
    }
    println!("| approach | size | first collection (ms) | warm collection (ms) | Kafka requests / collection | CPU s / collection | peak RSS (MB) | what it saw |");
    println!("|---|---|---:|---:|---:|---:|---:|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.3} | {:.1} | {} |",
            r.approach, r.size, r.cold_ms, r.warm_ms, r.requests, r.cpu_s, r.rss_mb, r.checked
        );
    }
}
