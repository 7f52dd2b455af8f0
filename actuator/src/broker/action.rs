//! What to do about one broker alert, from what the engine knows and one look at the cluster:
//! the gates, the action, the plan and its check. Pure: no I/O, the caller passes in `now`.
//!
//! The engine calls [`precheck_alert`] first (no look at the cluster needed), then reads the
//! cluster through its backend and calls [`plan_action`], then starts what it returned.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::gate::{
    decide_broker, precheck, BrokerDecision, BrokerInput, BrokerObserved, BrokerSkip, ClusterState,
    LastBrokerAction,
};
use super::planner::{plan_leadership, plan_moves, Limits, Plan, PlanKind};
use super::policy::BrokerPolicy;
use super::{verify, ClusterModel};
use crate::alert::{BrokerAlert, BrokerAlertKind};
use crate::decide::Trigger;
use crate::reason::ReasonCode;

/// What the engine knows about a cluster without asking it, taken under its lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeSnapshot {
    /// The global pause switch.
    pub paused: bool,
    /// Our running action: (broker, kind).
    pub running: Option<(i32, PlanKind)>,
    /// The last action on the cluster.
    pub last_cluster: Option<LastBrokerAction>,
    /// The last action on each broker.
    pub last_by_broker: BTreeMap<i32, LastBrokerAction>,
    /// Firing broker alerts of the cluster: (broker, kind).
    pub firing: Vec<(i32, BrokerAlertKind)>,
    /// Brokers the cluster had at the last look, if any.
    pub known_brokers: Option<usize>,
    /// When the actuator first heard of the alert being decided (the settle time counts from it).
    pub first_seen: Timestamp,
    /// This exact delivery was handled recently.
    pub seen_recently: bool,
}

impl RuntimeSnapshot {
    /// Distinct brokers with a firing alert.
    pub fn alerting(&self) -> Vec<i32> {
        let mut brokers: Vec<i32> = self.firing.iter().map(|(b, _)| *b).collect();
        brokers.sort_unstable();
        brokers.dedup();
        brokers
    }
}

/// The cluster's size as far as the mass-failure guard is concerned: the larger of
/// `expected_brokers` and what the cluster reported.
pub fn cluster_size(policy: &BrokerPolicy, reported: Option<usize>) -> Option<usize> {
    match (policy.expected_brokers.map(|n| n as usize), reported) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// One fresh look at the cluster, from the backend.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterLook {
    /// The partitions and brokers (None: the backend plans by itself, e.g. Cruise Control).
    pub model: Option<ClusterModel>,
    /// A reassignment in progress (ours or anyone's), described.
    pub in_progress: Option<String>,
    /// Brokers the cluster has.
    pub brokers: Option<usize>,
}

/// An action to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The broker.
    pub broker: i32,
    /// What to do.
    pub kind: PlanKind,
    /// The partition changes (None: the backend plans, or no model to plan from).
    pub plan: Option<Plan>,
    /// Other alerting brokers, to keep out of the backend's own plan.
    pub exclude: Vec<i32>,
    /// The caps the plan respects.
    pub limits: Limits,
}

/// The outcome of [`plan_action`]: a plan or a skip.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerAction {
    /// Start this.
    Start(Planned),
    /// Start nothing, and say why.
    Skip(ActionSkip),
}

/// Why no action starts.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionSkip {
    /// A gate held.
    Gate(BrokerSkip),
    /// The plan broke a safety rule: it is audited, not sent.
    PlanInvalid {
        /// What it would have done.
        kind: PlanKind,
        /// The plan.
        plan: Plan,
        /// The rule it broke.
        error: String,
    },
    /// The plan changes nothing.
    NothingToMove {
        /// What it would have done.
        kind: PlanKind,
        /// The empty plan (what it left alone, and why).
        plan: Plan,
    },
}

impl ActionSkip {
    /// The reason code for the audit record.
    pub fn code(&self) -> ReasonCode {
        match self {
            ActionSkip::Gate(s) => s.code(),
            ActionSkip::PlanInvalid { .. } => ReasonCode::PlanInvalid,
            ActionSkip::NothingToMove { .. } => ReasonCode::NothingToMove,
        }
    }

