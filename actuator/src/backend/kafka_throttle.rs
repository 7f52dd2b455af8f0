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
}
