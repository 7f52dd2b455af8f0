//! medic-actuator: parse config, init telemetry, build adapters, run.

use std::collections::BTreeMap;
use std::sync::Arc;

use medic_actuator::config::ConfigError;
use medic_actuator::reload::{ConfigSource, Reloader};
use medic_actuator::{telemetry, App, Config};

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// Exit code of every configuration error (as clap uses for bad flags).
const CONFIG_ERROR: i32 = 2;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let config = match Config::load(args.clone(), &env) {
        Ok(c) => c,
        Err(ConfigError::Help(e)) => e.exit(),
        Err(e) => {
            eprintln!("medic-actuator: {e}");
            std::process::exit(CONFIG_ERROR);
        }
    };
    telemetry::init_tracing(config.log_format);
    if config.insecure_no_auth {
        tracing::warn!("authentication is OFF (--insecure-no-auth): anyone who can reach the port can scale Deployments");
    }
    let started_with = config.clone();
    let app = match App::build(config, &env).await {
        Ok(app) => app,
        Err(e) if e.is_config() => {
            eprintln!("medic-actuator: {e}");
            std::process::exit(CONFIG_ERROR);
        }
        Err(e) => return Err(anyhow::Error::new(e).context("starting medic-actuator")),
    };
    let listener = app.bind().await?;
    // Policy reloads on SIGHUP and when the files change (reload.rs).
    Arc::new(Reloader::new(
        app.api.engine.clone(),
        ConfigSource::new(args, env.clone()),
        started_with,
    ))
    .start(app.config.config_watch_interval);
    app.serve(listener, shutdown_signal()).await?;
    Ok(())
}
