//! medic-agent: consumer-group lag (offsets and seconds) and broker health for Prometheus.
//!
//! - [`config`]: flags, `MEDIC_AGENT_*` variables and the YAML file, validated at once.
//! - [`collect`]: one collection, from requests through the `medic-kafka` client to a
//!   [`lag::LagReport`].
//! - [`lag`]: the pure lag math (history interpolation, drain rate).
//! - [`health`]: the broker's CPU, memory, network and disk (sidecar mode).
//! - [`render`], [`snapshot`], [`server`]: what a scrape serves, never waiting on Kafka.
//! - [`run`]: the collection loop and the HTTP server.
//! - [`shard`]: which groups and topics one of several cluster-mode agents reports.

pub(crate) mod collect;
pub mod config;
pub(crate) mod health;
pub mod lag;
pub(crate) mod render;
pub mod run;
pub(crate) mod server;
pub mod shard;
pub mod snapshot;
pub mod telemetry;
