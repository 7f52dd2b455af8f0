//! Errors at the Kafka boundary.

use std::time::Duration;

/// Everything that can go wrong talking to a Kafka broker.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {timeout:?} waiting for {api} from {addr}")]
    Timeout {
        api: &'static str,
        addr: String,
        timeout: Duration,
    },
    #[error("i/o error talking to {addr}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("cannot encode the {api} request: {message}")]
    Encode { api: &'static str, message: String },
    #[error("malformed {api} response from {addr}: {message}")]
    Decode {
        api: &'static str,
        addr: String,
        message: String,
    },
    #[error("{addr} does not support {api} in any version this client speaks ({ours})")]
    Unsupported {
        api: &'static str,
        addr: String,
        ours: String,
    },
    #[error("SASL authentication with {addr} failed: {message}")]
    Sasl { addr: String, message: String },
    #[error("{api} to {addr} failed: Kafka error {code} ({name})")]
    Broker {
        api: &'static str,
        addr: String,
        code: i16,
        name: String,
    },
    #[error("no bootstrap server answered ({tried}); last error: {last}")]
    NoBroker { tried: String, last: String },
    #[error("broker {0} is not in the cluster metadata")]
    UnknownBroker(i32),
}

impl KafkaError {
    /// Builds a [`KafkaError::Broker`] from a response error code.
    pub(crate) fn broker(api: &'static str, addr: &str, code: i16) -> Self {
        use kafka_protocol::error::ParseResponseErrorCode;
        let name = code
            .err()
            .map(|e| format!("{e:?}"))
            .unwrap_or_else(|| "NONE".to_string());
        KafkaError::Broker {
            api,
            addr: addr.to_string(),
            code,
            name,
        }
    }
}

/// Human name of a Kafka error code, for logs and per-partition errors.
pub fn code_name(code: i16) -> String {
    use kafka_protocol::error::ParseResponseErrorCode;
    code.err()
        .map(|e| format!("{e:?}"))
        .unwrap_or_else(|| "NONE".to_string())
}
