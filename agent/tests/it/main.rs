//! The medic-agent integration tests, in one binary (one link of rdkafka and the agent instead
//! of one per file). Run one area with `cargo test -p medic-agent --test it agent_tansu::`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_binary;
mod agent_tansu;
mod config_errors;
mod granularity;
mod kip848;
mod lag_seconds;
mod shards;
mod slow_clients;
mod support;
