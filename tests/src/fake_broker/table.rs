//! What the fake cluster answers from: topics and their partitions (leader, log start, end
//! offset, record timestamps), consumer groups (type, state, members, committed offsets,
//! coordinator) and the API versions each broker advertises. Mutable while the cluster runs
//! ([`super::FakeCluster::update`]).
//!
//! Kept compact so that 100,000 partitions and 20,000 groups cost a few megabytes: a partition
//! is a leader, two offsets and its timestamp runs; a group's commits are one sorted map.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kafka_protocol::messages::ApiKey;
use uuid::Uuid;

/// The group protocol a group uses, as ListGroups v5 reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupType {
    /// The classic rebalance protocol (JoinGroup/SyncGroup); described by DescribeGroups.
    Classic,
    /// KIP-848's consumer protocol (ConsumerGroupHeartbeat); described by
    /// ConsumerGroupDescribe.
    Consumer,
}

impl GroupType {
    /// The name Kafka uses on the wire (`classic`, `consumer`).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupType::Classic => "classic",
            GroupType::Consumer => "consumer",
        }
    }
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Assigned partitions, by topic.
    pub assignment: Vec<(String, Vec<i32>)>,
}

impl Member {
    /// A member with client id `consumer` on host `/127.0.0.1` and no assignment.
    pub fn new(member_id: &str) -> Self {
        Member {
            member_id: member_id.to_string(),
            instance_id: None,
            client_id: "consumer".to_string(),
            client_host: "/127.0.0.1".to_string(),
            assignment: Vec::new(),
        }
    }

    /// Adds `partitions` of `topic` to the assignment.
    pub fn assign(mut self, topic: &str, partitions: &[i32]) -> Self {
        self.assignment
            .push((topic.to_string(), partitions.to_vec()));
        self
    }

    pub fn client_id(mut self, client_id: &str) -> Self {
        self.client_id = client_id.to_string();
        self
    }
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub group_type: GroupType,
    /// `None`: `Empty` without members, `Stable` with some.
    pub state: Option<String>,
    /// `consumer` for consumer clients; empty for a group that only commits offsets.
    pub protocol_type: String,
    /// Classic: the chosen assignor (DescribeGroups `protocol_data`); consumer: the
    /// server-side assignor name.
    pub protocol: String,
    /// The broker id of the group's coordinator.
    pub coordinator: i32,
    /// Consumer groups: the group epoch (and assignment epoch).
    pub epoch: i32,
    pub members: Vec<Member>,
    /// Committed offsets by (topic, partition).
    pub offsets: BTreeMap<(Arc<str>, i32), i64>,
}

impl Group {
    /// A classic group (`range` assignor) coordinated by `coordinator`.
    pub fn classic(coordinator: i32) -> Self {
        Group {
            group_type: GroupType::Classic,
            state: None,
            protocol_type: "consumer".to_string(),
            protocol: "range".to_string(),
            coordinator,
            epoch: 1,
            members: Vec::new(),
            offsets: BTreeMap::new(),
        }
    }

    /// A KIP-848 consumer group (`uniform` assignor) coordinated by `coordinator`.
    pub fn consumer(coordinator: i32) -> Self {
        Group {
            group_type: GroupType::Consumer,
            protocol: "uniform".to_string(),
            ..Group::classic(coordinator)
        }
    }

    pub fn state(mut self, state: &str) -> Self {
        self.state = Some(state.to_string());
        self
    }

    pub fn protocol_type(mut self, protocol_type: &str) -> Self {
        self.protocol_type = protocol_type.to_string();
        self
    }

    pub fn member(mut self, member: Member) -> Self {
        self.members.push(member);
        self
    }

    /// Commits `offset` for `topic`/`partition`.
    pub fn commit(mut self, topic: &str, partition: i32, offset: i64) -> Self {
        self.offsets.insert((Arc::from(topic), partition), offset);
        self
    }

