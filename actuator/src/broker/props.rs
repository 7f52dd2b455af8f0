//! Property tests of the planner over generated clusters: 3 to 50 brokers, replication factor
//! 1 to 3, with or without racks, a mix of dead, overloaded and full brokers, partial ISRs,
//! offline partitions, and sizes and disk figures present or not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::model::{Broker, ClusterModel, Disk, Partition};
use super::planner::{plan_leadership, plan_moves, Limits, Plan, PlanKind, SkipReason};
use super::verify::verify;

/// A small deterministic generator, so one proptest seed describes a whole cluster.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

#[derive(Debug, Clone)]
struct Case {
    model: ClusterModel,
    broker: i32,
    kind: PlanKind,
    disk_path: Option<String>,
    limits: Limits,
}

fn build(seed: u64, brokers: usize, racks: u64, kind: u8, limits: Limits) -> Case {
    let mut rng = Rng(seed | 1);
    let mut model = ClusterModel::default();
    let with_disk = rng.chance(50);
    for id in 0..brokers as i32 {
        let rack = (racks > 0).then(|| format!("r{}", rng.below(racks)));
        let mut b = Broker::live(rack.as_deref());
        b.alive = rng.chance(85);
        b.overloaded = rng.chance(15);
        b.full = rng.chance(10);
        if with_disk {
            let total = 1_000_000;
            b.disk = Some(Disk {
                used_bytes: rng.below(total),
                total_bytes: total,
            });
        }
        model.brokers.insert(id * 3 + 1, b);
    }
    let ids: Vec<i32> = model.brokers.keys().copied().collect();
    let partitions = 1 + rng.below(80) as usize;
    for n in 0..partitions {
        let rf = 1 + rng.below(3.min(ids.len() as u64)) as usize;
        let mut replicas = Vec::new();
        while replicas.len() < rf {
            let b = ids[rng.below(ids.len() as u64) as usize];
            if !replicas.contains(&b) {
                replicas.push(b);
            }
        }
        let isr: Vec<i32> = replicas
            .iter()
            .copied()
            .filter(|r| {
                if model.alive(*r) {
                    rng.chance(85)
                } else {
                    rng.chance(10)
                }
            })
            .collect();
        let leader = if !isr.is_empty() && rng.chance(90) {
            isr[rng.below(isr.len() as u64) as usize]
        } else {
            -1
        };
        let sizes = if rng.chance(60) {
            let sz = rng.below(200_000);
            replicas.iter().map(|r| (*r, sz)).collect()
        } else {
            BTreeMap::new()
        };
        model.partitions.push(Partition {
            topic: format!("topic-{}", n % 7),
            partition: n as i32,
            replicas,
            isr,
            leader,
            sizes,
            dirs: BTreeMap::new(),
        });
    }
    // The broker in trouble: live for leadership and replica moves, dead for a replacement.
    let kind = match kind % 3 {
        0 => PlanKind::MoveLeadership,
        1 => PlanKind::MoveReplicas,
        _ => PlanKind::ReplaceReplicas,
    };
    let broker = ids[rng.below(ids.len() as u64) as usize];
    let want_alive = kind != PlanKind::ReplaceReplicas;
    if let Some(b) = model.brokers.get_mut(&broker) {
        b.alive = want_alive;
        if kind == PlanKind::MoveLeadership {
            b.overloaded = true;
        }
    }
    let disk_path = (kind == PlanKind::MoveReplicas && rng.chance(50)).then(|| "/data".to_string());
    Case {
        model,
        broker,
        kind,
        disk_path,
        limits,
    }
}

