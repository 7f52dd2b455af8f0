//! What the collector remembers between collections: end-offset histories, record timestamps
//! already read, and consumption windows. Entries not touched for a few collections are
//! dropped, so deleted topics and departed groups do not leak memory.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::lag::drain::ConsumptionRate;
use crate::lag::history::EndOffsetHistory;
use medic_kafka::Tp;

/// Collections an entry may go unused before it is dropped.
const KEEP_ROUNDS: u64 = 3;

/// The collector's memory.
#[derive(Debug)]
pub(crate) struct LagState {
    capacity: usize,
    rate_window: f64,
    round: u64,
    histories: HashMap<Tp, (EndOffsetHistory, u64)>,
    timestamps: HashMap<(Tp, i64), i64>,
    used_timestamps: HashSet<(Tp, i64)>,
    /// Per group, its topics' consumption windows: looked up by `&str` without building a
    /// key (a `(String, Arc<str>)` key allocated a String per group and topic every round).
    rates: HashMap<String, Vec<(Arc<str>, ConsumptionRate, u64)>>,
}

impl LagState {
    pub(crate) fn new(capacity: usize, rate_window: f64) -> Self {
        LagState {
            capacity,
            rate_window,
            round: 1,
            histories: HashMap::new(),
            timestamps: HashMap::new(),
            used_timestamps: HashSet::new(),
            rates: HashMap::new(),
        }
    }

    pub(crate) fn observe_end(&mut self, tp: &Tp, end: i64, now: f64) {
        let round = self.round;
        if let Some((h, r)) = self.histories.get_mut(tp) {
            h.observe(end, now);
            *r = round;
            return;
        }
        let mut h = EndOffsetHistory::new(self.capacity);
        h.observe(end, now);
        self.histories.insert(tp.clone(), (h, round));
    }

    pub(crate) fn append_time(&self, tp: &Tp, offset: i64) -> Option<f64> {
        self.histories
            .get(tp)
            .and_then(|(h, _)| h.append_time(offset))
    }

    pub(crate) fn cached_timestamp(&mut self, tp: &Tp, offset: i64) -> Option<i64> {
        let key = (tp.clone(), offset);
        let ts = self.timestamps.get(&key).copied()?;
        self.used_timestamps.insert(key);
        Some(ts)
    }

    pub(crate) fn cache_timestamp(&mut self, tp: &Tp, offset: i64, ts_ms: i64) {
        self.timestamps.insert((tp.clone(), offset), ts_ms);
        self.used_timestamps.insert((tp.clone(), offset));
    }

    pub(crate) fn observe_consumption(
        &mut self,
        group: &str,
        topic: &Arc<str>,
        now: f64,
        committed: impl Iterator<Item = (i32, i64)>,
    ) -> Option<f64> {
        let round = self.round;
        let window = self.rate_window;
        let topics = match self.rates.get_mut(group) {
            Some(t) => t,
            None => self.rates.entry(group.to_string()).or_default(),
        };
        let i = match topics.iter().position(|(t, _, _)| t == topic) {
            Some(i) => i,
            None => {
                topics.push((topic.clone(), ConsumptionRate::new(window), round));
                topics.len() - 1
            }
        };
        let (_, rate, r) = &mut topics[i];
        rate.observe(now, committed);
        *r = round;
        rate.rate()
    }

    /// Ends a collection: drops what was not used recently.
    pub(crate) fn sweep(&mut self) {
        let round = self.round;
        self.histories.retain(|_, (_, r)| round - *r < KEEP_ROUNDS);
        self.rates.retain(|_, topics| {
            topics.retain(|(_, _, r)| round - *r < KEEP_ROUNDS);
            !topics.is_empty()
        });
        let used = std::mem::take(&mut self.used_timestamps);
        self.timestamps.retain(|k, _| used.contains(k));
        self.round += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_unused_for_keep_rounds_are_dropped() {
        let mut s = LagState::new(8, 60.0);
        let a = Tp::new("a", 0);
        let b = Tp::new("b", 0);
        let topic: Arc<str> = Arc::from("a");
        s.observe_end(&a, 10, 100.0);
        s.observe_end(&b, 10, 100.0);
        assert_eq!(
            s.observe_consumption("g", &topic, 100.0, [(0, 1)].into_iter()),
            None
        );
        s.sweep();
        // Rounds 2, 3 and 4: only `a` is seen, and the group's topic is observed again.
        for (i, t) in [(2, 110.0), (3, 120.0), (4, 130.0)] {
            s.observe_end(&a, 10 + i, t);
            let rate = s.observe_consumption("g", &topic, t, [(0, 1 + 10 * i)].into_iter());
            assert!(rate.is_some(), "round {i}");
            s.sweep();
        }
        assert!(s.histories.contains_key(&a));
        assert!(!s.histories.contains_key(&b), "b unused for 3 rounds");
        assert_eq!(s.histories.len(), 1);
        assert_eq!(s.append_time(&a, 12), Some(120.0));
        // The group stops committing: its window goes after 3 rounds, and comes back empty.
        for _ in 0..3 {
            s.sweep();
        }
        assert!(s.rates.is_empty());
        assert_eq!(
            s.observe_consumption("g", &topic, 200.0, [(0, 100)].into_iter()),
            None
        );
    }

    #[test]
    fn rates_are_kept_per_group_and_topic() {
        let mut s = LagState::new(8, 60.0);
        let (x, y): (Arc<str>, Arc<str>) = (Arc::from("x"), Arc::from("y"));
        s.observe_consumption("g", &x, 0.0, [(0, 0)].into_iter());
        s.observe_consumption("g", &y, 0.0, [(0, 0)].into_iter());
        s.observe_consumption("h", &x, 0.0, [(0, 0)].into_iter());
        assert_eq!(
            s.observe_consumption("g", &x, 10.0, [(0, 100)].into_iter()),
            Some(10.0)
        );
        assert_eq!(
            s.observe_consumption("g", &y, 10.0, [(0, 20)].into_iter()),
            Some(2.0)
        );
        assert_eq!(
            s.observe_consumption("h", &x, 10.0, [(0, 0)].into_iter()),
            Some(0.0)
        );
    }

    #[test]
    fn timestamps_survive_only_while_used() {
        let mut s = LagState::new(8, 60.0);
        let a = Tp::new("a", 3);
        s.cache_timestamp(&a, 5, 1_000);
        s.sweep();
        assert_eq!(s.cached_timestamp(&a, 5), Some(1_000));
        assert_eq!(s.cached_timestamp(&a, 6), None);
        s.sweep();
        s.sweep();
        assert_eq!(
            s.cached_timestamp(&a, 5),
            None,
            "not read in the round before"
        );
    }
}
