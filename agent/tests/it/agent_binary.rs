//! The medic-agent binary against a real tansu broker: sidecar mode with broker health, a
//! scrape that passes `promtool check metrics` and matches the golden family list, and a broker
//! that is killed and restarted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use medic_e2e::{
    commit_offsets, create_topic, get, produce, producer, sample, tool, wait_until, Server, Tansu,
};

use crate::support::AgentProcess;

/// The agent in sidecar mode for the tansu broker: its process from the pid file, its log dir.
fn start_agent(
    tansu: &Tansu,
    pid_file: &std::path::Path,
    log_dir: &std::path::Path,
) -> (Server, u16) {
    AgentProcess::new(&tansu.bootstrap())
        .request_timeout("1s")
        .args(&["--broker-id", &Tansu::NODE_ID.to_string()])
        .args(&["--process-source", "pid_file"])
        .args(&["--process-pid-file", pid_file.to_str().unwrap()])
        .args(&["--log-dirs", log_dir.to_str().unwrap()])
        .start()
}

/// Family names from `# TYPE` lines.
fn families(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn sidecar_scrape_health_and_broker_restart() {
    let mut tansu = Tansu::start();
    let b = tansu.bootstrap();
    create_topic(&b, "orders", 2);
    produce(&producer(&b), "orders", 0, 5);
    commit_offsets(&b, "billing", &[("orders", 0, 2)]);

    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("kafka.pid");
    std::fs::write(&pid_file, tansu.server.pid().unwrap().to_string()).unwrap();
    let (mut agent, port) = start_agent(&tansu, &pid_file, dir.path());

    let lag = "kafka_consumergroup_lag{cluster=\"e2e\",consumergroup=\"billing\",topic=\"orders\",partition=\"0\"}";
    let text = wait_until(
        Duration::from_secs(20),
        "the first successful collection",
        || {
            let r = medic_e2e::http::request(port, "GET", "/metrics", &[], b"").ok()?;
            (sample(&r.body, lag) == Some(3.0)).then_some(r.body)
        },
    );
    let up = "kafka_broker_up{cluster=\"e2e\",broker=\"111\"}";
    assert_eq!(sample(&text, up), Some(1.0), "{text}");
    // Broker health comes from the tansu process itself (pid file) and the log dir.
    let cpu = sample(
        &text,
        "kafka_broker_cpu_seconds_total{cluster=\"e2e\",broker=\"111\"}",
    )
    .unwrap();
    assert!(cpu >= 0.0);
    let rss = sample(
        &text,
        "kafka_broker_memory_used_bytes{cluster=\"e2e\",broker=\"111\"}",
    )
    .unwrap();
    assert!(rss > 1_000_000.0, "tansu RSS {rss}");
    let path = dir.path().to_str().unwrap();
    let size = sample(
        &text,
        &format!("kafka_broker_disk_size_bytes{{cluster=\"e2e\",broker=\"111\",path=\"{path}\"}}"),
    )
    .unwrap();
    let used = sample(
        &text,
        &format!("kafka_broker_disk_used_bytes{{cluster=\"e2e\",broker=\"111\",path=\"{path}\"}}"),
    )
    .unwrap();
    assert!(size > used && used > 0.0, "size {size} used {used}");
    assert_eq!(
        sample(&text, "kafka_topic_partition_current_offset{cluster=\"e2e\",topic=\"orders\",partition=\"0\"}"),
        Some(5.0),
        "sidecar reports the partitions its broker leads"
    );
    assert!(
        text.contains("medic_agent_build_info{version=\"0.1.0\",cluster=\"e2e\"} 1")
            || text.contains("medic_agent_build_info{cluster=\"e2e\",version=\"0.1.0\"} 1"),
        "{text}"
    );

    // The scrape is valid exposition format.
    let scrape = dir.path().join("scrape.prom");
    std::fs::write(&scrape, &text).unwrap();
    let out = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&scrape).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed\nstdout: {}\nstderr: {}\nscrape:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The families match the golden scrape that dashboards and rules are checked against.
    let golden_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/sidecar.prom");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden_path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(&golden_path).unwrap_or_default();
    assert_eq!(
        families(&text),
        families(&golden),
        "metric families changed: rerun with UPDATE_GOLDEN=1 and update rules/ and dashboards/"
    );

    let health = get(port, "/healthz");
    assert_eq!(health.status, 200, "{}", health.body);
    let groups = get(port, "/api/v1/groups?group=billing").json();
    assert_eq!(
        groups["groups"][0]["topics"][0]["partitions"][0]["lag"],
        2 + 1
    );

    // Kill the broker: /healthz says why with a 503, the last lag stays served, the snapshot
    // age grows, and the broker is reported down.
    tansu.kill();
    let down = wait_until(Duration::from_secs(20), "/healthz to turn 503", || {
        let r = get(port, "/healthz");
        (r.status == 503).then_some(r)
    });
    let body = down.json();
    assert_eq!(body["status"], "unhealthy");
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("cannot read cluster metadata"), "{reason}");
    let text = wait_until(Duration::from_secs(10), "kafka_broker_up 0", || {
        let t = get(port, "/metrics").body;
        (sample(&t, up) == Some(0.0)).then_some(t)
    });
    assert_eq!(sample(&text, lag), Some(3.0), "last snapshot still served");
    let age = sample(&text, "medic_agent_snapshot_age_seconds{cluster=\"e2e\"}").unwrap();
    assert!(age > 0.2, "snapshot age {age}");
    assert!(
        sample(
            &text,
            "medic_agent_collection_errors_total{cluster=\"e2e\",stage=\"metadata\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
            || sample(
                &text,
                "medic_agent_collection_errors_total{stage=\"metadata\",cluster=\"e2e\"}"
            )
            .unwrap_or(0.0)
                >= 1.0,
        "{text}"
    );
    assert!(agent.running(), "the agent must survive a broker outage");

    // Restart it (empty: tansu keeps data in memory) and recreate the state: the agent
    // recovers by itself.
    tansu.restart();
    create_topic(&b, "orders", 2);
    produce(&producer(&b), "orders", 0, 7);
    commit_offsets(&b, "billing", &[("orders", 0, 1)]);
    wait_until(
        Duration::from_secs(20),
        "recovery after the broker restart",
        || {
            let t = get(port, "/metrics").body;
            (sample(&t, lag) == Some(6.0) && sample(&t, up) == Some(1.0)).then_some(())
        },
    );
    assert_eq!(get(port, "/healthz").status, 200);

    // A clean stop on SIGTERM.
    assert_eq!(
        agent.terminate(Duration::from_secs(5)),
        Some(0),
        "{}",
        agent.describe()
    );
}

#[test]
fn bad_configuration_exits_2_and_names_every_problem() {
    let out = Command::new(env!("CARGO_BIN_EXE_medic-agent"))
        .args(["--interval", "1ms", "--broker-id=-1"])
        .env("MEDIC_AGENT_CLUSTER", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "default bootstrap_servers: required",
        "flag --interval = 1ms: must be at least 100ms",
        "flag --broker-id = -1: must be 0 or more",
        "env MEDIC_AGENT_CLUSTER: must not be empty",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_medic-agent"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--process-cmdline-pattern") && help.contains("MEDIC_AGENT_"),
        "{help}"
    );
}
