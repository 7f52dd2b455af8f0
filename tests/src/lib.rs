//! Test harness for kafka-medic: real servers on 127.0.0.1 with ports picked at run time,
//! each stopped when its handle is dropped, and Kafka helpers built on rdkafka.
//!
//! Panics are the failure mode here: this crate only runs inside tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod http;
pub mod kafka;
pub mod process;

pub use http::{get, sample, wait_until};
pub use kafka::{
    commit_offsets, consume_and_commit, create_topic, delete_topic, produce, produce_at,
    produce_burst, producer, Producer,
};
pub use process::{free_port, tool, wait_for_port, Server, Tansu};
