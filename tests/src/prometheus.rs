//! A real Prometheus (Debian's `prometheus`) on 127.0.0.1, and a few calls of its HTTP API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::http::{request, with_query};
use crate::process::{free_port, tool, Server};

/// One static scrape job.
#[derive(Debug, Clone)]
pub struct ScrapeJob {
    /// `job_name`.
    pub job: String,
    /// `127.0.0.1:<port>`.
    pub port: u16,
    /// Target labels (`cluster`, `broker` for sidecars).
    pub labels: Vec<(String, String)>,
    /// Keep the labels the target exports (the agent's `cluster`), as the Helm chart's
    /// PodMonitor does.
    pub honor_labels: bool,
}

/// What the configuration file says.
#[derive(Debug, Clone)]
pub struct PromConfig {
    /// Scrape and rule evaluation interval, e.g. `1s`.
    pub interval: String,
    /// Rule files, loaded as they are.
    pub rule_files: Vec<PathBuf>,
    /// Alertmanager to send alerts to.
    pub alertmanager_port: Option<u16>,
    /// Scrape jobs.
    pub jobs: Vec<ScrapeJob>,
}

impl PromConfig {
    /// The `prometheus.yml` text.
    pub fn render(&self) -> String {
        let mut s = format!(
            "global:\n  scrape_interval: {i}\n  scrape_timeout: {i}\n  evaluation_interval: {i}\n",
            i = self.interval
        );
        if !self.rule_files.is_empty() {
            s.push_str("rule_files:\n");
            for f in &self.rule_files {
                s.push_str(&format!("  - {}\n", f.display()));
            }
        }
        if let Some(p) = self.alertmanager_port {
            s.push_str(&format!(
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{p}']\n"
            ));
        }
        s.push_str("scrape_configs:\n");
        for j in &self.jobs {
            s.push_str(&format!(
                "  - job_name: {}\n    honor_labels: {}\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
                j.job, j.honor_labels, j.port
            ));
            if !j.labels.is_empty() {
                s.push_str("        labels:\n");
                for (k, v) in &j.labels {
                    s.push_str(&format!("          {k}: '{v}'\n"));
                }
            }
        }
        s
    }
}

/// A running Prometheus.
pub struct Prometheus {
    pub port: u16,
    pub server: Server,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Writes the configuration, checks it with `promtool check config`, starts Prometheus on
    /// `port` and waits until it is ready.
    pub fn start(config: &PromConfig, port: u16) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config.render()).expect("write prometheus.yml");
        check_config(&file);
        let server = Server::start(
            "prometheus",
            &tool("prometheus"),
            &[
                format!("--config.file={}", file.display()),
                format!("--storage.tsdb.path={}", dir.path().join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--log.level=info".into(),
            ],
        );
        let p = Prometheus { port, server, dir };
        p.wait_ready();
        p
    }

    /// A free port for a Prometheus that starts later.
    pub fn pick_port() -> u16 {
        free_port()
    }

    fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if request(self.port, "GET", "/-/ready", &[], b"").is_ok_and(|r| r.status == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("Prometheus not ready after 20s\n{}", self.server.describe());
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn try_api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = with_query(path, params);
        let r = request(self.port, "GET", &url, &[], b"")
            .map_err(|e| format!("GET {url} from Prometheus: {e}"))?;
        let v: Value = serde_json::from_str(&r.body)
            .map_err(|e| format!("Prometheus {url} answered {} ({e}): {}", r.status, r.body))?;
        if v["status"] != "success" {
            return Err(format!(
                "Prometheus {url} answered {}: {}",
                r.status, r.body
            ));
        }
        Ok(v["data"].clone())
    }

    fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        self.try_api(path, params).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Prometheus::value`], but `None` instead of a panic when Prometheus is not there.
    pub fn try_value(&self, q: &str) -> Option<f64> {
        let r = self.try_api("/api/v1/query", &[("query", q)]).ok()?;
        match r["result"].as_array().map(Vec::as_slice) {
            Some([one]) => parse_value(&one["value"]),
            _ => None,
        }
    }

    /// An instant query now; the `result` array.
    pub fn query(&self, q: &str) -> Vec<Value> {
        self.api("/api/v1/query", &[("query", q)])["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// An instant query at Unix time `t`.
    pub fn query_at(&self, q: &str, t: f64) -> Vec<Value> {
        let t = format!("{t:.3}");
        self.api("/api/v1/query", &[("query", q), ("time", &t)])["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The single value of an instant query now, if it returned exactly one series.
    pub fn value(&self, q: &str) -> Option<f64> {
        let r = self.query(q);
        match r.as_slice() {
            [one] => parse_value(&one["value"]),
            _ => None,
        }
    }

    /// The raw samples of every series matching `selector` over the last `range` (e.g. `5m`):
    /// (labels, [(timestamp, value)]), each series oldest first.
    pub fn raw(&self, selector: &str, range: &str) -> Vec<(Value, Vec<(f64, f64)>)> {
        self.query(&format!("{selector}[{range}]"))
            .into_iter()
            .map(|s| {
                let values = s["values"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| Some((p[0].as_f64()?, parse_value(p)?)))
                            .collect()
                    })
                    .unwrap_or_default();
                (s["metric"].clone(), values)
            })
            .collect()
    }

    /// `/api/v1/alerts`: the alerts the rule manager holds now (pending and firing).
    pub fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts", &[])["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `/api/v1/targets`: the active targets.
    pub fn targets(&self) -> Vec<Value> {
        self.api("/api/v1/targets", &[])["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// The value of a `[ts, "v"]` pair.
pub fn parse_value(pair: &Value) -> Option<f64> {
    pair.get(1)?.as_str()?.parse().ok()
}

/// `promtool check config` must accept the file.
fn check_config(file: &Path) {
    let out = std::process::Command::new(tool("promtool"))
        .args(["check", "config"])
        .arg(file)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check config {} failed:\n{}\n{}\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}
