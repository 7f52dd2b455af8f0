//! What the planner knows about a cluster: brokers (rack, alive, overloaded, full, disk) and
//! partitions (replicas, ISR, leader, sizes where known). Built by a backend from Kafka's
//! metadata and log dirs, with the flags filled in from the alerts the actuator holds.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// Disk use of one broker, or of one of its log directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Disk {
    /// Bytes in use.
    pub used_bytes: u64,
    /// Size of the filesystem.
    pub total_bytes: u64,
}

impl Disk {
    /// used / total (0 for an empty filesystem).
    pub fn ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            0.0
        } else {
            self.used_bytes as f64 / self.total_bytes as f64
        }
    }
}

/// One broker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Broker {
    /// `broker.rack`, if set (for a dead broker: the rack last seen, if any).
    pub rack: Option<String>,
    /// In the cluster metadata (registered with the controller).
    pub alive: bool,
    /// A `KafkaBrokerOverloaded` alert fires for it.
    pub overloaded: bool,
    /// A `KafkaBrokerDiskPressure` alert fires for it.
    pub full: bool,
    /// Its disk use summed over its log directories, when known.
    pub disk: Option<Disk>,
    /// Disk use per log directory, when known.
    pub log_dirs: BTreeMap<String, Disk>,
}

impl Broker {
    /// A live broker without flags or disk figures.
    pub fn live(rack: Option<&str>) -> Self {
        Self {
            rack: rack.map(str::to_string),
            alive: true,
            overloaded: false,
            full: false,
            disk: None,
            log_dirs: BTreeMap::new(),
        }
    }

    /// Whether it may receive a replica or leadership at all: alive, not overloaded, not full.
    pub fn healthy(&self) -> bool {
        self.alive && !self.overloaded && !self.full
    }
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Replica broker ids; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// Current leader, -1 without one.
    pub leader: i32,
    /// Size of the replica on each broker, where known (DescribeLogDirs).
    pub sizes: BTreeMap<i32, u64>,
    /// Log directory of the replica on each broker, where known.
    pub dirs: BTreeMap<i32, String>,
}

impl Partition {
    /// The largest known replica size (the data a new replica has to copy).
    pub fn size(&self) -> Option<u64> {
        self.sizes.values().copied().max()
    }

    /// Whether `b` is in the ISR.
    pub fn in_sync(&self, b: i32) -> bool {
        self.isr.contains(&b)
    }
}

/// The cluster as the planner sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClusterModel {
    /// Every broker known: live ones from the metadata, dead ones from replica lists.
    pub brokers: BTreeMap<i32, Broker>,
    /// Every partition.
    pub partitions: Vec<Partition>,
}

impl ClusterModel {
    /// The broker, if known.
    pub fn broker(&self, id: i32) -> Option<&Broker> {
        self.brokers.get(&id)
    }

    /// Whether broker `id` is known and alive.
    pub fn alive(&self, id: i32) -> bool {
        self.broker(id).is_some_and(|b| b.alive)
    }

    /// Whether broker `id` is known, alive and not overloaded (may lead).
    pub fn can_lead(&self, id: i32) -> bool {
        self.broker(id).is_some_and(|b| b.alive && !b.overloaded)
    }

    /// The rack key of a broker for spread checks: its rack; for a live broker without one, a
    /// key of its own (so a cluster without racks never restricts placement); none for a dead
    /// broker whose rack is unknown (it does not count).
    pub fn rack_key(&self, id: i32) -> Option<String> {
        let b = self.broker(id)?;
        match &b.rack {
            Some(r) => Some(format!("rack:{r}")),
            None if b.alive => Some(format!("broker:{id}")),
            None => None,
        }
    }

    /// Distinct rack keys of a replica set.
    pub fn rack_spread(&self, replicas: &[i32]) -> usize {
        replicas
            .iter()
            .filter_map(|b| self.rack_key(*b))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Add brokers that appear in replica lists but not in `brokers`, as dead brokers.
    pub fn add_missing_brokers(&mut self, racks: &BTreeMap<i32, String>) {
        let referenced: BTreeSet<i32> = self
            .partitions
            .iter()
            .flat_map(|p| p.replicas.iter().copied())
            .collect();
        for id in referenced {
            self.brokers.entry(id).or_insert_with(|| Broker {
                rack: racks.get(&id).cloned(),
                alive: false,
                overloaded: false,
                full: false,
                disk: None,
                log_dirs: BTreeMap::new(),
            });
        }
    }

    /// Partitions led by, or preferring as leader, broker `id`.
    pub fn leadership_of(&self, id: i32) -> usize {
        self.partitions
            .iter()
            .filter(|p| p.leader == id || p.replicas.first() == Some(&id))
            .count()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn rack_keys_and_missing_brokers() {
        let mut m = ClusterModel::default();
        m.brokers.insert(1, Broker::live(Some("a")));
        m.brokers.insert(2, Broker::live(None));
        m.partitions.push(Partition {
            topic: "t".into(),
            partition: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2],
            leader: 1,
            sizes: BTreeMap::new(),
            dirs: BTreeMap::new(),
        });
        m.add_missing_brokers(&BTreeMap::from([(3, "b".to_string())]));
        assert!(!m.alive(3));
        assert_eq!(
            m.rack_key(3).as_deref(),
            Some("rack:b"),
            "the rack last seen is kept"
        );
        assert_eq!(m.rack_key(2).as_deref(), Some("broker:2"));
        assert_eq!(m.rack_spread(&[1, 2, 3]), 3);
        m.brokers.get_mut(&3).unwrap().rack = None;
        assert_eq!(
            m.rack_key(3),
            None,
            "a dead broker of unknown rack does not count"
        );
        assert_eq!(m.rack_spread(&[1, 2, 3]), 2);
        assert_eq!(m.leadership_of(1), 1);
        assert_eq!(m.leadership_of(2), 0);
        let d = Disk {
            used_bytes: 3,
            total_bytes: 4,
        };
        assert_eq!(d.ratio(), 0.75);
    }
}
