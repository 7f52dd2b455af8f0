//! Start-up code shared by the integration tests: a real medic-agent process on a free port
//! (`AgentProcess`), and an in-process `Agent` for tests that drive collections themselves.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use medic_agent::config;
use medic_agent::run::Agent;
use medic_e2e::{create_topic, free_port, produce, wait_for_port, Producer, Server};

/// How long a starting agent may take to listen before the test fails with its log.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A medic-agent process to start: `--bootstrap-servers`, `--listen 127.0.0.1:<free port>`,
/// `--cluster`, `--interval`, `--request-timeout` (only when set), `--log-format text`, then
/// the test's own flags. With environment variables it runs through env(1), as a pod would get
/// them.
pub struct AgentProcess {
    name: String,
    bootstrap: String,
    cluster: String,
    interval: String,
    request_timeout: Option<String>,
    env: Vec<String>,
    extra: Vec<String>,
}

impl AgentProcess {
    /// Cluster `e2e`, a 300ms interval and the agent's default request timeout.
    pub fn new(bootstrap: &str) -> AgentProcess {
        AgentProcess {
            name: "medic-agent".to_string(),
            bootstrap: bootstrap.to_string(),
            cluster: "e2e".to_string(),
            interval: "300ms".to_string(),
            request_timeout: None,
            env: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// The process name in the log and in failure messages.
    pub fn name(mut self, name: &str) -> AgentProcess {
        self.name = name.to_string();
        self
    }

    pub fn cluster(mut self, cluster: &str) -> AgentProcess {
        self.cluster = cluster.to_string();
        self
    }

    pub fn interval(mut self, interval: &str) -> AgentProcess {
        self.interval = interval.to_string();
        self
    }

    pub fn request_timeout(mut self, timeout: &str) -> AgentProcess {
        self.request_timeout = Some(timeout.to_string());
        self
    }

    /// More arguments after the common ones.
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> AgentProcess {
        self.extra
            .extend(args.iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// An environment variable, passed through env(1).
    pub fn env(mut self, key: &str, value: &str) -> AgentProcess {
        self.env.push(format!("{key}={value}"));
        self
    }

    /// Starts the agent and waits until it listens; fails the test with its log if it never
    /// does. Returns the process (stopped on drop) and its HTTP port.
    pub fn start(self) -> (Server, u16) {
        let port = free_port();
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_medic-agent"));
        let mut args: Vec<String> = [
            "--bootstrap-servers",
            &self.bootstrap,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--cluster",
            &self.cluster,
            "--interval",
            &self.interval,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(t) = &self.request_timeout {
            args.extend(["--request-timeout".to_string(), t.clone()]);
        }
        args.extend(["--log-format".to_string(), "text".to_string()]);
        args.extend(self.extra);
        let agent = if self.env.is_empty() {
            Server::start(&self.name, &binary, &args)
        } else {
            let mut env_args = self.env;
            env_args.push(binary.display().to_string());
            env_args.extend(args);
            Server::start(&self.name, &PathBuf::from("/usr/bin/env"), &env_args)
        };
        assert!(
            wait_for_port(port, LISTEN_TIMEOUT),
            "{} never listened on {port}: {}",
            self.name,
            agent.describe()
        );
        (agent, port)
    }
}

/// An in-process agent on `bootstrap` (cluster `t`, 3s request timeout) with `extra` flags.
pub fn agent(bootstrap: &str, extra: &[&str]) -> Agent {
    let mut args = vec![
        "medic-agent",
        "--bootstrap-servers",
        bootstrap,
        "--cluster",
        "t",
        "--request-timeout",
        "3s",
    ];
    args.extend_from_slice(extra);
    let cfg = config::load(args, &HashMap::new())
        .unwrap_or_else(|e| panic!("agent configuration {extra:?}: {e}"));
    Agent::new(&cfg)
}

/// Creates `topic` with one partition per entry of `records`, and produces that many records
/// into each partition.
pub fn topic_with_records(bootstrap: &str, p: &Producer, topic: &str, records: &[usize]) {
    let partitions = i32::try_from(records.len()).expect("partition count");
    create_topic(bootstrap, topic, partitions);
    for (partition, count) in (0..partitions).zip(records) {
        produce(p, topic, partition, *count);
    }
}