    /// The state reported: the one set, else `Empty` or `Stable` by membership.
    pub fn effective_state(&self) -> &str {
        match &self.state {
            Some(s) => s,
            None if self.members.is_empty() => "Empty",
            None => "Stable",
        }
    }
}

/// One partition of a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    /// The leader's broker id; -1 for none (LEADER_NOT_AVAILABLE in Metadata).
    pub leader: i32,
    pub log_start: i64,
    /// Log end offset (high watermark): the offset the next record gets.
    pub end: i64,
    /// Record timestamps as runs `(first offset, timestamp ms)`, ascending: the record at `o`
    /// has the timestamp of the last run starting at or before `o` (0 before the first).
    pub runs: Vec<(i64, i64)>,
}

impl Partition {
    /// The timestamp (ms) of the record at `offset`.
    pub fn timestamp_at(&self, offset: i64) -> i64 {
        match self.runs.partition_point(|(start, _)| *start <= offset) {
            0 => 0,
            i => self.runs[i - 1].1,
        }
    }

    /// The first offset whose record's timestamp is at least `ts`, or `end` if none.
    pub fn offset_for_timestamp(&self, ts: i64) -> i64 {
        let mut run_start = self.log_start;
        let mut run_ts = self.timestamp_at(self.log_start);
        for (start, t) in &self.runs {
            if *start > self.log_start {
                if run_ts >= ts {
                    return run_start;
                }
                run_start = *start;
                run_ts = *t;
            }
        }
        if run_ts >= ts && run_start < self.end {
            run_start
        } else {
            self.end
        }
    }
}

/// A topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Topic {
    pub name: Arc<str>,
    pub id: Uuid,
    pub internal: bool,
    pub partitions: Vec<Partition>,
}

/// The whole table. Read it with [`super::FakeCluster::read`], change it with
/// [`super::FakeCluster::update`].
#[derive(Debug, Clone)]
pub struct Table {
    /// Broker ids in order, and their listener ports.
    pub brokers: Vec<(i32, u16)>,
    pub cluster_id: String,
    topics: Vec<Topic>,
    by_name: HashMap<Arc<str>, usize>,
    by_id: HashMap<Uuid, usize>,
    /// Topics created so far (topic ids).
    created: u64,
    /// Groups by id, sorted (ListGroups answers in this order).
    pub groups: BTreeMap<Arc<str>, Group>,
    /// API key -> (min, max) version advertised by ApiVersions; a request outside its range,
    /// or for a key not here, closes the connection (ApiVersions itself answers
    /// UNSUPPORTED_VERSION).
    pub api_versions: BTreeMap<i16, (i16, i16)>,
}

/// The APIs the fake serves and the versions a Kafka 4.1 broker advertises for them.
/// SaslHandshake is advertised at v1 only: v0 (raw SASL tokens after the handshake) is not
/// implemented.
pub const KAFKA_4_API_VERSIONS: [(ApiKey, i16, i16); 11] = [
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
];

impl Table {
    pub(crate) fn new(brokers: Vec<(i32, u16)>) -> Self {
        Table {
            brokers,
            cluster_id: "fake-cluster".to_string(),
            topics: Vec::new(),
            by_name: HashMap::new(),
            by_id: HashMap::new(),
            created: 0,
            groups: BTreeMap::new(),
            api_versions: KAFKA_4_API_VERSIONS
                .iter()
                .map(|(k, lo, hi)| (*k as i16, (*lo, *hi)))
                .collect(),
        }
    }

    /// Advertise `api` at `min..=max` (e.g. ListGroups up to v4 for a Kafka 3 broker).
    pub fn set_api_versions(&mut self, api: ApiKey, min: i16, max: i16) {
        self.api_versions.insert(api as i16, (min, max));
    }

    /// Stop offering `api` (e.g. ConsumerGroupDescribe on a Kafka 3.6 broker).
    pub fn remove_api(&mut self, api: ApiKey) {
        self.api_versions.remove(&(api as i16));
    }

