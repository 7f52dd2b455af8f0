//! Lag in seconds from a per-partition history of log end offsets.
//!
//! Every collection observes each partition's log end offset. The history keeps those
//! observations as runs: one entry per distinct end offset, with the first and the last time it
//! was seen. The record at offset `o` was appended when the end offset moved past `o`, so its
//! append time lies between the last time the end offset was still `<= o` and the first time it
//! was seen `> o`. [`EndOffsetHistory::append_time`] interpolates linearly inside exactly that
//! bracket. It never extrapolates: an offset older than the history, or not yet written, gets
//! `None`, and the caller reads the record's own timestamp instead. Because the answer always
//! lies inside one bracket, its error is at most the bracket's width, and a burst or a replay
//! cannot make it explode.
//!
//! When the history is full, the entry whose removal costs least *relative to its age* is
//! dropped. Recent brackets stay one collection interval wide, older ones widen in proportion to
//! their age, so the relative error stays bounded while the history reaches far back.
//!
//! Memory: the agent holds one history per partition, so a run is kept small (16 bytes): the
//! end offset, and its two sightings as 10 ms ticks after the history's first observation
//! (`u32`: 497 days; a history that outlives that starts over, and lag in seconds is read from
//! record timestamps for a collection or two). A full history at the default 64 samples is
//! 1 KiB; an idle partition's, one run.

use std::collections::VecDeque;

/// Ticks per second of the times a [`Run`] holds.
const TICKS_PER_SECOND: f64 = 100.0;

/// One run of identical end-offset observations; times in ticks after the history's base.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    offset: i64,
    first_seen: u32,
    last_seen: u32,
}

/// The history of one partition's log end offset. Times are seconds since the Unix epoch.
#[derive(Debug, Clone)]
pub(crate) struct EndOffsetHistory {
    runs: VecDeque<Run>,
    /// The time of tick 0: the first observation since the history (re)started.
    base: f64,
    capacity: usize,
}

impl EndOffsetHistory {
    /// A history holding at most `capacity` runs (at least 3).
    ///
    /// Nothing is allocated up front: an idle partition (one run) costs one small allocation,
    /// and the buffer grows to `capacity + 1` runs only as distinct end offsets arrive. (The
    /// agent holds one history per partition: reserving `history_samples + 1` runs for each,
    /// 1.5 KiB at the default 64, was most of its memory at 100,000 partitions.)
    pub(crate) fn new(capacity: usize) -> Self {
        EndOffsetHistory {
            runs: VecDeque::new(),
            base: 0.0,
            capacity: capacity.max(3),
        }
    }

