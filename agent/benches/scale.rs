//! The agent at 100,000 partitions, against the in-memory fake Kafka cluster.
//!
//! `cargo bench -p medic-agent --bench scale` prints a Markdown table. For each size (groups x
//! partitions; default 2,000x10,000, 5,000x25,000, 10,000x50,000 and 20,000x100,000) it:
//! - fills `medic_e2e::fake_broker::FakeCluster` (3 brokers, in this process, on its own tokio
//!   runtime) with topics of 50 partitions, leaders round-robin, 2 records per partition, and
//!   groups that each commit offset 1 on 5 partitions of their own (lag 1 everywhere, every
//!   partition consumed by exactly one group), coordinators round-robin;
//! - runs the real release `medic-agent` binary in cluster mode as a separate process, so the
//!   fake is never what is measured, and reads the agent's own metrics: wall time of the first
//!   (cold) collection and the mean of the next warm ones (`medic_agent_collection_duration_
//!   seconds`), Kafka requests per collection (`medic_agent_kafka_requests_total`, checked
//!   against the fake's own request log), CPU seconds per collection (`/proc/<pid>/stat`) and
//!   peak RSS (`VmHWM`); and the CPU this process (the fake) spent meanwhile;
//! - scrapes `/metrics` as Prometheus does, with `Accept-Encoding: gzip` (the agent serves its
//!   compressed buffer; this process decompresses it), and asserts the answer was gzip;
//! - measures what compressing the text costs: the CPU seconds of deflating the scraped text
//!   here, the way the agent renders it (`flate2` fast, line by line, with a CRC-32);
//! - fits peak RSS = base + bytes x partitions by least squares over the sizes.
//!
//! Settings (environment): `MEDIC_SCALE_SIZES=2000x10000,20000x100000` (groups x partitions),
//! `MEDIC_SCALE_WARM=5` (warm collections measured), `MEDIC_AGENT_BIN=/path/to/medic-agent`
//! (another build of the agent, e.g. a baseline; default: this workspace's release binary),
//! `MEDIC_SCALE_HISTORY_SAMPLES=64` (the agent's `--history-samples`), `MEDIC_SCALE_WRAPPER=
//! "valgrind --tool=massif --massif-out-file=/tmp/agent.massif"` (a profiler that runs the
//! agent in its own process), `MEDIC_SCALE_SCRAPE=identity` (scrape without `Accept-Encoding`,
//! as the first version of this bench did: the agent then decompresses the whole text for each
//! scrape).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use medic_e2e::fake_broker::{FakeCluster, Group, Member, Table};
use medic_e2e::{free_port, get, sample, wait_until, Server};

const BROKERS: i32 = 3;
/// Kafka's API key of Metadata.
const METADATA_API_KEY: i16 = 3;
const PARTITIONS_PER_TOPIC: usize = 50;
const PARTITIONS_PER_GROUP: usize = 5;

