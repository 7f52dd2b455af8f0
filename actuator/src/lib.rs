//! medic-actuator: turns `KafkaConsumerLagPersistent` alerts from Alertmanager into replica
//! changes of consumer Deployments, with cooldowns, dedupe, authentication and a durable audit
//! log. See README.md in this crate for the operator's view.

pub mod alert;
pub mod app;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod broker;
pub mod config;
pub mod decide;
pub mod engine;
pub mod http;
pub mod intent;
pub mod keda;
pub mod leader;
pub mod policy;
pub mod reason;
pub mod reload;
pub mod telemetry;
pub mod tls;

pub use app::App;
pub use config::Config;
