//! Audit read benchmark: `GET /api/v1/audit` on a full audit log (the default 16 MB x 5 files,
//! about 80 MB of realistic records in the writer's format and file names), with 4 concurrent
//! readers each running the query the handler runs (`read_log` on a blocking thread, then the
//! JSON body). Reports p50/p99 latency and the process's peak RSS growth (VmHWM after the
//! queries minus VmRSS before them; VmHWM is reset through /proc/self/clear_refs first).
//!
//! Run: `cargo bench -p medic-actuator --bench audit_read` (options via env: BENCH_QUERIES per
//! reader, default 200; BENCH_DIR for the log, default a temporary directory).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use medic_actuator::audit::{
    parse_lines, read_log, rotated_path, Action, AuditQuery, AuditRecord, Outcome,
};
use medic_actuator::decide::{LagSource, Trigger};
use medic_actuator::reason::ReasonCode;

const READERS: usize = 4;
const FILE_BYTES: u64 = 16 * 1024 * 1024;
const MAX_FILES: usize = 5;
const TARGETS: usize = 50;

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("nproc {cores}, CPU {cpu}")
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A record like the ones the actuator writes: lag decisions with every field, and now and then
/// a broker record with a plan.
fn record(seq: u64) -> AuditRecord {
    let i = seq as usize;
    let target = format!("shop/consumer-{}", i % TARGETS);
    let broker = i.is_multiple_of(17);
    let (outcome, action, reason) = match i % 5 {
        0 => (Outcome::Applied, Action::ScaleUp, None),
        1 => (Outcome::Skipped, Action::None, Some(ReasonCode::Cooldown)),
        2 => (Outcome::Skipped, Action::None, Some(ReasonCode::Duplicate)),
        3 => (Outcome::Applied, Action::ScaleDown, None),
        _ => (
            Outcome::Failed,
            Action::ScaleUp,
            Some(ReasonCode::KubeConflict),
        ),
    };
    let mut r = AuditRecord {
        seq,
        reason,
        message: format!("scale {target} from 2 to 4: lag 9000 above 1000 per replica"),
        alertname: Some("KafkaConsumerLagPersistent".into()),
        alert_status: None,
        fingerprint: Some(format!("{:016x}", seq.wrapping_mul(0x9e37_79b9_7f4a_7c15))),
        starts_at: Some("2026-11-22T03:32:35.536Z".into()),
        cluster: Some("prod".into()),
        consumergroup: Some(format!("group-{}", i % TARGETS)),
        target: Some(target),
        from_replicas: Some(2),
        to_replicas: Some(4),
        desired_replicas: Some(4),
        lag: Some(9000 + seq % 1000),
        lag_source: LagSource::Prometheus,
        ..AuditRecord::new(
            Timestamp::from_second(1_800_000_000 + seq as i64).unwrap(),
            "medic-actuator-7d9f8c6b5-x2x4q",
            Trigger::Webhook,
            outcome,
            action,
        )
    };
    if broker {
        r.action = Action::MoveLeadership;
        r.broker = Some(format!("{}", i % 6));
        r.backend = Some("kafka".into());
        r.plan = Some(serde_json::json!({
            "partitions": (0..12).map(|p| serde_json::json!({"topic": "orders", "partition": p, "leader": {"from": 1, "to": 2}})).collect::<Vec<_>>(),
            "left_alone": 3,
        }));
    }
    r
}

/// Writes `audit.log.4` .. `audit.log.1` and `audit.log`, 16 MB each, oldest first.
fn write_log(dir: &Path) -> (PathBuf, u64) {
    let path = dir.join("audit.log");
    let mut seq = 0;
    let files: Vec<PathBuf> = (1..MAX_FILES)
        .rev()
        .map(|n| rotated_path(&path, n))
        .chain([path.clone()])
        .collect();
    for file in files {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let mut written = 0;
        while written < FILE_BYTES {
            seq += 1;
            let mut line = serde_json::to_vec(&record(seq)).unwrap();
            line.push(b'\n');
            w.write_all(&line).unwrap();
            written += line.len() as u64;
        }
        w.flush().unwrap();
    }
    (path, seq)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

struct Row {
    name: &'static str,
    queries: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    rss_growth_kib: u64,
    records: usize,
}

/// Runs `per_reader` queries on each of READERS threads at once.
fn run(name: &'static str, per_reader: usize, query: impl Fn() -> usize + Sync) -> Row {
    let before = status_kib("VmRSS:");
    // Reset the peak (VmHWM) to the current RSS.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let mut lat: Vec<Duration> = Vec::new();
    let mut records = 0;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..READERS)
            .map(|_| {
                s.spawn(|| {
                    (0..per_reader)
                        .map(|_| {
                            let t = Instant::now();
                            let n = query();
                            (t.elapsed(), n)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (d, n) in h.join().unwrap() {
                lat.push(d);
                records = n;
            }
        }
    });
    let peak = status_kib("VmHWM:");
    lat.sort();
    Row {
        name,
        queries: lat.len(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        max: *lat.last().unwrap(),
        rss_growth_kib: peak.saturating_sub(before),
        records,
    }
}

fn main() {
    let per_reader: usize = std::env::var("BENCH_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let t = Instant::now();
    let (path, last_seq) = write_log(&dir);
    let total: u64 = (0..MAX_FILES)
        .map(|n| {
            let f = if n == 0 {
                path.clone()
            } else {
                rotated_path(&path, n)
            };
            std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)
        })
        .sum();
    println!("machine: {}", machine());
    println!(
        "log: {} files, {:.1} MB, {last_seq} records, written in {:.1}s; {READERS} concurrent readers, {per_reader} queries each",
        MAX_FILES,
        total as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let handler = |q: &AuditQuery| {
        let page = read_log(&path, MAX_FILES, q).unwrap();
        let body = serde_json::to_vec(&page).unwrap();
        std::hint::black_box(body);
        page.records.len()
    };
    let q = |limit: usize, target: Option<&str>| AuditQuery {
        limit: Some(limit),
        target: target.map(Into::into),
        ..Default::default()
    };
    let mut rows = vec![
        run("limit=100", per_reader, || handler(&q(100, None))),
        run("limit=1000", per_reader / 4 + 1, || handler(&q(1000, None))),
        run("limit=100&target=<1 of 50>", per_reader, || {
            handler(&q(100, Some("shop/consumer-7")))
        }),
        run("limit=100&target=<none> (full scan)", 2, || {
            handler(&q(100, Some("shop/absent")))
        }),
    ];
    // The reader this replaced: read every file whole, parse all, keep the last `limit`.
    rows.push(run("old reader, limit=100", 2, || {
        let mut all = Vec::new();
        for n in (0..MAX_FILES).rev() {
            let f = if n == 0 {
                path.clone()
            } else {
                rotated_path(&path, n)
            };
            let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
            all.extend(parse_lines(&text).0);
        }
        let keep = all.split_off(all.len().saturating_sub(100));
        std::hint::black_box(serde_json::to_vec(&keep).unwrap());
        keep.len()
    }));

    println!();
    println!(
        "| query ({READERS} concurrent readers) | queries | records | p50 | p99 | max | peak RSS growth |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} MB |",
            r.name,
            r.queries,
            r.records,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.max.as_secs_f64() * 1e3,
            r.rss_growth_kib as f64 / 1024.0
        );
    }
}
