//! An independent check of a plan against the model, run before anything is sent to Kafka and
//! by the property tests. It restates the planner's rules without sharing its code.

use std::collections::{BTreeMap, BTreeSet};

use super::model::ClusterModel;
use super::planner::{Limits, Plan, PlanKind};

/// Every rule a plan must keep; the first broken one is returned as a sentence.
pub fn verify(model: &ClusterModel, plan: &Plan, limits: &Limits) -> Result<(), String> {
    let source = plan.broker;
    let mut seen = BTreeSet::new();
    let mut moves: BTreeMap<i32, u32> = BTreeMap::new();
    let mut added_bytes: BTreeMap<i32, u64> = BTreeMap::new();
    for c in &plan.changes {
        let name = format!("{}-{}", c.topic, c.partition);
        if !seen.insert((c.topic.clone(), c.partition)) {
            return Err(format!("{name} appears twice in the plan"));
        }
        let p = model
            .partitions
            .iter()
            .find(|p| p.topic == c.topic && p.partition == c.partition)
            .ok_or_else(|| format!("{name} is not in the cluster"))?;
        if c.from != p.replicas {
            return Err(format!(
                "{name}: from {:?} is not the current replica list {:?}",
                c.from, p.replicas
            ));
        }
        if c.to.len() != c.from.len() {
            return Err(format!(
                "{name}: replication factor {} -> {}",
                c.from.len(),
                c.to.len()
            ));
        }
        let to_set: BTreeSet<i32> = c.to.iter().copied().collect();
        if to_set.len() != c.to.len() {
            return Err(format!("{name}: two replicas on one broker in {:?}", c.to));
        }
        if model.rack_spread(&c.to) < model.rack_spread(&c.from) {
            return Err(format!(
                "{name}: rack spread {} -> {}",
                model.rack_spread(&c.from),
                model.rack_spread(&c.to)
            ));
        }
        let from_set: BTreeSet<i32> = c.from.iter().copied().collect();
        let added: Vec<i32> = to_set.difference(&from_set).copied().collect();
        let removed: Vec<i32> = from_set.difference(&to_set).copied().collect();
        let lead = c.to.first().copied().unwrap_or(-1);
        match plan.kind {
            PlanKind::MoveLeadership => {
                if !added.is_empty() || !removed.is_empty() {
                    return Err(format!(
                        "{name}: a leadership change altered the replica set {:?} -> {:?}",
                        c.from, c.to
                    ));
                }
                if lead == source || !p.in_sync(lead) || !model.can_lead(lead) {
                    return Err(format!("{name}: new preferred leader {lead} is not an in-sync, live, not overloaded replica other than {source}"));
                }
            }
            PlanKind::MoveReplicas | PlanKind::ReplaceReplicas => {
                if removed != vec![source] || added.len() != 1 {
                    return Err(format!("{name}: a move must replace broker {source} by one broker, got {:?} -> {:?}", c.from, c.to));
                }
                let t = added[0];
                if !model.broker(t).is_some_and(|b| b.healthy()) {
                    return Err(format!(
                        "{name}: target {t} is dead, overloaded, under disk pressure or unknown"
                    ));
                }
                if !(p.leader >= 0 && p.in_sync(p.leader) && model.alive(p.leader)) {
                    return Err(format!(
                        "{name}: moved without an in-sync, live leader (leader {})",
                        p.leader
                    ));
                }
                if c.to.len() >= 2 {
                    if lead == t || !p.in_sync(lead) || !model.alive(lead) {
                        return Err(format!("{name}: preferred leader {lead} of {:?} is not an in-sync, live existing replica", c.to));
                    }
                    let healthier =
                        c.to.iter()
                            .any(|r| *r != t && p.in_sync(*r) && model.can_lead(*r));
                    if !model.can_lead(lead) && healthier {
                        return Err(format!("{name}: overloaded {lead} preferred while a healthy in-sync replica exists"));
                    }
                }
                if model.alive(source) {
                    *moves.entry(source).or_default() += 1;
                }
                *moves.entry(t).or_default() += 1;
                if let Some(sz) = c.size_bytes {
                    *added_bytes.entry(t).or_default() += sz;
                }
            }
        }
    }
    for (b, n) in &moves {
        if *n > limits.max_moves_per_broker {
            return Err(format!(
                "broker {b} takes part in {n} moves, cap {}",
                limits.max_moves_per_broker
            ));
        }
    }
    let leader_changes = match plan.kind {
        PlanKind::MoveLeadership => plan.changes.len(),
        _ => plan.leader_moves(),
    };
    if leader_changes > limits.max_leader_moves as usize {
        return Err(format!(
            "{leader_changes} leadership changes, cap {}",
            limits.max_leader_moves
        ));
    }
    for (b, bytes) in &added_bytes {
        if let Some(d) = model.broker(*b).and_then(|x| x.disk) {
            let after = d.used_bytes.saturating_add(*bytes);
            if after as f64 > limits.disk_target_ratio * d.total_bytes as f64 {
                return Err(format!(
                    "broker {b} would reach {after} of {} bytes, over the target",
                    d.total_bytes
                ));
            }
        }
    }
    Ok(())
}
