//! Broker remediation: the pure parts. The cluster model, the planner that turns one broker's
//! trouble into partition changes, and the checker that every plan passes before it is sent.

pub mod action;
pub mod gate;
pub mod model;
pub mod planner;
pub mod policy;
pub mod verify;

#[cfg(test)]
mod props;

pub use model::{Broker, ClusterModel, Disk, Partition};
pub use planner::{plan_leadership, plan_moves, Change, Limits, Plan, PlanKind, SkipReason};
pub use verify::verify;