    /// Creates (or replaces) `name` with `partitions` empty partitions led round-robin by the
    /// brokers (partition p by the (p mod n)-th broker).
    pub fn add_topic(&mut self, name: &str, partitions: i32) {
        let ids: Vec<i32> = self.brokers.iter().map(|(id, _)| *id).collect();
        self.add_topic_with(name, partitions, |p| {
            ids.get(p as usize % ids.len().max(1))
                .copied()
                .unwrap_or(-1)
        });
    }

    /// Creates (or replaces) `name`; partition p is led by `leader(p)`.
    pub fn add_topic_with(&mut self, name: &str, partitions: i32, leader: impl Fn(i32) -> i32) {
        let name: Arc<str> = Arc::from(name);
        // A new id on every creation, as Kafka gives a recreated topic.
        self.created += 1;
        let id =
            Uuid::from_u128(0x6b61_666b_6100_0000_0000_0000_0000_0000 | u128::from(self.created));
        let topic = Topic {
            name: name.clone(),
            id,
            internal: name.starts_with("__"),
            partitions: (0..partitions)
                .map(|p| Partition {
                    leader: leader(p),
                    log_start: 0,
                    end: 0,
                    runs: Vec::new(),
                })
                .collect(),
        };
        if let Some(&i) = self.by_name.get(&name) {
            self.by_id.remove(&self.topics[i].id);
            self.by_id.insert(id, i);
            self.topics[i] = topic;
        } else {
            self.by_name.insert(name, self.topics.len());
            self.by_id.insert(id, self.topics.len());
            self.topics.push(topic);
        }
    }

    /// Deletes a topic (groups keep their commits on it, as Kafka does).
    pub fn delete_topic(&mut self, name: &str) {
        if let Some(i) = self.by_name.remove(name) {
            let t = self.topics.remove(i);
            self.by_id.remove(&t.id);
            for v in self.by_name.values_mut().chain(self.by_id.values_mut()) {
                if *v > i {
                    *v -= 1;
                }
            }
        }
    }

