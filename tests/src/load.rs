//! Load for the whole-loop tests and the demo: a producer and a consumer group on real Kafka
//! clients, each at a rate that can change while they run. The consumer's rate can follow the
//! replica count of a Deployment in the fake Kubernetes API (`rate = replicas × per replica`),
//! which is what scaling a consumer Deployment does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::kafka::producer;

/// A rate in records per second, changeable from any thread (stored as millirecords/s).
#[derive(Clone, Default)]
pub struct Rate(Arc<AtomicU64>);

impl Rate {
    pub fn new(per_second: f64) -> Rate {
        let r = Rate::default();
        r.set(per_second);
        r
    }
    pub fn set(&self, per_second: f64) {
        self.0
            .store((per_second.max(0.0) * 1000.0) as u64, Ordering::SeqCst);
    }
    pub fn get(&self) -> f64 {
        self.0.load(Ordering::SeqCst) as f64 / 1000.0
    }
}

/// (time, records produced, offsets committed by the group), appended at every change.
pub type Truth = Arc<Mutex<Vec<(SystemTime, u64, u64)>>>;

/// A producer and a consumer, stopped and joined on drop.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub produce_rate: Rate,
    pub consume_rate: Rate,
    produced: Arc<AtomicU64>,
    committed: Arc<AtomicU64>,
    truth: Truth,
    threads: Vec<JoinHandle<()>>,
}

/// Sleeps in small steps until `until`, returning early when `stop` is set.
fn nap(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5).min(until - Instant::now()));
    }
}

impl Load {
    /// Starts producing to `topic` (round robin over `partitions`, one record per batch) and
    /// consuming it as `group` (assigned partitions from the beginning, committing every 500 ms).
    pub fn start(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        group: &str,
        produce_rate: f64,
        consume_rate: f64,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = Load {
            stop: stop.clone(),
            produce_rate: Rate::new(produce_rate),
            consume_rate: Rate::new(consume_rate),
            produced: Arc::default(),
            committed: Arc::default(),
            truth: Arc::default(),
            threads: Vec::new(),
        };
        let (p_rate, produced, truth, committed) = (
            load.produce_rate.clone(),
            load.produced.clone(),
            load.truth.clone(),
            load.committed.clone(),
        );
        let p = producer(bootstrap);
        let (t, s) = (topic.to_string(), stop.clone());
        load.threads.push(std::thread::spawn(move || {
            let mut credit = 0.0;
            let mut last = Instant::now();
            let mut n: u64 = 0;
            while !s.load(Ordering::SeqCst) {
                let now = Instant::now();
                credit = (credit + p_rate.get() * (now - last).as_secs_f64()).min(50.0);
                last = now;
                if credit < 1.0 {
                    nap(&s, Duration::from_millis(10));
                    continue;
                }
                credit -= 1.0;
                let part = (n % partitions as u64) as i32;
                let rec = BaseRecord::<(), str>::to(&t).partition(part).payload("r");
                // No flush per record (a flush costs about 100 ms); batch.num.messages=1 keeps
                // every record in its own batch even with several in flight.
                if p.send(rec).is_ok() {
                    n += 1;
                    produced.store(n, Ordering::SeqCst);
                    truth.lock().unwrap_or_else(|e| e.into_inner()).push((
                        SystemTime::now(),
                        n,
                        committed.load(Ordering::SeqCst),
                    ));
                } else {
                    nap(&s, Duration::from_millis(10));
                }
            }
            let _ = p.flush(Duration::from_secs(1));
        }));
        let (c_rate, committed, truth, produced) = (
            load.consume_rate.clone(),
            load.committed.clone(),
            load.truth.clone(),
            load.produced.clone(),
        );
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
        c.assign(&tpl).expect("assign");
        let s = stop.clone();
        load.threads.push(std::thread::spawn(move || {
            let mut credit = 0.0;
            let mut last = Instant::now();
            let mut last_commit = Instant::now();
            let mut next: Vec<i64> = vec![0; partitions as usize];
            let mut dirty = false;
            while !s.load(Ordering::SeqCst) {
                let now = Instant::now();
                credit = (credit + c_rate.get() * (now - last).as_secs_f64()).min(20.0);
                last = now;
                if credit >= 1.0 {
                    if let Some(Ok(m)) = c.poll(Duration::from_millis(20)) {
                        credit -= 1.0;
                        let _ = c.store_offset_from_message(&m);
                        next[m.partition() as usize] = m.offset() + 1;
                        dirty = true;
                    }
                } else {
                    nap(&s, Duration::from_millis(10));
                }
                if dirty && last_commit.elapsed() >= Duration::from_millis(500) {
                    // Async: a synchronous commit waits without a limit when the broker is gone.
                    if c.commit_consumer_state(CommitMode::Async).is_ok() {
                        let total: i64 = next.iter().sum();
                        committed.store(total as u64, Ordering::SeqCst);
                        truth.lock().unwrap_or_else(|e| e.into_inner()).push((
                            SystemTime::now(),
                            produced.load(Ordering::SeqCst),
                            total as u64,
                        ));
                        dirty = false;
                    }
                    last_commit = Instant::now();
                }
            }
        }));
        load
    }

    /// Makes the consumption rate follow a Deployment: `replicas() × per_replica` records/s,
    /// re-read every 100 ms (what scaling the consumer Deployment does to the group).
    pub fn follow_replicas(
        &mut self,
        replicas: impl Fn() -> u32 + Send + 'static,
        per_replica: f64,
    ) {
        let (rate, s) = (self.consume_rate.clone(), self.stop.clone());
        rate.set(f64::from(replicas()) * per_replica);
        self.threads.push(std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                rate.set(f64::from(replicas()) * per_replica);
                nap(&s, Duration::from_millis(100));
            }
        }));
    }

    /// Records produced so far.
    pub fn produced(&self) -> u64 {
        self.produced.load(Ordering::SeqCst)
    }

    /// Offsets committed by the group so far (summed over partitions).
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    /// Produced minus committed, as the driver knows it.
    pub fn lag(&self) -> u64 {
        self.produced().saturating_sub(self.committed())
    }

    /// The first time the driver's own lag (produced − committed) went above `threshold`.
    pub fn first_above(&self, threshold: u64) -> Option<SystemTime> {
        self.truth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(_, p, c)| p.saturating_sub(*c) > threshold)
            .map(|(t, _, _)| *t)
    }

    /// Stops the threads and waits for them, at most 3 s: a client stuck on a broker that is
    /// gone is left behind rather than hanging the caller.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && self.threads.iter().any(|t| !t.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for t in self.threads.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}
