//! A real Alertmanager (Debian's `prometheus-alertmanager`) configured from
//! `rules/alertmanager.example.yml`, with only the webhook URL, the token file and the actuator
//! route's wait times rewritten.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use serde_yaml::Value as Yaml;

use crate::http::request;
use crate::process::{repo_root, tool, Server};

/// The receiver of the example that points at the actuator.
pub const ACTUATOR_RECEIVER: &str = "kafka-medic-actuator";

/// Wait times of the actuator route (Alertmanager duration strings such as `1s`).
#[derive(Debug, Clone)]
pub struct RouteWaits {
    pub group_wait: String,
    pub group_interval: String,
    pub repeat_interval: String,
}

impl Default for RouteWaits {
    /// Test timings: the first notification 1s after an alert arrives, changes (resolutions)
    /// within 1s, repeats every minute.
    fn default() -> Self {
        RouteWaits {
            group_wait: "1s".into(),
            group_interval: "1s".into(),
            repeat_interval: "1m".into(),
        }
    }
}

fn key(k: &str) -> Yaml {
    Yaml::String(k.to_string())
}

/// The example configuration with the actuator receiver's URL and token file, and the actuator
/// route's wait times replaced. Routes, grouping, matchers and the inhibit rule stay as they are.
/// Panics if the example no longer has the receiver or the route.
pub fn config_from_example(
    example: &str,
    webhook_url: &str,
    token_file: &Path,
    waits: &RouteWaits,
) -> String {
    let mut doc: Yaml = serde_yaml::from_str(example).expect("alertmanager example parses");
    let receivers = doc
        .get_mut("receivers")
        .and_then(Yaml::as_sequence_mut)
        .expect("example has receivers");
    let receiver = receivers
        .iter_mut()
        .find(|r| r.get("name").and_then(Yaml::as_str) == Some(ACTUATOR_RECEIVER))
        .expect("example has the kafka-medic-actuator receiver");
    let webhook = receiver
        .get_mut("webhook_configs")
        .and_then(Yaml::as_sequence_mut)
        .and_then(|w| w.first_mut())
        .and_then(Yaml::as_mapping_mut)
        .expect("the actuator receiver has a webhook config");
    webhook.insert(key("url"), key(webhook_url));
    let auth = webhook
        .get_mut("http_config")
        .and_then(|h| h.get_mut("authorization"))
        .and_then(Yaml::as_mapping_mut)
        .expect("the webhook has http_config.authorization");
    assert!(
        auth.contains_key("credentials_file"),
        "the example's webhook no longer reads the token from a file"
    );
    auth.insert(
        key("credentials_file"),
        key(&token_file.display().to_string()),
    );
    let route = doc
        .get_mut("route")
        .and_then(|r| r.get_mut("routes"))
        .and_then(Yaml::as_sequence_mut)
        .and_then(|routes| {
            routes
                .iter_mut()
                .find(|r| r.get("receiver").and_then(Yaml::as_str) == Some(ACTUATOR_RECEIVER))
        })
        .and_then(Yaml::as_mapping_mut)
        .expect("example has a route to the actuator");
    for (k, v) in [
        ("group_wait", &waits.group_wait),
        ("group_interval", &waits.group_interval),
        ("repeat_interval", &waits.repeat_interval),
    ] {
        assert!(route.contains_key(k), "the actuator route has no {k}");
        route.insert(key(k), key(v));
    }
    serde_yaml::to_string(&doc).expect("serialize alertmanager config")
}

/// The example file's text.
pub fn example() -> String {
    let p = repo_root().join("rules/alertmanager.example.yml");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// A running Alertmanager.
pub struct Alertmanager {
    pub port: u16,
    pub server: Server,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Writes `config`, checks it with `amtool check-config`, starts Alertmanager on `port`
    /// (no cluster listener) and waits until it is ready.
    pub fn start(config: &str, port: u16) -> Alertmanager {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("alertmanager.yml");
        std::fs::write(&file, config).expect("write alertmanager.yml");
        let out = std::process::Command::new(tool("amtool"))
            .arg("check-config")
            .arg(&file)
            .output()
            .expect("run amtool");
        assert!(
            out.status.success(),
            "amtool check-config failed:\n{}{}\n{config}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let server = Server::start(
            "alertmanager",
            &tool("prometheus-alertmanager"),
            &[
                format!("--config.file={}", file.display()),
                format!("--storage.path={}", dir.path().join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=".into(),
                "--log.level=debug".into(),
            ],
        );
        let am = Alertmanager {
            port,
            server,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if request(port, "GET", "/-/ready", &[], b"").is_ok_and(|r| r.status == 200) {
                return am;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("Alertmanager not ready after 20s\n{}", am.server.describe());
    }

    /// `GET /api/v2/alerts`: every alert it holds (active, silenced, inhibited).
    pub fn alerts(&self) -> Vec<Value> {
        let r = request(self.port, "GET", "/api/v2/alerts", &[], b"")
            .unwrap_or_else(|e| panic!("GET /api/v2/alerts: {e}"));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json().as_array().cloned().unwrap_or_default()
    }

    /// `POST /api/v2/alerts`, as Prometheus does.
    pub fn post_alerts(&self, alerts: &Value) {
        let body = serde_json::to_vec(alerts).expect("alerts JSON");
        let r = request(
            self.port,
            "POST",
            "/api/v2/alerts",
            &[("Content-Type", "application/json")],
            &body,
        )
        .unwrap_or_else(|e| panic!("POST /api/v2/alerts: {e}"));
        assert_eq!(r.status, 200, "POST /api/v2/alerts: {}", r.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transform_changes_only_url_token_and_waits() {
        let ex = example();
        let out = config_from_example(
            &ex,
            "http://127.0.0.1:1/api/v1/alerts",
            Path::new("/tmp/tok"),
            &RouteWaits::default(),
        );
        let a: Yaml = serde_yaml::from_str(&ex).unwrap();
        let b: Yaml = serde_yaml::from_str(&out).unwrap();
        assert_eq!(a["inhibit_rules"], b["inhibit_rules"]);
        assert_eq!(a["route"]["group_by"], b["route"]["group_by"]);
        assert_eq!(a["route"]["routes"][1], b["route"]["routes"][1]);
        assert_eq!(a["route"]["routes"][2], b["route"]["routes"][2]);
        let r = &b["route"]["routes"][0];
        assert_eq!(r["matchers"], a["route"]["routes"][0]["matchers"]);
        assert_eq!(r["continue"], Yaml::Bool(true));
        assert_eq!(r["group_wait"].as_str(), Some("1s"));
        assert_eq!(r["repeat_interval"].as_str(), Some("1m"));
        let receiver = b["receivers"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|r| r["name"].as_str() == Some(ACTUATOR_RECEIVER))
            .unwrap();
        let w = &receiver["webhook_configs"][0];
        assert_eq!(w["url"].as_str(), Some("http://127.0.0.1:1/api/v1/alerts"));
        assert_eq!(w["send_resolved"], Yaml::Bool(true));
        assert_eq!(
            w["http_config"]["authorization"]["credentials_file"].as_str(),
            Some("/tmp/tok")
        );
        assert_eq!(
            w["http_config"]["authorization"]["type"].as_str(),
            Some("Bearer")
        );
    }
}
