//! Prometheus text exposition of a lag report and of broker health.
//!
//! Collection renders once into a string; a scrape only concatenates strings, so it never waits
//! on Kafka and costs the same however slow the cluster is.

use std::fmt::Write;

use crate::health::HealthSample;
use crate::lag::LagReport;

/// Escapes a label value (backslash, double quote, newline).
pub(crate) fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut s = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    std::borrow::Cow::Owned(s)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes a float the way Prometheus reads it.
fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// Renders the lag families of `r`.
pub(crate) fn render_lag(r: &LagReport) -> String {
    let mut out = String::with_capacity(256 + r.partition_count() * 400);
    let cluster = escape(&r.cluster).into_owned();
    type Value = fn(&crate::lag::PartitionReport) -> Option<String>;
    let partition_families: [(&str, &str, Value); 3] = [
        (
            "kafka_consumergroup_lag",
            "Messages the group has not consumed: log end offset minus committed offset, never negative.",
            |p| Some(p.lag.to_string()),
        ),
        (
            "kafka_consumergroup_lag_seconds",
            "Age in seconds of the oldest message the group has not consumed; 0 when lag is 0.",
            |p| p.lag_seconds.map(num),
        ),
        (
            "kafka_consumergroup_current_offset",
            "The group's committed offset.",
            |p| Some(p.committed_offset.to_string()),
        ),
    ];
    for (name, help, value) in partition_families {
        header(&mut out, name, "gauge", help);
        for g in &r.groups {
            let group = escape(&g.group);
            for t in &g.topics {
                let topic = escape(&t.topic);
                for p in &t.partitions {
                    if let Some(v) = value(p) {
                        let _ = writeln!(
                            out,
                            "{name}{{cluster=\"{cluster}\",consumergroup=\"{group}\",topic=\"{topic}\",partition=\"{}\"}} {v}",
                            p.partition
                        );
                    }
                }
            }
        }
    }
    header(
        &mut out,
        "kafka_consumergroup_drain_seconds",
        "gauge",
        "Seconds until the group catches up on the topic at its recent consumption rate; absent while it consumes nothing.",
    );
    for g in &r.groups {
        let group = escape(&g.group);
        for t in &g.topics {
            if let Some(d) = t.drain_seconds {
                let _ = writeln!(
                    out,
                    "kafka_consumergroup_drain_seconds{{cluster=\"{cluster}\",consumergroup=\"{group}\",topic=\"{}\"}} {}",
                    escape(&t.topic),
                    num(d)
                );
            }
        }
    }
    header(
        &mut out,
        "kafka_topic_partition_current_offset",
        "gauge",
        "Log end offset (high watermark) of the partition.",
    );
    for t in &r.topic_end_offsets {
        let topic = escape(&t.topic);
        for (p, end) in &t.partitions {
            let _ = writeln!(
                out,
                "kafka_topic_partition_current_offset{{cluster=\"{cluster}\",topic=\"{topic}\",partition=\"{p}\"}} {end}"
            );
        }
    }
    let pending = r
        .groups
        .iter()
        .flat_map(|g| &g.topics)
        .flat_map(|t| &t.partitions)
        .filter(|p| p.lag_seconds.is_none())
        .count();
    header(
        &mut out,
        "medic_agent_groups",
        "gauge",
        "Consumer groups in the last successful collection.",
    );
    let _ = writeln!(
        out,
        "medic_agent_groups{{cluster=\"{cluster}\"}} {}",
        r.groups.len()
    );
    header(
        &mut out,
        "medic_agent_partitions",
        "gauge",
        "Group partitions with a committed offset in the last successful collection.",
    );
    let _ = writeln!(
        out,
        "medic_agent_partitions{{cluster=\"{cluster}\"}} {}",
        r.partition_count()
    );
    header(
        &mut out,
        "medic_agent_lag_seconds_pending",
        "gauge",
        "Lagging partitions whose lag in seconds is not known yet (their record timestamp is still being read).",
    );
    let _ = writeln!(
        out,
        "medic_agent_lag_seconds_pending{{cluster=\"{cluster}\"}} {pending}"
    );
    header(
        &mut out,
        "medic_agent_committed_offsets_skipped",
        "gauge",
        "Committed offsets not turned into lag in the last collection, by reason.",
    );
    let _ = writeln!(
        out,
        "medic_agent_committed_offsets_skipped{{cluster=\"{cluster}\",reason=\"topic_missing\"}} {}",
        r.skipped.topic_missing
    );
    let _ = writeln!(
        out,
        "medic_agent_committed_offsets_skipped{{cluster=\"{cluster}\",reason=\"end_offset_unknown\"}} {}",
        r.skipped.end_offset_unknown
    );
    out
}

