//! Test harness for kafka-medic: real servers on 127.0.0.1 with ports picked at run time,
//! each stopped when its handle is dropped, Kafka helpers built on rdkafka, a stateful fake
//! Kubernetes API, and the whole loop (`stack`) for the end-to-end tests, the reaction-time
//! benchmark and the demo.
//!
//! Panics are the failure mode here: this crate only runs inside tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod alertmanager;
pub mod burner;
pub mod fake_broker;
pub mod fake_kube;
pub mod http;
pub mod kafka;
pub mod load;
pub mod observe;
pub mod process;
pub mod prometheus;
pub mod scenario;
pub mod stack;

pub use http::{get, sample, wait_until};
pub use kafka::{
    commit_offsets, consume_and_commit, create_topic, delete_topic, produce, produce_at,
    produce_burst, producer, Producer,
};
pub use process::{free_port, repo_root, tool, wait_for_port, workspace_bin, Server, Tansu};
