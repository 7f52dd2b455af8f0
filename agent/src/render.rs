//! Prometheus text exposition of a lag report and of broker health.
//!
//! Collection renders once into a string; a scrape only concatenates strings, so it never waits
//! on Kafka and costs the same however slow the cluster is.

use std::cmp::Reverse;
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

fn header(out: &mut impl Write, name: &str, kind: &str, help: &str) {
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

/// Per-partition or per-topic lag series (`granularity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Granularity {
    /// kafka_exporter's per-partition families.
    #[default]
    Partition,
    /// Per (group, topic) sums and maxima, and per-topic end offset sums.
    Topic,
}

/// How a lag report is rendered.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LagOptions {
    pub(crate) granularity: Granularity,
    /// The series budget of the whole scrape.
    pub(crate) max_series: Option<usize>,
    /// Series of the scrape rendered elsewhere (broker families, scrape-time gauges, the
    /// agent's own metrics): the budget leaves room for them.
    pub(crate) other_series: usize,
}

/// The families the series budget may drop, in the order it drops them: all of a family's
/// series go before any of the next family's. Group totals, the agent's own `medic_agent_*`
/// series and broker health are never dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    PartitionCommitted,
    PartitionLagSeconds,
    PartitionLag,
    PartitionEnd,
    TopicEnd,
    Drain,
    TopicCommitted,
    TopicLagSecondsMax,
    TopicLagMax,
    TopicLag,
}

/// Lowest priority first.
pub(crate) const DROP_ORDER: [Family; 10] = [
    Family::PartitionCommitted,
    Family::PartitionLagSeconds,
    Family::PartitionLag,
    Family::PartitionEnd,
    Family::TopicEnd,
    Family::Drain,
    Family::TopicCommitted,
    Family::TopicLagSecondsMax,
    Family::TopicLagMax,
    Family::TopicLag,
];

/// The order of the families in the text.
const TEXT_ORDER: [Family; 10] = [
    Family::PartitionLag,
    Family::PartitionLagSeconds,
    Family::PartitionCommitted,
    Family::TopicLag,
    Family::TopicLagMax,
    Family::TopicLagSecondsMax,
    Family::TopicCommitted,
    Family::Drain,
    Family::PartitionEnd,
    Family::TopicEnd,
];

/// Which labels a family's series carry besides `cluster`.
#[derive(Clone, Copy, PartialEq)]
enum Labels {
    GroupTopicPartition,
    GroupTopic,
    TopicPartition,
    Topic,
}

impl Family {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Family::PartitionLag => "kafka_consumergroup_lag",
            Family::PartitionLagSeconds => "kafka_consumergroup_lag_seconds",
            Family::PartitionCommitted => "kafka_consumergroup_current_offset",
            Family::PartitionEnd => "kafka_topic_partition_current_offset",
            Family::Drain => "kafka_consumergroup_drain_seconds",
            Family::TopicLag => "kafka_consumergroup_lag_sum",
            Family::TopicLagMax => "kafka_consumergroup_lag_max",
            Family::TopicLagSecondsMax => "kafka_consumergroup_lag_seconds_max",
            Family::TopicCommitted => "kafka_consumergroup_current_offset_sum",
            Family::TopicEnd => "kafka_topic_current_offset_sum",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Family::PartitionLag => "Messages the group has not consumed: log end offset minus committed offset, never negative.",
            Family::PartitionLagSeconds => "Age in seconds of the oldest message the group has not consumed; 0 when lag is 0.",
            Family::PartitionCommitted => "The group's committed offset.",
            Family::PartitionEnd => "Log end offset (high watermark) of the partition.",
            Family::Drain => "Seconds until the group catches up on the topic at its recent consumption rate; absent while it consumes nothing.",
            Family::TopicLag => "Messages the group has not consumed on the topic: the sum of its partitions' lag.",
            Family::TopicLagMax => "The largest lag of one partition of the topic for the group, in messages.",
            Family::TopicLagSecondsMax => "Age in seconds of the oldest message the group has not consumed on the topic, over the partitions whose age is known.",
            Family::TopicCommitted => "The sum of the group's committed offsets on the topic.",
            Family::TopicEnd => "The sum of the log end offsets (high watermarks) of the topic's partitions.",
        }
    }

    fn labels(self) -> Labels {
        match self {
            Family::PartitionLag | Family::PartitionLagSeconds | Family::PartitionCommitted => {
                Labels::GroupTopicPartition
            }
            Family::PartitionEnd => Labels::TopicPartition,
            Family::TopicEnd => Labels::Topic,
            _ => Labels::GroupTopic,
        }
    }

    /// Whether the family is exported at this granularity. With a budget, partition
    /// granularity also exports the per (group, topic) families, so that the totals survive
    /// when partition series are dropped.
    fn exported(self, g: Granularity, budget: bool) -> bool {
        match self {
            Family::PartitionLag
            | Family::PartitionLagSeconds
            | Family::PartitionCommitted
            | Family::PartitionEnd => g == Granularity::Partition,
            Family::Drain => true,
            Family::TopicEnd => g == Granularity::Topic,
            Family::TopicLag
            | Family::TopicLagMax
            | Family::TopicLagSecondsMax
            | Family::TopicCommitted => g == Granularity::Topic || budget,
        }
    }
}

