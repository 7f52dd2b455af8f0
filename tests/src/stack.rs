//! The whole kafka-medic loop on 127.0.0.1, every server real except the Kubernetes API:
//!
//! ```text
//! tansu <- medic-agent (sidecar of broker 111) <- Prometheus (rules/kafka-medic.rules.yml as is)
//!                                                    |  also scrapes medic-actuator's override gauges
//!                                                    v
//!                 fake kube API <- medic-actuator <- Alertmanager (rules/alertmanager.example.yml)
//! ```
//!
//! Ports are picked at run time; everything stops when the [`Stack`] is dropped, and a test
//! that panics prints every server's command line and log, the fake API's requests and the
//! audit log.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::alertmanager::{config_from_example, example, Alertmanager, RouteWaits};
use crate::fake_kube::FakeKube;
use crate::http::{request, with_query};
use crate::kafka::create_topic;
use crate::process::{free_port, repo_root, wait_for_port, workspace_bin, Server, Tansu};
use crate::prometheus::{PromConfig, Prometheus, ScrapeJob};

/// The bearer token Alertmanager and the API calls use.
pub const TOKEN: &str = "e2e-token-5f0c1d2e3a4b";

/// One consumer-scaling policy (actuator/README.md, "Policies").
#[derive(Debug, Clone)]
pub struct PolicySpec {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub lag_per_replica: u64,
    pub scale_up_cooldown: String,
    pub scale_down_cooldown: String,
    pub max_step: u32,
    /// Exported as `medic_consumergroup_lag_threshold` for the rules.
    pub lag_threshold: u64,
    /// Exported as `medic_consumergroup_lag_sustain_seconds` for the rules.
    pub sustain: String,
}

/// Where the agent reads the broker's CPU and memory.
#[derive(Debug, Clone)]
pub enum BrokerProcess {
    /// The tansu broker's own pid, through a pid file.
    Tansu,
    /// Extra agent flags chosen by the test (e.g. a pid file or cgroup of a stand-in process).
    Args(Vec<String>),
}

/// What to start.
#[derive(Debug, Clone)]
pub struct StackSpec {
    pub cluster: String,
    pub group: String,
    pub topic: String,
    pub partitions: i32,
    pub namespace: String,
    pub deployment: String,
    pub initial_replicas: u32,
    pub policy: PolicySpec,
    /// Entries of the policy file's `brokers:` list (broker remediation), YAML lines starting
    /// with `  - `; empty for none.
    pub broker_policies: String,
    /// Appended to the actuator's configuration file (keys not set here).
    pub actuator_extra: String,
    /// Extra keys of the policy entry (YAML lines indented by four spaces, e.g.
    /// `    scaler: keda\n`); empty for none.
    pub policy_extra: String,
    pub dry_run: bool,
    pub reevaluate_interval: String,
    pub waits: RouteWaits,
    pub broker_process: BrokerProcess,
    /// Agent collection, Prometheus scrape and rule evaluation interval.
    pub interval: String,
    /// The binaries; default: [`workspace_bin`] (next to the running executable).
    pub agent_bin: Option<PathBuf>,
    pub actuator_bin: Option<PathBuf>,
}

impl Default for StackSpec {
    fn default() -> Self {
        StackSpec {
            cluster: "e2e".into(),
            group: "billing".into(),
            topic: "invoices".into(),
            partitions: 2,
            namespace: "shop".into(),
            deployment: "billing-consumer".into(),
            initial_replicas: 1,
            policy: PolicySpec {
                min_replicas: 1,
                max_replicas: 8,
                lag_per_replica: 100,
                scale_up_cooldown: "60s".into(),
                scale_down_cooldown: "15s".into(),
                max_step: 4,
                lag_threshold: 150,
                sustain: "8s".into(),
            },
            broker_policies: String::new(),
            actuator_extra: String::new(),
            policy_extra: String::new(),
            dry_run: false,
            reevaluate_interval: "1s".into(),
            waits: RouteWaits::default(),
            broker_process: BrokerProcess::Tansu,
            interval: "1s".into(),
            agent_bin: None,
            actuator_bin: None,
        }
    }
}

