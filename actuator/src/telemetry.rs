//! Metrics (`medic_actuator_*` and the policy override gauges) and tracing setup.
//!
//! Each `App` owns its own Prometheus recorder, so tests running side by side do not share
//! counters; handles are created inside `metrics::with_local_recorder`.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Webhooks received, by result.
pub const WEBHOOKS: &str = "medic_actuator_webhooks_total";
/// Alerts received in webhooks, by kind and status.
pub const ALERTS: &str = "medic_actuator_alerts_total";
/// Decisions, by action and outcome.
pub const ACTIONS: &str = "medic_actuator_actions_total";
/// Skipped and failed decisions, by reason.
pub const REASONS: &str = "medic_actuator_decision_reasons_total";
/// Kubernetes API request latency.
pub const KUBE_LATENCY: &str = "medic_actuator_kube_request_duration_seconds";
/// Kubernetes API requests by result.
pub const KUBE_REQUESTS: &str = "medic_actuator_kube_requests_total";
/// Kafka requests of the `kafka` backend, by API and outcome.
pub const KAFKA_REQUESTS: &str = "medic_actuator_kafka_requests_total";
/// Kafka request latency, by API.
pub const KAFKA_LATENCY: &str = "medic_actuator_kafka_request_duration_seconds";
/// Lag figures by source.
pub const LAG_SOURCE: &str = "medic_actuator_lag_source_total";
/// Prometheus query failures.
pub const PROM_ERRORS: &str = "medic_actuator_prometheus_errors_total";
/// Cooldown remaining per target and direction.
pub const COOLDOWN: &str = "medic_actuator_cooldown_remaining_seconds";
/// Audit fsync latency.
pub const AUDIT_FSYNC: &str = "medic_actuator_audit_fsync_duration_seconds";
/// Audit records written.
pub const AUDIT_RECORDS: &str = "medic_actuator_audit_records_total";
/// Audit write failures.
pub const AUDIT_ERRORS: &str = "medic_actuator_audit_write_errors_total";
/// Torn bytes cut at start.
pub const AUDIT_TORN: &str = "medic_actuator_audit_torn_bytes";
/// Audit records for the Kafka topic sink, by result (delivered, dropped, failed).
pub const AUDIT_TOPIC_RECORDS: &str = "medic_actuator_audit_topic_records_total";
/// Audit records waiting for Kafka (queued or unacknowledged).
pub const AUDIT_TOPIC_QUEUE: &str = "medic_actuator_audit_topic_queue";
/// Kubernetes Events for scale actions, by result (created, failed, dropped).
pub const KUBE_EVENTS: &str = "medic_actuator_kube_events_total";
/// Webhook handling latency.
pub const WEBHOOK_LATENCY: &str = "medic_actuator_webhook_duration_seconds";
/// Pause switch.
pub const PAUSED: &str = "medic_actuator_paused";
/// dry_run switch.
pub const DRY_RUN: &str = "medic_actuator_dry_run";
/// Number of policies.
pub const POLICIES: &str = "medic_actuator_policies";
/// A Deployment's spec.replicas as last read, per policy target.
pub const TARGET_REPLICAS: &str = "medic_actuator_target_replicas";
/// The replicas the policy formula wants after clamping, per policy target.
pub const TARGET_DESIRED: &str = "medic_actuator_target_desired_replicas";
/// Mass-failure guard per cluster with broker remediation.
pub const MASS_FAILURE: &str = "medic_actuator_mass_failure";
/// Brokers alerting per cluster.
pub const BROKERS_ALERTING: &str = "medic_actuator_brokers_alerting";
/// A broker action of ours is running, per cluster.
pub const REMEDIATION_RUNNING: &str = "medic_actuator_remediation_running";
/// Cluster interval remaining per cluster.
pub const BROKER_COOLDOWN: &str = "medic_actuator_broker_cluster_cooldown_remaining_seconds";
/// Broker decisions per cluster, action and outcome.
pub const BROKER_ACTIONS: &str = "medic_actuator_broker_actions_total";
/// Clusters with broker remediation.
pub const BROKER_POLICIES: &str = "medic_actuator_broker_policies";
/// Alerts being re-evaluated.
pub const TRACKED: &str = "medic_actuator_tracked_alerts";
/// Build info.
pub const BUILD_INFO: &str = "medic_actuator_build_info";
/// HTTP connections the server closed, by reason.
pub const HTTP_CLOSED: &str = "medic_actuator_http_connections_closed_total";
/// HTTP connections open.
pub const HTTP_OPEN: &str = "medic_actuator_http_connections_open";
/// 1 while this replica holds the leader Lease (or always, without leader election).
pub const LEADER: &str = "medic_actuator_leader";
/// Configuration reload attempts, by result (applied, rejected, unchanged).
pub const CONFIG_RELOADS: &str = "medic_actuator_config_reload_total";
/// Where firing broker alerts come from now: 1 for `source` prometheus or webhook.
pub const BROKER_ALERTS_SOURCE: &str = "medic_actuator_broker_alerts_source";
/// Per-group alert threshold override (offsets).
pub const LAG_THRESHOLD: &str = "medic_consumergroup_lag_threshold";
/// Per-group alert sustain override (seconds).
pub const LAG_SUSTAIN: &str = "medic_consumergroup_lag_sustain_seconds";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The actuator's metrics registry.
pub struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Telemetry {
    /// A fresh registry with HELP texts registered.
    pub fn new() -> Self {
        let builder = Self::builder().unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let t = Self { recorder, handle };
        t.describe();
        t.seed();
        t
    }

    /// Scale actions start at 0, so that `increase()` over a window that holds the first
    /// action counts it (a series that appears at 1 has no earlier sample to rise from: the
    /// dashboards' "Scaled" panel showed 0 after a real scale-up).
    fn seed(&self) {
        for action in ["scale_up", "scale_down"] {
            for outcome in ["applied", "failed", "dry_run"] {
                self.counter(
                    ACTIONS,
                    &[("action", action.into()), ("outcome", outcome.into())],
                )
                .increment(0);
            }
        }
    }

    fn builder() -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
        let mut b = PrometheusBuilder::new();
        for name in [KUBE_LATENCY, KAFKA_LATENCY, AUDIT_FSYNC, WEBHOOK_LATENCY] {
            b = b.set_buckets_for_metric(Matcher::Full(name.to_string()), LATENCY_BUCKETS)?;
        }
        Ok(b)
    }

    fn describe(&self) {
        metrics::with_local_recorder(&self.recorder, || {
            use metrics::{describe_counter, describe_gauge, describe_histogram};
            describe_counter!(WEBHOOKS, "Webhook requests received on /api/v1/alerts, by result (ok, bad_request, unauthorized, payload_too_large, unavailable, error).");
            describe_counter!(
                ALERTS,
                "Alerts received in webhook payloads, by kind (lag, broker, other) and status."
            );
            describe_counter!(ACTIONS, "Decisions taken, by action (scale_up, scale_down, none, pause, resume, move_leadership, move_replicas, replace_replicas) and outcome (applied, skipped, failed, dry_run).");
            describe_counter!(REASONS, "Skipped and failed decisions, by reason code.");
            describe_histogram!(
                KUBE_LATENCY,
                Unit::Seconds,
                "Latency of Kubernetes API requests, by verb, resource and HTTP code."
            );
            describe_counter!(
                KUBE_REQUESTS,
                "Kubernetes API requests, by verb, resource and HTTP code."
            );
            describe_counter!(
                KAFKA_REQUESTS,
                "Requests the kafka backend sent to Kafka brokers, by API and outcome (ok, error, timeout)."
            );
            describe_histogram!(
                KAFKA_LATENCY,
                Unit::Seconds,
                "Time from sending a Kafka request to reading its response, by API."
            );
            describe_counter!(
                LAG_SOURCE,
                "Lag figures used for decisions, by source (prometheus, annotation, none)."
            );
            describe_counter!(PROM_ERRORS, "Prometheus queries that failed.");
            describe_gauge!(
                COOLDOWN,
                Unit::Seconds,
                "Seconds before the target may be scaled again in the given direction."
            );
            describe_histogram!(
                AUDIT_FSYNC,
                Unit::Seconds,
                "Time to write and fsync one group commit of the audit log."
            );
            describe_counter!(AUDIT_RECORDS, "Audit records made durable.");
            describe_counter!(
                AUDIT_ERRORS,
                "Audit appends that failed; the webhook was answered 500."
            );
            describe_counter!(
                AUDIT_TOPIC_RECORDS,
                "Audit records for the Kafka topic copy, by result: delivered (acknowledged by all in-sync replicas), dropped (the queue was full; the file has it) or failed (not delivered within audit.topic.delivery_timeout, or refused)."
            );
            describe_gauge!(
                AUDIT_TOPIC_QUEUE,
                "Audit records waiting for Kafka: queued or sent and not yet acknowledged."
            );
            describe_counter!(
                KUBE_EVENTS,
                "Kubernetes Events for scale actions, by result: created, failed (the API refused it or did not answer in time) or dropped (the queue was full)."
            );
            describe_gauge!(
                AUDIT_TORN,
                Unit::Bytes,
                "Bytes of a torn last audit line cut off at start-up."
            );
            describe_histogram!(
                WEBHOOK_LATENCY,
                Unit::Seconds,
                "Time to handle a request on /api/v1/alerts, audit fsync included."
            );
            describe_gauge!(
                TARGET_REPLICAS,
                "Replicas of the policy's Deployment (spec.replicas of its scale subresource) as last read, by target (namespace/name)."
            );
            describe_gauge!(
                TARGET_DESIRED,
                "Replicas the policy's formula wants for the target after clamping to [min, max] (before max_step and cooldowns), as last evaluated."
            );
            describe_gauge!(
                MASS_FAILURE,
                "1 while more than mass_failure_share of the cluster's brokers (and at least two) alert at once: broker remediation acts on none, a human should look."
            );
            describe_gauge!(
                BROKERS_ALERTING,
                "Distinct brokers of the cluster with a firing broker alert, as the actuator last saw them."
            );
            describe_gauge!(
                REMEDIATION_RUNNING,
                "1 while a broker action of the actuator runs on the cluster (one at a time)."
            );
            describe_gauge!(
                BROKER_COOLDOWN,
                Unit::Seconds,
                "Seconds before the cluster may get its next broker action (cluster_cooldown)."
            );
            describe_counter!(BROKER_ACTIONS, "Broker remediation decisions, by cluster, action (move_leadership, move_replicas, replace_replicas, none) and outcome.");
            describe_gauge!(
                BROKER_POLICIES,
                "Clusters with broker remediation configured."
            );
            describe_gauge!(PAUSED, "1 while the actuator is paused.");
            describe_gauge!(DRY_RUN, "1 when the actuator only decides and audits.");
            describe_gauge!(POLICIES, "Scaling policies loaded.");
            describe_gauge!(
                TRACKED,
                "Lag alerts being re-evaluated, by state (firing, settling)."
            );
            describe_counter!(HTTP_CLOSED, "HTTP connections the server closed, by reason (header_timeout: no complete request head in time; idle: no request for idle_timeout; evicted: closed at the connection cap to make room; refused: new connection closed at the cap with every connection busy).");
            describe_gauge!(HTTP_OPEN, "HTTP connections open.");
            describe_counter!(
                CONFIG_RELOADS,
                "Reloads of the configuration and policy files (SIGHUP or a change seen by the watcher), by result: applied, rejected (invalid, or a setting that needs a restart; the old policies stay) or unchanged."
            );
            describe_gauge!(
                BROKER_ALERTS_SOURCE,
                "Where the leader's firing broker alerts come from, by source: 1 for prometheus (ALERTS, with the webhooks') or webhook (Prometheus cannot be queried: the webhooks this replica received only)."
            );
            describe_gauge!(
                LEADER,
                "1 while this replica leads (holds the leader Lease; always 1 without leader election), by instance (the election identity)."
            );
            describe_gauge!(
                BUILD_INFO,
                "Always 1; the version label says which build runs."
            );
            describe_gauge!(
                LAG_THRESHOLD,
                "Per-group lag alert threshold in offsets, from the actuator's policy file."
            );
            describe_gauge!(
                LAG_SUSTAIN,
                Unit::Seconds,
                "Per-group lag alert sustain window, from the actuator's policy file."
            );
        });
    }

    /// A counter handle.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, String)]) -> Counter {
        let labels: Vec<metrics::Label> = labels
            .iter()
            .map(|(k, v)| metrics::Label::new(*k, v.clone()))
            .collect();
        metrics::with_local_recorder(&self.recorder, || metrics::counter!(name, labels))
    }

    /// A gauge handle.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, String)]) -> Gauge {
        let labels: Vec<metrics::Label> = labels
            .iter()
            .map(|(k, v)| metrics::Label::new(*k, v.clone()))
            .collect();
        metrics::with_local_recorder(&self.recorder, || metrics::gauge!(name, labels))
    }

    /// A histogram handle.
    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, String)]) -> Histogram {
        let labels: Vec<metrics::Label> = labels
            .iter()
            .map(|(k, v)| metrics::Label::new(*k, v.clone()))
            .collect();
        metrics::with_local_recorder(&self.recorder, || metrics::histogram!(name, labels))
    }

    /// Count one webhook by result.
    pub fn webhook(&self, result: &'static str, elapsed: Duration) {
        self.counter(WEBHOOKS, &[("result", result.into())])
            .increment(1);
        self.histogram(WEBHOOK_LATENCY, &[])
            .record(elapsed.as_secs_f64());
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Exports the HTTP server's connection events.
impl medic_http::Observer for Telemetry {
    fn connections_open(&self, open: usize) {
        self.gauge(HTTP_OPEN, &[]).set(open as f64);
    }

    fn connection_closed(&self, reason: medic_http::CloseReason) {
        self.counter(HTTP_CLOSED, &[("reason", reason.as_str().into())])
            .increment(1);
    }
}

impl Telemetry {
    /// Reports the Kafka client's requests as `medic_actuator_kafka_requests_total{api,outcome}`
    /// and `medic_actuator_kafka_request_duration_seconds{api}`.
    pub fn kafka_request_observer(self: &Arc<Self>) -> medic_kafka::RequestObserver {
        let t = self.clone();
        medic_kafka::RequestObserver::new(move |event| {
            let api = medic_kafka::api_name(event.api);
            t.counter(
                KAFKA_REQUESTS,
                &[
                    ("api", api.into()),
                    ("outcome", event.outcome.as_str().into()),
                ],
            )
            .increment(1);
            t.histogram(KAFKA_LATENCY, &[("api", api.into())])
                .record(event.duration.as_secs_f64());
        })
    }

    /// Show every HTTP close reason at 0 from the start.
    pub fn http_connections_init(&self) {
        for r in medic_http::CloseReason::ALL {
            self.counter(HTTP_CLOSED, &[("reason", r.as_str().into())])
                .increment(0);
        }
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

/// Map an HTTP status to the webhook result label.
pub fn webhook_result(status: u16) -> &'static str {
    match status {
        200..=299 => "ok",
        400 => "bad_request",
        401 => "unauthorized",
        413 => "payload_too_large",
        503 => "unavailable",
        _ => "error",
    }
}

/// Log output format; the same words as medic-agent's `log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, text otherwise.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable lines. `plain`, the word of earlier releases, is accepted too.
    #[serde(alias = "plain")]
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "json" => Ok(Self::Json),
            "text" | "plain" => Ok(Self::Text),
            other => Err(format!("{other:?} is not one of auto, json, text")),
        }
    }
}

/// Install the tracing subscriber (RUST_LOG filters; default `info`).
pub fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // No colour codes unless a terminal shows them (a log file or collector would keep them).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_actions_are_exported_at_zero_before_the_first_one() {
        let t = Telemetry::new();
        let text = t.render();
        for action in ["scale_up", "scale_down"] {
            for outcome in ["applied", "failed", "dry_run"] {
                let line = format!(
                    "medic_actuator_actions_total{{action=\"{action}\",outcome=\"{outcome}\"}} 0"
                );
                assert!(
                    text.lines().any(|l| l == line),
                    "{line} missing in:\n{text}"
                );
            }
        }
        // The first action then counts 1 (the series existed at 0, so increase() sees it).
        t.counter(
            ACTIONS,
            &[("action", "scale_up".into()), ("outcome", "applied".into())],
        )
        .increment(1);
        assert!(t.render().lines().any(
            |l| l == "medic_actuator_actions_total{action=\"scale_up\",outcome=\"applied\"} 1"
        ));
    }
}