struct Row {
    size: String,
    partitions: usize,
    cold_ms: f64,
    warm_ms: f64,
    requests: f64,
    fake_requests: f64,
    cpu_s: f64,
    fake_cpu_s: f64,
    rss_mb: f64,
    scrape_mb: f64,
    wire_mb: f64,
    deflate_cpu_s: f64,
    checked: String,
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn proc_status_kib(pid: u32, key: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// User + system CPU seconds of a process (or of this one, for "self").
fn cpu_seconds(pid: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// GET /metrics; with `gzip`, as Prometheus does (`Accept-Encoding: gzip`), decompressing the
/// answer here. Returns (body bytes on the wire, whether it was gzip, the text); `None` while
/// nothing answers.
fn scrape(port: u16, gzip: bool) -> Option<(usize, bool, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    let accept = if gzip {
        "Accept-Encoding: gzip\r\n"
    } else {
        ""
    };
    // HTTP/1.0 and Connection: close: the body ends where the connection does.
    write!(
        s,
        "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n{accept}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(
        head.split_whitespace().nth(1) == Some("200"),
        "GET /metrics: {head}"
    );
    let body = &raw[split + 4..];
    let gzipped = head
        .lines()
        .any(|l| l.starts_with("content-encoding:") && l.contains("gzip"));
    let text = if gzipped {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(body)
            .read_to_string(&mut text)
            .expect("the agent's gzip answer decompresses");
        text
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    Some((body.len(), gzipped, text))
}

/// CPU seconds of deflating `text` as the agent's renderer does: `flate2` fast level, written
/// line by line, with a CRC-32 of the text; measured on this thread.
fn deflate_cpu_seconds(text: &str) -> (f64, usize) {
    use std::io::Write;
    let before = cpu_seconds("thread-self");
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut crc = crc32fast::Hasher::new();
    for line in text.split_inclusive('\n') {
        crc.update(line.as_bytes());
        enc.write_all(line.as_bytes()).unwrap();
    }
    enc.flush().unwrap();
    let out = enc.finish().unwrap();
    std::hint::black_box(crc.finalize());
    (cpu_seconds("thread-self") - before, out.len())
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn topic_of(global: usize) -> (String, i32) {
    (
        format!("bench-{}", global / PARTITIONS_PER_TOPIC),
        (global % PARTITIONS_PER_TOPIC) as i32,
    )
}

/// Fills the fake: `partitions` partitions in topics of 50 (leaders round-robin), 2 records
/// each, appended 60 s and 30 s ago; `groups` groups (classic, Stable, one member owning its
/// partitions) each committing offset 1 on 5 partitions of their own, coordinators
/// round-robin.
fn fill(table: &mut Table, groups: usize, partitions: usize, now_ms: i64) {
    let topics = partitions.div_ceil(PARTITIONS_PER_TOPIC);
    for t in 0..topics {
        let name = format!("bench-{t}");
        table.add_topic(&name, PARTITIONS_PER_TOPIC as i32);
        for p in 0..PARTITIONS_PER_TOPIC as i32 {
            table.append(&name, p, 1, now_ms - 60_000);
            table.append(&name, p, 1, now_ms - 30_000);
        }
    }
    for g in 0..groups {
        let mut group = Group::classic((g as i32) % BROKERS).state("Stable");
        let mut owned: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for k in 0..PARTITIONS_PER_GROUP {
            let (t, p) = topic_of((g * PARTITIONS_PER_GROUP + k) % partitions);
            group = group.commit(&t, p, 1);
            owned.entry(t).or_default().push(p);
        }
        let mut member = Member::new(&format!("member-{g}"));
        for (t, ps) in &owned {
            member = member.assign(t, ps);
        }
        table.put_group(&format!("bench-group-{g}"), group.member(member));
    }
}

fn bench(agent_bin: &Path, groups: usize, partitions: usize, warm_n: f64, gzip: bool) -> Row {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster: Arc<FakeCluster> =
        Arc::new(rt.block_on(FakeCluster::builder().brokers(BROKERS as usize).start()));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t = Instant::now();
    cluster.update(|t| fill(t, groups, partitions, now_ms));
    eprintln!(
        "filled the fake with {groups} groups / {partitions} partitions in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let port = free_port();
    let args: Vec<String> = [
        "--bootstrap-servers".to_string(),
        cluster.bootstrap(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--cluster".into(),
        "bench".into(),
        "--interval".into(),
        "5s".into(),
        "--request-timeout".into(),
        "60s".into(),
        "--history-samples".into(),
        env_or("MEDIC_SCALE_HISTORY_SAMPLES", "64"),
        "--log-format".into(),
        "text".into(),
    ]
    .to_vec();
    // (Not MEDIC_AGENT_*: the agent refuses variables of its prefix that it does not know.)
    // A profiler in front of the agent (e.g. `valgrind --tool=massif`): the figures read from
    // /proc are then the wrapper's, only the agent's own metrics stay meaningful.
    let mut agent = match std::env::var("MEDIC_SCALE_WRAPPER") {
        Ok(w) if !w.trim().is_empty() => {
            let mut words = w.split_whitespace().map(String::from);
            let program = PathBuf::from(words.next().unwrap());
            let mut all: Vec<String> = words.collect();
            all.push(agent_bin.display().to_string());
            all.extend(args);
            Server::start("medic-agent", &program, &all)
        }
        _ => Server::start("medic-agent", agent_bin, &args),
    };
    let pid = agent.pid().unwrap();
    // Collection n has ended once the fake has seen the Metadata request that starts
    // collection n + 1 (collections run one after the other). Waiting on the fake's request
    // log, not on /metrics: polling a 45 MB scrape every 100 ms would load both processes.
    let metadata_seen = || {
        cluster
            .requests()
            .iter()
            .filter(|r| r.api_key == METADATA_API_KEY)
            .count()
    };
    let read = || scrape(port, gzip);
    // The first collection: /metrics is small until it ends, so polling it is cheap, and the
    // first reading with a timed collection is taken seconds before the second one starts.
    let t1 = wait_until(Duration::from_secs(900), "the first collection", || {
        let (_, _, t) = read()?;
        (metric_sum(&t, "medic_agent_collection_duration_seconds_count") >= 1.0).then_some(t)
    });
    let (cpu1, fake_cpu1, fake_req1) = (
        cpu_seconds(&pid.to_string()),
        cpu_seconds("self"),
        cluster.requests().len() as f64,
    );
    // The warm ones: collection n has ended once the fake has seen the Metadata request that
    // starts collection n + 1.
    wait_until(Duration::from_secs(900), "agent collections", || {
        (metadata_seen() > 1 + warm_n as usize).then_some(())
    });
    let (cpu2, fake_cpu2, fake_req2) = (
        cpu_seconds(&pid.to_string()),
        cpu_seconds("self"),
        // Less the Metadata request of the collection that just started.
        cluster.requests().len() as f64 - 1.0,
    );
    let (wire, gzipped, t2) = read().expect("/metrics after the warm collections");
    assert_eq!(gzipped, gzip, "Content-Encoding gzip iff asked for");
    let sum1 = metric_sum(&t1, "medic_agent_collection_duration_seconds_sum");
    let count1 = metric_sum(&t1, "medic_agent_collection_duration_seconds_count");
    let req1 = metric_sum(&t1, "medic_agent_kafka_requests_total");
    let sum2 = metric_sum(&t2, "medic_agent_collection_duration_seconds_sum");
    let req2 = metric_sum(&t2, "medic_agent_kafka_requests_total");
    let count2 = metric_sum(&t2, "medic_agent_collection_duration_seconds_count");
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
    assert_eq!(count1, 1.0, "one collection timed at the first reading");
    // The duration sums cover count2 - count1 collections (the one that just started may have
    // ended too); CPU and the fake's requests exactly warm_n.
    assert_eq!(successes(&t2), count2, "every collection succeeded");
    let warm = count2 - count1;
    let seen_groups = sample(&t2, "medic_agent_groups{cluster=\"bench\"}").unwrap_or(0.0);
    let seen_parts = sample(&t2, "medic_agent_partitions{cluster=\"bench\"}").unwrap_or(0.0);
    let lag_total = metric_sum(&t2, "kafka_consumergroup_lag{");
    let health = get(port, "/healthz");
    let rss = proc_status_kib(pid, "VmHWM:") / 1024.0;
    agent.terminate(Duration::from_secs(10));
    assert_eq!(
        health.status,
        200,
        "/healthz: {}\n{}",
        health.body,
        agent.describe()
    );
    // The agent saw everything: every group, every (group, partition), lag 1 each.
    assert_eq!(seen_groups as usize, groups, "{}", agent.describe());
    assert_eq!(
        seen_parts as usize,
        groups * PARTITIONS_PER_GROUP,
        "{}",
        agent.describe()
    );
    assert_eq!(lag_total as usize, groups * PARTITIONS_PER_GROUP);
    drop(cluster);
    rt.shutdown_timeout(Duration::from_secs(5));
    let (deflate_cpu_s, deflated) = deflate_cpu_seconds(&t2);
    eprintln!(
        "deflating the {:.1} MB text here: {deflate_cpu_s:.3} CPU s, {:.1} MB",
        t2.len() as f64 / 1e6,
        deflated as f64 / 1e6
    );
    Row {
        size: format!("{groups} groups / {partitions} partitions"),
        partitions,
        cold_ms: sum1 * 1000.0,
        warm_ms: (sum2 - sum1) / warm * 1000.0,
        requests: (req2 - req1) / warm,
        fake_requests: (fake_req2 - fake_req1) / warm_n,
        cpu_s: (cpu2 - cpu1) / warm_n,
        fake_cpu_s: (fake_cpu2 - fake_cpu1) / warm_n,
        rss_mb: rss,
        scrape_mb: t2.len() as f64 / 1e6,
        wire_mb: wire as f64 / 1e6,
        deflate_cpu_s,
        checked: format!("{seen_groups} groups, {seen_parts} partitions, total lag {lag_total}"),
    }
}

/// Least squares: y = a + b x.
fn fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    (sxx > 0.0).then(|| {
        let b = sxy / sxx;
        (my - b * mx, b)
    })
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: run only
    // when asked to bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sizes: Vec<(usize, usize)> = env_or(
        "MEDIC_SCALE_SIZES",
        "2000x10000,5000x25000,10000x50000,20000x100000",
    )
    .split(',')
    .filter_map(|s| s.split_once('x'))
    .map(|(g, p)| (g.parse().unwrap(), p.parse().unwrap()))
    .collect();
    let warm_n: f64 = env_or("MEDIC_SCALE_WARM", "5").parse().unwrap();
    let gzip = match env_or("MEDIC_SCALE_SCRAPE", "gzip").as_str() {
        "gzip" => true,
        "identity" => false,
        other => panic!("MEDIC_SCALE_SCRAPE={other:?}: expected gzip or identity"),
    };
    let agent_bin = std::env::var("MEDIC_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_BIN_EXE_medic-agent")));
    eprintln!("agent binary: {}", agent_bin.display());
    let mut rows = Vec::new();
    for (groups, partitions) in sizes {
        let r = bench(&agent_bin, groups, partitions, warm_n, gzip);
        eprintln!(
            "{}: cold {:.0} ms, warm {:.0} ms, {:.0} requests, {:.3} CPU s, {:.1} MB peak",
            r.size, r.cold_ms, r.warm_ms, r.requests, r.cpu_s, r.rss_mb
        );
        rows.push(r);
    }
    println!("| size | first collection (ms) | warm collection (ms) | Kafka requests / collection (agent / fake) | agent CPU s / collection | fake CPU s / collection | peak RSS (MB) | /metrics text (MB) | on the wire (MB, {}) | deflating the text (CPU s) | what it saw |", if gzip { "gzip" } else { "identity" });
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} / {:.0} | {:.3} | {:.3} | {:.1} | {:.1} | {:.1} | {:.3} | {} |",
            r.size,
            r.cold_ms,
            r.warm_ms,
            r.requests,
            r.fake_requests,
            r.cpu_s,
            r.fake_cpu_s,
            r.rss_mb,
            r.scrape_mb,
            r.wire_mb,
            r.deflate_cpu_s,
            r.checked
        );
    }
    let points: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.partitions as f64, r.rss_mb * 1024.0 * 1024.0))
        .collect();
    if let Some((base, per)) = fit(&points) {
        println!(
            "\nPeak RSS fit over {} sizes: {:.1} MB + {:.0} bytes x partitions",
            points.len(),
            base / 1024.0 / 1024.0,
            per
        );
    }
}
