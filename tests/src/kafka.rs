//! Kafka helpers for tests, on rdkafka: topics, one-record-per-batch producing (tansu reports a
//! wrong high watermark for multi-record batches) and standalone offset commits.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A producer that sends every record as its own batch.
pub type Producer = ThreadedProducer<DefaultProducerContext>;

/// rdkafka's admin futures are driven by its own threads, so a plain executor is enough and
/// works inside or outside a tokio runtime.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

/// Creates a topic with `partitions` partitions (replication factor 1) and waits for it.
pub fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let res = block_on(admin.create_topics(&[topic], &AdminOptions::new()))
        .expect("create_topics request");
    for r in res {
        if let Err((t, e)) = r {
            if e != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                panic!("create topic {t}: {e}");
            }
        }
    }
}

/// Deletes a topic.
pub fn delete_topic(bootstrap: &str, name: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let res = block_on(admin.delete_topics(&[name], &AdminOptions::new()))
        .expect("delete_topics request");
    for r in res {
        if let Err((t, e)) = r {
            panic!("delete topic {t}: {e}");
        }
    }
}

/// A producer with one record per batch.
pub fn producer(bootstrap: &str) -> Producer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .set("acks", "all")
        .create()
        .expect("producer")
}

/// Produces `count` records to one partition, flushing after each so each is its own batch.
pub fn produce(p: &Producer, topic: &str, partition: i32, count: usize) {
    for i in 0..count {
        produce_at(p, topic, partition, None, &format!("m{i}"));
    }
}

/// Produces one record with an explicit timestamp (ms since the epoch) and flushes.
pub fn produce_at(p: &Producer, topic: &str, partition: i32, ts_ms: Option<i64>, payload: &str) {
    let mut rec: BaseRecord<'_, (), str> =
        BaseRecord::to(topic).partition(partition).payload(payload);
    if let Some(ts) = ts_ms {
        rec = rec.timestamp(ts);
    }
    p.send(rec).map_err(|(e, _)| e).expect("enqueue record");
    p.flush(Duration::from_secs(10)).expect("flush");
}

/// Commits offsets for `group` without joining it (a standalone commit).
pub fn commit_offsets(bootstrap: &str, group: &str, offsets: &[(&str, i32, i64)]) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for (t, p, o) in offsets {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o))
            .expect("add partition");
    }
    c.commit(&tpl, CommitMode::Sync).expect("commit");
}

/// Joins `group` with a subscribing consumer, reads until `count` records arrived (or
/// `timeout`), commits synchronously and leaves the group. Returns the records read.
pub fn consume_and_commit(
    bootstrap: &str,
    group: &str,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> usize {
    use rdkafka::message::Message;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let deadline = std::time::Instant::now() + timeout;
    let mut got = 0;
    while got < count && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let _ = m.offset();
            got += 1;
        }
    }
    c.commit_consumer_state(CommitMode::Sync).expect("commit");
    c.unsubscribe();
    got
}

/// Produces `count` records as fast as possible (one record per batch, several in flight),
/// each with the current time as its timestamp; returns the timestamps, in offset order.
pub fn produce_burst(p: &Producer, topic: &str, partition: i32, count: usize) -> Vec<i64> {
    let mut ts = Vec::with_capacity(count);
    for i in 0..count {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let payload = format!("b{i}");
        let rec: BaseRecord<'_, (), str> = BaseRecord::to(topic)
            .partition(partition)
            .payload(payload.as_str())
            .timestamp(t);
        p.send(rec).map_err(|(e, _)| e).expect("enqueue record");
        ts.push(t);
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    ts
}
