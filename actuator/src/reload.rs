//! Configuration changes without a restart: the policy file is reloaded on SIGHUP and when the
//! files change.
//!
//! **What may change.** The content of the policy file (`policies:` and `brokers:`) is put in
//! force by a reload. Every other setting (listen address, auth, TLS, audit, Kubernetes,
//! Prometheus, intervals, leader election, ... and `policies_file` itself) is read at start
//! only: a reload that finds one changed is rejected as `restart_required`, naming each key,
//! and nothing changes. The configuration is read again exactly as at start (the same flags and
//! environment, the config file), and validated whole, secret and certificate files included.
//! A file that does not validate is rejected whole (`config_invalid`): the policies in force
//! stay, the error is logged, counted and shown in `/healthz`.
//!
//! **Every reload that changes something, or is rejected, is an audit record** (action
//! `config_reload`, trigger `reload`): `applied` with one line per change (`policy shop/orders:
//! max_replicas: 3 -> 5`), or `failed` with the reason and the error. The record is written
//! before the new policies are put in force; if it cannot be written, they are not.
//! `medic_actuator_config_reload_total{result}` counts `applied`, `rejected` and `unchanged`.
//!
//! **Watching the files.** A Kubernetes ConfigMap volume is updated by writing a new
//! timestamped directory and renaming the `..data` symlink onto it: the paths the actuator was
//! given (`policies.yaml -> ..data/policies.yaml`) stay the same while what they resolve to is
//! replaced, and inotify on the old file would be watching a file that is gone. So the watcher
//! polls: every `config_watch_interval` it reads the config file and the policy file through
//! their paths (following symlinks) and compares a SHA-256 of their bytes with the last one.
//! This sees a ConfigMap's symlink swap, an editor's write-and-rename, a bind mount and an
//! in-place write alike, costs two small reads per interval, and a change that only touches
//! comments is reloaded and found `unchanged`. If the files are caught between two writes, the
//! next poll sees another digest and reloads again.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::audit::Outcome;
use crate::config::Config;
use crate::engine::{leaf_changes, Engine};
use crate::policy::Policies;
use crate::reason::ReasonCode;

/// Where the configuration comes from: the arguments and environment the process started with.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    args: Vec<OsString>,
    env: BTreeMap<String, String>,
}

impl ConfigSource {
    /// The arguments (without the program name) and the environment.
    pub fn new(args: Vec<OsString>, env: BTreeMap<String, String>) -> Self {
        Self { args, env }
    }

    /// Read and validate the configuration again, as at start.
    pub fn load(&self) -> Result<Config, crate::config::ConfigError> {
        Config::load(self.args.clone(), &self.env)
    }

    /// The config file, if one was given.
    pub fn config_file(&self) -> Option<PathBuf> {
        Config::file_of(&self.args, &self.env)
    }
}

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// SIGHUP.
    Signal,
    /// The watcher saw the files change.
    FileChange,
}

impl Cause {
    fn describe(self) -> &'static str {
        match self {
            Cause::Signal => "on SIGHUP",
            Cause::FileChange => "after a change of the files",
        }
    }
}

/// The result of one reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// New policies are in force; one line per change.
    Applied(Vec<String>),
    /// Nothing changed: the old policies stay. `reason` is `config_invalid`,
    /// `restart_required` or `audit_unhealthy` (the record could not be written).
    Rejected {
        /// Why.
        reason: ReasonCode,
        /// The error, for operators.
        error: String,
    },
    /// The files say what is already in force.
    Unchanged,
}

impl ReloadOutcome {
    /// `applied`, `rejected` or `unchanged` (the metric label).
    pub fn result(&self) -> &'static str {
        match self {
            ReloadOutcome::Applied(_) => "applied",
            ReloadOutcome::Rejected { .. } => "rejected",
            ReloadOutcome::Unchanged => "unchanged",
        }
    }
}

