//! medic-agent: parse the configuration, start telemetry, run until SIGINT or SIGTERM.

use std::collections::HashMap;

use medic_agent::config::{self, LoadError};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let cfg = match config::load(std::env::args_os(), &env) {
        Ok(c) => c,
        Err(LoadError::Cli(e)) => e.exit(),
        Err(LoadError::Invalid(e)) => {
            eprintln!("medic-agent: {e}");
            std::process::exit(2);
        }
    };
    medic_agent::telemetry::init_logging(cfg.log_format);
    medic_agent::run::run(cfg, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
