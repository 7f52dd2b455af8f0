//! The kafka-medic demo: a local tansu broker, medic-agent in sidecar mode next to it, a
//! producer at a steady rate with a burst, and a consumer that is slower than the producer.
//! Every two seconds it prints what the agent exports: lag in offsets and seconds, time to
//! drain, and the broker's health. Ctrl-C stops everything it started.
//!
//! Usage: medic-demo [--agent PATH] [--seconds N]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use medic_e2e::{create_topic, free_port, producer, sample, Server, Tansu};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TOPIC: &str = "orders";
const GROUP: &str = "billing";
const PARTITIONS: i32 = 3;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst)).expect("Ctrl-C handler");
    let seconds: u64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(90);
    let agent_bin = arg("--agent")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/medic-agent"));

    println!("starting tansu (a Kafka-protocol broker) on 127.0.0.1 ...");
    let tansu = Tansu::start();
    let b = tansu.bootstrap();
    create_topic(&b, TOPIC, PARTITIONS);

    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("broker.pid");
    std::fs::write(&pid_file, tansu.server.pid().unwrap().to_string()).unwrap();
    let port = free_port();
    let args: Vec<String> = [
        "--bootstrap-servers",
        &b,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--cluster",
        "demo",
        "--interval",
        "2s",
        "--broker-id",
        &Tansu::NODE_ID.to_string(),
        "--process-source",
        "pid_file",
        "--process-pid-file",
        pid_file.to_str().unwrap(),
        "--log-dirs",
        dir.path().to_str().unwrap(),
        "--log-format",
        "text",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let agent = Server::start("medic-agent", &agent_bin, &args);
    println!(
        "medic-agent (sidecar of broker {}) serves http://127.0.0.1:{port}/metrics",
        Tansu::NODE_ID
    );
    println!("producer: 20 records/s with a burst of 300 at t=30s; consumer group {GROUP:?}: 12 records/s\n");

    // Producer: 20/s, one record per batch, burst of 300 at t=30s.
    let p_stop = stop.clone();
    let pb = b.clone();
    let started = Instant::now();
    let prod = std::thread::spawn(move || {
        let p = producer(&pb);
        let mut n: u64 = 0;
        let mut burst_done = false;
        while !p_stop.load(Ordering::SeqCst) {
            let count = if !burst_done && started.elapsed() >= Duration::from_secs(30) {
                burst_done = true;
                300
            } else {
                1
            };
            for _ in 0..count {
                let part = (n % PARTITIONS as u64) as i32;
                let _ = p.send(
                    BaseRecord::<(), str>::to(TOPIC)
                        .partition(part)
                        .payload("order"),
                );
                n += 1;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = p.flush(Duration::from_secs(5));
    });

    // Slow consumer: reads at 12 records/s, commits every second.
    let c_stop = stop.clone();
    let cb = b.clone();
    let cons = std::thread::spawn(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &cb)
            .set("group.id", GROUP)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
                .unwrap();
        }
        c.assign(&tpl).unwrap();
        let mut last_commit = Instant::now();
        while !c_stop.load(Ordering::SeqCst) {
            if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
                std::thread::sleep(Duration::from_millis(1000 / 12));
            }
            if last_commit.elapsed() >= Duration::from_secs(1) {
                let _ = c.commit_consumer_state(CommitMode::Sync);
                last_commit = Instant::now();
            }
        }
    });

    println!(
        "{:>5}  {:>10}  {:>10}  {:>8}  {:>11}  {:>12}  {:>9}  {:>10}",
        "t(s)",
        "end offset",
        "committed",
        "lag",
        "lag seconds",
        "drain (s)",
        "broker up",
        "broker RSS"
    );
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        let Ok(r) = medic_e2e::http::request(port, "GET", "/metrics", &[], b"") else {
            continue;
        };
        let t = r.body;
        let sum = |name: &str| -> Option<f64> {
            let v: Vec<f64> = (0..PARTITIONS)
                .filter_map(|p| sample(&t, &format!("{name}{{cluster=\"demo\",consumergroup=\"{GROUP}\",topic=\"{TOPIC}\",partition=\"{p}\"}}")))
                .collect();
            (!v.is_empty()).then(|| v.iter().sum())
        };
        let max_secs = (0..PARTITIONS)
            .filter_map(|p| sample(&t, &format!("kafka_consumergroup_lag_seconds{{cluster=\"demo\",consumergroup=\"{GROUP}\",topic=\"{TOPIC}\",partition=\"{p}\"}}")))
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let end: f64 = (0..PARTITIONS)
            .filter_map(|p| sample(&t, &format!("kafka_topic_partition_current_offset{{cluster=\"demo\",topic=\"{TOPIC}\",partition=\"{p}\"}}")))
            .sum();
        let drain = sample(&t, &format!("kafka_consumergroup_drain_seconds{{cluster=\"demo\",consumergroup=\"{GROUP}\",topic=\"{TOPIC}\"}}"));
        let up = sample(&t, "kafka_broker_up{cluster=\"demo\",broker=\"111\"}");
        let rss = sample(
            &t,
            "kafka_broker_memory_used_bytes{cluster=\"demo\",broker=\"111\"}",
        );
        let fmt = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
        println!(
            "{:>5}  {:>10}  {:>10}  {:>8}  {:>11}  {:>12}  {:>9}  {:>10}",
            started.elapsed().as_secs(),
            format!("{end:.0}"),
            fmt(sum("kafka_consumergroup_current_offset"), 0),
            fmt(sum("kafka_consumergroup_lag"), 0),
            fmt(max_secs, 1),
            fmt(drain, 0),
            fmt(up, 0),
            rss.map_or("-".into(), |r| format!("{:.0} MB", r / 1e6)),
        );
    }
    println!("\nstopping ...");
    stop.store(true, Ordering::SeqCst);
    let _ = prod.join();
    let _ = cons.join();
    drop(agent);
    drop(tansu);
    println!("stopped: broker, agent, producer and consumer.");
}