/// Settings that differ between two configurations, `key: before -> after`: all of them need a
/// restart (only the policy file's content is reloaded).
pub fn restart_only_changes(running: &Config, loaded: &Config) -> Vec<String> {
    let mut out = Vec::new();
    leaf_changes(
        "",
        &serde_json::to_value(running).unwrap_or_default(),
        &serde_json::to_value(loaded).unwrap_or_default(),
        &mut out,
    );
    out
}

/// Read the configuration and the policy file again; the policies, or why not.
fn prepare(source: &ConfigSource, running: &Config) -> Result<Policies, (ReasonCode, String)> {
    let config = source
        .load()
        .map_err(|e| (ReasonCode::ConfigInvalid, e.to_string()))?;
    let restart = restart_only_changes(running, &config);
    if !restart.is_empty() {
        return Err((
            ReasonCode::RestartRequired,
            format!(
                "only the policy file's content changes at runtime; these settings need a restart: {}",
                restart.join("; ")
            ),
        ));
    }
    let Some(path) = &config.policies_file else {
        return Err((
            ReasonCode::ConfigInvalid,
            "policies_file: not set".to_string(),
        ));
    };
    Policies::load(path).map_err(|e| (ReasonCode::ConfigInvalid, e.to_string()))
}

/// A digest of the files' bytes (or of why one cannot be read).
fn digest(files: &[PathBuf]) -> [u8; 32] {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.as_os_str().as_encoded_bytes());
        h.update([0]);
        match std::fs::read(f) {
            Ok(bytes) => {
                h.update(b"ok");
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
            Err(e) => h.update(format!("error {:?}", e.kind()).as_bytes()),
        }
    }
    h.finalize().into()
}

