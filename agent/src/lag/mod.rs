//! Consumer lag: the report model and the pure lag math.
//!
//! - Lag in offsets per partition is `max(0, log end offset - committed offset)`.
//! - Lag in seconds is the age of the record at the committed offset: placed in time by the
//!   end-offset [`history`], or read from the record itself when the history cannot place it.
//! - Time to drain per (group, topic) comes from the recent consumption rate ([`drain`]).

pub(crate) mod drain;
pub(crate) mod history;

use serde::Serialize;

/// Where a partition's lag in seconds came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LagSecondsSource {
    /// No lag, so 0 by definition.
    Zero,
    /// Interpolated inside the end-offset history.
    Interpolated,
    /// The timestamp of the record at the committed offset.
    RecordTimestamp,
    /// Not known yet: the record's timestamp is being fetched (at most a few collections).
    Pending,
}

/// One partition of one group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionReport {
    pub partition: i32,
    pub committed_offset: i64,
    pub end_offset: i64,
    pub lag: i64,
    pub lag_seconds: Option<f64>,
    pub lag_seconds_source: LagSecondsSource,
}

/// One topic of one group, with totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicReport {
    pub topic: String,
    pub lag: i64,
    pub lag_max: i64,
    pub lag_seconds_max: Option<f64>,
    /// Offsets committed per second over the rate window, once measurable.
    pub consumption_rate: Option<f64>,
    /// Seconds until caught up at that rate; absent while nothing is consumed.
    pub drain_seconds: Option<f64>,
    pub partitions: Vec<PartitionReport>,
}

/// One consumer group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupReport {
    pub group: String,
    /// The group's state as ListGroups reports it (`Stable`, `Empty`, …); empty if unknown.
    pub state: String,
    pub coordinator: i32,
    pub topics: Vec<TopicReport>,
    /// Type, protocol type and members (flattened into the group's JSON).
    #[serde(flatten)]
    pub info: GroupInfo,
}

/// What ListGroups and the describe requests say of a group besides its offsets.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GroupInfo {
    /// `classic`, `consumer` (KIP-848), or another type (`share`, `streams`); `classic` when the
    /// broker does not report types (ListGroups < v5, Kafka < 3.8: no KIP-848 groups there).
    #[serde(rename = "type")]
    pub group_type: String,
    /// `consumer` for Kafka consumers, `connect` for Connect workers, empty for a group that
    /// only commits offsets.
    pub protocol_type: String,
    /// Members from DescribeGroups (classic) or ConsumerGroupDescribe (consumer); absent when
    /// the group could not be described this collection.
    pub members: Option<u32>,
}

/// Log end offsets reported as `kafka_topic_partition_current_offset`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicEnds {
    pub topic: String,
    pub partitions: Vec<(i32, i64)>,
}

/// Committed offsets that could not be turned into lag, by reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Skipped {
    /// Committed offsets on topics or partitions that no longer exist (deleted topics).
    pub topic_missing: u64,
    /// Partitions whose end offset could not be read this round (no leader, leader error).
    pub end_offset_unknown: u64,
}

/// Everything one collection learnt about lag.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LagReport {
    pub cluster: String,
    /// Unix time of the collection, seconds.
    pub collected_at: f64,
    pub groups: Vec<GroupReport>,
    pub topic_end_offsets: Vec<TopicEnds>,
    pub skipped: Skipped,
}

impl LagReport {
    /// Number of (group, partition) pairs reported.
    pub(crate) fn partition_count(&self) -> usize {
        self.groups
            .iter()
            .flat_map(|g| &g.topics)
            .map(|t| t.partitions.len())
            .sum()
    }
}

/// The pure per-partition computation: lag, and lag seconds from the history or from a known
/// record timestamp (ms). `append_time` is the history's estimate for the committed offset.
pub(crate) fn partition_report(
    partition: i32,
    committed: i64,
    end: i64,
    now: f64,
    append_time: Option<f64>,
    record_timestamp_ms: Option<i64>,
) -> PartitionReport {
    let lag = (end - committed).max(0);
    let (lag_seconds, source) = if lag == 0 {
        (Some(0.0), LagSecondsSource::Zero)
    } else if let Some(at) = append_time {
        (
            Some(history::lag_seconds(now, lag, at)),
            LagSecondsSource::Interpolated,
        )
    } else if let Some(ms) = record_timestamp_ms {
        (
            Some(history::lag_seconds(now, lag, ms as f64 / 1000.0)),
            LagSecondsSource::RecordTimestamp,
        )
    } else {
        (None, LagSecondsSource::Pending)
    };
    PartitionReport {
        partition,
        committed_offset: committed,
        end_offset: end,
        lag,
        lag_seconds,
        lag_seconds_source: source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_report_table() {
        use LagSecondsSource::*;
        // (committed, end, append_time, record ts ms) -> (lag, lag_seconds, source)
        let now = 1_000.0;
        let cases = [
            (5, 5, None, None, 0, Some(0.0), Zero),
            (7, 5, None, None, 0, Some(0.0), Zero), // committed past the end: never negative
            (3, 5, Some(990.0), Some(1_000), 2, Some(10.0), Interpolated),
            (3, 5, None, Some(950_000), 2, Some(50.0), RecordTimestamp),
            (3, 5, None, Some(2_000_000), 2, Some(0.0), RecordTimestamp), // future ts: clamp
            (3, 5, None, None, 2, None, Pending),
        ];
        for (c, e, at, ts, lag, secs, src) in cases {
            let r = partition_report(0, c, e, now, at, ts);
            assert_eq!(
                (r.lag, r.lag_seconds, r.lag_seconds_source),
                (lag, secs, src),
                "{c} {e}"
            );
        }
    }
}