    /// Bytes this history holds on the heap.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.runs.capacity() * std::mem::size_of::<Run>()
    }

    /// Number of runs held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.runs.len()
    }

    /// The oldest offset the history can place in time.
    #[cfg(test)]
    pub(crate) fn oldest_offset(&self) -> Option<i64> {
        self.runs.front().map(|r| r.offset)
    }

    /// Records that the log end offset was `end_offset` at time `now`.
    ///
    /// An end offset lower than the last one means the partition was recreated or truncated;
    /// the old history no longer describes it and is dropped. Observations older than the last
    /// one are ignored.
    pub(crate) fn observe(&mut self, end_offset: i64, now: f64) {
        if self.runs.is_empty() {
            self.base = now;
        }
        let now = match self.ticks(now) {
            Some(t) => t,
            // Before the base: older than every observation, ignored.
            None if now < self.base => return,
            // Past the range of a tick: start over from here.
            None => {
                self.runs.clear();
                self.base = now;
                0
            }
        };
        if let Some(last) = self.runs.back_mut() {
            if now < last.last_seen {
                return;
            }
            if end_offset == last.offset {
                last.last_seen = now;
                return;
            }
            if end_offset < last.offset {
                self.runs.clear();
            }
        }
        if self.runs.len() == self.runs.capacity() {
            // Grow by doubling, but never past the `capacity + 1` runs the history can hold
            // (VecDeque's own doubling would take 64 runs to 128).
            let len = self.runs.len();
            let target = (len * 2).clamp(2, self.capacity + 1);
            self.runs.reserve_exact(target.saturating_sub(len).max(1));
        }
        self.runs.push_back(Run {
            offset: end_offset,
            first_seen: now,
            last_seen: now,
        });
        if self.runs.len() > self.capacity {
            self.thin(now);
        }
    }

    /// `t` (seconds since the epoch) in ticks after the base, if it is in range.
    fn ticks(&self, t: f64) -> Option<u32> {
        let ticks = ((t - self.base) * TICKS_PER_SECOND).round();
        (0.0..=u32::MAX as f64)
            .contains(&ticks)
            .then_some(ticks as u32)
    }

    /// Seconds since the epoch of a tick.
    fn seconds(&self, ticks: u32) -> f64 {
        self.base + ticks as f64 / TICKS_PER_SECOND
    }

    /// Drops the interior run whose removal widens a bracket least relative to its age.
    fn thin(&mut self, now: u32) {
        let mut best: Option<(usize, f64)> = None;
        for i in 1..self.runs.len() - 1 {
            let before = self.runs[i - 1];
            let after = self.runs[i + 1];
            let merged_gap = after.first_seen.saturating_sub(before.last_seen) as f64;
            let age = (now.saturating_sub(before.last_seen) as f64).max(1e-9);
            let cost = merged_gap / age;
            if best.is_none_or(|(_, c)| cost < c) {
                best = Some((i, cost));
            }
        }
        if let Some((i, _)) = best {
            self.runs.remove(i);
        }
    }

    /// The estimated time at which the record at `offset` was appended, or `None` when the
    /// history cannot place it: the record is older than the first observation, or it has not
    /// been written yet.
    pub(crate) fn append_time(&self, offset: i64) -> Option<f64> {
        let first = self.runs.front()?;
        let last = self.runs.back()?;
        if offset < first.offset || offset >= last.offset {
            return None;
        }
        // The last run whose end offset is <= offset; runs are sorted by offset.
        let i = self.runs.partition_point(|r| r.offset <= offset) - 1;
        let lo = self.runs[i];
        let hi = self.runs[i + 1];
        let t1 = self.seconds(lo.last_seen);
        let t2 = self.seconds(hi.first_seen);
        let span = (hi.offset - lo.offset) as f64;
        let frac = ((offset + 1 - lo.offset) as f64 / span).clamp(0.0, 1.0);
        Some(t1 + frac * (t2 - t1))
    }

    /// The width in seconds of the bracket that places `offset`: the error bound of
    /// [`Self::append_time`].
    #[cfg(test)]
    pub(crate) fn bracket_width(&self, offset: i64) -> Option<f64> {
        let first = self.runs.front()?;
        let last = self.runs.back()?;
        if offset < first.offset || offset >= last.offset {
            return None;
        }
        let i = self.runs.partition_point(|r| r.offset <= offset) - 1;
        Some(
            self.runs[i + 1]
                .first_seen
                .saturating_sub(self.runs[i].last_seen) as f64
                / TICKS_PER_SECOND,
        )
    }
}