/// The running loop.
pub struct Stack {
    pub spec: StackSpec,
    pub kube: FakeKube,
    pub actuator: Server,
    pub actuator_port: u16,
    pub alertmanager: Alertmanager,
    pub tansu: Tansu,
    pub agent: Server,
    pub agent_port: u16,
    pub prometheus: Prometheus,
    pub dir: tempfile::TempDir,
}

impl StackSpec {
    /// The policy file's text.
    pub fn policies_yaml(&self) -> String {
        let p = &self.policy;
        let brokers = if self.broker_policies.is_empty() {
            String::new()
        } else {
            format!("brokers:\n{}", self.broker_policies)
        };
        format!(
            "policies:\n  - cluster: {}\n    consumergroup: {}\n    deployment: {{namespace: {}, name: {}}}\n    min_replicas: {}\n    max_replicas: {}\n    lag_per_replica: {}\n    scale_up_cooldown: {}\n    scale_down_cooldown: {}\n    max_step: {}\n    lag_threshold: {}\n    sustain: {}\n{}{brokers}",
            self.cluster,
            self.group,
            self.namespace,
            self.deployment,
            p.min_replicas,
            p.max_replicas,
            p.lag_per_replica,
            p.scale_up_cooldown,
            p.scale_down_cooldown,
            p.max_step,
            p.lag_threshold,
            p.sustain,
            self.policy_extra
        )
    }

    /// `namespace/name`.
    pub fn target(&self) -> String {
        format!("{}/{}", self.namespace, self.deployment)
    }
}

impl Stack {
    /// Starts everything and waits until each server answers.
    pub fn start(spec: StackSpec) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let kube = FakeKube::start();
        kube.add(&spec.namespace, &spec.deployment, spec.initial_replicas);

