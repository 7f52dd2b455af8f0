//! Request observation: the client reports every request it sends, and whoever embeds it
//! decides where that goes (the agent's global `metrics` counters, the actuator's own registry).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

/// How a request ended at the transport level. A response that carries a Kafka error code
/// is still `Ok`: the broker answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response was read and decoded.
    Ok,
    /// I/O, encoding or decoding failed.
    Error,
    /// No response within the request timeout.
    Timeout,
}

impl Outcome {
    /// Every outcome, to pre-register label values.
    pub const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Error, Outcome::Timeout];

    /// The label value: `ok`, `error` or `timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
        }
    }
}

/// One request sent to a broker.
#[derive(Debug, Clone, Copy)]
pub struct RequestEvent<'a> {
    /// Which API.
    pub api: ApiKey,
    /// The broker's `host:port`.
    pub broker: &'a str,
    /// How it ended.
    pub outcome: Outcome,
    /// From writing the request to reading the response (or giving up).
    pub duration: Duration,
}

/// Called once per request, on the request path: keep it cheap.
#[derive(Clone)]
pub struct RequestObserver(Arc<dyn Fn(&RequestEvent<'_>) + Send + Sync>);

impl RequestObserver {
    /// Wraps a callback.
    pub fn new(f: impl Fn(&RequestEvent<'_>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Reports one request.
    pub fn observe(&self, event: &RequestEvent<'_>) {
        (self.0)(event)
    }
}

impl std::fmt::Debug for RequestObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestObserver")
    }
}

/// The snake_case name of an API (`list_offsets`, `alter_partition_reassignments`), used in
/// errors and as the `api` label of request counters. Derived from kafka-protocol's [`ApiKey`],
/// so every API has one.
pub fn api_name(key: ApiKey) -> &'static str {
    names().get(&(key as i16)).map_or("other", String::as_str)
}

/// [`api_name`] of a raw key; `other` for a key kafka-protocol does not know.
pub fn api_name_of(key: i16) -> &'static str {
    names().get(&key).map_or("other", String::as_str)
}

fn names() -> &'static HashMap<i16, String> {
    static NAMES: OnceLock<HashMap<i16, String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        ApiKey::iter()
            .map(|k| (k as i16, snake_case(&format!("{k:?}"))))
            .collect()
    })
}

fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names_cover_the_agent_and_the_actuator_keys() {
        assert_eq!(api_name(ApiKey::ListOffsets), "list_offsets");
        assert_eq!(api_name(ApiKey::OffsetFetch), "offset_fetch");
        assert_eq!(api_name(ApiKey::ApiVersions), "api_versions");
        assert_eq!(api_name(ApiKey::SaslHandshake), "sasl_handshake");
        assert_eq!(
            api_name(ApiKey::AlterPartitionReassignments),
            "alter_partition_reassignments"
        );
        assert_eq!(
            api_name(ApiKey::IncrementalAlterConfigs),
            "incremental_alter_configs"
        );
        assert_eq!(api_name(ApiKey::DescribeLogDirs), "describe_log_dirs");
        assert_eq!(api_name_of(ApiKey::ElectLeaders as i16), "elect_leaders");
        assert_eq!(api_name_of(999), "other");
    }
}