    /// A sentence for operators.
    pub fn message(&self, broker: i32) -> String {
        match self {
            ActionSkip::Gate(s) => s.message(),
            ActionSkip::PlanInvalid { error, .. } => {
                format!("the plan broke a safety rule and was not sent: {error}")
            }
            ActionSkip::NothingToMove { kind, plan } => format!(
                "{} on broker {broker}: nothing to do: {}",
                kind.as_str(),
                plan.summary()
            ),
        }
    }
}

fn gate_input(
    alert: &BrokerAlert,
    trigger: Trigger,
    snapshot: &RuntimeSnapshot,
) -> (BrokerInput, ClusterState) {
    let input = BrokerInput {
        kind: alert.kind,
        trigger,
        broker: alert.broker,
        starts_at: alert.starts_at,
        seen_recently: snapshot.seen_recently,
        first_seen: snapshot.first_seen,
    };
    let state = ClusterState {
        paused: snapshot.paused,
        running: snapshot.running,
        last_cluster: snapshot.last_cluster.clone(),
        last_broker: snapshot.last_by_broker.get(&alert.broker).cloned(),
        alerting_brokers: snapshot.alerting().len(),
        known_brokers: None,
    };
    (input, state)
}

/// The gates that need no look at the cluster (the cluster size known from `expected_brokers`
/// and the last look included).
pub fn precheck_alert(
    policy: &BrokerPolicy,
    snapshot: &RuntimeSnapshot,
    alert: &BrokerAlert,
    trigger: Trigger,
    now: Timestamp,
) -> Option<BrokerSkip> {
    let (input, mut state) = gate_input(alert, trigger, snapshot);
    state.known_brokers = cluster_size(policy, snapshot.known_brokers);
    precheck(&input, policy, &state, now)
}

/// Whether the look at the cluster needs partition sizes (and disk figures): always but for
/// the first, leadership-only, step of an overloaded broker's episode.
pub fn needs_sizes(snapshot: &RuntimeSnapshot, alert: &BrokerAlert) -> bool {
    alert.kind != BrokerAlertKind::Overloaded
        || snapshot
            .last_by_broker
            .get(&alert.broker)
            .is_some_and(|l| l.episode == alert.starts_at)
}

/// Mark the brokers with firing broker alerts in the model: overloaded (or down but still in
/// the metadata) brokers neither lead nor receive replicas; full ones receive none.
pub fn mark_alerting(model: &mut ClusterModel, firing: &[(i32, BrokerAlertKind)]) {
    for (id, kind) in firing {
        let Some(broker) = model.brokers.get_mut(id) else {
            continue;
        };
        match kind {
            // A live broker whose heartbeat alert fires is treated as overloaded: it neither
            // leads nor receives replicas while the alert lasts.
            BrokerAlertKind::Overloaded | BrokerAlertKind::Down => broker.overloaded = true,
            BrokerAlertKind::DiskPressure => broker.full = true,
        }
    }
}

