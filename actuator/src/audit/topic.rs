//! The optional Kafka topic sink of the audit log (`audit.topic.*`), in the spirit of
//! DoctorKafka's `_doctor_actions_log`: every durable audit line, from every replica, is also
//! produced to one topic, keyed by what it is about.
//!
//! The file stays the source of truth and what the webhook's answer waits for. The writer thread
//! hands each line to the producer after the fsync and after the callers were answered
//! ([`super::CommitSink`]); `send` only copies it into librdkafka's queue, which is the bounded
//! queue here (`queue.buffering.max.messages` = `audit.topic.queue_capacity`): a full queue
//! drops the record from the topic and counts it. librdkafka's idempotent producer
//! (`enable.idempotence`, `acks=all`) retries until `audit.topic.delivery_timeout`, keeps the
//! order of one partition across retries, and the key picks the partition (murmur2, as Java
//! clients do), so the records of one target stay in file order.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};

use super::{AuditRecord, CommitSink};
use crate::config::AuditTopicConfig;
use crate::telemetry::{self, Telemetry};

/// Most bytes waiting in librdkafka's queue (`queue.buffering.max.kbytes`), whatever the count.
pub const QUEUE_MAX_KBYTES: usize = 64 * 1024;

/// The client id the producer uses.
pub const CLIENT_ID: &str = "medic-actuator";

/// The message key of a record: what its order matters for. The Deployment (`namespace/name`)
/// of a lag record; `cluster/broker` of a broker record (`cluster` without a broker label);
/// `cluster/consumergroup` of a lag alert without a policy; otherwise (pause, resume) the
/// instance that wrote it.
pub fn record_key(r: &AuditRecord) -> String {
    if let Some(t) = &r.target {
        return t.clone();
    }
    match (&r.cluster, &r.broker, &r.consumergroup, &r.backend) {
        (Some(c), Some(b), _, _) => format!("{c}/{b}"),
        (Some(c), None, _, Some(_)) => c.clone(),
        (Some(c), None, Some(g), None) => format!("{c}/{g}"),
        (Some(c), None, None, None) => c.clone(),
        (None, ..) => r.instance.clone(),
    }
}

/// The producer settings for `cfg`, with `password` for SASL.
pub fn client_config(cfg: &AuditTopicConfig, password: Option<&str>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", cfg.bootstrap_servers.join(","))
        .set("client.id", CLIENT_ID)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            cfg.delivery_timeout
                .as_millis()
                .min(i32::MAX as u128)
                .to_string(),
        )
        .set(
            "queue.buffering.max.messages",
            cfg.queue_capacity.to_string(),
        )
        .set("queue.buffering.max.kbytes", QUEUE_MAX_KBYTES.to_string())
        .set("partitioner", "murmur2_random")
        .set("security.protocol", cfg.protocol().as_str());
    if let Some(m) = &cfg.sasl_mechanism {
        c.set("sasl.mechanisms", m.to_ascii_uppercase());
    }
    if let Some(u) = &cfg.sasl_username {
        c.set("sasl.username", u);
    }
    if let Some(p) = password {
        c.set("sasl.password", p);
    }
    for (prop, file) in [
        ("ssl.ca.location", &cfg.tls_ca_file),
        ("ssl.certificate.location", &cfg.tls_cert_file),
        ("ssl.key.location", &cfg.tls_key_file),
    ] {
        if let Some(f) = file {
            c.set(prop, f.display().to_string());
        }
    }
    c.set_log_level(RDKafkaLogLevel::Warning);
    c
}

/// The `audit.topic.*` key behind a librdkafka property.
fn key_of(property: &str) -> &'static str {
    match property {
        "security.protocol" => "audit.topic.security_protocol",
        "sasl.mechanisms" | "sasl.mechanism" => "audit.topic.sasl_mechanism",
        "ssl.ca.location" => "audit.topic.tls_ca_file",
        "ssl.certificate.location" => "audit.topic.tls_cert_file",
        "ssl.key.location" => "audit.topic.tls_key_file",
        "bootstrap.servers" => "audit.topic.bootstrap_servers",
        "queue.buffering.max.messages" => "audit.topic.queue_capacity",
        "message.timeout.ms" => "audit.topic.delivery_timeout",
        _ => "audit.topic",
    }
}

