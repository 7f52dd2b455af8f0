//! The replication throttle of the `kafka` backend, as `kafka-reassign-partitions --throttle`
//! sets it: `leader.replication.throttled.rate` and `follower.replication.throttled.rate` on every
//! live broker taking part, and the partition:broker pairs in the topics'
//! `leader.replication.throttled.replicas` (the current replicas, which send) and
//! `follower.replication.throttled.replicas` (the new ones, which fetch). The topic lists are
//! changed with APPEND and SUBTRACT, so other entries stay; the broker rates are SET and then
//! DELETEd, which also removes a rate someone else had set on those brokers.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::IncrementalAlterConfigsRequest;
use kafka_protocol::protocol::StrBytes;
use medic_kafka::error::code_name;
use medic_kafka::KafkaClient;

use super::remediation::BackendError;
use crate::broker::Change;
use crate::intent::ThrottleIntent;

/// Resource types of IncrementalAlterConfigs.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// Config operations.
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

/// The broker rate configs.
pub const RATE_KEYS: [&str; 2] = [
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
];
/// The topic replica-list configs.
pub const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
/// The topic replica-list configs.
pub const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";

/// What one action throttles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    /// Bytes/s.
    pub rate: u64,
    /// Live brokers taking part.
    pub brokers: Vec<i32>,
    /// topic -> `partition:broker` of the current replicas.
    pub leader: BTreeMap<String, Vec<String>>,
    /// topic -> `partition:broker` of the new replicas.
    pub follower: BTreeMap<String, Vec<String>>,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl Throttle {
    /// The throttle for these replica moves.
    pub fn for_changes(changes: &[&Change], rate: u64, live: &BTreeSet<i32>) -> Self {
        let mut brokers = BTreeSet::new();
        let mut leader: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut follower: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in changes {
            for r in c.from.iter().filter(|r| live.contains(r)) {
                brokers.insert(*r);
                leader
                    .entry(c.topic.clone())
                    .or_default()
                    .push(format!("{}:{r}", c.partition));
            }
            for t in c.to.iter().filter(|t| !c.from.contains(t)) {
                brokers.insert(*t);
                follower
                    .entry(c.topic.clone())
                    .or_default()
                    .push(format!("{}:{t}", c.partition));
            }
        }
        Self {
            rate,
            brokers: brokers.into_iter().collect(),
            leader,
            follower,
        }
    }

    /// Whether it throttles nothing (no broker, no topic entry).
    pub fn is_empty(&self) -> bool {
        self.brokers.is_empty() && self.leader.is_empty() && self.follower.is_empty()
    }

    /// As recorded in the action's intent: each broker's rate configs and values, each topic's
    /// list configs and entries.
    pub fn to_intent(&self) -> ThrottleIntent {
        let rate = self.rate.to_string();
        let brokers = self
            .brokers
            .iter()
            .map(|b| {
                let configs = RATE_KEYS
                    .iter()
                    .map(|k| (k.to_string(), rate.clone()))
                    .collect();
                (*b, configs)
            })
            .collect();
        let mut topics: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for (key, map) in [
            (LEADER_REPLICAS, &self.leader),
            (FOLLOWER_REPLICAS, &self.follower),
        ] {
            for (t, list) in map {
                topics
                    .entry(t.clone())
                    .or_default()
                    .insert(key.to_string(), list.clone());
            }
        }
        ThrottleIntent { brokers, topics }
    }

    /// The throttle an intent records. Only the configs this tool sets are taken; anything
    /// else is an error (it would not be removed the way it was set).
    pub fn from_intent(t: &ThrottleIntent) -> Result<Self, String> {
        let mut rate: Option<u64> = None;
        for (b, configs) in &t.brokers {
            for (k, v) in configs {
                if !RATE_KEYS.contains(&k.as_str()) {
                    return Err(format!(
                        "broker {b}: {k} is not a throttle config this tool sets"
                    ));
                }
                let r: u64 = v
                    .parse()
                    .map_err(|e| format!("broker {b}: {k} = {v:?}: {e}"))?;
                if rate.is_some_and(|x| x != r) {
                    return Err(format!(
                        "broker {b}: {k} = {r} differs from the other rates"
                    ));
                }
                rate = Some(r);
            }
        }
        let mut leader = BTreeMap::new();
        let mut follower = BTreeMap::new();
        for (topic, configs) in &t.topics {
            for (k, list) in configs {
                let map = match k.as_str() {
                    LEADER_REPLICAS => &mut leader,
                    FOLLOWER_REPLICAS => &mut follower,
                    _ => {
                        return Err(format!(
                            "topic {topic}: {k} is not a throttle config this tool sets"
                        ))
                    }
                };
                map.insert(topic.clone(), list.clone());
            }
        }
        Ok(Self {
            rate: rate.unwrap_or(0),
            brokers: t.brokers.keys().copied().collect(),
            leader,
            follower,
        })
    }

    /// Split into what may be removed now and what must stay while `moving` (partitions whose
    /// reassignment is still in progress) move: never unthrottle a running move (Cruise
    /// Control #1511). The `partition:broker` entries of a moving partition stay, and so does
    /// the rate of every broker named in such an entry; everything else may go.
    pub fn split(&self, moving: &BTreeSet<(String, i32)>) -> (Throttle, Throttle) {
        let mut remove = Throttle {
            rate: self.rate,
            brokers: Vec::new(),
            leader: BTreeMap::new(),
            follower: BTreeMap::new(),
        };
        let mut keep = remove.clone();
        let mut busy: BTreeSet<i32> = BTreeSet::new();
        for (src, dst_remove, dst_keep) in [
            (&self.leader, &mut remove.leader, &mut keep.leader),
            (&self.follower, &mut remove.follower, &mut keep.follower),
        ] {
            for (topic, list) in src {
                for entry in list {
                    let (p, b) = entry.split_once(':').unwrap_or((entry.as_str(), ""));
                    let still = p
                        .parse::<i32>()
                        .map(|p| moving.contains(&(topic.clone(), p)))
                        // An entry that does not parse is not ours to judge: keep it.
                        .unwrap_or(true);
                    let dst = if still {
                        if let Ok(b) = b.parse::<i32>() {
                            busy.insert(b);
                        }
                        &mut *dst_keep
                    } else {
                        &mut *dst_remove
                    };
                    dst.entry(topic.clone()).or_default().push(entry.clone());
                }
            }
        }
        for b in &self.brokers {
            if busy.contains(b) {
                keep.brokers.push(*b);
            } else {
                remove.brokers.push(*b);
            }
        }
        (remove, keep)
    }

    /// A short description (`brokers 1,2; logs 0:1,0:3`), for messages.
    pub fn describe(&self) -> String {
        let brokers: Vec<String> = self.brokers.iter().map(|b| b.to_string()).collect();
        let mut topics: BTreeMap<&String, Vec<&String>> = BTreeMap::new();
        for map in [&self.leader, &self.follower] {
            for (t, list) in map {
                topics.entry(t).or_default().extend(list);
            }
        }
        let mut parts = vec![format!("rate on brokers {}", brokers.join(","))];
        for (t, list) in topics {
            let list: Vec<&str> = list.iter().map(|s| s.as_str()).collect();
            parts.push(format!("{t} {}", list.join(",")));
        }
        parts.join("; ")
    }

    fn topic_resources(&self, op: i8) -> Vec<AlterConfigsResource> {
        let topics: BTreeSet<&String> = self.leader.keys().chain(self.follower.keys()).collect();
        topics
            .into_iter()
            .map(|t| {
                let mut configs = Vec::new();
                for (key, map) in [
                    (LEADER_REPLICAS, &self.leader),
                    (FOLLOWER_REPLICAS, &self.follower),
                ] {
                    if let Some(list) = map.get(t) {
                        configs.push(
                            AlterableConfig::default()
                                .with_name(s(key))
                                .with_config_operation(op)
                                .with_value(Some(s(&list.join(",")))),
                        );
                    }
                }
                AlterConfigsResource::default()
                    .with_resource_type(TOPIC)
                    .with_resource_name(s(t))
                    .with_configs(configs)
            })
            .collect()
    }

    fn broker_resource(&self, id: i32, set: bool) -> AlterConfigsResource {
        let configs = RATE_KEYS
            .iter()
            .map(|k| {
                AlterableConfig::default()
                    .with_name(s(k))
                    .with_config_operation(if set { SET } else { DELETE })
                    .with_value(set.then(|| s(&self.rate.to_string())))
            })
            .collect();
        AlterConfigsResource::default()
            .with_resource_type(BROKER)
            .with_resource_name(s(&id.to_string()))
            .with_configs(configs)
    }

    async fn send(
        client: &KafkaClient,
        addr: &str,
        resources: Vec<AlterConfigsResource>,
    ) -> Result<(), BackendError> {
        if resources.is_empty() {
            return Ok(());
        }
        let (_, resp) = client
            .call(addr, 1, |_| {
                IncrementalAlterConfigsRequest::default()
                    .with_resources(resources)
                    .with_validate_only(false)
            })
            .await
            .map_err(BackendError::from)?;
        let errors: Vec<String> = resp
            .responses
            .iter()
            .filter(|r| r.error_code != 0)
            .map(|r| {
                format!(
                    "{} {}: {}{}",
                    if r.resource_type == BROKER {
                        "broker"
                    } else {
                        "topic"
                    },
                    r.resource_name,
                    code_name(r.error_code),
                    r.error_message
                        .as_ref()
                        .filter(|m| !m.is_empty())
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(BackendError::Refused(format!(
                "IncrementalAlterConfigs: {}",
                errors.join("; ")
            )))
        }
    }

    /// Set the throttle: topic lists through `admin`, rates on each broker itself. On a
    /// failure, what was set is removed again.
    pub async fn apply(&self, client: &KafkaClient, admin: &str) -> Result<(), BackendError> {
        let mut result = Self::send(client, admin, self.topic_resources(APPEND)).await;
        if result.is_ok() {
            for id in &self.brokers {
                let addr = client.broker_addr(*id).map_err(BackendError::from);
                result = match addr {
                    Ok(a) => Self::send(client, &a, vec![self.broker_resource(*id, true)]).await,
                    Err(e) => Err(e),
                };
                if result.is_err() {
                    break;
                }
            }
        }
        if let Err(e) = result {
            let undo = self.remove(client, admin).await;
            return Err(BackendError::Refused(format!(
                "setting the replication throttle failed, so nothing was moved: {e}{}",
                undo.err()
                    .map(|u| format!("; undoing it failed too: {u}"))
                    .unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// Remove the throttle; every part is tried, the first failure is returned.
    pub async fn remove(&self, client: &KafkaClient, admin: &str) -> Result<(), BackendError> {
        let mut first = Self::send(client, admin, self.topic_resources(SUBTRACT))
            .await
            .err();
        for id in &self.brokers {
            let r = match client.broker_addr(*id).map_err(BackendError::from) {
                Ok(a) => Self::send(client, &a, vec![self.broker_resource(*id, false)]).await,
                Err(e) => Err(e),
            };
            if let (None, Err(e)) = (&first, r) {
                first = Some(e);
            }
        }
        match first {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn throttles_current_replicas_as_leaders_and_new_ones_as_followers() {
        let c1 = Change {
            topic: "a".into(),
            partition: 0,
            from: vec![1, 2, 9],
            to: vec![1, 2, 4],
            size_bytes: None,
            leader_change: false,
        };
        let c2 = Change {
            topic: "b".into(),
            partition: 3,
            from: vec![2],
            to: vec![5],
            size_bytes: None,
            leader_change: true,
        };
        let live: BTreeSet<i32> = [1, 2, 4, 5].into();
        let t = Throttle::for_changes(&[&c1, &c2], 1000, &live);
        assert_eq!(t.brokers, vec![1, 2, 4, 5], "dead broker 9 is left out");
        assert_eq!(t.leader["a"], vec!["0:1", "0:2"]);
        assert_eq!(t.leader["b"], vec!["3:2"]);
        assert_eq!(t.follower["a"], vec!["0:4"]);
        assert_eq!(t.follower["b"], vec!["3:5"]);
        let r = t.topic_resources(APPEND);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].resource_name.as_str(), "a");
        assert_eq!(r[0].configs[0].value.as_ref().unwrap().as_str(), "0:1,0:2");
        assert_eq!(r[0].configs[0].config_operation, APPEND);
        let b = t.broker_resource(4, false);
        assert_eq!(b.configs[0].config_operation, DELETE);
        assert_eq!(b.configs[0].value, None);
    }

    fn throttle() -> Throttle {
        Throttle {
            rate: 1000,
            brokers: vec![1, 2, 3, 5],
            leader: BTreeMap::from([
                ("a".to_string(), vec!["0:1".to_string(), "0:2".to_string()]),
                ("b".to_string(), vec!["3:2".to_string()]),
            ]),
            follower: BTreeMap::from([
                ("a".to_string(), vec!["0:3".to_string()]),
                ("b".to_string(), vec!["3:5".to_string()]),
            ]),
        }
    }

    #[test]
    fn the_intent_names_each_config_and_value_and_reads_back() {
        let t = throttle();
        let i = t.to_intent();
        assert_eq!(
            serde_json::to_value(&i).unwrap(),
            serde_json::json!({
                "brokers": {
                    "1": {"follower.replication.throttled.rate": "1000", "leader.replication.throttled.rate": "1000"},
                    "2": {"follower.replication.throttled.rate": "1000", "leader.replication.throttled.rate": "1000"},
                    "3": {"follower.replication.throttled.rate": "1000", "leader.replication.throttled.rate": "1000"},
                    "5": {"follower.replication.throttled.rate": "1000", "leader.replication.throttled.rate": "1000"}
                },
                "topics": {
                    "a": {"follower.replication.throttled.replicas": ["0:3"], "leader.replication.throttled.replicas": ["0:1", "0:2"]},
                    "b": {"follower.replication.throttled.replicas": ["3:5"], "leader.replication.throttled.replicas": ["3:2"]}
                }
            })
        );
        assert_eq!(Throttle::from_intent(&i).unwrap(), t);
    }

    #[test]
    fn an_intent_naming_other_configs_is_refused() {
        let mut i = throttle().to_intent();
        i.topics
            .get_mut("a")
            .unwrap()
            .insert("retention.ms".into(), vec!["1".into()]);
        let e = Throttle::from_intent(&i).unwrap_err();
        assert_eq!(
            e,
            "topic a: retention.ms is not a throttle config this tool sets"
        );
        let mut i = throttle().to_intent();
        i.brokers
            .get_mut(&1)
            .unwrap()
            .insert("log.retention.ms".into(), "1".into());
        assert!(Throttle::from_intent(&i)
            .unwrap_err()
            .contains("log.retention.ms"));
        let mut i = throttle().to_intent();
        i.brokers
            .get_mut(&2)
            .unwrap()
            .insert("leader.replication.throttled.rate".into(), "2000".into());
        assert!(Throttle::from_intent(&i).unwrap_err().contains("differs"));
    }

    #[test]
    fn nothing_moving_removes_everything() {
        let t = throttle();
        let (remove, keep) = t.split(&BTreeSet::new());
        assert_eq!(remove, t);
        assert!(keep.is_empty(), "{keep:?}");
    }

    #[test]
    fn a_partition_still_moving_keeps_its_entries_and_its_brokers_rates() {
        let t = throttle();
        let moving: BTreeSet<(String, i32)> = [("b".to_string(), 3)].into();
        let (remove, keep) = t.split(&moving);
        assert_eq!(
            keep,
            Throttle {
                rate: 1000,
                brokers: vec![2, 5],
                leader: BTreeMap::from([("b".to_string(), vec!["3:2".to_string()])]),
                follower: BTreeMap::from([("b".to_string(), vec!["3:5".to_string()])]),
            },
            "b-3 still moves from 2 to 5: their rates and its entries stay"
        );
        assert_eq!(
            remove,
            Throttle {
                rate: 1000,
                brokers: vec![1, 3],
                leader: BTreeMap::from([(
                    "a".to_string(),
                    vec!["0:1".to_string(), "0:2".to_string()]
                )]),
                follower: BTreeMap::from([("a".to_string(), vec!["0:3".to_string()])]),
            },
            "a-0 is done; broker 2 also sends b-3, so only 1 and 3 lose their rate"
        );
        let (remove, keep) = t.split(&[("a".to_string(), 0), ("b".to_string(), 3)].into());
        assert!(remove.is_empty(), "{remove:?}");
        assert_eq!(keep, t);
        // A move of a partition we did not throttle changes nothing.
        let (remove, _) = t.split(&[("c".to_string(), 0)].into());
        assert_eq!(remove, t);
    }
}
