//! The real medic-actuator binary as a child process, with its log captured.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::*;

/// A running medic-actuator with its captured log.
pub struct Running {
    pub child: Child,
    pub addr: String,
    pub log: Arc<Mutex<Vec<String>>>,
    pub cmd: String,
}

impl Running {
    pub fn start(config: &Path) -> Self {
        Self::start_with(&[], &[], config)
    }

    /// As `start`, run as `prefix... medic-actuator ...` (e.g. under `prlimit`) with extra
    /// environment variables; `KUBERNETES_SERVICE_*` are always removed, so a test never picks up
    /// the in-cluster config of a CI pod it may run in.
    pub fn start_with(prefix: &[&str], env: &[(&str, &Path)], config: &Path) -> Self {
        let bin = env!("CARGO_BIN_EXE_medic-actuator");
        let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        argv.extend([
            bin.to_string(),
            "--config".into(),
            config.display().to_string(),
            "--log-format".into(),
            "json".into(),
        ]);
        let vars: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("{k}={} ", v.display()))
            .collect();
        let cmd = format!("{}{}", vars.concat(), argv.join(" "));
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .envs(env.iter().copied())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("medic-actuator listening") {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        let _ = tx.send(v["fields"]["addr"].as_str().unwrap_or("").to_string());
                    }
                }
                l.lock().unwrap().push(line);
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd} did not start listening; log:\n{}",
                log.lock().unwrap().join("\n")
            );
        };
        Self {
            child,
            addr,
            log,
            cmd,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn dump(&self) -> String {
        format!(
            "command: {}\nlog:\n{}",
            self.cmd,
            self.log.lock().unwrap().join("\n")
        )
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn write_config(files: &Files, kube_url: &str, extra: &str) -> std::path::PathBuf {
    let p = files.path("actuator.yaml");
    std::fs::write(
        &p,
        format!(
            "listen: 127.0.0.1:0\npolicies_file: {}\ninstance: bin-test\nauth: {{bearer_token_file: {}}}\naudit: {{path: {}, max_bytes: 65536, max_files: 100}}\nkubernetes: {{api_url: \"{kube_url}\", retry_backoff: 10ms}}\n{extra}",
            files.path("policies.yaml").display(),
            files.path("token").display(),
            files.audit_path().display(),
        ),
    )
    .unwrap();
    p
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub async fn post(
    c: &reqwest::Client,
    run: &Running,
    body: Vec<u8>,
) -> Result<(u16, Value), reqwest::Error> {
    let r = c
        .post(run.url("/api/v1/alerts"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let s = r.status().as_u16();
    Ok((s, r.json().await.unwrap_or(Value::Null)))
}