/// What librdkafka, as built into this binary, refuses of the producer settings (each problem
/// naming the `audit.topic.*` key): TLS and SCRAM need a librdkafka built with OpenSSL.
pub fn librdkafka_problems(cfg: &AuditTopicConfig) -> Vec<String> {
    let native = match client_config(cfg, Some("-")).create_native_config() {
        Ok(n) => n,
        Err(KafkaError::ClientConfig(_, desc, property, value)) => {
            return vec![format!(
                "{}: librdkafka refuses {property}={value:?}: {desc}",
                key_of(&property)
            )]
        }
        Err(e) => return vec![format!("audit.topic: librdkafka refuses the settings: {e}")],
    };
    let features = native.get("builtin.features").unwrap_or_default();
    let has = |f: &str| features.split(',').any(|x| x == f);
    let mut p = Vec::new();
    let protocol = cfg.protocol();
    if protocol.uses_tls() && !has("ssl") {
        p.push(format!(
            "audit.topic.security_protocol: {protocol} needs TLS, and this build's librdkafka has none (built without OpenSSL; features: {features})"
        ));
    }
    let scram = cfg
        .sasl_mechanism
        .as_deref()
        .is_some_and(|m| m.to_ascii_uppercase().starts_with("SCRAM"));
    if protocol.uses_sasl() && scram && !has("sasl_scram") {
        p.push(format!(
            "audit.topic.sasl_mechanism: {:?} is not supported by this build's librdkafka (SCRAM needs OpenSSL; features: {features}); use PLAIN",
            cfg.sasl_mechanism.as_deref().unwrap_or_default()
        ));
    }
    p
}

/// Delivery reports and librdkafka's own messages.
struct SinkContext {
    topic: String,
    delivered: Counter,
    failed: Counter,
    queue: Gauge,
    waiting: Arc<AtomicI64>,
    /// Whether the last report was a failure (a warning is logged at each change).
    failing: AtomicBool,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                tracing::warn!(topic = %self.topic, facility = fac, "audit topic: librdkafka: {message}")
            }
            _ => {
                tracing::debug!(topic = %self.topic, facility = fac, "audit topic: librdkafka: {message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode::{AllBrokersDown, BrokerTransportFailure};
        // A connection failure is already in librdkafka's own log line (throttled by it).
        if matches!(
            error,
            KafkaError::Global(BrokerTransportFailure | AllBrokersDown)
        ) {
            tracing::debug!(topic = %self.topic, error = %error, "audit topic: producer error: {reason}");
        } else {
            tracing::warn!(topic = %self.topic, error = %error, "audit topic: producer error: {reason}");
        }
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let left = self.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
        self.queue.set(left.max(0) as f64);
        match result {
            Ok(_) => {
                self.delivered.increment(1);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(topic = %self.topic, "audit topic: records are delivered again");
                }
            }
            Err((e, _)) => {
                self.failed.increment(1);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(topic = %self.topic, error = %e, "audit topic: a record was not delivered (counted in medic_actuator_audit_topic_records_total{{result=\"failed\"}}; the audit file has it)");
                }
            }
        }
    }
}

/// The producer of the audit topic. Cheap to share (`Arc`); `offer` never blocks.
pub struct TopicSink {
    producer: ThreadedProducer<SinkContext>,
    topic: String,
    dropped: Counter,
    failed: Counter,
    queue: Gauge,
    waiting: Arc<AtomicI64>,
    flush_timeout: Duration,
    /// Whether the last offer was dropped (a warning is logged at each change).
    dropping: AtomicBool,
}