/// The full decision after a look at the cluster: every gate, the action, and its plan,
/// checked. `look.model` is changed only by marking the alerting brokers.
pub fn plan_action(
    policy: &BrokerPolicy,
    snapshot: &RuntimeSnapshot,
    alert: &BrokerAlert,
    trigger: Trigger,
    mut look: ClusterLook,
    now: Timestamp,
) -> BrokerAction {
    let broker = alert.broker;
    if let Some(model) = look.model.as_mut() {
        mark_alerting(model, &snapshot.firing);
    }
    let (input, state) = gate_input(alert, trigger, snapshot);
    let observed = BrokerObserved {
        brokers: look.brokers,
        in_progress: look.in_progress.take(),
        alive: look.model.as_ref().map(|m| m.alive(broker)),
        leadership: look.model.as_ref().map(|m| m.leadership_of(broker)),
    };
    let kind = match decide_broker(&input, &observed, policy, &state, now) {
        BrokerDecision::Reassign { kind, .. } => kind,
        BrokerDecision::Skip(s) => return BrokerAction::Skip(ActionSkip::Gate(s)),
    };
    let limits = policy.limits();
    let plan = look.model.as_ref().map(|model| match kind {
        PlanKind::MoveLeadership => plan_leadership(model, broker, &limits),
        PlanKind::MoveReplicas | PlanKind::ReplaceReplicas => {
            let disk_path = (kind == PlanKind::MoveReplicas
                && alert.kind == BrokerAlertKind::DiskPressure)
                .then_some(alert.path.as_deref())
                .flatten();
            plan_moves(model, broker, disk_path, &limits)
        }
    });
    if let (Some(plan), Some(model)) = (&plan, &look.model) {
        if let Err(error) = verify(model, plan, &limits) {
            return BrokerAction::Skip(ActionSkip::PlanInvalid {
                kind,
                plan: plan.clone(),
                error,
            });
        }
        if plan.changes.is_empty() {
            return BrokerAction::Skip(ActionSkip::NothingToMove {
                kind,
                plan: plan.clone(),
            });
        }
    }
    let exclude = snapshot
        .alerting()
        .into_iter()
        .filter(|b| *b != broker)
        .collect();
    BrokerAction::Start(Planned {
        broker,
        kind,
        plan,
        exclude,
        limits,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::alert::AlertStatus;
    use crate::broker::{Broker, Partition};

    fn policy() -> BrokerPolicy {
        serde_yaml::from_str("cluster: prod\nbackend: log-only\nexpected_brokers: 10\n").unwrap()
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn alert(kind: BrokerAlertKind, broker: i32) -> BrokerAlert {
        BrokerAlert {
            kind,
            fingerprint: format!("fp-{broker}"),
            status: AlertStatus::Firing,
            cluster: "prod".into(),
            broker,
            path: None,
            starts_at: t(0),
        }
    }

    fn snapshot(firing: &[(i32, BrokerAlertKind)]) -> RuntimeSnapshot {
        RuntimeSnapshot {
            firing: firing.to_vec(),
            first_seen: t(-3600),
            ..Default::default()
        }
    }

    fn part(n: i32, replicas: &[i32], isr: &[i32]) -> Partition {
        Partition {
            topic: "orders".into(),
            partition: n,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader: replicas[0],
            sizes: BTreeMap::new(),
            dirs: BTreeMap::new(),
        }
    }

    /// Three live brokers; broker 1 leads two partitions, each with all three replicas in sync.
    fn look(parts: Vec<Partition>) -> ClusterLook {
        let mut model = ClusterModel::default();
        for id in 1..=3 {
            model.brokers.insert(id, Broker::live(None));
        }
        model.partitions = parts;
        ClusterLook {
            model: Some(model),
            in_progress: None,
            brokers: Some(3),
        }
    }

    fn healthy_look() -> ClusterLook {
        look(vec![
            part(0, &[1, 2, 3], &[1, 2, 3]),
            part(1, &[1, 3, 2], &[1, 2, 3]),
        ])
    }

    #[test]
    fn overloaded_moves_leadership_to_a_healthy_replica_and_excludes_other_alerting_brokers() {
        use BrokerAlertKind::*;
        let firing = [(1, Overloaded), (2, DiskPressure), (2, Overloaded)];
        let got = plan_action(
            &policy(),
            &snapshot(&firing),
            &alert(Overloaded, 1),
            Trigger::Webhook,
            healthy_look(),
            t(10),
        );
        let BrokerAction::Start(planned) = got else {
            panic!("{got:?}")
        };
        assert_eq!(planned.broker, 1);
        assert_eq!(planned.kind, PlanKind::MoveLeadership);
        assert_eq!(
            planned.exclude,
            vec![2],
            "alerting brokers other than 1, once"
        );
        assert_eq!(planned.limits, policy().limits());
        let plan = planned.plan.expect("a plan from the model");
        assert_eq!(plan.leader_moves(), 2);
        assert_eq!(plan.replica_moves(), 0);
        for change in &plan.changes {
            assert_eq!(
                change.to.first(),
                Some(&3),
                "broker 2 alerts (full and overloaded): leadership goes to 3 ({change:?})"
            );
        }
    }

    #[test]
    fn no_model_leaves_the_plan_to_the_backend() {
        let got = plan_action(
            &policy(),
            &snapshot(&[(4, BrokerAlertKind::DiskPressure)]),
            &alert(BrokerAlertKind::DiskPressure, 4),
            Trigger::Reevaluate,
            ClusterLook::default(),
            t(10),
        );
        assert_eq!(
            got,
            BrokerAction::Start(Planned {
                broker: 4,
                kind: PlanKind::MoveReplicas,
                plan: None,
                exclude: vec![],
                limits: policy().limits(),
            })
        );
    }

    #[test]
    fn skips_name_their_reason() {
        let overloaded = alert(BrokerAlertKind::Overloaded, 1);
        let calm = snapshot(&[(1, BrokerAlertKind::Overloaded)]);
        // A gate after the look: someone else's reassignment.
        let busy = ClusterLook {
            in_progress: Some("2 partitions".into()),
            ..healthy_look()
        };
        let got = plan_action(&policy(), &calm, &overloaded, Trigger::Webhook, busy, t(10));
        let BrokerAction::Skip(skip) = got else {
            panic!("{got:?}")
        };
        assert_eq!(skip.code(), ReasonCode::ReassignmentInProgress);
        assert_eq!(
            skip.message(1),
            "a reassignment is in progress: 2 partitions"
        );
        // Broker 1 leads a partition whose only other replica is out of sync: nothing to move.
        let stuck = look(vec![part(0, &[1, 2], &[1])]);
        let got = plan_action(
            &policy(),
            &calm,
            &overloaded,
            Trigger::Webhook,
            stuck,
            t(10),
        );
        let BrokerAction::Skip(skip @ ActionSkip::NothingToMove { kind, plan }) = &got else {
            panic!("{got:?}")
        };
        assert_eq!(*kind, PlanKind::MoveLeadership);
        assert!(plan.changes.is_empty());
        assert_eq!(skip.code(), ReasonCode::NothingToMove);
        assert!(
            skip.message(1)
                .starts_with("move_leadership on broker 1: nothing to do: "),
            "{}",
            skip.message(1)
        );
    }

    #[test]
    fn precheck_uses_what_the_engine_knows() {
        let p = policy();
        let a = alert(BrokerAlertKind::Overloaded, 1);
        let paused = RuntimeSnapshot {
            paused: true,
            ..snapshot(&[(1, BrokerAlertKind::Overloaded)])
        };
        assert_eq!(
            precheck_alert(&p, &paused, &a, Trigger::Webhook, t(10)),
            Some(BrokerSkip::Paused)
        );
        // 4 alerting of the 10 expected brokers: a mass failure before any look.
        let many: Vec<_> = (1..=4).map(|b| (b, BrokerAlertKind::Overloaded)).collect();
        assert_eq!(
            precheck_alert(&p, &snapshot(&many), &a, Trigger::Webhook, t(10)),
            Some(BrokerSkip::MassFailure {
                alerting: 4,
                brokers: 10
            })
        );
        // The last look found 20 brokers: 4 of 20 is not.
        let bigger = RuntimeSnapshot {
            known_brokers: Some(20),
            ..snapshot(&many)
        };
        assert_eq!(
            precheck_alert(&p, &bigger, &a, Trigger::Webhook, t(10)),
            None
        );
        assert_eq!(cluster_size(&p, Some(3)), Some(10));
        assert_eq!(cluster_size(&p, Some(12)), Some(12));
    }

    #[test]
    fn sizes_are_read_except_for_a_first_leadership_step() {
        let overloaded = alert(BrokerAlertKind::Overloaded, 1);
        let fresh = snapshot(&[]);
        assert!(!needs_sizes(&fresh, &overloaded));
        assert!(needs_sizes(
            &fresh,
            &alert(BrokerAlertKind::DiskPressure, 1)
        ));
        assert!(needs_sizes(&fresh, &alert(BrokerAlertKind::Down, 1)));
        let mut acted = fresh.clone();
        acted.last_by_broker.insert(
            1,
            LastBrokerAction {
                at: t(5),
                broker: 1,
                kind: PlanKind::MoveLeadership,
                episode: overloaded.starts_at,
            },
        );
        assert!(
            needs_sizes(&acted, &overloaded),
            "the replica step of the episode"
        );
    }

    #[test]
    fn alerting_brokers_are_marked_in_the_model() {
        let ClusterLook {
            model: Some(mut model),
            ..
        } = healthy_look()
        else {
            panic!("a model")
        };
        use BrokerAlertKind::*;
        mark_alerting(&mut model, &[(1, Down), (2, DiskPressure), (9, Overloaded)]);
        let flags = |id: i32| {
            let b = model.broker(id).unwrap();
            (b.overloaded, b.full)
        };
        assert_eq!(
            flags(1),
            (true, false),
            "down but listed: treated as overloaded"
        );
        assert_eq!(flags(2), (false, true));
        assert_eq!(flags(3), (false, false));
        assert!(model.broker(9).is_none(), "unknown brokers are not added");
    }
}
