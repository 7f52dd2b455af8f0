//! Wiring: config -> adapters -> engine -> HTTP API, and the serving loop (plain or TLS).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::audit::topic::TopicSink;
use crate::audit::{AuditLog, AuditOptions};
use crate::auth::Auth;
use crate::backend::kube::{client, Backoff, KubeScaler, RequestObserver};
use crate::backend::prometheus::PromClient;
use crate::backend::{MetricsApi, ScaleApi};
use crate::config::Config;
use crate::engine::{Clock, Engine, EngineSettings};
use crate::http::{routes, Api};
use crate::keda::{Activity, ExternalScalerService, KedaHub};
use crate::policy::Policies;
use crate::telemetry::{self, Telemetry};

/// How long in-flight requests may take to finish on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Warn about each policy target that a HorizontalPodAutoscaler or ScaledObject scales: the
/// actuator will skip it (`managed_by_autoscaler`). Bounded by `timeout` so that a slow API
/// does not hold start-up; each scaling decision checks again anyway.
async fn warn_managed_targets(kube: &dyn ScaleApi, policies: &Policies, timeout: Duration) {
    // Each Deployment is scaled by one policy at most (validated), so this pairs it with its
    // `on_autoscaler`.
    // `scaler: keda` Deployments are KEDA's by design: the actuator never scales them.
    let mut targets: Vec<_> = policies
        .all()
        .iter()
        .filter(|p| p.scaler != crate::policy::Scaler::Keda)
        .map(|p| (&p.deployment, p.on_autoscaler))
        .collect();
    targets.sort_by(|a, b| a.0.cmp(b.0));
    targets.dedup_by(|a, b| a.0 == b.0);
    let checks = futures::future::join_all(
        targets
            .iter()
            .map(|(t, on)| async move { (*t, *on, kube.autoscaler(t).await) }),
    );
    match tokio::time::timeout(timeout, checks).await {
        Ok(results) => {
            for (target, on, result) in results {
                match result {
                    Ok(Some(a)) if on == crate::policy::OnAutoscaler::RaiseMinReplicas => {
                        tracing::info!(
                            deployment = %target,
                            autoscaler = %a,
                            "another autoscaler scales this policy's Deployment: while its lag alert fires the actuator raises the autoscaler's minimum replicas instead (on_autoscaler: raise_min_replicas)"
                        )
                    }
                    Ok(Some(a)) => tracing::warn!(
                        deployment = %target,
                        autoscaler = %a,
                        "another autoscaler scales this policy's Deployment: the actuator will not change its replicas (managed_by_autoscaler)"
                    ),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(
                        deployment = %target,
                        error = %e,
                        "could not check for HorizontalPodAutoscalers/ScaledObjects; scaling this Deployment fails (autoscaler_check_failed) until the check succeeds"
                    ),
                }
            }
        }
        Err(_) => tracing::warn!(
            timeout = ?timeout,
            "the start-up check for HorizontalPodAutoscalers/ScaledObjects did not finish; each scaling decision checks again"
        ),
    }
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Policy file.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// Credentials.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// Audit log.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// Kubernetes or Prometheus client.
    #[error("{0}")]
    Client(String),
    /// Listener or TLS.
    #[error("{0}")]
    Listen(String),
    /// Broker-policy backends that could not be built (secret or certificate files), all of
    /// them.
    #[error("invalid broker policies:\n  - {}", .0.join("\n  - "))]
    Brokers(Vec<String>),
    /// Leader election settings that cannot be resolved (no identity).
    #[error("{0}")]
    LeaderElection(String),
}

impl AppError {
    /// Whether this is a configuration problem (exit code 2) rather than a failure to run.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            AppError::Policy(_)
                | AppError::Auth(_)
                | AppError::Brokers(_)
                | AppError::LeaderElection(_)
        )
    }
}

/// A built actuator.
pub struct App {
    /// The HTTP API state (engine, auth, telemetry).
    pub api: Arc<Api>,
    /// The config it was built from.
    pub config: Config,
    /// The leader election, until [`App::serve`] runs it (`None`: off, or already running).
    election: std::sync::Mutex<Option<crate::leader::Election>>,
    /// The Kafka copy of the audit log (`audit.topic.*`), if configured.
    pub audit_topic: Option<Arc<TopicSink>>,
}

