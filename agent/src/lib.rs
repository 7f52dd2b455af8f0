//! medic-agent: consumer-group lag (offsets and seconds) and broker health for Prometheus.

pub mod kafka;
pub mod lag;