/// Reloads the policies of a running actuator.
pub struct Reloader {
    engine: Arc<Engine>,
    source: ConfigSource,
    /// The configuration the process started with (before any default was derived from it).
    running: Config,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader for `engine`, which runs with `running`, loaded from `source`.
    pub fn new(engine: Arc<Engine>, source: ConfigSource, running: Config) -> Self {
        Self {
            engine,
            source,
            running,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// The files the watcher reads: the config file (if any) and the policy file.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.source
            .config_file()
            .into_iter()
            .chain(self.running.policies_file.clone())
            .collect()
    }

    /// Reload once: read and validate, compare, audit, put in force. One at a time.
    pub async fn reload(&self, cause: Cause) -> ReloadOutcome {
        let _one = self.one_at_a_time.lock().await;
        let (source, running) = (self.source.clone(), self.running.clone());
        // File reads and validation (secret files included) off the async workers.
        let prepared = tokio::task::spawn_blocking(move || prepare(&source, &running))
            .await
            .unwrap_or_else(|e| {
                Err((
                    ReasonCode::ConfigInvalid,
                    format!("reading the files failed: {e}"),
                ))
            });
        let outcome = match prepared {
            Err((reason, error)) => ReloadOutcome::Rejected { reason, error },
            Ok(policies) => self.apply(policies, cause).await,
        };
        match &outcome {
            ReloadOutcome::Applied(changes) => {
                tracing::info!(changes = %changes.join("; "), "policies reloaded {}", cause.describe());
                self.engine.note_reload(outcome.result(), None);
            }
            ReloadOutcome::Unchanged => {
                tracing::info!(
                    "reload {}: the policies in force are unchanged",
                    cause.describe()
                );
                self.engine.note_reload(outcome.result(), None);
            }
            ReloadOutcome::Rejected { reason, error } => {
                tracing::error!(reason = reason.as_str(), error = %error, "reload {} rejected; the policies in force stay", cause.describe());
                if *reason != ReasonCode::AuditUnhealthy {
                    let message = format!(
                        "reload {} rejected, the policies in force stay: {error}",
                        cause.describe()
                    );
                    if let Err(e) = self
                        .engine
                        .audit_reload(Outcome::Failed, Some(*reason), message)
                        .await
                    {
                        tracing::error!(error = %e, "the rejected reload could not be audited");
                    }
                }
                self.engine
                    .note_reload(outcome.result(), Some(error.clone()));
            }
        }
        outcome
    }

    async fn apply(&self, policies: Policies, cause: Cause) -> ReloadOutcome {
        let changes = self.engine.policy_changes(&policies);
        if changes.is_empty() {
            return ReloadOutcome::Unchanged;
        }
        let backends = match self.engine.backends_for(&policies) {
            Ok(b) => b,
            Err(problems) => {
                return ReloadOutcome::Rejected {
                    reason: ReasonCode::ConfigInvalid,
                    error: format!("broker backends cannot be built: {}", problems.join("; ")),
                }
            }
        };
        // Nothing changes without a durable record.
        let message = format!(
            "policies reloaded {}: {}",
            cause.describe(),
            changes.join("; ")
        );
        if let Err(e) = self
            .engine
            .audit_reload(Outcome::Applied, None, message)
            .await
        {
            return ReloadOutcome::Rejected {
                reason: ReasonCode::AuditUnhealthy,
                error: format!("not applied: its audit record could not be written: {e}"),
            };
        }
        self.engine.install_policies(policies, backends).await;
        ReloadOutcome::Applied(changes)
    }

    /// Reload on SIGHUP, and when the watched files change (checked every `watch_interval`;
    /// zero: SIGHUP only), on a tracked task until the engine shuts down. The signal handler is
    /// installed before this returns.
    pub fn start(self: Arc<Self>, watch_interval: Duration) {
        let files = self.watched_files();
        let mut last = digest(&files);
        #[cfg(unix)]
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reloads follow the file watcher only");
                None
            }
        };
        tracing::info!(
            files = ?files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            interval = ?watch_interval,
            "reloading the policies on SIGHUP and when these files change"
        );
        let stop = self.engine.stop_token();
        let engine = self.engine.clone();
        engine.spawn_tracked(async move {
            let mut tick = (!watch_interval.is_zero()).then(|| {
                let mut t = tokio::time::interval(watch_interval);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            loop {
                #[cfg(unix)]
                let signal = async {
                    match hangup.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let signal = std::future::pending::<Option<()>>();
                let poll = async {
                    match tick.as_mut() {
                        Some(t) => t.tick().await,
                        None => std::future::pending().await,
                    }
                };
                let cause = tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = signal => Cause::Signal,
                    _ = poll => Cause::FileChange,
                };
                let files = files.clone();
                let now = tokio::task::spawn_blocking(move || digest(&files))
                    .await
                    .unwrap_or_default();
                if cause == Cause::FileChange && now == last {
                    continue;
                }
                last = now;
                self.reload(cause).await;
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn every_changed_setting_is_named_with_both_values() {
        let running = Config::default();
        let mut loaded = running.clone();
        loaded.listen = "127.0.0.1:9096".parse().unwrap();
        loaded.audit.max_files = 7;
        loaded.dry_run = true;
        assert_eq!(
            restart_only_changes(&running, &loaded),
            vec![
                "audit.max_files: 5 -> 7".to_string(),
                "dry_run: false -> true".into(),
                "listen: 0.0.0.0:9095 -> 127.0.0.1:9096".into(),
            ]
        );
        assert!(restart_only_changes(&running, &running.clone()).is_empty());
    }

    #[test]
    fn the_digest_follows_content_not_paths_alone() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.yaml");
        std::fs::write(&f, "policies: []\n").unwrap();
        let a = digest(std::slice::from_ref(&f));
        assert_eq!(a, digest(std::slice::from_ref(&f)));
        std::fs::write(&f, "policies: [] # edited\n").unwrap();
        let b = digest(std::slice::from_ref(&f));
        assert_ne!(a, b);
        std::fs::remove_file(&f).unwrap();
        assert_ne!(b, digest(std::slice::from_ref(&f)));
    }
}
