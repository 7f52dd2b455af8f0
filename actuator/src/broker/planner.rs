//! The pure planner: from a [`ClusterModel`] and one broker in trouble, the partition changes
//! that relieve it. No I/O; the same model always gives the same plan.
//!
//! Rules every plan keeps (checked again by [`super::verify::verify`] before anything is sent):
//! - the replication factor of every partition, and never two replicas on one broker;
//! - the rack spread: a new replica set spans at least as many racks as the old one;
//! - a broker that receives a replica is alive, not overloaded and not under disk pressure (and,
//!   when disk figures are known, stays under the disk target after the copy);
//! - every partition touched has an in-sync, live leader now, and its new preferred leader is an
//!   in-sync, live replica (a healthy one whenever there is one);
//! - at most `max_moves_per_broker` replica moves per live broker (as source or destination) and
//!   `max_leader_moves` leadership changes per plan.

use std::collections::BTreeMap;

use serde::Serialize;

use super::model::{ClusterModel, Disk, Partition};

/// What a plan does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    /// Make other in-sync replicas preferred, then elect the preferred leaders. No data moves.
    MoveLeadership,
    /// Move replicas off a live broker (overload that persisted, or disk pressure).
    MoveReplicas,
    /// Re-create the replicas of a dead broker on live ones.
    ReplaceReplicas,
}

impl PlanKind {
    /// snake_case name, as in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            PlanKind::MoveLeadership => "move_leadership",
            PlanKind::MoveReplicas => "move_replicas",
            PlanKind::ReplaceReplicas => "replace_replicas",
        }
    }
}

/// Caps and targets for one plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Replica moves per live broker, counted on the broker that loses and the one that gains.
    pub max_moves_per_broker: u32,
    /// Leadership changes in one plan.
    pub max_leader_moves: u32,
    /// Disk pressure: move until the directory's projected use is at or under this ratio; also
    /// the most a receiving broker may reach.
    pub disk_target_ratio: f64,
}

/// One partition's new replica list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Replicas now.
    pub from: Vec<i32>,
    /// Replicas after; the first is the preferred leader.
    pub to: Vec<i32>,
    /// Bytes a new replica copies, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Whether the current leader changes.
    pub leader_change: bool,
}

impl Change {
    /// The broker added by a replica move (none for a leadership change).
    pub fn added(&self) -> Option<i32> {
        self.to.iter().copied().find(|b| !self.from.contains(b))
    }
}

/// Why a partition of the broker was left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// No live, in-sync leader now (offline): only the broker coming back, or an unclean
    /// election, can help; a reassignment cannot.
    NoInSyncLeader,
    /// No other in-sync, live replica that may lead.
    NoHealthyLeader,
    /// No live, healthy broker outside the replica set keeps the rack spread (or has disk room).
    NoTarget,
}

/// A partition left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Why.
    pub reason: SkipReason,
}

/// Disk use of the directory under pressure, before and after the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Projection {
    /// The log directory, when the figures are for one directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Size of the filesystem.
    pub total_bytes: u64,
    /// Bytes used now.
    pub used_bytes: u64,
    /// Bytes used once the moves are done.
    pub projected_bytes: u64,
    /// The target ratio.
    pub target_ratio: f64,
}

/// A plan for one broker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// What it does.
    pub kind: PlanKind,
    /// The broker in trouble.
    pub broker: i32,
    /// The partition changes, in the order chosen.
    pub changes: Vec<Change>,
    /// Partitions left alone, and why.
    pub skipped: Vec<Skipped>,
    /// Partitions that would have been changed but for the caps (for a later action).
    pub left_by_caps: usize,
    /// Disk projection (disk pressure with known figures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<Projection>,
}

impl Plan {
    fn new(kind: PlanKind, broker: i32) -> Self {
        Self {
            kind,
            broker,
            changes: Vec::new(),
            skipped: Vec::new(),
            left_by_caps: 0,
            disk: None,
        }
    }