impl TopicSink {
    /// Build the producer. It does not connect here: an unreachable Kafka never holds the
    /// start; its records count as failed after `delivery_timeout`.
    pub fn start(cfg: &AuditTopicConfig, telemetry: &Telemetry) -> Result<Arc<Self>, String> {
        let password = match &cfg.sasl_password_file {
            Some(f) => Some(medic_kafka::read_password_file(f).map_err(|e| {
                format!(
                    "audit.topic.sasl_password_file: cannot read {}: {e}",
                    f.display()
                )
            })?),
            None => None,
        };
        let result =
            |r: &str| telemetry.counter(telemetry::AUDIT_TOPIC_RECORDS, &[("result", r.into())]);
        let (delivered, dropped, failed) =
            (result("delivered"), result("dropped"), result("failed"));
        for c in [&delivered, &dropped, &failed] {
            c.increment(0);
        }
        let queue = telemetry.gauge(telemetry::AUDIT_TOPIC_QUEUE, &[]);
        queue.set(0.0);
        let waiting = Arc::new(AtomicI64::new(0));
        let context = SinkContext {
            topic: cfg.name.clone(),
            delivered,
            failed: failed.clone(),
            queue: queue.clone(),
            waiting: waiting.clone(),
            failing: AtomicBool::new(false),
        };
        let producer: ThreadedProducer<SinkContext> = client_config(cfg, password.as_deref())
            .create_with_context(context)
            .map_err(|e| match e {
                KafkaError::ClientConfig(_, desc, property, value) => format!(
                    "{}: librdkafka refuses {property}={value:?}: {desc}",
                    key_of(&property)
                ),
                e => format!("audit.topic: cannot create the Kafka producer: {e}"),
            })?;
        tracing::info!(
            topic = %cfg.name,
            bootstrap_servers = %cfg.bootstrap_servers.join(","),
            queue_capacity = cfg.queue_capacity,
            delivery_timeout = ?cfg.delivery_timeout,
            "audit records are also produced to a Kafka topic"
        );
        Ok(Arc::new(Self {
            producer,
            topic: cfg.name.clone(),
            dropped,
            failed,
            queue,
            waiting,
            flush_timeout: cfg.flush_timeout,
            dropping: AtomicBool::new(false),
        }))
    }

    /// Queue one line for the topic, or drop it (queue full) or fail it (refused at once, e.g.
    /// larger than the producer's message size limit), counted either way. Never blocks.
    pub fn offer(&self, key: &str, line: &[u8]) {
        let n = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        let record: BaseRecord<'_, str, [u8]> = BaseRecord::to(&self.topic).key(key).payload(line);
        match self.producer.send(record) {
            Ok(()) => {
                self.queue.set(n as f64);
                if self.dropping.swap(false, Ordering::Relaxed) {
                    tracing::info!(topic = %self.topic, "audit topic: the queue has room again");
                }
            }
            Err((e, _)) => {
                let left = self.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
                self.queue.set(left.max(0) as f64);
                let full = matches!(
                    e,
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)
                );
                if full {
                    self.dropped.increment(1);
                    if !self.dropping.swap(true, Ordering::Relaxed) {
                        tracing::warn!(topic = %self.topic, waiting = left, "audit topic: queue full, dropping records from the topic (the audit file has them; counted in medic_actuator_audit_topic_records_total{{result=\"dropped\"}})");
                    }
                } else {
                    self.failed.increment(1);
                    tracing::warn!(topic = %self.topic, %key, error = %e, "audit topic: record refused by the producer");
                }
            }
        }
    }

    /// Records waiting for Kafka (queued or unacknowledged).
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::SeqCst).max(0) as u64
    }

    /// Wait up to `audit.topic.flush_timeout` for the records still waiting, off the async
    /// workers, and log what was not delivered. Returns how many were left.
    pub async fn flush(self: &Arc<Self>) -> u64 {
        let before = self.waiting();
        if before == 0 {
            return 0;
        }
        let me = self.clone();
        let timeout = self.flush_timeout;
        let flushed = tokio::task::spawn_blocking(move || me.producer.flush(timeout)).await;
        let left = self.waiting();
        match flushed {
            Ok(Ok(())) => {
                tracing::info!(topic = %self.topic, delivered_or_failed = before, "audit topic flushed")
            }
            Ok(Err(e)) => tracing::warn!(
                topic = %self.topic,
                undelivered = left,
                timeout = ?timeout,
                error = %e,
                "audit topic: records not delivered at shutdown (the audit file has them)"
            ),
            Err(e) => {
                tracing::warn!(topic = %self.topic, undelivered = left, error = %e, "audit topic: flush did not finish")
            }
        }
        left
    }
}

