//! medic-actuator: parse config, init telemetry, build adapters, run.

use std::collections::BTreeMap;

use anyhow::Context;
use clap::Parser;
use medic_actuator::{telemetry, App, Args, Config};

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let config = match Config::load(&args, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("medic-actuator: {e}");
            std::process::exit(2);
        }
    };
    telemetry::init_tracing(config.log_format);
    if config.insecure_no_auth {
        tracing::warn!("authentication is OFF (--insecure-no-auth): anyone who can reach the port can scale Deployments");
    }
    let app = App::build(config, &env)
        .await
        .context("starting medic-actuator")?;
    let listener = app.bind().await.context("binding the listener")?;
    app.serve(listener, shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}