fn plan_for(c: &Case) -> Plan {
    match c.kind {
        PlanKind::MoveLeadership => plan_leadership(&c.model, c.broker, &c.limits),
        _ => plan_moves(&c.model, c.broker, c.disk_path.as_deref(), &c.limits),
    }
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        3usize..=50,
        0u64..=4,
        any::<u8>(),
        1u32..=6,
        1u32..=60,
        50u32..=95,
    )
        .prop_map(|(seed, brokers, racks, kind, cap, lcap, ratio)| {
            build(
                seed,
                brokers,
                racks,
                kind,
                Limits {
                    max_moves_per_broker: cap,
                    max_leader_moves: lcap,
                    disk_target_ratio: f64::from(ratio) / 100.0,
                },
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every plan keeps RF, rack spread, one replica per broker, healthy targets, an in-sync
    /// leader, and the caps (the independent checker).
    #[test]
    fn plans_keep_every_rule(c in arb_case()) {
        let plan = plan_for(&c);
        prop_assert_eq!(plan.kind, c.kind);
        if let Err(e) = verify(&c.model, &plan, &c.limits) {
            prop_assert!(false, "{}\nplan: {:#?}", e, plan);
        }
        // The same model gives the same plan.
        prop_assert_eq!(&plan, &plan_for(&c));
    }

    /// Every partition of the broker is accounted for: changed, left alone for a reason that
    /// holds, or left for a later action by the caps.
    #[test]
    fn every_partition_is_accounted_for(c in arb_case()) {
        let plan = plan_for(&c);
        let m = &c.model;
        let b = c.broker;
        let candidates: Vec<&Partition> = m.partitions.iter().filter(|p| match c.kind {
            PlanKind::MoveLeadership => p.leader == b || p.replicas.first() == Some(&b),
            _ => p.replicas.contains(&b),
        }).collect();
        let accounted = plan.changes.len() + plan.skipped.len() + plan.left_by_caps;
        if plan.disk.is_some() {
            // Planning stops once the directory is under its target.
            prop_assert!(accounted <= candidates.len());
        } else {
            prop_assert_eq!(accounted, candidates.len(), "plan {:#?}", plan);
        }
        let no_disk = m.brokers.values().all(|x| x.disk.is_none());
        for s in &plan.skipped {
            let p = candidates.iter().find(|p| p.topic == s.topic && p.partition == s.partition).unwrap();
            let others: Vec<i32> = p.replicas.iter().copied().filter(|r| *r != b).collect();
            match s.reason {
                SkipReason::NoInSyncLeader => prop_assert!(
                    !(p.leader >= 0 && p.in_sync(p.leader) && m.alive(p.leader)), "{:?} has a good leader", p),
                SkipReason::NoHealthyLeader => {
                    if c.kind == PlanKind::MoveLeadership {
                        prop_assert!(!others.iter().any(|r| p.in_sync(*r) && m.can_lead(*r)), "{:?}", p);
                    } else {
                        prop_assert!(!others.iter().any(|r| p.in_sync(*r) && m.alive(*r)), "{:?}", p);
                    }
                }
                SkipReason::NoTarget => if no_disk {
                    let spread = m.rack_spread(&p.replicas);
                    let fits = m.brokers.iter().any(|(t, br)| {
                        let mut set = others.clone();
                        set.push(*t);
                        *t != b && !p.replicas.contains(t) && br.healthy() && m.rack_spread(&set) >= spread
                    });
                    prop_assert!(!fits, "{:?} had a target", p);
                },
            }
        }
        if c.kind == PlanKind::MoveLeadership {
            for ch in &plan.changes {
                prop_assert_eq!(ch.to.last(), Some(&b), "the broker goes last");
            }
        }
    }

    /// A dead broker with no caps binding: every partition that has an in-sync leader and a
    /// possible target is re-created, so no partition stays under-replicated that could be fixed.
    #[test]
    fn dead_broker_without_caps_is_fully_replaced(seed in any::<u64>(), brokers in 3usize..=50, racks in 0u64..=4) {
        let mut c = build(seed, brokers, racks, 2, Limits {
            max_moves_per_broker: 10_000,
            max_leader_moves: 10_000,
            disk_target_ratio: 0.99,
        });
        for b in c.model.brokers.values_mut() {
            b.disk = None;
        }
        let plan = plan_for(&c);
        prop_assert_eq!(plan.left_by_caps, 0);
        prop_assert!(verify(&c.model, &plan, &c.limits).is_ok());
        let moved: usize = plan.changes.len();
        let fixable = c.model.partitions.iter().filter(|p| p.replicas.contains(&c.broker)).filter(|p| {
            !plan.skipped.iter().any(|s| s.topic == p.topic && s.partition == p.partition)
        }).count();
        prop_assert_eq!(moved, fixable);
    }
}