impl CommitSink for Arc<TopicSink> {
    fn committed(&mut self, record: &AuditRecord, line: &[u8]) {
        self.offer(&record_key(record), line);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::audit::{Action, Outcome};
    use crate::decide::Trigger;
    use jiff::Timestamp;

    fn rec() -> AuditRecord {
        AuditRecord::new(
            Timestamp::from_second(1_800_000_000).unwrap(),
            "actuator-0",
            Trigger::Webhook,
            Outcome::Skipped,
            Action::None,
        )
    }

    #[test]
    fn keys_name_what_the_order_matters_for() {
        let lag = AuditRecord {
            target: Some("shop/orders".into()),
            cluster: Some("prod".into()),
            consumergroup: Some("orders".into()),
            ..rec()
        };
        assert_eq!(record_key(&lag), "shop/orders");
        let no_policy = AuditRecord {
            target: None,
            ..lag.clone()
        };
        assert_eq!(record_key(&no_policy), "prod/orders");
        let broker = AuditRecord {
            cluster: Some("prod".into()),
            broker: Some("3".into()),
            backend: Some("kafka".into()),
            ..rec()
        };
        assert_eq!(record_key(&broker), "prod/3");
        let unlabelled = AuditRecord {
            broker: None,
            ..broker.clone()
        };
        assert_eq!(record_key(&unlabelled), "prod");
        let pause = AuditRecord {
            action: Action::Pause,
            ..rec()
        };
        assert_eq!(record_key(&pause), "actuator-0");
    }

    fn enabled() -> AuditTopicConfig {
        AuditTopicConfig {
            bootstrap_servers: vec!["127.0.0.1:9092".into()],
            ..AuditTopicConfig::default()
        }
    }

    #[test]
    fn producer_settings_are_idempotent_bounded_and_keyed() {
        let c = client_config(
            &AuditTopicConfig {
                bootstrap_servers: vec!["a:9092".into(), "b:9092".into()],
                queue_capacity: 123,
                delivery_timeout: Duration::from_secs(7),
                ..AuditTopicConfig::default()
            },
            None,
        );
        for (k, v) in [
            ("bootstrap.servers", "a:9092,b:9092"),
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("message.timeout.ms", "7000"),
            ("queue.buffering.max.messages", "123"),
            ("partitioner", "murmur2_random"),
            ("security.protocol", "plaintext"),
        ] {
            assert_eq!(c.get(k), Some(v), "{k}");
        }
        assert!(librdkafka_problems(&enabled()).is_empty());
    }

    #[test]
    fn librdkafka_accepts_sasl_plain_and_names_the_key_of_what_it_lacks() {
        let plain = AuditTopicConfig {
            security_protocol: "sasl_plaintext".into(),
            sasl_mechanism: Some("PLAIN".into()),
            sasl_username: Some("u".into()),
            ..enabled()
        };
        assert_eq!(librdkafka_problems(&plain), Vec::<String>::new());
        let features = client_config(&enabled(), None)
            .create_native_config()
            .unwrap()
            .get("builtin.features")
            .unwrap();
        let ssl = AuditTopicConfig {
            security_protocol: "ssl".into(),
            ..enabled()
        };
        let problems = librdkafka_problems(&ssl);
        if features.split(',').any(|f| f == "ssl") {
            assert!(problems.is_empty(), "{problems:?}");
        } else {
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].starts_with("audit.topic.security_protocol: "),
                "{problems:?}"
            );
            assert!(problems[0].contains("OpenSSL"), "{problems:?}");
        }
    }
}