    /// Topics in creation order.
    pub fn topics(&self) -> &[Topic] {
        &self.topics
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.by_name.get(name).map(|i| &self.topics[*i])
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Topic> {
        self.by_id.get(id).map(|i| &self.topics[*i])
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&Partition> {
        self.topic(topic)
            .and_then(|t| t.partitions.get(usize::try_from(partition).ok()?))
    }

    /// The partition, to change it; panics (test setup error) if it does not exist.
    pub fn partition_mut(&mut self, topic: &str, partition: i32) -> &mut Partition {
        let i = *self
            .by_name
            .get(topic)
            .unwrap_or_else(|| panic!("fake cluster: no topic {topic:?}"));
        self.topics[i]
            .partitions
            .get_mut(partition as usize)
            .unwrap_or_else(|| panic!("fake cluster: no partition {topic}/{partition}"))
    }

    /// Appends `count` records written at `timestamp_ms` to the end of the partition.
    pub fn append(&mut self, topic: &str, partition: i32, count: i64, timestamp_ms: i64) {
        let p = self.partition_mut(topic, partition);
        if count <= 0 {
            return;
        }
        if p.runs.last().map(|(_, ts)| *ts) != Some(timestamp_ms) {
            p.runs.push((p.end, timestamp_ms));
        }
        p.end += count;
    }

    /// Moves the log start (retention); offsets below it are gone.
    pub fn set_log_start(&mut self, topic: &str, partition: i32, log_start: i64) {
        let p = self.partition_mut(topic, partition);
        p.log_start = log_start.min(p.end);
    }

    pub fn set_leader(&mut self, topic: &str, partition: i32, leader: i32) {
        self.partition_mut(topic, partition).leader = leader;
    }

    /// Adds or replaces group `id`.
    pub fn put_group(&mut self, id: &str, group: Group) {
        self.groups.insert(Arc::from(id), group);
    }

    pub fn group_mut(&mut self, id: &str) -> Option<&mut Group> {
        self.groups.get_mut(id)
    }

    pub fn remove_group(&mut self, id: &str) -> Option<Group> {
        self.groups.remove(id)
    }

    /// Commits `offset` for `group` (which must exist) on `topic`/`partition`.
    pub fn commit(&mut self, group: &str, topic: &str, partition: i32, offset: i64) {
        self.groups
            .get_mut(group)
            .unwrap_or_else(|| panic!("fake cluster: no group {group:?}"))
            .offsets
            .insert((Arc::from(topic), partition), offset);
    }

    /// The coordinator of `group`: its own for a known group; for an unknown one a fixed
    /// broker picked by hashing the id, as Kafka picks a `__consumer_offsets` partition.
    pub fn coordinator_of(&self, group: &str) -> i32 {
        if let Some(g) = self.groups.get(group) {
            return g.coordinator;
        }
        // FNV-1a: stable across runs, unlike the std hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in group.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        let n = self.brokers.len().max(1) as u64;
        self.brokers
            .get((h % n) as usize)
            .map(|(id, _)| *id)
            .unwrap_or(-1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let mut t = Table::new(vec![(0, 1), (1, 2)]);
        t.add_topic("t", 2);
        t
    }

    #[test]
    fn partitions_are_led_round_robin() {
        let t = table();
        assert_eq!(t.partition("t", 0).unwrap().leader, 0);
        assert_eq!(t.partition("t", 1).unwrap().leader, 1);
        assert!(t.partition("t", 2).is_none());
    }

    #[test]
    fn appends_keep_timestamp_runs() {
        let mut t = table();
        t.append("t", 0, 10, 1_000);
        t.append("t", 0, 5, 1_000);
        t.append("t", 0, 5, 2_000);
        let p = t.partition("t", 0).unwrap();
        assert_eq!(p.end, 20);
        assert_eq!(p.runs, vec![(0, 1_000), (15, 2_000)]);
        assert_eq!(p.timestamp_at(0), 1_000);
        assert_eq!(p.timestamp_at(14), 1_000);
        assert_eq!(p.timestamp_at(15), 2_000);
        assert_eq!(p.offset_for_timestamp(1_500), 15);
        assert_eq!(p.offset_for_timestamp(500), 0);
        assert_eq!(p.offset_for_timestamp(3_000), 20);
    }

    #[test]
    fn offset_for_timestamp_starts_at_log_start() {
        let mut t = table();
        t.append("t", 0, 10, 1_000);
        t.append("t", 0, 10, 2_000);
        t.set_log_start("t", 0, 12);
        let p = t.partition("t", 0).unwrap();
        assert_eq!(p.offset_for_timestamp(0), 12);
    }

    #[test]
    fn deleting_a_topic_keeps_the_others_reachable() {
        let mut t = table();
        t.add_topic("u", 1);
        let u_id = t.topic("u").unwrap().id;
        t.delete_topic("t");
        assert!(t.topic("t").is_none());
        assert_eq!(&*t.topic("u").unwrap().name, "u");
        assert_eq!(&*t.topic_by_id(&u_id).unwrap().name, "u");
    }

    #[test]
    fn unknown_groups_have_a_stable_coordinator() {
        let mut t = table();
        let c = t.coordinator_of("nobody");
        assert!(c == 0 || c == 1);
        assert_eq!(t.coordinator_of("nobody"), c);
        t.put_group("g", Group::classic(1));
        assert_eq!(t.coordinator_of("g"), 1);
        assert_eq!(t.groups["g"].effective_state(), "Empty");
        t.put_group("h", Group::consumer(0).member(Member::new("m")));
        assert_eq!(t.groups["h"].effective_state(), "Stable");
    }
}