/// Lag in seconds for a partition: 0 when nothing is unconsumed, else `now` minus the append
/// time of the record at the committed offset, never negative.
pub(crate) fn lag_seconds(now: f64, lag: i64, append_time: f64) -> f64 {
    if lag <= 0 {
        0.0
    } else {
        (now - append_time).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn history(points: &[(i64, f64)]) -> EndOffsetHistory {
        let mut h = EndOffsetHistory::new(64);
        for (o, t) in points {
            h.observe(*o, *t);
        }
        h
    }

    #[test]
    fn empty_and_single_observation_place_nothing() {
        let h = EndOffsetHistory::new(8);
        assert_eq!(h.append_time(0), None);
        let h = history(&[(10, 100.0)]);
        assert_eq!(h.append_time(9), None);
        assert_eq!(h.append_time(10), None);
    }

    #[test]
    fn interpolates_inside_the_bracket() {
        // End offset 0 at t=100, 100 at t=110: record 49 was appended when the end passed 49,
        // i.e. reached 50, half-way through.
        let h = history(&[(0, 100.0), (100, 110.0)]);
        assert_eq!(h.append_time(49), Some(105.0));
        assert_eq!(h.append_time(0), Some(100.1));
        assert_eq!(h.append_time(99), Some(110.0));
        assert_eq!(h.append_time(100), None, "not written yet");
        assert_eq!(h.bracket_width(49), Some(10.0));
    }

    #[test]
    fn runs_of_equal_offsets_use_the_last_sighting() {
        // Idle from 100 to 200 at end offset 5, then 6 records by t=210.
        let h = history(&[(5, 100.0), (5, 150.0), (5, 200.0), (11, 210.0)]);
        assert_eq!(h.len(), 2);
        // Record 5 was appended after t=200 (the end was still 5 then), not at t=100.
        let t = h.append_time(5).unwrap();
        assert!((200.0..=210.0).contains(&t), "{t}");
        assert!((t - 201.6667).abs() < 1e-3, "{t}");
    }

    #[test]
    fn older_than_history_is_not_extrapolated() {
        let h = history(&[(1_000, 100.0), (1_010, 110.0)]);
        assert_eq!(h.append_time(999), None);
        assert_eq!(h.append_time(0), None);
    }

    #[test]
    fn a_lower_end_offset_resets_the_history() {
        let mut h = history(&[(100, 100.0), (200, 110.0)]);
        h.observe(3, 120.0);
        assert_eq!(h.len(), 1);
        assert_eq!(h.oldest_offset(), Some(3));
        assert_eq!(h.append_time(150), None);
    }

    #[test]
    fn out_of_order_observations_are_ignored() {
        let mut h = history(&[(100, 100.0), (200, 110.0)]);
        h.observe(300, 105.0);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn lag_seconds_is_zero_without_lag_and_never_negative() {
        assert_eq!(lag_seconds(100.0, 0, 10.0), 0.0);
        assert_eq!(lag_seconds(100.0, 5, 90.0), 10.0);
        assert_eq!(lag_seconds(100.0, 5, 120.0), 0.0);
    }

    #[test]
    fn memory_grows_with_distinct_offsets_and_stops_at_capacity() {
        let run = std::mem::size_of::<Run>();
        let mut h = EndOffsetHistory::new(64);
        assert_eq!(
            h.heap_bytes(),
            0,
            "nothing reserved before the first observation"
        );
        for t in 0..100 {
            h.observe(7, t as f64);
        }
        assert_eq!(h.len(), 1);
        assert!(
            h.heap_bytes() <= 2 * run,
            "idle partition: {} bytes",
            h.heap_bytes()
        );
        for i in 0..1_000 {
            h.observe(10 + i, 200.0 + i as f64);
        }
        assert_eq!(h.len(), 64);
        assert_eq!(
            h.heap_bytes(),
            65 * run,
            "a full history holds capacity + 1 runs, not VecDeque's doubling"
        );
    }

    #[test]
    fn a_run_is_16_bytes_and_times_keep_10_ms() {
        assert_eq!(std::mem::size_of::<Run>(), 16);
        // Unix times of today, observed at sub-tick instants: placed to within a tick.
        let t0 = 1_790_000_000.123;
        let h = history(&[(0, t0), (100, t0 + 10.004)]);
        let est = h.append_time(49).unwrap();
        assert!((est - (t0 + 5.0)).abs() <= 0.01, "{est}");
    }

    #[test]
    fn a_history_older_than_the_tick_range_starts_over() {
        let mut h = history(&[(0, 100.0), (10, 110.0)]);
        assert!(h.append_time(5).is_some());
        // 500 days later (past u32 ticks of 10 ms): the old runs cannot be placed any more.
        let later = 110.0 + 500.0 * 86_400.0;
        h.observe(20, later);
        assert_eq!(h.len(), 1);
        assert_eq!(h.append_time(5), None);
        h.observe(30, later + 10.0);
        assert_eq!(h.append_time(24), Some(later + 5.0));
    }

    #[test]
    fn thinning_keeps_the_oldest_and_newest_runs() {
        let mut h = EndOffsetHistory::new(8);
        for i in 0..100 {
            h.observe(i * 10, i as f64 * 10.0);
        }
        assert_eq!(h.len(), 8);
        assert_eq!(h.oldest_offset(), Some(0));
        assert_eq!(h.append_time(985), Some(986.0));
        // Recent brackets stay narrower than old ones.
        let recent = h.bracket_width(975).unwrap();
        let old = h.bracket_width(15).unwrap();
        assert!(recent < old, "recent {recent} old {old}");
    }

    proptest! {
        /// Whatever the production pattern, the true append time (somewhere between the last
        /// observation where the record did not exist and the first where it did) is within
        /// the reported bracket width of the estimate; without thinning the estimate lies in
        /// exactly that interval. The estimate never decreases as the offset grows.
        #[test]
        fn estimate_stays_in_its_bracket(
            steps in proptest::collection::vec((0i64..40, 0.1f64..30.0), 2..120),
            cap in 3usize..64,
        ) {
            let mut h = EndOffsetHistory::new(cap);
            let mut end = 0i64;
            let mut t = 1_000.0;
            let mut seen = vec![(end, t)];
            h.observe(end, t);
            for (add, dt) in &steps {
                end += add;
                t += dt;
                h.observe(end, t);
                seen.push((end, t));
            }
            let lo_off = h.oldest_offset().unwrap();
            let mut prev = f64::MIN;
            for o in lo_off..end {
                let est = h.append_time(o).expect("covered offsets are placed");
                // Truth bracket from the full (unthinned) observation list.
                let before = seen.iter().rev().find(|(e, _)| *e <= o).unwrap().1;
                let after = seen.iter().find(|(e, _)| *e > o).unwrap().1;
                let width = h.bracket_width(o).unwrap();
                // Times are held to a tick (10 ms): allow one tick either way.
                let tick = 1.0 / TICKS_PER_SECOND;
                prop_assert!(before >= est - width - tick && after <= est + width + tick,
                    "offset {} est {} width {} truth in [{}, {}]", o, est, width, before, after);
                if seen.len() <= cap.max(3) {
                    prop_assert!(est >= before - tick && est <= after + tick,
                        "offset {} est {} not in [{}, {}]", o, est, before, after);
                }
                prop_assert!(est >= prev - 1e-9);
                prev = est;
            }
            prop_assert!(h.append_time(end).is_none());
            prop_assert!(h.len() <= cap.max(3));
        }

        /// Against a producer with known append times, observed every `interval` seconds, the
        /// error is at most one interval while the history is not thinned.
        #[test]
        fn error_is_at_most_one_interval(
            rates in proptest::collection::vec(0u32..500, 1..60),
            interval in 1.0f64..30.0,
        ) {
            let mut h = EndOffsetHistory::new(128);
            let mut truth: Vec<f64> = Vec::new();
            let mut now = 0.0;
            h.observe(0, now);
            for r in &rates {
                // r records spread evenly over the next interval.
                for k in 0..*r {
                    truth.push(now + interval * (k as f64 + 1.0) / (*r as f64 + 1.0));
                }
                now += interval;
                h.observe(truth.len() as i64, now);
            }
            for (o, t) in truth.iter().enumerate() {
                let est = h.append_time(o as i64).unwrap();
                prop_assert!((est - t).abs() <= interval + 1.0 / TICKS_PER_SECOND, "offset {} est {} truth {}", o, est, t);
            }
        }
    }
}
