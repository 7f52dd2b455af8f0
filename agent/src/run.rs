//! Wiring: the collection loop and the HTTP server, until shutdown.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use medic_kafka::{ClientConfig, KafkaClient};

use crate::collect::{Collector, CollectorSettings};
use crate::config::{Config, Mode};
use crate::health::HealthCollector;
use crate::render::{count_samples, render_broker, render_lag_into, Granularity, LagOptions};
use crate::server::{routes, AppState};
use crate::snapshot::{SnapshotCell, TextWriter};

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running agent's parts, for tests that drive collections themselves.
pub struct Agent {
    pub(crate) collector: Collector,
    pub(crate) health: Option<Arc<Mutex<HealthCollector>>>,
    pub snapshot: Arc<SnapshotCell>,
    pub(crate) cluster: String,
    pub(crate) broker_id: Option<i32>,
    pub(crate) granularity: Granularity,
    pub(crate) max_series: Option<usize>,
    /// The agent's own metrics, counted against the series budget.
    pub(crate) prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Whether the last collection's budget dropped series (to log changes once).
    pub(crate) dropping: bool,
}

impl Agent {
    pub fn new(cfg: &Config) -> Agent {
        let client = Arc::new(KafkaClient::new(ClientConfig {
            bootstrap: cfg.bootstrap_servers.clone(),
            security: cfg.security.clone(),
            request_timeout: cfg.request_timeout,
            offset_fetch_batch: cfg.offset_fetch_batch,
            client_id: "medic-agent".to_string(),
            observer: Some(crate::telemetry::kafka_request_observer()),
        }));
        let collector = Collector::new(
            client,
            CollectorSettings {
                cluster: cfg.cluster.clone(),
                mode: cfg.mode.clone(),
                groups: cfg.groups.clone(),
                topics: cfg.topics.clone(),
                shard: cfg.shard,
                history_samples: cfg.history_samples,
                drain_rate_window: cfg.drain_rate_window,
                fetch_max_bytes: cfg.fetch_max_bytes,
                fetch_partition_max_bytes: cfg.fetch_partition_max_bytes,
            },
        );
        Agent {
            collector,
            health: cfg
                .health
                .clone()
                .map(|h| Arc::new(Mutex::new(HealthCollector::new(h)))),
            snapshot: Arc::new(SnapshotCell::default()),
            cluster: cfg.cluster.clone(),
            broker_id: match cfg.mode {
                Mode::Sidecar { broker_id } => Some(broker_id),
                Mode::Cluster => None,
            },
            granularity: cfg.granularity,
            max_series: cfg.max_series,
            prometheus: None,
            dropping: false,
        }
    }

    /// Runs one collection and publishes the resulting snapshot.
    pub async fn collect_once(&mut self) {
        let started = Instant::now();
        let now = SystemTime::now();
        let t = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let health_sample = match &self.health {
            Some(h) => {
                let h = h.clone();
                tokio::task::spawn_blocking(move || h.lock().map(|mut h| h.collect()).ok())
                    .await
                    .ok()
                    .flatten()
            }
            None => None,
        };
        if let Some(s) = &health_sample {
            for e in &s.errors {
                metrics::counter!("medic_agent_collection_errors_total", "stage" => e.stage())
                    .increment(1);
                tracing::warn!(stage = e.stage(), error = %e, "broker health reading failed");
            }
        }
        let prev = self.snapshot.load();
        let result = self.collector.collect(now).await;
        let mut next = (*prev).clone();
        let broker_up = match result {
            Ok(c) => {
                for e in &c.errors {
                    metrics::counter!("medic_agent_collection_errors_total", "stage" => e.stage)
                        .increment(1);
                    tracing::warn!(stage = e.stage, error = %e.message, "collection problem");
                }
                metrics::counter!("medic_agent_collections_total", "result" => "success")
                    .increment(1);
                tracing::debug!(
                    groups = c.report.groups.len(),
                    partitions = c.report.partition_count(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "collected"
                );
                let options = LagOptions {
                    granularity: self.granularity,
                    max_series: self.max_series,
                    other_series: self.other_series(health_sample.as_ref()),
                };
                let mut text = TextWriter::new();
                let budget = render_lag_into(&c.report, &options, &mut text);
                next.lag_text = Arc::new(text.finish());
                if let Some(max) = self.max_series {
                    let dropped = budget.dropped_total();
                    if dropped > 0 && !self.dropping {
                        tracing::warn!(
                            max_series = max,
                            dropped,
                            exported = budget.exported,
                            "series budget reached: dropping the lowest-priority series (see medic_agent_series_dropped)"
                        );
                    } else if dropped == 0 && self.dropping {
                        tracing::info!(
                            max_series = max,
                            exported = budget.exported,
                            "series budget no longer reached: exporting every series"
                        );
                    }
                    self.dropping = dropped > 0;
                }
                next.report = Arc::new(c.report);
                next.last_success = Some(t);
                next.last_error = None;
                c.broker_up
            }
            Err(e) => {
                metrics::counter!("medic_agent_collection_errors_total", "stage" => e.stage())
                    .increment(1);
                metrics::counter!("medic_agent_collections_total", "result" => "failure")
                    .increment(1);
                let msg = error_chain(&e);
                tracing::warn!(error = %msg, "collection failed; serving the last snapshot");
                next.last_error = Some(msg);
                self.collector.probe_local_broker().await
            }
        };
        if let Some(b) = self.broker_id {
            next.broker_text = render_broker(
                &self.cluster,
                b,
                broker_up.unwrap_or(false),
                health_sample.as_ref(),
            );
        }
        self.snapshot.store(next);
        metrics::histogram!("medic_agent_collection_duration_seconds")
            .record(started.elapsed().as_secs_f64());
    }
}

impl Agent {
    /// Series of a scrape outside the lag text: the broker families, the three scrape-time
    /// gauges and the agent's own metrics, as of now. Counted only under a series budget.
    fn other_series(&self, h: Option<&crate::health::HealthSample>) -> usize {
        if self.max_series.is_none() {
            return 0;
        }
        let broker = self.broker_id.map_or(0, |b| {
            count_samples(&render_broker(&self.cluster, b, true, h))
        });
        let own = self
            .prometheus
            .as_ref()
            .map_or(0, |p| count_samples(&p.render()));
        broker + 3 + own
    }
}

/// The error and its sources on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Exports the HTTP server's connection events as `medic_agent_http_connections_*`.
struct HttpConnections;

impl HttpConnections {
    const CLOSED: &'static str = "medic_agent_http_connections_closed_total";
    const OPEN: &'static str = "medic_agent_http_connections_open";

