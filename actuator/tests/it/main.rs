//! The medic-actuator integration tests, in one binary: every file here used to link its own
//! copy of the actuator, kube, rdkafka and tonic (~40 MB each without debug info, ~260 MB with
//! it). Run one area with `cargo test -p medic-actuator --test it lifecycle::`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

mod support;

mod alertmanager;
mod audit_topic;
mod autoscalers;
mod binary;
mod bounded_memory;
mod broker_alerts_source;
mod brokers_cruise_control;
mod brokers_gates;
mod brokers_kafka;
mod brokers_kafka_edges;
mod brokers_log_only;
mod ha;
mod handlers;
mod keda;
mod kube_client;
mod kube_events;
mod leader;
mod lifecycle;
mod raise_min;
mod recovery;
mod reload;
mod slow_clients;
mod startup_settings;