/// Renders the broker families of a sidecar.
pub(crate) fn render_broker(
    cluster: &str,
    broker: i32,
    up: bool,
    h: Option<&HealthSample>,
) -> String {
    let mut out = String::with_capacity(2048);
    let cluster = escape(cluster);
    let labels = format!("cluster=\"{cluster}\",broker=\"{broker}\"");
    header(
        &mut out,
        "kafka_broker_up",
        "gauge",
        "1 if the local broker answered a request in the last collection, else 0.",
    );
    let _ = writeln!(out, "kafka_broker_up{{{labels}}} {}", u8::from(up));
    let Some(h) = h else { return out };
    let scalar = |out: &mut String, name: &str, kind: &str, help: &str, v: Option<String>| {
        if let Some(v) = v {
            header(out, name, kind, help);
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    scalar(
        &mut out,
        "kafka_broker_cpu_seconds_total",
        "counter",
        "CPU time used by the broker process, cgroup or host, in seconds.",
        h.cpu_seconds_total.map(num),
    );
    scalar(
        &mut out,
        "kafka_broker_cpu_cores",
        "gauge",
        "CPU capacity available to the broker in cores (cgroup quota, else host cores).",
        h.cpu_cores.map(num),
    );
    scalar(
        &mut out,
        "kafka_broker_memory_used_bytes",
        "gauge",
        "Resident memory of the broker process, working set of its cgroup, or host memory in use.",
        h.memory_used_bytes.map(|v| v.to_string()),
    );
    scalar(
        &mut out,
        "kafka_broker_network_receive_bytes_total",
        "counter",
        "Bytes received on the broker's network interfaces, loopback excluded.",
        h.network_receive_bytes_total.map(|v| v.to_string()),
    );
    scalar(
        &mut out,
        "kafka_broker_network_transmit_bytes_total",
        "counter",
        "Bytes transmitted on the broker's network interfaces, loopback excluded.",
        h.network_transmit_bytes_total.map(|v| v.to_string()),
    );
    if !h.disks.is_empty() {
        header(
            &mut out,
            "kafka_broker_disk_used_bytes",
            "gauge",
            "Bytes used on the filesystem of the broker log directory.",
        );
        for d in &h.disks {
            let _ = writeln!(
                out,
                "kafka_broker_disk_used_bytes{{{labels},path=\"{}\"}} {}",
                escape(&d.path),
                d.used_bytes
            );
        }
        header(
            &mut out,
            "kafka_broker_disk_size_bytes",
            "gauge",
            "Size in bytes of the filesystem of the broker log directory.",
        );
        for d in &h.disks {
            let _ = writeln!(
                out,
                "kafka_broker_disk_size_bytes{{{labels},path=\"{}\"}} {}",
                escape(&d.path),
                d.size_bytes
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::DiskSample;
    use crate::lag::{partition_report, GroupReport, Skipped, TopicEnds, TopicReport};

    fn report() -> LagReport {
        LagReport {
            cluster: "prod".into(),
            collected_at: 1_000.0,
            groups: vec![GroupReport {
                group: "bill\"ing".into(),
                state: "Stable".into(),
                coordinator: 1,
                topics: vec![TopicReport {
                    topic: "orders".into(),
                    lag: 7,
                    lag_max: 7,
                    lag_seconds_max: Some(12.5),
                    consumption_rate: Some(2.0),
                    drain_seconds: Some(3.5),
                    partitions: vec![
                        partition_report(0, 10, 17, 1_000.0, Some(987.5), None),
                        partition_report(1, 5, 5, 1_000.0, None, None),
                    ],
                }],
            }],
            topic_end_offsets: vec![TopicEnds {
                topic: "orders".into(),
                partitions: vec![(0, 17), (1, 5)],
            }],
            skipped: Skipped {
                topic_missing: 2,
                end_offset_unknown: 0,
            },
        }
    }

    #[test]
    fn lag_families_exact_lines() {
        let text = render_lag(&report());
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let g = r#"cluster="prod",consumergroup="bill\"ing",topic="orders""#;
        let expected = [
            format!("kafka_consumergroup_lag{{{g},partition=\"0\"}} 7"),
            format!("kafka_consumergroup_lag{{{g},partition=\"1\"}} 0"),
            format!("kafka_consumergroup_lag_seconds{{{g},partition=\"0\"}} 12.5"),
            format!("kafka_consumergroup_lag_seconds{{{g},partition=\"1\"}} 0"),
            format!("kafka_consumergroup_current_offset{{{g},partition=\"0\"}} 10"),
            format!("kafka_consumergroup_current_offset{{{g},partition=\"1\"}} 5"),
            format!("kafka_consumergroup_drain_seconds{{{g}}} 3.5"),
            r#"kafka_topic_partition_current_offset{cluster="prod",topic="orders",partition="0"} 17"#.to_string(),
            r#"kafka_topic_partition_current_offset{cluster="prod",topic="orders",partition="1"} 5"#.to_string(),
            r#"medic_agent_groups{cluster="prod"} 1"#.to_string(),
            r#"medic_agent_partitions{cluster="prod"} 2"#.to_string(),
            r#"medic_agent_lag_seconds_pending{cluster="prod"} 0"#.to_string(),
            r#"medic_agent_committed_offsets_skipped{cluster="prod",reason="topic_missing"} 2"#.to_string(),
            r#"medic_agent_committed_offsets_skipped{cluster="prod",reason="end_offset_unknown"} 0"#.to_string(),
        ];
        assert_eq!(lines, expected);
    }

    #[test]
    fn broker_families_skip_missing_readings() {
        let h = HealthSample {
            cpu_seconds_total: Some(12.25),
            cpu_cores: Some(2.0),
            memory_used_bytes: None,
            network_receive_bytes_total: Some(10),
            network_transmit_bytes_total: Some(20),
            disks: vec![DiskSample {
                path: "/data".into(),
                used_bytes: 5,
                size_bytes: 9,
            }],
            errors: vec![],
        };
        let text = render_broker("c", 3, true, Some(&h));
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            vec![
                r#"kafka_broker_up{cluster="c",broker="3"} 1"#,
                r#"kafka_broker_cpu_seconds_total{cluster="c",broker="3"} 12.25"#,
                r#"kafka_broker_cpu_cores{cluster="c",broker="3"} 2"#,
                r#"kafka_broker_network_receive_bytes_total{cluster="c",broker="3"} 10"#,
                r#"kafka_broker_network_transmit_bytes_total{cluster="c",broker="3"} 20"#,
                r#"kafka_broker_disk_used_bytes{cluster="c",broker="3",path="/data"} 5"#,
                r#"kafka_broker_disk_size_bytes{cluster="c",broker="3",path="/data"} 9"#,
            ]
        );
        assert!(!text.contains("memory"));
        let down = render_broker("c", 3, false, None);
        assert_eq!(
            down.lines().last(),
            Some(r#"kafka_broker_up{cluster="c",broker="3"} 0"#)
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }
}