    /// Describes the metrics and shows every close reason at 0.
    fn new() -> Self {
        metrics::describe_counter!(
            Self::CLOSED,
            "HTTP connections the server closed, by reason (header_timeout: no complete request head in time; idle: no request for http_idle_timeout; evicted: closed at the connection cap to make room; refused: new connection closed at the cap with every connection busy)."
        );
        metrics::describe_gauge!(Self::OPEN, "HTTP connections open.");
        for r in medic_http::CloseReason::ALL {
            metrics::counter!(Self::CLOSED, "reason" => r.as_str()).increment(0);
        }
        Self
    }
}

impl medic_http::Observer for HttpConnections {
    fn connections_open(&self, open: usize) {
        metrics::gauge!(Self::OPEN).set(open as f64);
    }

    fn connection_closed(&self, reason: medic_http::CloseReason) {
        metrics::counter!(Self::CLOSED, "reason" => reason.as_str()).increment(1);
    }
}

/// Runs the agent until `shutdown` completes.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let prometheus = crate::telemetry::metrics_handle(&cfg.cluster);
    if matches!(cfg.mode, Mode::Cluster) {
        crate::shard::export(cfg.shard);
    }
    let mut agent = Agent::new(&cfg);
    agent.prometheus = prometheus.clone();
    let state = Arc::new(AppState {
        snapshot: agent.snapshot.clone(),
        prometheus,
        cluster: cfg.cluster.clone(),
        mode: match cfg.mode {
            Mode::Sidecar { broker_id } => format!("sidecar (broker {broker_id})"),
            Mode::Cluster if cfg.shard.count() > 1 => format!(
                "cluster (shard_index {}, shard_count {})",
                cfg.shard.index(),
                cfg.shard.count()
            ),
            Mode::Cluster => "cluster".to_string(),
        },
        stale_after: cfg.stale_after,
    });
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| RunError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(cfg.listen);
    let server =
        medic_http::Server::new(cfg.http.clone()).observer(Arc::new(HttpConnections::new()));
    let cap = server.cap();
    let server = server.serve(listener, warp::service(routes(state)), async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    tracing::info!(%addr, cluster = %cfg.cluster, mode = ?cfg.mode, interval = ?cfg.interval, "medic-agent listening");
    tracing::info!(
        header_read_timeout = ?cfg.http.header_read_timeout,
        idle_timeout = ?cfg.http.idle_timeout,
        max_connections = cap,
        "HTTP connection limits"
    );
    let interval = cfg.interval;
    let collector = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => agent.collect_once().await,
                _ = stop_rx.changed() => break,
            }
        }
    });
    server.await;
    let _ = collector.await;
    tracing::info!("medic-agent stopped");
    Ok(())
}