        let (agent_port, actuator_port, prom_port, am_port) =
            (free_port(), free_port(), free_port(), free_port());
        let token = dir.path().join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
        let policies = dir.path().join("policies.yaml");
        std::fs::write(&policies, spec.policies_yaml()).expect("policies");
        let config = dir.path().join("actuator.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{actuator_port}\npolicies_file: {}\ninstance: e2e-actuator\ndry_run: {}\nauth: {{bearer_token_file: {}}}\naudit: {{path: {}}}\nkubernetes: {{api_url: \"{}\", retry_backoff: 20ms}}\nprometheus: {{url: \"http://127.0.0.1:{prom_port}\"}}\nreevaluate_interval: {}\nlog_format: json\n{}",
                policies.display(),
                spec.dry_run,
                token.display(),
                dir.path().join("audit/audit.log").display(),
                kube.url(),
                spec.reevaluate_interval,
                spec.actuator_extra,
            ),
        )
        .expect("actuator config");
        let actuator = Server::start(
            "medic-actuator",
            &spec
                .actuator_bin
                .clone()
                .unwrap_or_else(|| workspace_bin("medic-actuator")),
            &["--config".into(), config.display().to_string()],
        );
        assert!(
            wait_for_port(actuator_port, Duration::from_secs(20)),
            "medic-actuator did not listen\n{}",
            actuator.describe()
        );

        let am_config = config_from_example(
            &example(),
            &format!("http://127.0.0.1:{actuator_port}/api/v1/alerts"),
            &token,
            &spec.waits,
        );
        let alertmanager = Alertmanager::start(&am_config, am_port);

        let tansu = Tansu::start();
        create_topic(&tansu.bootstrap(), &spec.topic, spec.partitions);
        let mut agent_args: Vec<String> = [
            "--bootstrap-servers",
            &tansu.bootstrap(),
            "--listen",
            &format!("127.0.0.1:{agent_port}"),
            "--cluster",
            &spec.cluster,
            "--interval",
            &spec.interval,
            "--broker-id",
            &Tansu::NODE_ID.to_string(),
            "--log-dirs",
            &dir.path().display().to_string(),
            "--log-format",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match &spec.broker_process {
            BrokerProcess::Tansu => {
                let pid_file = dir.path().join("broker.pid");
                std::fs::write(
                    &pid_file,
                    tansu.server.pid().expect("tansu pid").to_string(),
                )
                .expect("pid file");
                agent_args.extend([
                    "--process-source".into(),
                    "pid_file".into(),
                    "--process-pid-file".into(),
                    pid_file.display().to_string(),
                ]);
            }
            BrokerProcess::Args(a) => agent_args.extend(a.iter().cloned()),
        }
        let agent_bin = spec
            .agent_bin
            .clone()
            .unwrap_or_else(|| workspace_bin("medic-agent"));
        let agent = Server::start("medic-agent", &agent_bin, &agent_args);
        assert!(
            wait_for_port(agent_port, Duration::from_secs(20)),
            "medic-agent did not listen\n{}",
            agent.describe()
        );

        let prom_config = PromConfig {
            interval: spec.interval.clone(),
            rule_files: vec![rules_file()],
            alertmanager_port: Some(am_port),
            jobs: vec![
                ScrapeJob {
                    job: "medic-agent".into(),
                    port: agent_port,
                    labels: vec![
                        ("cluster".into(), spec.cluster.clone()),
                        ("broker".into(), Tansu::NODE_ID.to_string()),
                    ],
                    honor_labels: true,
                },
                ScrapeJob {
                    job: "medic-actuator".into(),
                    port: actuator_port,
                    labels: vec![],
                    honor_labels: true,
                },
            ],
        };
        let prometheus = Prometheus::start(&prom_config, prom_port);
        Stack {
            spec,
            kube,
            actuator,
            actuator_port,
            alertmanager,
            tansu,
            agent,
            agent_port,
            prometheus,
            dir,
        }
    }

    /// `GET /api/v1/audit` with the token; the records, oldest first.
    pub fn audit(&self, params: &[(&str, &str)]) -> Vec<Value> {
        self.try_audit(params).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Stack::audit`], with an error instead of a panic.
    pub fn try_audit(&self, params: &[(&str, &str)]) -> Result<Vec<Value>, String> {
        let mut p = params.to_vec();
        if !p.iter().any(|(k, _)| *k == "limit") {
            p.push(("limit", "1000"));
        }
        let url = with_query("/api/v1/audit", &p);
        let auth = format!("Bearer {TOKEN}");
        let r = request(
            self.actuator_port,
            "GET",
            &url,
            &[("Authorization", &auth)],
            b"",
        )
        .map_err(|e| format!("GET {url}: {e}"))?;
        if r.status != 200 {
            return Err(format!("GET {url}: {} {}", r.status, r.body));
        }
        let v: Value = serde_json::from_str(&r.body).map_err(|e| format!("GET {url}: {e}"))?;
        Ok(v["records"].as_array().cloned().unwrap_or_default())
    }

    /// The audit records about this stack's Deployment.
    pub fn target_audit(&self) -> Vec<Value> {
        self.audit(&[("target", &self.spec.target())])
    }

    /// `GET /api/v1/state` with the token.
    pub fn actuator_state(&self) -> Value {
        let auth = format!("Bearer {TOKEN}");
        let r = request(
            self.actuator_port,
            "GET",
            "/api/v1/state",
            &[("Authorization", &auth)],
            b"",
        )
        .unwrap_or_else(|e| panic!("GET /api/v1/state: {e}"));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    /// Replicas of the stack's Deployment in the fake API.
    pub fn replicas(&self) -> u32 {
        self.kube
            .replicas(&self.spec.namespace, &self.spec.deployment)
    }

    /// Successful scale PATCHes of the stack's Deployment.
    pub fn scale_patches(&self) -> Vec<crate::fake_kube::KubeRequest> {
        self.kube
            .scale_patches(&self.spec.namespace, &self.spec.deployment)
    }

    /// Label matchers of the stack's group, for PromQL.
    pub fn group_selector(&self) -> String {
        format!(
            "cluster=\"{}\",consumergroup=\"{}\"",
            self.spec.cluster, self.spec.group
        )
    }

    /// The audit log file as the actuator wrote it.
    pub fn audit_file(&self) -> PathBuf {
        self.dir.path().join("audit/audit.log")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- audit log ---\n{}\n--- end of audit log ---",
                std::fs::read_to_string(self.audit_file()).unwrap_or_default()
            );
        }
    }
}

/// `rules/kafka-medic.rules.yml`, loaded as it is.
pub fn rules_file() -> PathBuf {
    repo_root().join("rules/kafka-medic.rules.yml")
}