/// What the series budget did to one rendering.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct BudgetOutcome {
    /// Series dropped, per exported family, in [`DROP_ORDER`].
    pub(crate) dropped: Vec<(Family, usize)>,
    /// Series in the scrape, as of this collection (`other_series` included).
    pub(crate) exported: usize,
}

impl BudgetOutcome {
    pub(crate) fn dropped_total(&self) -> usize {
        self.dropped.iter().map(|(_, n)| n).sum()
    }
}

/// A value as Prometheus reads it: integers stay exact.
#[derive(Clone, Copy)]
enum Value {
    Int(i64),
    Float(f64),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => f.write_str(&num(*v)),
        }
    }
}

/// Orders floats totally, so that ranks sort deterministically.
#[derive(Clone, Copy, PartialEq)]
struct Rank(f64);

impl Eq for Rank {}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Rank {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A series' place in its family: the most lagging first, then by group, topic and partition,
/// so that the same report always keeps the same series.
type Key<'a> = (Reverse<Rank>, &'a str, &'a str, i32);

fn key<'a>(rank: f64, group: &'a str, topic: &'a str, partition: i32) -> Key<'a> {
    (Reverse(Rank(rank)), group, topic, partition)
}

/// Calls `f` with every series of the family `fam`: its key (whose names are its labels) and
/// its value.
fn visit<'a>(fam: Family, r: &'a LagReport, f: &mut dyn FnMut(Key<'a>, Value)) {
    match fam {
        Family::PartitionLag | Family::PartitionLagSeconds | Family::PartitionCommitted => {
            for g in &r.groups {
                for t in &g.topics {
                    for p in &t.partitions {
                        let (rank, v) = match fam {
                            Family::PartitionLag => (p.lag as f64, Some(Value::Int(p.lag))),
                            Family::PartitionLagSeconds => match p.lag_seconds {
                                Some(s) => (s, Some(Value::Float(s))),
                                None => (0.0, None),
                            },
                            _ => (p.lag as f64, Some(Value::Int(p.committed_offset))),
                        };
                        if let Some(v) = v {
                            f(key(rank, &g.group, &t.topic, p.partition), v);
                        }
                    }
                }
            }
        }
        Family::PartitionEnd => {
            for t in &r.topic_end_offsets {
                for (p, end) in &t.partitions {
                    f(key(0.0, "", &t.topic, *p), Value::Int(*end));
                }
            }
        }
        Family::TopicEnd => {
            for t in &r.topic_end_offsets {
                let sum = t.partitions.iter().map(|(_, e)| *e).sum();
                f(key(0.0, "", &t.topic, 0), Value::Int(sum));
            }
        }
        _ => {
            for g in &r.groups {
                for t in &g.topics {
                    let lag = t.lag as f64;
                    let (rank, v) = match fam {
                        Family::Drain => match t.drain_seconds {
                            Some(d) => (d, Some(Value::Float(d))),
                            None => (0.0, None),
                        },
                        Family::TopicLagSecondsMax => match t.lag_seconds_max {
                            Some(s) => (s, Some(Value::Float(s))),
                            None => (0.0, None),
                        },
                        Family::TopicLagMax => (lag, Some(Value::Int(t.lag_max))),
                        Family::TopicCommitted => (
                            lag,
                            Some(Value::Int(
                                t.partitions.iter().map(|p| p.committed_offset).sum(),
                            )),
                        ),
                        _ => (lag, Some(Value::Int(t.lag))),
                    };
                    if let Some(v) = v {
                        f(key(rank, &g.group, &t.topic, 0), v);
                    }
                }
            }
        }
    }
}

/// Which series of a family are kept.
#[derive(Clone, Copy)]
enum Keep<'a> {
    All,
    /// The series whose key sorts at or before this one.
    UpTo(Key<'a>),
    Nothing,
}

impl Keep<'_> {
    fn admits(&self, k: &Key<'_>) -> bool {
        match self {
            Keep::All => true,
            Keep::UpTo(last) => k <= last,
            Keep::Nothing => false,
        }
    }
}