    /// Partitions whose replica set changes.
    pub fn replica_moves(&self) -> usize {
        self.changes.iter().filter(|c| c.added().is_some()).count()
    }

    /// Partitions whose leader changes.
    pub fn leader_moves(&self) -> usize {
        self.changes.iter().filter(|c| c.leader_change).count()
    }

    /// Bytes to copy, over the changes whose size is known.
    pub fn bytes(&self) -> u64 {
        self.changes.iter().filter_map(|c| c.size_bytes).sum()
    }

    /// A one-line summary for operators.
    pub fn summary(&self) -> String {
        let mut s = match self.kind {
            PlanKind::MoveLeadership => format!(
                "{} partitions get a new preferred leader ({} leaders move) off broker {}",
                self.changes.len(),
                self.leader_moves(),
                self.broker
            ),
            _ => format!(
                "{} replicas move off broker {} ({} bytes known, {} leaders move)",
                self.replica_moves(),
                self.broker,
                self.bytes(),
                self.leader_moves()
            ),
        };
        if !self.skipped.is_empty() {
            s.push_str(&format!("; {} partitions left alone", self.skipped.len()));
        }
        if self.left_by_caps > 0 {
            s.push_str(&format!("; {} more after the caps", self.left_by_caps));
        }
        if let Some(d) = &self.disk {
            s.push_str(&format!(
                "; disk {:.1}% -> {:.1}% (target {:.1}%)",
                pct(d.used_bytes, d.total_bytes),
                pct(d.projected_bytes, d.total_bytes),
                d.target_ratio * 100.0
            ));
        }
        s
    }
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 * 100.0 / b as f64
    }
}

/// The first replica in `order` (other than `except`) that is in sync and may lead; else the
/// first that is in sync and alive.
fn pick_leader(model: &ClusterModel, p: &Partition, order: &[i32], except: &[i32]) -> Option<i32> {
    let candidates = || order.iter().copied().filter(|r| !except.contains(r));
    candidates()
        .find(|r| p.in_sync(*r) && model.can_lead(*r))
        .or_else(|| candidates().find(|r| p.in_sync(*r) && model.alive(*r)))
}

/// Leadership off `broker`: for every partition it leads or prefers to lead, the first in-sync
/// replica that may lead becomes preferred and `broker` goes last. Partitions it leads come
/// first, then those it only prefers (so automatic leader rebalancing does not bring leadership
/// back).
pub fn plan_leadership(model: &ClusterModel, broker: i32, limits: &Limits) -> Plan {
    let mut plan = Plan::new(PlanKind::MoveLeadership, broker);
    let mut parts: Vec<&Partition> = model
        .partitions
        .iter()
        .filter(|p| p.leader == broker || p.replicas.first() == Some(&broker))
        .collect();
    parts.sort_by_key(|p| p.leader != broker);
    for p in parts {
        let healthy = p
            .replicas
            .iter()
            .copied()
            .find(|r| *r != broker && p.in_sync(*r) && model.can_lead(*r));
        let Some(lead) = healthy else {
            plan.skipped.push(skipped(p, SkipReason::NoHealthyLeader));
            continue;
        };
        if plan.changes.len() >= limits.max_leader_moves as usize {
            plan.left_by_caps += 1;
            continue;
        }
        let mut to = vec![lead];
        to.extend(
            p.replicas
                .iter()
                .copied()
                .filter(|r| *r != lead && *r != broker),
        );
        to.push(broker);
        plan.changes.push(Change {
            topic: p.topic.clone(),
            partition: p.partition,
            from: p.replicas.clone(),
            to,
            size_bytes: None,
            leader_change: p.leader == broker,
        });
    }
    plan
}

fn skipped(p: &Partition, reason: SkipReason) -> Skipped {
    Skipped {
        topic: p.topic.clone(),
        partition: p.partition,
        reason,
    }
}

/// Running totals while a replica plan is built.
struct Ledger {
    replicas: BTreeMap<i32, i64>,
    used: BTreeMap<i32, u64>,
    moves: BTreeMap<i32, u32>,
}

