//! Logs (tracing) and the agent's own metrics (the `metrics` facade, exported in Prometheus
//! format next to the snapshot).

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::LogFormat;

/// Starts logging, filtered by `RUST_LOG` (default `info`): JSON for machines, plain text on a
/// terminal (or as configured). Calling it twice is harmless.
pub fn init_logging(format: LogFormat) {
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
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// The `stage` label values of `medic_agent_collection_errors_total`.
pub(crate) const STAGES: &[&str] = &[
    "metadata",
    "list_groups",
    "offset_fetch",
    "describe_groups",
    "list_offsets",
    "fetch",
    "process",
    "cpu",
    "memory",
    "network",
    "disk",
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide metrics recorder once, labelling everything with `cluster`, and
/// returns the handle that renders it. `None` if another recorder was installed first.
pub(crate) fn metrics_handle(cluster: &str) -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .add_global_label("cluster", cluster)
                .set_buckets_for_metric(
                    Matcher::Full("medic_agent_collection_duration_seconds".into()),
                    &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                )
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full("medic_agent_kafka_request_duration_seconds".into()),
                    &[
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                    ],
                )
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    metrics::describe_histogram!(
        "medic_agent_collection_duration_seconds",
        metrics::Unit::Seconds,
        "Wall time of one collection, successful or not."
    );
    metrics::describe_counter!(
        "medic_agent_collection_errors_total",
        "Problems met while collecting, by stage (metadata, list_groups, offset_fetch, describe_groups, list_offsets, fetch, and the broker health readings)."
    );
    metrics::describe_counter!(
        "medic_agent_collections_total",
        "Collections run, by result (success or failure)."
    );
    metrics::describe_counter!(
        "medic_agent_kafka_requests_total",
        "Requests sent to Kafka, by API."
    );
    metrics::describe_histogram!(
        "medic_agent_kafka_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from sending a Kafka request to reading its response, by API."
    );
    metrics::describe_gauge!(
        "medic_agent_build_info",
        "Always 1; the version label names the running build."
    );
    metrics::gauge!("medic_agent_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Every series starts at 0, so rate() and alerts see the first error, and a scrape always
    // has the same families.
    for stage in STAGES {
        metrics::counter!("medic_agent_collection_errors_total", "stage" => *stage).absolute(0);
    }
    for result in ["success", "failure"] {
        metrics::counter!("medic_agent_collections_total", "result" => result).absolute(0);
    }
}

/// Counts every Kafka request in the global recorder: `medic_agent_kafka_requests_total{api}`
/// and `medic_agent_kafka_request_duration_seconds{api}`.
pub(crate) fn kafka_request_observer() -> medic_kafka::RequestObserver {
    medic_kafka::RequestObserver::new(|event| {
        let api = medic_kafka::api_name(event.api);
        metrics::counter!("medic_agent_kafka_requests_total", "api" => api).increment(1);
        metrics::histogram!("medic_agent_kafka_request_duration_seconds", "api" => api)
            .record(event.duration.as_secs_f64());
    })
}
