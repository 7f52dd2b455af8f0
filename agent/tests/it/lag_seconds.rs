//! Lag in seconds against the truth: a producer at a known rate with known timestamps, a
//! consumer that commits behind it, a burst, and a replay from the beginning. Every reported
//! value must stay within max(one collection interval, 5%) of the true age of the oldest
//! unconsumed record.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use medic_agent::config;
use medic_agent::lag::LagSecondsSource;
use medic_agent::run::Agent;
use medic_e2e::{
    commit_offsets, create_topic, produce_at, produce_burst, producer, Producer, Tansu,
};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

struct Harness {
    b: String,
    p: Producer,
    /// Offset -> timestamp (ms) of every record produced.
    ts: Vec<i64>,
    agent: Agent,
    last_collect: Option<Instant>,
    max_gap: f64,
    checked: usize,
    sources: HashMap<&'static str, usize>,
}

impl Harness {
    fn produce(&mut self, n: usize) {
        for _ in 0..n {
            let t = now_ms();
            produce_at(&self.p, "clock", 0, Some(t), "x");
            self.ts.push(t);
        }
    }

    /// Commits `committed`, collects, and checks the reported age against the truth.
    async fn check(&mut self, committed: i64, phase: &str) {
        commit_offsets(&self.b, "slow", &[("clock", 0, committed)]);
        let started = Instant::now();
        if let Some(prev) = self.last_collect {
            self.max_gap = self.max_gap.max(started.duration_since(prev).as_secs_f64());
        }
        self.last_collect = Some(started);
        self.agent.collect_once().await;
        let snap = self.agent.snapshot.load();
        let g = snap
            .report
            .groups
            .iter()
            .find(|g| g.group == "slow")
            .expect("group slow");
        let p = &g.topics[0].partitions[0];
        assert_eq!(p.committed_offset, committed);
        assert_eq!(p.end_offset, self.ts.len() as i64, "{phase}: end offset");
        let Some(got) = p.lag_seconds else {
            panic!(
                "{phase}: no lag seconds for committed {committed} ({:?})",
                p.lag_seconds_source
            )
        };
        let truth = if p.lag == 0 {
            0.0
        } else {
            snap.report.collected_at - self.ts[committed as usize] as f64 / 1000.0
        };
        // The bound: one collection interval (the widest gap between two collections so far,
        // at least the configured 0.5 s), or 5% of the true age.
        let bound = self.max_gap.max(0.5).max(0.05 * truth) + 0.02;
        assert!(
            (got - truth).abs() <= bound,
            "{phase}: committed {committed}: reported {got:.3}s, truth {truth:.3}s, bound {bound:.3}s, source {:?}",
            p.lag_seconds_source
        );
        *self
            .sources
            .entry(match p.lag_seconds_source {
                LagSecondsSource::Zero => "zero",
                LagSecondsSource::Interpolated => "interpolated",
                LagSecondsSource::RecordTimestamp => "record_timestamp",
                LagSecondsSource::Pending => "pending",
            })
            .or_default() += 1;
        self.checked += 1;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lag_seconds_tracks_the_truth_through_a_burst_and_a_replay() {
    let tansu = Tansu::start();
    let b = tansu.bootstrap();
    create_topic(&b, "clock", 1);
    let cfg = config::load(
        [
            "medic-agent",
            "--bootstrap-servers",
            &b,
            "--cluster",
            "t",
            "--interval",
            "500ms",
        ],
        &HashMap::new(),
    )
    .unwrap();
    let mut h = Harness {
        p: producer(&b),
        b,
        ts: Vec::new(),
        agent: Agent::new(&cfg),
        last_collect: None,
        max_gap: 0.0,
        checked: 0,
        sources: HashMap::new(),
    };

    // Steady: 10 records/s; the consumer stays 15 records (about 1.5 s) behind.
    for _ in 0..12 {
        for _ in 0..5 {
            h.produce(1);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let c = (h.ts.len() as i64 - 15).max(0);
        h.check(c, "steady").await;
    }
    // A burst of 300 records between two collections, while the consumer keeps its pace.
    let burst = produce_burst(&h.p, "clock", 0, 300);
    h.ts.extend(burst);
    let c = h.ts.len() as i64 - 300 - 10;
    h.check(c, "burst").await;
    for step in 1..=8 {
        for _ in 0..5 {
            h.produce(1);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Work through the burst, 40 records per step.
        h.check(c + step * 40, "after burst").await;
    }
    // Replay from the beginning: the oldest unconsumed record is the very first one.
    h.check(0, "replay").await;
    for _ in 0..5 {
        h.produce(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.check(0, "replay held").await;
    h.check(h.ts.len() as i64, "caught up").await;

    assert_eq!(h.checked, 12 + 1 + 8 + 3);
    // Both methods were exercised: the history and the records' own timestamps.
    assert!(
        h.sources.get("interpolated").copied().unwrap_or(0) >= 10,
        "{:?}",
        h.sources
    );
    assert!(
        h.sources.get("record_timestamp").copied().unwrap_or(0) >= 2,
        "{:?}",
        h.sources
    );
    eprintln!(
        "checked {} collections, max gap {:.3}s, sources {:?}",
        h.checked, h.max_gap, h.sources
    );
}
