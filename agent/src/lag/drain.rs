//! Time to drain: at the recent consumption rate, how long until a group is caught up.
//!
//! For each (group, topic) the agent keeps a short window of samples of "offsets consumed so
//! far": the sum of forward moves of the committed offsets. A rewind (a reset to an earlier
//! offset) adds nothing and does not count as negative consumption. The rate is the growth of
//! that sum over the window; time to drain is the current lag divided by it. With no
//! consumption there is no estimate: the series is absent, never infinite.

use std::collections::{HashMap, VecDeque};

/// The resolution of the rate's window: the base of the rate is at most
/// `window / SAMPLES_PER_WINDOW` older than the window.
const SAMPLES_PER_WINDOW: usize = 16;

/// A window of consumption samples for one (group, topic).
#[derive(Debug, Clone)]
pub(crate) struct ConsumptionRate {
    window_seconds: f64,
    samples: VecDeque<(f64, f64)>,
    committed: HashMap<i32, i64>,
    consumed: f64,
}

impl ConsumptionRate {
    /// A rate measured over the last `window_seconds`.
    pub(crate) fn new(window_seconds: f64) -> Self {
        ConsumptionRate {
            window_seconds,
            samples: VecDeque::new(),
            committed: HashMap::new(),
            consumed: 0.0,
        }
    }

    /// Adds an observation of the committed offsets (partition, offset) at `now`.
    pub(crate) fn observe(&mut self, now: f64, committed: impl IntoIterator<Item = (i32, i64)>) {
        let mut next = HashMap::with_capacity(self.committed.len());
        for (p, o) in committed {
            if let Some(prev) = self.committed.get(&p) {
                if o > *prev {
                    self.consumed += (o - prev) as f64;
                }
            }
            next.insert(p, o);
        }
        self.committed = next;
        if self.samples.back().is_some_and(|(t, _)| now <= *t) {
            return;
        }
        // At most about SAMPLES_PER_WINDOW samples per window whatever the interval: a sample
        // taken less than window / SAMPLES_PER_WINDOW after the one before the last replaces
        // the last instead of adding one (at a 1 s interval over a 300 s window that is 18
        // samples, not 300, per group and topic).
        let n = self.samples.len();
        if n >= 2 && now - self.samples[n - 2].0 < self.window_seconds / SAMPLES_PER_WINDOW as f64 {
            self.samples[n - 1] = (now, self.consumed);
        } else {
            self.samples.push_back((now, self.consumed));
        }
        // Keep the newest sample that is at least a window old as the base of the rate.
        while self.samples.len() > 2 && now - self.samples[1].0 >= self.window_seconds {
            self.samples.pop_front();
        }
    }

    /// Offsets consumed per second over the window, once two samples exist.
    pub(crate) fn rate(&self) -> Option<f64> {
        let (t0, c0) = *self.samples.front()?;
        let (t1, c1) = *self.samples.back()?;
        (t1 > t0).then(|| (c1 - c0) / (t1 - t0))
    }
}

/// Seconds until caught up: 0 with no lag, `None` while nothing is being consumed.
pub(crate) fn drain_seconds(lag: i64, rate: Option<f64>) -> Option<f64> {
    if lag <= 0 {
        return Some(0.0);
    }
    match rate {
        Some(r) if r > 0.0 => Some(lag as f64 / r),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_needs_two_samples_and_ignores_rewinds() {
        let mut r = ConsumptionRate::new(60.0);
        r.observe(0.0, [(0, 100), (1, 50)]);
        assert_eq!(r.rate(), None);
        r.observe(10.0, [(0, 150), (1, 60)]);
        assert_eq!(r.rate(), Some(6.0));
        // Partition 1 rewinds to 0: no negative consumption.
        r.observe(20.0, [(0, 170), (1, 0)]);
        assert_eq!(r.rate(), Some(4.0));
    }

    #[test]
    fn window_slides() {
        let mut r = ConsumptionRate::new(30.0);
        for i in 0..10 {
            // 10 offsets/s for 50 s, then stopped.
            let o = if i <= 5 { i * 100 } else { 500 };
            r.observe(i as f64 * 10.0, [(0, o)]);
        }
        // The last 30 s consumed nothing.
        assert_eq!(r.rate(), Some(0.0));
    }

    #[test]
    fn samples_stay_bounded_at_short_intervals() {
        // 1 s interval, 300 s window, 10 offsets/s: without downsampling 301 samples.
        let mut r = ConsumptionRate::new(300.0);
        for i in 0..=1_000 {
            r.observe(i as f64, [(0, i * 10)]);
        }
        assert!(
            r.samples.len() <= SAMPLES_PER_WINDOW + 3,
            "{} samples",
            r.samples.len()
        );
        // The rate is still exact for a steady consumer, and its base is a window old or a
        // little more, never less.
        assert_eq!(r.rate(), Some(10.0));
        let span = r.samples.back().unwrap().0 - r.samples.front().unwrap().0;
        assert!(
            (300.0..=300.0 + 300.0 / SAMPLES_PER_WINDOW as f64 + 1.0).contains(&span),
            "{span}"
        );
        // A stop is seen within the window and its resolution: 300 + 300/16 s later the rate
        // is 0.
        for i in 1_001..=1_320 {
            r.observe(i as f64, [(0, 10_000)]);
        }
        assert_eq!(r.rate(), Some(0.0));
    }

    #[test]
    fn drain_is_absent_without_consumption() {
        assert_eq!(drain_seconds(0, None), Some(0.0));
        assert_eq!(drain_seconds(100, None), None);
        assert_eq!(drain_seconds(100, Some(0.0)), None);
        assert_eq!(drain_seconds(100, Some(4.0)), Some(25.0));
    }
}
