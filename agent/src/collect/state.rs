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
    rates: HashMap<(String, Arc<str>), (ConsumptionRate, u64)>,
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
        let cap = self.capacity;
        let entry = self
            .histories
            .entry(tp.clone())
            .or_insert_with(|| (EndOffsetHistory::new(cap), round));
        entry.0.observe(end, now);
        entry.1 = round;
    }

    pub(crate) fn append_time(&self, tp: &Tp, offset: i64) -> Option<f64> {
        self.histories
            .get(tp)
            .and_then(|(h, _)| h.append_time(offset))
    }

    pub(crate) fn cached_timestamp(&mut self, tp: &Tp, offset: i64) -> Option<i64> {
        let key = (tp.clone(), offset);
        let ts = self.timestamps.get(&key).copied();
        if ts.is_some() {
            self.used_timestamps.insert(key);
        }
        ts
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
        let entry = self
            .rates
            .entry((group.to_string(), topic.clone()))
            .or_insert_with(|| (ConsumptionRate::new(window), round));
        entry.0.observe(now, committed);
        entry.1 = round;
        entry.0.rate()
    }

    /// Ends a collection: drops what was not used recently.
    pub(crate) fn sweep(&mut self) {
        let round = self.round;
        self.histories.retain(|_, (_, r)| round - *r < KEEP_ROUNDS);
        self.rates.retain(|_, (_, r)| round - *r < KEEP_ROUNDS);
        let used = std::mem::take(&mut self.used_timestamps);
        self.timestamps.retain(|k, _| used.contains(k));
        self.round += 1;
    }
}