/// Keeps the first `k` of the family's `n` series in key order.
fn keep_first<'a>(fam: Family, r: &'a LagReport, n: usize, k: usize) -> Keep<'a> {
    if k >= n {
        return Keep::All;
    }
    if k == 0 {
        return Keep::Nothing;
    }
    let mut keys = Vec::with_capacity(n);
    visit(fam, r, &mut |key, _| keys.push(key));
    let (_, last, _) = keys.select_nth_unstable(k - 1);
    Keep::UpTo(*last)
}

/// Counts the samples of an exposition text.
pub(crate) fn count_samples(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// Renders the lag families of `r` into a string, with the default options.
#[cfg(test)]
pub(crate) fn render_lag(r: &LagReport) -> String {
    let mut out = String::new();
    render_lag_into(r, &LagOptions::default(), &mut out);
    out
}

/// Renders the lag families of `r` into `out`, applying the granularity and the series
/// budget, and reports what the budget dropped.
pub(crate) fn render_lag_into<W: Write>(
    r: &LagReport,
    o: &LagOptions,
    out: &mut W,
) -> BudgetOutcome {
    let cluster = escape(&r.cluster).into_owned();
    let budget = o.max_series.is_some();
    let families: Vec<Family> = DROP_ORDER
        .into_iter()
        .filter(|f| f.exported(o.granularity, budget))
        .collect();
    // The series no budget drops come first, so that the budget knows their number.
    let mut fixed = String::new();
    render_fixed(r, o, &cluster, &mut fixed);
    let budget_series = if budget { families.len() + 1 } else { 0 };
    let fixed_series = count_samples(&fixed) + budget_series + o.other_series;
    let counts: Vec<usize> = families
        .iter()
        .map(|f| {
            let mut n = 0;
            visit(*f, r, &mut |_, _| n += 1);
            n
        })
        .collect();
    let mut keep = vec![Keep::All; families.len()];
    let mut kept = counts.clone();
    if let Some(max) = o.max_series {
        let mut room = max.saturating_sub(fixed_series);
        for i in (0..families.len()).rev() {
            kept[i] = counts[i].min(room);
            room -= kept[i];
            keep[i] = keep_first(families[i], r, counts[i], kept[i]);
        }
    }
    for fam in TEXT_ORDER {
        let Some(i) = families.iter().position(|f| *f == fam) else {
            continue;
        };
        let name = fam.name();
        header(out, name, "gauge", fam.help());
        let keep = keep[i];
        let labels = fam.labels();
        visit(fam, r, &mut |k, v| {
            if !keep.admits(&k) {
                return;
            }
            let (_, group, topic, partition) = k;
            let _ = match labels {
                Labels::GroupTopicPartition => writeln!(
                    out,
                    "{name}{{cluster=\"{cluster}\",consumergroup=\"{}\",topic=\"{}\",partition=\"{partition}\"}} {v}",
                    escape(group),
                    escape(topic)
                ),
                Labels::GroupTopic => writeln!(
                    out,
                    "{name}{{cluster=\"{cluster}\",consumergroup=\"{}\",topic=\"{}\"}} {v}",
                    escape(group),
                    escape(topic)
                ),
                Labels::TopicPartition => writeln!(
                    out,
                    "{name}{{cluster=\"{cluster}\",topic=\"{}\",partition=\"{partition}\"}} {v}",
                    escape(topic)
                ),
                Labels::Topic => writeln!(
                    out,
                    "{name}{{cluster=\"{cluster}\",topic=\"{}\"}} {v}",
                    escape(topic)
                ),
            };
        });
    }
    let _ = out.write_str(&fixed);
    let outcome = BudgetOutcome {
        dropped: families
            .iter()
            .zip(counts.iter().zip(&kept))
            .map(|(f, (n, k))| (*f, n - k))
            .collect(),
        exported: fixed_series + kept.iter().sum::<usize>(),
    };
    if budget {
        header(
            out,
            "medic_agent_series_dropped",
            "gauge",
            "Series the series budget (max_series) left out of the last collection's scrape, by family.",
        );
        for (f, n) in &outcome.dropped {
            let _ = writeln!(
                out,
                "medic_agent_series_dropped{{cluster=\"{cluster}\",family=\"{}\"}} {n}",
                f.name()
            );
        }
        header(
            out,
            "medic_agent_series_exported",
            "gauge",
            "Series in a scrape as of the last collection, the agent's own included.",
        );
        let _ = writeln!(
            out,
            "medic_agent_series_exported{{cluster=\"{cluster}\"}} {}",
            outcome.exported
        );
    }
    outcome
}

/// The series no budget drops: per-group totals (at topic granularity or with a budget), the
/// group-level families, and the agent's own gauges about the report.
fn render_fixed(r: &LagReport, o: &LagOptions, cluster: &str, out: &mut String) {
    if o.granularity == Granularity::Topic || o.max_series.is_some() {
        header(
            out,
            "kafka_consumergroup_group_lag_sum",
            "gauge",
            "Messages the group has not consumed, over all its topics and partitions.",
        );
        for g in &r.groups {
            let _ = writeln!(
                out,
                "kafka_consumergroup_group_lag_sum{{cluster=\"{cluster}\",consumergroup=\"{}\"}} {}",
                escape(&g.group),
                g.topics.iter().map(|t| t.lag).sum::<i64>()
            );
        }
        header(
            out,
            "kafka_consumergroup_group_lag_seconds_max",
            "gauge",
            "Age in seconds of the oldest message the group has not consumed, over the partitions whose age is known.",
        );
        for g in &r.groups {
            let max = g
                .topics
                .iter()
                .filter_map(|t| t.lag_seconds_max)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
            if let Some(max) = max {
                let _ = writeln!(
                    out,
                    "kafka_consumergroup_group_lag_seconds_max{{cluster=\"{cluster}\",consumergroup=\"{}\"}} {}",
                    escape(&g.group),
                    num(max)
                );
            }
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
        out,
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
        out,
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
        out,
        "medic_agent_lag_seconds_pending",
        "gauge",
        "Lagging partitions whose lag in seconds is not known yet (their record timestamp is still being read).",
    );
    let _ = writeln!(
        out,
        "medic_agent_lag_seconds_pending{{cluster=\"{cluster}\"}} {pending}"
    );
    header(
        out,
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
    render_group_info(r, cluster, out);
}

/// Group-level families (one series per group, so never dropped by the series budget):
/// `kafka_consumergroup_members` (kafka_exporter's name; absent for a group not described this
/// collection) and `kafka_consumergroup_info` (state, type and protocol type as labels, value
/// 1).
fn render_group_info(r: &LagReport, cluster: &str, out: &mut String) {
    header(
        out,
        "kafka_consumergroup_members",
        "gauge",
        "Members of the consumer group, from DescribeGroups (classic groups) or ConsumerGroupDescribe (KIP-848 consumer groups).",
    );
    for g in &r.groups {
        if let Some(m) = g.info.members {
            let _ = writeln!(
                out,
                "kafka_consumergroup_members{{cluster=\"{cluster}\",consumergroup=\"{}\"}} {m}",
                escape(&g.group)
            );
        }
    }
    header(
        out,
        "kafka_consumergroup_info",
        "gauge",
        "1 per consumer group, with its state, its type (classic or consumer, KIP-848) and its protocol type as labels.",
    );
    for g in &r.groups {
        let _ = writeln!(
            out,
            "kafka_consumergroup_info{{cluster=\"{cluster}\",consumergroup=\"{}\",state=\"{}\",type=\"{}\",protocol_type=\"{}\"}} 1",
            escape(&g.group),
            escape(&g.state),
            escape(&g.info.group_type),
            escape(&g.info.protocol_type)
        );
    }
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
                info: crate::lag::GroupInfo {
                    group_type: "consumer".into(),
                    protocol_type: "consumer".into(),
                    members: Some(3),
                },
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
            r#"kafka_consumergroup_members{cluster="prod",consumergroup="bill\"ing"} 3"#.to_string(),
            r#"kafka_consumergroup_info{cluster="prod",consumergroup="bill\"ing",state="Stable",type="consumer",protocol_type="consumer"} 1"#.to_string(),
        ];
        assert_eq!(lines, expected);
    }

    #[test]
    fn topic_granularity_exact_lines() {
        let o = LagOptions {
            granularity: Granularity::Topic,
            ..Default::default()
        };
        let mut text = String::new();
        let outcome = render_lag_into(&report(), &o, &mut text);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let g = r#"cluster="prod",consumergroup="bill\"ing""#;
        let gt = format!(r#"{g},topic="orders""#);
        let expected = [
            format!("kafka_consumergroup_lag_sum{{{gt}}} 7"),
            format!("kafka_consumergroup_lag_max{{{gt}}} 7"),
            format!("kafka_consumergroup_lag_seconds_max{{{gt}}} 12.5"),
            format!("kafka_consumergroup_current_offset_sum{{{gt}}} 15"),
            format!("kafka_consumergroup_drain_seconds{{{gt}}} 3.5"),
            r#"kafka_topic_current_offset_sum{cluster="prod",topic="orders"} 22"#.to_string(),
            format!("kafka_consumergroup_group_lag_sum{{{g}}} 7"),
            format!("kafka_consumergroup_group_lag_seconds_max{{{g}}} 12.5"),
            r#"medic_agent_groups{cluster="prod"} 1"#.to_string(),
            r#"medic_agent_partitions{cluster="prod"} 2"#.to_string(),
            r#"medic_agent_lag_seconds_pending{cluster="prod"} 0"#.to_string(),
            r#"medic_agent_committed_offsets_skipped{cluster="prod",reason="topic_missing"} 2"#.to_string(),
            r#"medic_agent_committed_offsets_skipped{cluster="prod",reason="end_offset_unknown"} 0"#.to_string(),
            format!(r#"kafka_consumergroup_members{{{g}}} 3"#),
            format!(r#"kafka_consumergroup_info{{{g},state="Stable",type="consumer",protocol_type="consumer"}} 1"#),
        ];
        assert_eq!(lines, expected);
        assert!(!text.contains("partition="), "{text}");
        assert_eq!(outcome.dropped_total(), 0);
        assert_eq!(outcome.exported, expected.len());
    }

    /// One group, one topic, partitions with lags 40, 10, 30, 20 (lag seconds the same
    /// values), committed offsets 100 + p.
    fn four_partitions(order: [i32; 4]) -> LagReport {
        let lags = [40, 10, 30, 20];
        let partitions = order
            .iter()
            .map(|&p| {
                let lag = lags[p as usize];
                let mut r = partition_report(
                    p,
                    100 + i64::from(p),
                    100 + i64::from(p) + lag,
                    0.0,
                    None,
                    None,
                );
                r.lag_seconds = Some(lag as f64);
                r
            })
            .collect();
        LagReport {
            cluster: "c".into(),
            groups: vec![GroupReport {
                group: "g".into(),
                state: "Stable".into(),
                coordinator: 1,
                info: Default::default(),
                topics: vec![TopicReport {
                    topic: "t".into(),
                    lag: 100,
                    lag_max: 40,
                    lag_seconds_max: Some(40.0),
                    consumption_rate: Some(1.0),
                    drain_seconds: Some(100.0),
                    partitions,
                }],
            }],
            topic_end_offsets: vec![TopicEnds {
                topic: "t".into(),
                partitions: vec![(0, 140), (1, 111), (2, 132), (3, 123)],
            }],
            ..Default::default()
        }
    }

    fn samples_of<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{family}{{")))
            .collect()
    }

    #[test]
    fn budget_drops_lowest_priority_families_and_least_lagging_partitions_first() {
        // Never dropped: 2 group totals + 5 medic_agent gauges + 1 group info + 10 budget
        // series (9 families and the exported gauge) + 4 others = 22. Droppable: 4 topic-level
        // + 1 drain + 4 end offsets + 4 lag + 4 lag seconds + 4 committed = 21. A budget of 36
        // leaves 14: the topic level, drain, end offsets, lag, and the 1 most lagging
        // lag-seconds series.
        let o = LagOptions {
            granularity: Granularity::Partition,
            max_series: Some(36),
            other_series: 4,
        };
        let mut text = String::new();
        let outcome = render_lag_into(&four_partitions([0, 1, 2, 3]), &o, &mut text);
        let dropped: Vec<(&str, usize)> = outcome
            .dropped
            .iter()
            .map(|(f, n)| (f.name(), *n))
            .collect();
        assert_eq!(
            dropped,
            vec![
                ("kafka_consumergroup_current_offset", 4),
                ("kafka_consumergroup_lag_seconds", 3),
                ("kafka_consumergroup_lag", 0),
                ("kafka_topic_partition_current_offset", 0),
                ("kafka_consumergroup_drain_seconds", 0),
                ("kafka_consumergroup_current_offset_sum", 0),
                ("kafka_consumergroup_lag_seconds_max", 0),
                ("kafka_consumergroup_lag_max", 0),
                ("kafka_consumergroup_lag_sum", 0),
            ]
        );
        assert_eq!(outcome.exported, 36);
        assert_eq!(count_samples(&text) + o.other_series, 36, "{text}");
        assert_eq!(
            samples_of(&text, "kafka_consumergroup_lag_seconds"),
            vec![
                r#"kafka_consumergroup_lag_seconds{cluster="c",consumergroup="g",topic="t",partition="0"} 40"#
            ]
        );
        assert!(samples_of(&text, "kafka_consumergroup_current_offset").is_empty());
        assert_eq!(samples_of(&text, "kafka_consumergroup_lag").len(), 4);
        assert_eq!(
            samples_of(&text, "kafka_consumergroup_group_lag_sum"),
            vec![r#"kafka_consumergroup_group_lag_sum{cluster="c",consumergroup="g"} 100"#]
        );
        assert!(text.contains(
            "medic_agent_series_dropped{cluster=\"c\",family=\"kafka_consumergroup_lag_seconds\"} 3\n"
        ));
        assert!(text.contains("medic_agent_series_exported{cluster=\"c\"} 36\n"));

        // Two series less: the lag family now loses its two least lagging partitions (1 and 3),
        // whatever the order of the report.
        let o = LagOptions {
            max_series: Some(33),
            ..o
        };
        let mut first = String::new();
        render_lag_into(&four_partitions([0, 1, 2, 3]), &o, &mut first);
        let mut second = String::new();
        render_lag_into(&four_partitions([3, 1, 0, 2]), &o, &mut second);
        let mut kept: Vec<&str> = samples_of(&second, "kafka_consumergroup_lag");
        kept.sort_unstable();
        assert_eq!(samples_of(&first, "kafka_consumergroup_lag"), kept);
        assert_eq!(
            kept,
            vec![
                r#"kafka_consumergroup_lag{cluster="c",consumergroup="g",topic="t",partition="0"} 40"#,
                r#"kafka_consumergroup_lag{cluster="c",consumergroup="g",topic="t",partition="2"} 30"#,
            ]
        );
    }

    #[test]
    fn budget_below_the_fixed_series_drops_everything_droppable_and_says_so() {
        let o = LagOptions {
            granularity: Granularity::Topic,
            max_series: Some(3),
            other_series: 0,
        };
        let mut text = String::new();
        let outcome = render_lag_into(&four_partitions([0, 1, 2, 3]), &o, &mut text);
        // Topic granularity: 6 families, so 7 budget series, + 2 group totals + 5 gauges + 1
        // group info.
        assert_eq!(outcome.exported, 15);
        assert_eq!(outcome.dropped_total(), 6);
        assert_eq!(count_samples(&text), 15, "{text}");
        assert!(text.contains(
            "kafka_consumergroup_group_lag_sum{cluster=\"c\",consumergroup=\"g\"} 100\n"
        ));
        assert!(samples_of(&text, "kafka_consumergroup_lag_sum").is_empty());
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