impl Ledger {
    fn new(model: &ClusterModel) -> Self {
        let mut replicas: BTreeMap<i32, i64> = model.brokers.keys().map(|b| (*b, 0)).collect();
        for p in &model.partitions {
            for r in &p.replicas {
                *replicas.entry(*r).or_default() += 1;
            }
        }
        let used = model
            .brokers
            .iter()
            .filter_map(|(id, b)| b.disk.map(|d| (*id, d.used_bytes)))
            .collect();
        Self {
            replicas,
            used,
            moves: BTreeMap::new(),
        }
    }

    fn moves(&self, b: i32) -> u32 {
        self.moves.get(&b).copied().unwrap_or(0)
    }
}

/// Whether Kafka log directory `dir` is on the alert's `path`: the same directory, one inside
/// the other (the agent reports the filesystem of each log directory, which may be its mount
/// point).
pub fn same_disk(dir: &str, path: &str) -> bool {
    let (d, p) = (dir.trim_end_matches('/'), path.trim_end_matches('/'));
    d == p || d.starts_with(&format!("{p}/")) || p.starts_with(&format!("{d}/"))
}

/// Replica moves off `broker`: for a live broker (overload that persisted, or disk pressure on
/// `disk_path`) the largest partitions first, until the directory's projected use is at or
/// under the target when its figures are known; for a dead broker, the partitions with the
/// fewest in-sync replicas left first. Each replica goes to the least loaded eligible broker.
pub fn plan_moves(
    model: &ClusterModel,
    broker: i32,
    disk_path: Option<&str>,
    limits: &Limits,
) -> Plan {
    let source_alive = model.alive(broker);
    let kind = if source_alive {
        PlanKind::MoveReplicas
    } else {
        PlanKind::ReplaceReplicas
    };
    let mut plan = Plan::new(kind, broker);
    // The broker's log directories on the alert's filesystem; when none is known, the broker.
    let src = model.broker(broker);
    let dirs: Vec<(&String, &Disk)> = match (disk_path, src) {
        (Some(path), Some(b)) => b
            .log_dirs
            .iter()
            .filter(|(d, _)| same_disk(d, path))
            .collect(),
        _ => Vec::new(),
    };
    let in_dir = |p: &Partition| match p.dirs.get(&broker) {
        Some(dir) if !dirs.is_empty() => dirs.iter().any(|(d, _)| *d == dir),
        _ => true,
    };
    let mut parts: Vec<&Partition> = model
        .partitions
        .iter()
        .filter(|p| p.replicas.contains(&broker) && in_dir(p))
        .collect();
    if source_alive {
        parts.sort_by_key(|p| std::cmp::Reverse(p.sizes.get(&broker).copied().or(p.size())));
    } else {
        parts.sort_by_key(|p| {
            let left = p.isr.iter().filter(|r| **r != broker).count();
            (left, std::cmp::Reverse(p.size()))
        });
    }
    // The filesystem under pressure: its own figures when known (directories on one
    // filesystem report the same), else the broker's.
    let dir_disk = dirs
        .first()
        .map(|(d, disk)| (Some(d.as_str()), **disk))
        .or_else(|| src.and_then(|b| b.disk).map(|d| (None, d)));
    let mut projected = match (source_alive, disk_path.is_some(), dir_disk) {
        (true, true, Some((path, d))) => Some(Projection {
            path: path.map(str::to_string),
            total_bytes: d.total_bytes,
            used_bytes: d.used_bytes,
            projected_bytes: d.used_bytes,
            target_ratio: limits.disk_target_ratio,
        }),
        _ => None,
    };
    let under_target =
        |pr: &Projection| pr.projected_bytes as f64 <= pr.target_ratio * pr.total_bytes as f64;
    let cap = limits.max_moves_per_broker;
    let mut ledger = Ledger::new(model);
    let mut leader_moves = 0u32;
    for p in parts {
        if projected.as_ref().is_some_and(under_target) {
            break;
        }
        let leader_ok = p.leader >= 0 && p.in_sync(p.leader) && model.alive(p.leader);
        if !leader_ok {
            plan.skipped.push(skipped(p, SkipReason::NoInSyncLeader));
            continue;
        }
        if source_alive && ledger.moves(broker) >= cap {
            plan.left_by_caps += 1;
            continue;
        }
        let size = p.sizes.get(&broker).copied().or(p.size());
        let others: Vec<i32> = p
            .replicas
            .iter()
            .copied()
            .filter(|r| *r != broker)
            .collect();
        let spread = model.rack_spread(&p.replicas);
        let fits = |t: i32| -> bool {
            let Some(b) = model.broker(t) else {
                return false;
            };
            if t == broker || p.replicas.contains(&t) || !b.healthy() {
                return false;
            }
            if let (Some(d), Some(sz)) = (b.disk, size) {
                let used = ledger.used.get(&t).copied().unwrap_or(d.used_bytes);
                if (used.saturating_add(sz)) as f64
                    > limits.disk_target_ratio * d.total_bytes as f64
                {
                    return false;
                }
            }
            let mut set = others.clone();
            set.push(t);
            model.rack_spread(&set) >= spread
        };
        let eligible: Vec<i32> = model.brokers.keys().copied().filter(|t| fits(*t)).collect();
        if eligible.is_empty() {
            plan.skipped.push(skipped(p, SkipReason::NoTarget));
            continue;
        }
        let target = eligible
            .iter()
            .copied()
            .filter(|t| ledger.moves(*t) < cap)
            .min_by(|a, b| {
                let load = |t: &i32| {
                    let ratio = model
                        .broker(*t)
                        .and_then(|br| br.disk)
                        .map(|d| {
                            ledger.used.get(t).copied().unwrap_or(d.used_bytes) as f64
                                / d.total_bytes.max(1) as f64
                        })
                        .unwrap_or(0.0);
                    (ledger.replicas.get(t).copied().unwrap_or(0), ratio)
                };
                let (ra, da) = load(a);
                let (rb, db) = load(b);
                ra.cmp(&rb).then(da.total_cmp(&db)).then(a.cmp(b))
            });
        let Some(target) = target else {
            plan.left_by_caps += 1;
            continue;
        };
        let mut to: Vec<i32> = p
            .replicas
            .iter()
            .map(|r| if *r == broker { target } else { *r })
            .collect();
        if to.len() >= 2 {
            let Some(lead) = pick_leader(model, p, &to, &[target]) else {
                plan.skipped.push(skipped(p, SkipReason::NoHealthyLeader));
                continue;
            };
            to.retain(|r| *r != lead);
            to.insert(0, lead);
        }
        let leader_change = p.leader == broker;
        if leader_change {
            if leader_moves >= limits.max_leader_moves {
                plan.left_by_caps += 1;
                continue;
            }
            leader_moves += 1;
        }
        if source_alive {
            *ledger.moves.entry(broker).or_default() += 1;
        }
        *ledger.moves.entry(target).or_default() += 1;
        *ledger.replicas.entry(target).or_default() += 1;
        *ledger.replicas.entry(broker).or_default() -= 1;
        if let Some(sz) = size {
            if let Some(u) = model
                .broker(target)
                .and_then(|b| b.disk)
                .map(|d| d.used_bytes)
            {
                let e = ledger.used.entry(target).or_insert(u);
                *e = e.saturating_add(sz);
            }
            if let Some(pr) = projected.as_mut() {
                pr.projected_bytes = pr.projected_bytes.saturating_sub(sz);
            }
        }
        plan.changes.push(Change {
            topic: p.topic.clone(),
            partition: p.partition,
            from: p.replicas.clone(),
            to,
            size_bytes: size,
            leader_change,
        });
    }
    plan.disk = projected;
    plan
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::broker::model::{Broker, Disk};

    fn part(topic: &str, n: i32, replicas: &[i32], isr: &[i32], leader: i32) -> Partition {
        Partition {
            topic: topic.into(),
            partition: n,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            sizes: BTreeMap::new(),
            dirs: BTreeMap::new(),
        }
    }

    fn model(racks: &[(i32, &str)], parts: Vec<Partition>) -> ClusterModel {
        ClusterModel {
            brokers: racks
                .iter()
                .map(|(id, r)| (*id, Broker::live(Some(r))))
                .collect(),
            partitions: parts,
        }
    }

    const LIMITS: Limits = Limits {
        max_moves_per_broker: 5,
        max_leader_moves: 1000,
        disk_target_ratio: 0.75,
    };

    #[test]
    fn leadership_prefers_a_healthy_in_sync_replica_and_puts_the_broker_last() {
        let mut m = model(
            &[(1, "a"), (2, "b"), (3, "c")],
            vec![
                part("t", 0, &[1, 2, 3], &[1, 3], 1), // 2 is out of sync: 3 leads
                part("t", 1, &[2, 1, 3], &[1, 2, 3], 1), // led by 1, preferred 2
                part("t", 2, &[1, 2], &[1], 1),       // nobody else in sync
                part("t", 3, &[2, 3], &[2, 3], 2),    // not 1's
                part("t", 4, &[1, 3, 2], &[1, 2, 3], 2), // preferred only
            ],
        );
        m.brokers.get_mut(&3).unwrap().overloaded = true;
        let plan = plan_leadership(&m, 1, &LIMITS);
        let got: Vec<(i32, Vec<i32>, bool)> = plan
            .changes
            .iter()
            .map(|c| (c.partition, c.to.clone(), c.leader_change))
            .collect();
        // t-0: 2 is not in sync and 3 is overloaded: nobody healthy may lead.
        assert_eq!(
            got,
            vec![(1, vec![2, 3, 1], true), (4, vec![2, 3, 1], false)],
            "{plan:#?}"
        );
        assert_eq!(
            plan.skipped,
            vec![
                Skipped {
                    topic: "t".into(),
                    partition: 0,
                    reason: SkipReason::NoHealthyLeader
                },
                Skipped {
                    topic: "t".into(),
                    partition: 2,
                    reason: SkipReason::NoHealthyLeader
                },
            ]
        );
        let capped = plan_leadership(
            &m,
            1,
            &Limits {
                max_leader_moves: 1,
                ..LIMITS
            },
        );
        assert_eq!(capped.changes.len(), 1);
        assert_eq!(capped.changes[0].partition, 1, "led partitions first");
        assert_eq!(capped.left_by_caps, 1);
    }

    #[test]
    fn disk_pressure_moves_largest_first_until_under_target() {
        let mut parts = Vec::new();
        for (n, size) in [(0, 10u64), (1, 40), (2, 25), (3, 5)] {
            let mut p = part("logs", n, &[1, 2], &[1, 2], 1);
            p.sizes = BTreeMap::from([(1, size), (2, size)]);
            p.dirs = BTreeMap::from([(1, "/data".to_string())]);
            parts.push(p);
        }
        let mut m = model(&[(1, "a"), (2, "a"), (3, "a"), (4, "b")], parts);
        let disk = |used| Disk {
            used_bytes: used,
            total_bytes: 100,
        };
        m.brokers.get_mut(&1).unwrap().disk = Some(disk(90));
        m.brokers
            .get_mut(&1)
            .unwrap()
            .log_dirs
            .insert("/data".into(), disk(90));
        m.brokers.get_mut(&3).unwrap().disk = Some(disk(10));
        m.brokers.get_mut(&4).unwrap().disk = Some(disk(70)); // no room for 40
        let plan = plan_moves(&m, 1, Some("/data"), &LIMITS);
        assert_eq!(plan.kind, PlanKind::MoveReplicas);
        // 90 - 40 = 50 <= 75 after the first move: one move is enough.
        assert_eq!(plan.changes.len(), 1, "{plan:#?}");
        let c = &plan.changes[0];
        assert_eq!((c.partition, c.to.clone()), (1, vec![2, 3]));
        assert!(c.leader_change, "1 led it; 2 (in sync) becomes preferred");
        let d = plan.disk.as_ref().unwrap();
        assert_eq!((d.used_bytes, d.projected_bytes), (90, 50));
        assert!(plan
            .summary()
            .contains("disk 90.0% -> 50.0% (target 75.0%)"));
    }

    #[test]
    fn the_alert_path_matches_log_dirs_on_its_filesystem() {
        assert!(same_disk("/var/lib/kafka/data", "/var/lib/kafka"));
        assert!(same_disk("/var/lib/kafka/data/", "/var/lib/kafka/data"));
        assert!(same_disk("/data", "/data/kafka-logs"));
        assert!(same_disk("/data", "/"));
        assert!(!same_disk("/data2", "/data"));
        assert!(!same_disk("/var/lib/kafka-logs", "/var/lib/kafka"));
    }

    #[test]
    fn dead_broker_is_replaced_keeping_racks_and_worst_partitions_first() {
        let mut m = model(
            &[(1, "a"), (2, "b"), (3, "c"), (4, "c"), (5, "a")],
            vec![
                part("t", 0, &[3, 1, 2], &[1, 2], 1),
                part("t", 1, &[1, 3], &[1], 1),
                part("t", 2, &[3], &[], -1), // offline
                part("t", 3, &[2, 1], &[2, 1], 2),
            ],
        );
        m.brokers.get_mut(&3).unwrap().alive = false;
        let plan = plan_moves(&m, 3, None, &LIMITS);
        assert_eq!(plan.kind, PlanKind::ReplaceReplicas);
        let got: Vec<(i32, Vec<i32>)> = plan
            .changes
            .iter()
            .map(|c| (c.partition, c.to.clone()))
            .collect();
        // t-1 has one in-sync replica left: first. Rack c must stay: 4 is the only c broker.
        assert_eq!(got, vec![(1, vec![1, 4]), (0, vec![1, 4, 2])], "{plan:#?}");
        assert_eq!(
            plan.skipped,
            vec![Skipped {
                topic: "t".into(),
                partition: 2,
                reason: SkipReason::NoInSyncLeader
            }]
        );
        // Broker 4 dead too: t-0 spans racks c, a, b and no live broker is in c; t-1 spans a and
        // c, and b keeps two racks.
        m.brokers.get_mut(&4).unwrap().alive = false;
        let plan = plan_moves(&m, 3, None, &LIMITS);
        let got: Vec<(i32, Vec<i32>)> = plan
            .changes
            .iter()
            .map(|c| (c.partition, c.to.clone()))
            .collect();
        assert_eq!(got, vec![(1, vec![1, 2])]);
        assert_eq!(
            plan.skipped,
            vec![
                Skipped {
                    topic: "t".into(),
                    partition: 2,
                    reason: SkipReason::NoInSyncLeader
                },
                Skipped {
                    topic: "t".into(),
                    partition: 0,
                    reason: SkipReason::NoTarget
                },
            ]
        );
    }

    #[test]
    fn caps_limit_moves_per_live_broker() {
        let parts = (0..12).map(|n| part("t", n, &[1, 2], &[1, 2], 2)).collect();
        let m = model(&[(1, "a"), (2, "a"), (3, "a"), (4, "a")], parts);
        let plan = plan_moves(&m, 1, None, &LIMITS);
        assert_eq!(plan.changes.len(), 5, "5 moves off the live source");
        assert_eq!(plan.left_by_caps, 7);
        assert_eq!(plan.leader_moves(), 0);
        let plan = plan_moves(
            &m,
            1,
            None,
            &Limits {
                max_moves_per_broker: 2,
                ..LIMITS
            },
        );
        assert_eq!(plan.changes.len(), 2);
        let targets: Vec<i32> = plan.changes.iter().filter_map(Change::added).collect();
        assert_eq!(targets, vec![3, 4], "spread over the least loaded brokers");
    }
}