impl App {
    /// Build everything from the config; `env` gives $HOSTNAME for the instance name.
    pub async fn build(config: Config, env: &BTreeMap<String, String>) -> Result<Self, AppError> {
        Self::build_with_clock(config, env, Arc::new(jiff::Timestamp::now)).await
    }

    /// As `build`, with a clock (tests).
    pub async fn build_with_clock(
        config: Config,
        env: &BTreeMap<String, String>,
        clock: Clock,
    ) -> Result<Self, AppError> {
        let telemetry = Arc::new(Telemetry::new());
        telemetry
            .gauge(
                telemetry::BUILD_INFO,
                &[("version", env!("CARGO_PKG_VERSION").into())],
            )
            .set(1.0);
        let policies = match &config.policies_file {
            Some(p) => Policies::load(p)?,
            None => Policies::default(),
        };
        let auth = Auth::from_config(&config.auth, config.insecure_no_auth)?;
        let t = telemetry.clone();
        let observer: RequestObserver = Arc::new(move |verb, resource, code, elapsed| {
            let labels = [
                ("verb", verb.to_string()),
                ("resource", resource.to_string()),
                ("code", code.to_string()),
            ];
            t.histogram(telemetry::KUBE_LATENCY, &labels)
                .record(elapsed.as_secs_f64());
            t.counter(telemetry::KUBE_REQUESTS, &labels).increment(1);
        });
        let k = &config.kubernetes;
        // One client builder for every source (api_url, kubeconfig, in-cluster): kube's own
        // retry off, connect/read/write timeouts set.
        let client = client(k.api_url.as_deref(), k.request_timeout)
            .await
            .map_err(AppError::Client)?;
        let backoff = Backoff {
            attempts: k.retry_attempts,
            base: k.retry_backoff,
            max: Duration::from_secs(2),
        };
        let lease_observer = observer.clone();
        // The intent of broker actions and their cooldowns: one ConfigMap per cluster in the
        // actuator's namespace ($POD_NAMESPACE, else the client's: the ServiceAccount's).
        let intent_namespace = env
            .get("POD_NAMESPACE")
            .filter(|n| !n.trim().is_empty())
            .cloned()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let intents: Arc<dyn crate::intent::IntentStore> =
            Arc::new(crate::backend::intent_store::KubeIntentStore::new(
                client.clone(),
                intent_namespace,
                backoff,
                Some(observer.clone()),
            ));
        // Scale actions also become Kubernetes Events on their Deployments (best effort).
        let scale_events = crate::backend::kube_events::ScaleEvents::start(
            client.clone(),
            config.instance_name(env),
            k.request_timeout,
            &telemetry,
            Some(observer.clone()),
        );
        let kube: Arc<dyn ScaleApi> = Arc::new(
            KubeScaler::new(client, backoff, Some(observer))
                .with_autoscaler_cache_ttl(k.autoscaler_cache_ttl),
        );
        warn_managed_targets(kube.as_ref(), &policies, k.request_timeout).await;
        if config.keda.listen.is_none() {
            for p in policies
                .all()
                .iter()
                .filter(|p| p.scaler == crate::policy::Scaler::Keda)
            {
                tracing::warn!(
                    cluster = %p.cluster,
                    consumergroup = %p.consumergroup,
                    deployment = %p.deployment,
                    "this policy says `scaler: keda` but keda.listen is not set: the actuator never scales its Deployment and KEDA cannot ask it either, so nothing scales it on lag"
                );
            }
        }
        let prom: Option<Arc<dyn MetricsApi>> = match &config.prometheus.url {
            Some(url) => Some(Arc::new(
                PromClient::new(url, config.prometheus.timeout).map_err(AppError::Client)?,
            )),
            None => None,
        };
        let keda = Arc::new(KedaHub {
            activity: Activity::new(config.alert_ttl),
            instance: config.instance_name(env),
            prom: prom.clone(),
            alerts_poll_interval: config.keda.alerts_poll_interval,
            telemetry: telemetry.clone(),
        });
        let t = telemetry.clone();
        // A copy of every durable record on a Kafka topic (audit.topic.*); the producer does not
        // connect here, so an unreachable Kafka never holds the start.
        let audit_topic = if config.audit.topic.enabled() {
            Some(TopicSink::start(&config.audit.topic, &telemetry).map_err(AppError::Client)?)
        } else {
            None
        };
        let (audit, recovered) = AuditLog::open_with_sink(
            AuditOptions {
                path: config.audit.path.clone(),
                max_bytes: config.audit.max_bytes,
                max_files: config.audit.max_files,
            },
            Some(Box::new(move |elapsed, n| {
                t.histogram(telemetry::AUDIT_FSYNC, &[])
                    .record(elapsed.as_secs_f64());
                t.counter(telemetry::AUDIT_RECORDS, &[]).increment(n as u64);
            })),
            audit_topic
                .clone()
                .map(|s| Box::new(s) as Box<dyn crate::audit::CommitSink>),
        )?;
        if recovered.torn_bytes > 0 {
            tracing::warn!(
                path = %config.audit.path.display(),
                torn_bytes = recovered.torn_bytes,
                "cut a torn last line from the audit log (a crash during a write; that record was never acknowledged)"
            );
        }
        tracing::info!(
            records = recovered.records.len(),
            invalid_lines = recovered.invalid_lines,
            "audit log read back"
        );
        let mut backends = BTreeMap::new();
        let mut broken = Vec::new();
        for b in policies.brokers() {
            match crate::backend::build(b, Some(telemetry.kafka_request_observer())) {
                Ok(backend) => {
                    backends.insert(b.cluster.clone(), backend);
                }
                Err(e) => broken.push(e),
            }
        }
        if !broken.is_empty() {
            return Err(AppError::Brokers(broken));
        }
        let settings = EngineSettings {
            instance: config.instance_name(env),
            dry_run: config.dry_run,
            dedupe_window: config.dedupe_window,
            alert_ttl: config.alert_ttl,
            conflict_retries: config.kubernetes.conflict_retries,
        };
        let election = crate::leader::from_config(
            &config,
            env,
            Arc::new(crate::engine::Recorder {
                audit: audit.clone(),
                telemetry: telemetry.clone(),
            }),
            Some(lease_observer),
            clock.clone(),
        )
        .await?;
        let engine = Engine::new(
            policies,
            kube,
            prom,
            audit,
            &recovered,
            telemetry.clone(),
            settings,
            config.paused,
            clock,
            backends,
        );
        // With leader election, broker actions and re-evaluation rounds wait for the Lease.
        let (engine, election) = match election {
            Some((election, leadership)) => (engine.with_leadership(leadership), Some(election)),
            None => (engine, None),
        };
        let engine = Arc::new(
            engine
                .with_scale_events(scale_events)
                .with_intent_store(intents),
        );
        let api = Arc::new(Api {
            engine,
            auth,
            telemetry,
            body_limit: config.body_limit_bytes,
            keda,
        });
        Ok(Self {
            api,
            config,
            election: std::sync::Mutex::new(election),
            audit_topic,
        })
    }

    /// Bind the listener (port 0 picks one).
    pub async fn bind(&self) -> Result<TcpListener, AppError> {
        TcpListener::bind(self.config.listen)
            .await
            .map_err(|e| AppError::Listen(format!("listen {}: {e}", self.config.listen)))
    }

    /// KEDA's External Scaler service over this actuator's policies and webhooks.
    pub fn keda_service(&self) -> ExternalScalerService {
        ExternalScalerService::new(self.api.engine.clone(), self.api.keda.clone())
    }

    /// Serve on `listener` until `shutdown` completes; also runs the re-evaluation loop, and
    /// KEDA's External Scaler when `keda.listen` is set.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AppError> {
        let tls = match (&self.config.tls.cert_file, &self.config.tls.key_file) {
            (Some(c), Some(k)) => Some(crate::tls::acceptor(c, k).map_err(AppError::Listen)?),
            _ => None,
        };
        let addr = listener
            .local_addr()
            .map(|a: SocketAddr| a.to_string())
            .unwrap_or_default();
        tracing::info!(addr = %addr, tls = tls.is_some(), dry_run = self.config.dry_run, "medic-actuator listening");
        self.api
            .engine
            .start_reevaluation(self.config.reevaluate_interval);
        self.api.engine.start_alert_watch();
        // Broker actions a stopped process left running are taken over on becoming leader.
        self.api.engine.start_broker_recovery();
        // Leader election runs until after the engine has drained (the leader keeps renewing
        // while its last decisions finish), then releases the Lease.
        let election_stop = tokio_util::sync::CancellationToken::new();
        let election = self
            .election
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map(|e| tokio::spawn(e.run(election_stop.clone())));
        // Header-read and idle timeouts and a connection cap keep slow or idle clients from
        // exhausting the process; on shutdown, requests in flight finish (their decisions get
        // audited), idle connections close, and the rest is dropped after the grace period.
        let keda_stop = tokio_util::sync::CancellationToken::new();
        let keda = match self.config.keda.listen {
            Some(addr) => {
                // Checked at start-up (Config::validate); read again here.
                let keda_tls = crate::keda::tls::server_tls(&self.config.keda.tls)
                    .map_err(|p| AppError::Listen(p.join("; ")))?;
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|e| AppError::Listen(format!("keda.listen {addr}: {e}")))?;
                tracing::info!(
                    addr = %addr,
                    tls = keda_tls.is_some(),
                    client_certificates = self.config.keda.tls.client_ca_file.is_some(),
                    alerts_poll_interval = ?self.config.keda.alerts_poll_interval,
                    "KEDA External Scaler listening (gRPC)"
                );
                let stop = keda_stop.clone();
                let service = self.keda_service();
                Some(tokio::spawn(async move {
                    if let Err(e) = crate::keda::serve_with_tls(l, service, keda_tls, async move {
                        stop.cancelled().await
                    })
                    .await
                    {
                        tracing::error!(error = %e, "KEDA External Scaler stopped");
                    }
                }))
            }
            None => None,
        };
        let telemetry = self.api.telemetry.clone();
        telemetry.http_connections_init();
        let server = medic_http::Server::new(self.config.http.settings(SHUTDOWN_GRACE))
            .tls(tls)
            .observer(telemetry);
        tracing::info!(
            header_read_timeout = ?self.config.http.header_read_timeout,
            idle_timeout = ?self.config.http.idle_timeout,
            max_connections = server.cap(),
            "HTTP connection limits"
        );
        server
            .serve(listener, warp::service(routes(self.api.clone())), shutdown)
            .await;
        keda_stop.cancel();
        if let Some(task) = keda {
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                tracing::warn!("the KEDA External Scaler did not stop within the grace period");
            }
        }
        // Decisions whose client hung up, and a re-evaluation round in progress, finish and are
        // audited before the process exits.
        let unfinished = self.api.engine.shutdown(SHUTDOWN_GRACE).await;
        if unfinished > 0 {
            tracing::warn!(
                unfinished,
                "decisions still running after the shutdown grace period"
            );
        }
        election_stop.cancel();
        if let Some(task) = election {
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                tracing::warn!("leader election did not release the Lease within the grace period; another replica takes over when it expires");
            }
        }
        self.flush_sinks(SHUTDOWN_GRACE).await;
        Ok(())
    }

    /// At shutdown, after the last audit record: send the queued Kubernetes Events (up to
    /// `grace`) and flush the audit topic (up to `audit.topic.flush_timeout`), logging what
    /// was left. Returns (Events not sent, records not delivered to the topic).
    pub async fn flush_sinks(&self, grace: Duration) -> (usize, u64) {
        let events = match self.api.engine.scale_events() {
            Some(e) => e.close(grace).await,
            None => 0,
        };
        let topic = match &self.audit_topic {
            Some(t) => t.flush().await,
            None => 0,
        };
        (events, topic)
    }
}
