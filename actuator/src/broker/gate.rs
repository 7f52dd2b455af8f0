//! The pure decision for a broker alert: the safety gates, then which action. No I/O; the
//! engine passes in what it knows, including `now`.
//!
//! Order of the gates (the first that holds decides, and is audited):
//! paused, duplicate delivery, grace period (`KafkaBrokerDown`), mass failure, a remediation of
//! ours running on the cluster, cluster interval, broker interval; then, with a fresh look at
//! the cluster: mass failure again, any reassignment in progress (ours or anyone's), and whether
//! Kafka's metadata agrees the broker is dead (or alive).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::planner::PlanKind;
use super::policy::BrokerPolicy;
use crate::alert::BrokerAlertKind;
use crate::decide::Trigger;
use crate::reason::ReasonCode;

/// The alert, as far as the gates are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInput {
    /// Which alert.
    pub kind: BrokerAlertKind,
    /// Webhook or re-evaluation.
    pub trigger: Trigger,
    /// The broker id from the `broker` label.
    pub broker: i32,
    /// The alert's startsAt: the grace period counts from it, and it names the episode.
    pub starts_at: Timestamp,
    /// This exact delivery was handled recently.
    pub seen_recently: bool,
    /// When the actuator first heard of this alert (the settle time counts from it).
    pub first_seen: Timestamp,
}

/// A broker action that finished (or was decided, in dry run).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LastBrokerAction {
    /// When it ended; intervals count from here.
    pub at: Timestamp,
    /// The broker.
    pub broker: i32,
    /// What it did.
    pub kind: PlanKind,
    /// startsAt of the alert that caused it (the episode).
    pub episode: Timestamp,
}

/// What the engine knows about the cluster without asking it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// The global pause switch.
    pub paused: bool,
    /// A remediation of ours that is running: (broker, kind).
    pub running: Option<(i32, PlanKind)>,
    /// The last action on the cluster.
    pub last_cluster: Option<LastBrokerAction>,
    /// The last action on this broker.
    pub last_broker: Option<LastBrokerAction>,
    /// Distinct brokers of the cluster with a firing broker alert.
    pub alerting_brokers: usize,
    /// Brokers in the cluster, when known without a fresh look (expected_brokers, last metadata).
    pub known_brokers: Option<usize>,
}

/// A fresh look at the cluster, from the backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerObserved {
    /// Brokers the cluster has (live, and dead ones still in replica lists).
    pub brokers: Option<usize>,
    /// A reassignment or Cruise Control execution in progress, described.
    pub in_progress: Option<String>,
    /// Whether the metadata lists the broker (None: the backend cannot tell).
    pub alive: Option<bool>,
    /// Partitions the broker leads or prefers to lead (None: unknown).
    pub leadership: Option<usize>,
}

/// Why a broker alert leads to no action (now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerSkip {
    /// The global pause switch is on.
    Paused,
    /// This delivery was already handled.
    Duplicate,
    /// `KafkaBrokerDown` has not lasted the grace period yet.
    GracePeriod {
        /// Time left.
        remaining: Duration,
    },
    /// Too many brokers alert at once: a human should look.
    MassFailure {
        /// Brokers alerting.
        alerting: usize,
        /// Brokers in the cluster.
        brokers: usize,
    },
    /// Heard of too recently: waiting for other alerts that may arrive with it.
    Settling {
        /// Time left.
        remaining: Duration,
    },
    /// The cluster size is unknown, so the mass-failure guard cannot be checked.
    ClusterSizeUnknown,
    /// One remediation at a time per cluster: ours is running.
    RemediationInProgress {
        /// Its broker.
        broker: i32,
        /// What it does.
        kind: PlanKind,
    },
    /// The cluster acted too recently.
    ClusterCooldown {
        /// Time left.
        remaining: Duration,
    },
    /// The broker was acted on too recently.
    BrokerCooldown {
        /// Time left.
        remaining: Duration,
    },
    /// A reassignment is in progress (ours or anyone's).
    ReassignmentInProgress {
        /// What the backend reported.
        detail: String,
    },
    /// `KafkaBrokerDown`, but Kafka's metadata still lists the broker.
    BrokerAlive,
    /// Overloaded or full, but Kafka's metadata does not list the broker.
    BrokerNotAlive,
}

impl BrokerSkip {
    /// The reason code for audit records and metric labels.
    pub fn code(&self) -> ReasonCode {
        match self {
            BrokerSkip::Paused => ReasonCode::Paused,
            BrokerSkip::Duplicate => ReasonCode::Duplicate,
            BrokerSkip::GracePeriod { .. } => ReasonCode::GracePeriod,
            BrokerSkip::MassFailure { .. } => ReasonCode::MassFailure,
            BrokerSkip::Settling { .. } => ReasonCode::Settling,
            BrokerSkip::ClusterSizeUnknown => ReasonCode::ClusterSizeUnknown,
            BrokerSkip::RemediationInProgress { .. } => ReasonCode::RemediationInProgress,
            BrokerSkip::ClusterCooldown { .. } => ReasonCode::ClusterCooldown,
            BrokerSkip::BrokerCooldown { .. } => ReasonCode::BrokerCooldown,
            BrokerSkip::ReassignmentInProgress { .. } => ReasonCode::ReassignmentInProgress,
            BrokerSkip::BrokerAlive => ReasonCode::BrokerAlive,
            BrokerSkip::BrokerNotAlive => ReasonCode::BrokerNotAlive,
        }
    }

    /// A sentence for operators.
    pub fn message(&self) -> String {
        match self {
            BrokerSkip::Paused => "actuator is paused".into(),
            BrokerSkip::Duplicate => "this alert delivery was already handled".into(),
            BrokerSkip::GracePeriod { remaining } => format!(
                "broker down for less than the grace period; {}s left (most restarts come back by themselves)",
                remaining.as_secs()
            ),
            BrokerSkip::MassFailure { alerting, brokers } => format!(
                "mass failure: {alerting} of {brokers} brokers alert at once; acting on none, a human should look"
            ),
            BrokerSkip::Settling { remaining } => format!(
                "heard of recently; waiting {}s more for alerts of other brokers that may arrive with it (settle_time)",
                remaining.as_secs()
            ),
            BrokerSkip::ClusterSizeUnknown => {
                "the cluster size is unknown (set expected_brokers): the mass-failure guard cannot be checked".into()
            }
            BrokerSkip::RemediationInProgress { broker, kind } => format!(
                "one remediation at a time: {} on broker {broker} is running",
                kind.as_str()
            ),
            BrokerSkip::ClusterCooldown { remaining } => format!(
                "the cluster was acted on recently; {}s left of cluster_cooldown",
                remaining.as_secs()
            ),
            BrokerSkip::BrokerCooldown { remaining } => format!(
                "the broker was acted on recently; {}s left of broker_cooldown",
                remaining.as_secs()
            ),
            BrokerSkip::ReassignmentInProgress { detail } => {
                format!("a reassignment is in progress: {detail}")
            }
            BrokerSkip::BrokerAlive => {
                "KafkaBrokerDown fires, but Kafka's metadata still lists the broker: its heartbeat (sidecar) is missing, not the broker; no data is moved".into()
            }
            BrokerSkip::BrokerNotAlive => {
                "the broker is not in Kafka's metadata (down?): nothing to move off a live broker".into()
            }
        }
    }
}

/// The outcome of [`decide_broker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerDecision {
    /// Move leadership or replicas off the broker (the backend and the planner say how).
    Reassign {
        /// The broker in trouble.
        broker: i32,
        /// What to do.
        kind: PlanKind,
    },
    /// Do nothing (now), and say why.
    Skip(BrokerSkip),
}

/// More than `share` of `brokers` alerting, and at least two: one broker alone is never a mass
/// failure, so a three-broker cluster can still heal one.
pub fn is_mass_failure(alerting: usize, brokers: usize, share: f64) -> bool {
    alerting >= 2 && alerting as f64 > share * brokers as f64
}

fn remaining(since: Timestamp, window: Duration, now: Timestamp) -> Option<Duration> {
    let w = SignedDuration::try_from(window).unwrap_or(SignedDuration::MAX);
    let elapsed = now.duration_since(since);
    if elapsed < w {
        w.checked_sub(elapsed)
            .and_then(|d| Duration::try_from(d).ok())
            .or(Some(window))
    } else {
        None
    }
}

/// The gates that need no look at the cluster.
pub fn precheck(
    input: &BrokerInput,
    policy: &BrokerPolicy,
    state: &ClusterState,
    now: Timestamp,
) -> Option<BrokerSkip> {
    if state.paused {
        return Some(BrokerSkip::Paused);
    }
    if input.trigger == Trigger::Webhook && input.seen_recently {
        return Some(BrokerSkip::Duplicate);
    }
    if input.kind == BrokerAlertKind::Down {
        if let Some(left) = remaining(input.starts_at, policy.down_grace, now) {
            return Some(BrokerSkip::GracePeriod { remaining: left });
        }
    }
    if let Some(brokers) = state.known_brokers {
        if is_mass_failure(state.alerting_brokers, brokers, policy.mass_failure_share) {
            return Some(BrokerSkip::MassFailure {
                alerting: state.alerting_brokers,
                brokers,
            });
        }
    }
    if let Some(left) = remaining(input.first_seen, policy.settle_time, now) {
        return Some(BrokerSkip::Settling { remaining: left });
    }
    if let Some((broker, kind)) = state.running {
        return Some(BrokerSkip::RemediationInProgress { broker, kind });
    }
    if let Some(last) = &state.last_cluster {
        if let Some(left) = remaining(last.at, policy.cluster_cooldown, now) {
            return Some(BrokerSkip::ClusterCooldown { remaining: left });
        }
    }
    if let Some(last) = &state.last_broker {
        // Draining a full disk or a dead broker continues batch after batch within one
        // episode; only the cluster interval applies between batches.
        let continuation = last.episode == input.starts_at
            && matches!(
                (input.kind, last.kind),
                (BrokerAlertKind::DiskPressure, PlanKind::MoveReplicas)
                    | (BrokerAlertKind::Down, PlanKind::ReplaceReplicas)
            );
        if !continuation {
            if let Some(left) = remaining(last.at, policy.broker_cooldown, now) {
                return Some(BrokerSkip::BrokerCooldown { remaining: left });
            }
        }
    }
    None
}

/// The full decision: the gates, then the action.
///
/// Overloaded: leadership first (no data moves); replicas once a leadership move of this
/// episode has had its broker cooldown and the alert still fires, or at once when the broker
/// leads nothing. Disk pressure: replica moves. Down: replace its replicas.
pub fn decide_broker(
    input: &BrokerInput,
    observed: &BrokerObserved,
    policy: &BrokerPolicy,
    state: &ClusterState,
    now: Timestamp,
) -> BrokerDecision {
    let skip = BrokerDecision::Skip;
    if let Some(s) = precheck(input, policy, state, now) {
        return skip(s);
    }
    let expected = policy.expected_brokers.map(|n| n as usize);
    let brokers = match (expected, observed.brokers) {
        (Some(a), Some(b)) => a.max(b),
        (a, b) => match a.or(b) {
            Some(n) => n,
            None => return skip(BrokerSkip::ClusterSizeUnknown),
        },
    };
    if is_mass_failure(state.alerting_brokers, brokers, policy.mass_failure_share) {
        return skip(BrokerSkip::MassFailure {
            alerting: state.alerting_brokers,
            brokers,
        });
    }
    if let Some(detail) = &observed.in_progress {
        return skip(BrokerSkip::ReassignmentInProgress {
            detail: detail.clone(),
        });
    }
    match (input.kind, observed.alive) {
        (BrokerAlertKind::Down, Some(true)) => return skip(BrokerSkip::BrokerAlive),
        (BrokerAlertKind::Overloaded | BrokerAlertKind::DiskPressure, Some(false)) => {
            return skip(BrokerSkip::BrokerNotAlive)
        }
        _ => {}
    }
    let kind = match input.kind {
        BrokerAlertKind::Down => PlanKind::ReplaceReplicas,
        BrokerAlertKind::DiskPressure => PlanKind::MoveReplicas,
        BrokerAlertKind::Overloaded => {
            let acted_this_episode = state
                .last_broker
                .as_ref()
                .is_some_and(|l| l.episode == input.starts_at);
            if acted_this_episode || observed.leadership == Some(0) {
                PlanKind::MoveReplicas
            } else {
                PlanKind::MoveLeadership
            }
        }
    };
    BrokerDecision::Reassign {
        broker: input.broker,
        kind,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn policy() -> BrokerPolicy {
        serde_yaml::from_str("cluster: prod\nbackend: log-only\nexpected_brokers: 10\n").unwrap()
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn input(kind: BrokerAlertKind, starts: i64) -> BrokerInput {
        BrokerInput {
            kind,
            trigger: Trigger::Webhook,
            broker: 3,
            starts_at: t(starts),
            seen_recently: false,
            first_seen: t(-3600),
        }
    }

    fn last(at: i64, broker: i32, kind: PlanKind, episode: i64) -> LastBrokerAction {
        LastBrokerAction {
            at: t(at),
            broker,
            kind,
            episode: t(episode),
        }
    }

    fn skip(s: BrokerSkip) -> BrokerDecision {
        BrokerDecision::Skip(s)
    }

    fn act(kind: PlanKind) -> BrokerDecision {
        BrokerDecision::Reassign { broker: 3, kind }
    }

    #[test]
    fn gate_table() {
        use BrokerAlertKind::*;
        let p = policy();
        let calm = ClusterState {
            alerting_brokers: 1,
            ..Default::default()
        };
        let seen = BrokerObserved {
            brokers: Some(10),
            alive: Some(true),
            leadership: Some(12),
            ..Default::default()
        };
        let dead = BrokerObserved {
            alive: Some(false),
            ..seen.clone()
        };
        let s = |f: &dyn Fn(&mut ClusterState)| {
            let mut c = calm.clone();
            f(&mut c);
            c
        };
        #[rustfmt::skip]
        let cases: Vec<(&str, BrokerInput, BrokerObserved, ClusterState, i64, BrokerDecision)> = vec![
            ("overloaded: leadership first", input(Overloaded, 0), seen.clone(), calm.clone(), 10, act(PlanKind::MoveLeadership)),
            ("overloaded, leads nothing: replicas", input(Overloaded, 0), BrokerObserved { leadership: Some(0), ..seen.clone() }, calm.clone(), 10, act(PlanKind::MoveReplicas)),
            ("overloaded after a leadership move and its cooldown: replicas", input(Overloaded, 0), seen.clone(),
                s(&|c| c.last_broker = Some(last(100, 3, PlanKind::MoveLeadership, 0))), 100 + 1800, act(PlanKind::MoveReplicas)),
            ("overloaded inside the broker cooldown", input(Overloaded, 0), seen.clone(),
                s(&|c| c.last_broker = Some(last(100, 3, PlanKind::MoveLeadership, 0))), 100 + 1799,
                skip(BrokerSkip::BrokerCooldown { remaining: Duration::from_secs(1) })),
            ("new episode starts with leadership again", input(Overloaded, 5000), seen.clone(),
                s(&|c| c.last_broker = Some(last(100, 3, PlanKind::MoveReplicas, 0))), 9000, act(PlanKind::MoveLeadership)),
            ("disk pressure: replicas", input(DiskPressure, 0), seen.clone(), calm.clone(), 10, act(PlanKind::MoveReplicas)),
            ("disk pressure continues batch after batch", input(DiskPressure, 0), seen.clone(),
                s(&|c| c.last_broker = Some(last(100, 3, PlanKind::MoveReplicas, 0))), 101, act(PlanKind::MoveReplicas)),
            ("down inside the grace period", input(Down, 0), dead.clone(), calm.clone(), 1799,
                skip(BrokerSkip::GracePeriod { remaining: Duration::from_secs(1) })),
            ("down after the grace period", input(Down, 0), dead.clone(), calm.clone(), 1800, act(PlanKind::ReplaceReplicas)),
            ("down but in the metadata", input(Down, 0), seen.clone(), calm.clone(), 1800, skip(BrokerSkip::BrokerAlive)),
            ("overloaded but gone from the metadata", input(Overloaded, 0), dead.clone(), calm.clone(), 10, skip(BrokerSkip::BrokerNotAlive)),
            ("paused", input(Overloaded, 0), seen.clone(), s(&|c| c.paused = true), 10, skip(BrokerSkip::Paused)),
            ("duplicate delivery", BrokerInput { seen_recently: true, ..input(Overloaded, 0) }, seen.clone(), calm.clone(), 10, skip(BrokerSkip::Duplicate)),
            ("re-evaluation is not a duplicate", BrokerInput { seen_recently: true, trigger: Trigger::Reevaluate, ..input(Overloaded, 0) },
                seen.clone(), calm.clone(), 10, act(PlanKind::MoveLeadership)),
            ("one of ours is running", input(Overloaded, 0), seen.clone(), s(&|c| c.running = Some((7, PlanKind::MoveReplicas))), 10,
                skip(BrokerSkip::RemediationInProgress { broker: 7, kind: PlanKind::MoveReplicas })),
            ("someone's reassignment is running", input(Overloaded, 0), BrokerObserved { in_progress: Some("2 partitions".into()), ..seen.clone() },
                calm.clone(), 10, skip(BrokerSkip::ReassignmentInProgress { detail: "2 partitions".into() })),
            ("cluster cooldown (another broker)", input(Overloaded, 0), seen.clone(),
                s(&|c| c.last_cluster = Some(last(100, 7, PlanKind::MoveLeadership, 0))), 699,
                skip(BrokerSkip::ClusterCooldown { remaining: Duration::from_secs(1) })),
            ("3 of 10 is not more than 30%", input(Overloaded, 0), seen.clone(), s(&|c| c.alerting_brokers = 3), 10, act(PlanKind::MoveLeadership)),
            ("4 of 10 is a mass failure", input(Overloaded, 0), seen.clone(), s(&|c| c.alerting_brokers = 4), 10,
                skip(BrokerSkip::MassFailure { alerting: 4, brokers: 10 })),
            ("a known size gates before any look", input(Overloaded, 0), seen.clone(), s(&|c| { c.alerting_brokers = 2; c.known_brokers = Some(3) }), 10,
                skip(BrokerSkip::MassFailure { alerting: 2, brokers: 3 })),
            ("the grace period comes first", input(Down, 0), dead.clone(), s(&|c| { c.alerting_brokers = 2; c.known_brokers = Some(3) }), 10,
                skip(BrokerSkip::GracePeriod { remaining: Duration::from_secs(1790) })),
            ("settling after first hearing of it", BrokerInput { first_seen: t(0), ..input(Overloaded, -600) }, seen.clone(), calm.clone(), 59,
                skip(BrokerSkip::Settling { remaining: Duration::from_secs(1) })),
            ("settled", BrokerInput { first_seen: t(0), ..input(Overloaded, -600) }, seen.clone(), calm.clone(), 60, act(PlanKind::MoveLeadership)),
            ("a mass failure shows while settling", BrokerInput { first_seen: t(0), ..input(Overloaded, -600) }, seen.clone(),
                s(&|c| { c.alerting_brokers = 4; c.known_brokers = Some(10) }), 1, skip(BrokerSkip::MassFailure { alerting: 4, brokers: 10 })),
            ("metadata larger than expected_brokers", input(Overloaded, 0), BrokerObserved { brokers: Some(20), ..seen.clone() },
                s(&|c| c.alerting_brokers = 4), 10, act(PlanKind::MoveLeadership)),
        ];
        for (name, input, observed, state, now, want) in cases {
            let got = decide_broker(&input, &observed, &p, &state, t(now));
            assert_eq!(got, want, "case {name:?}");
        }
    }

    #[test]
    fn mass_failure_needs_two_brokers() {
        assert!(!is_mass_failure(1, 3, 0.3), "one of three may be healed");
        assert!(is_mass_failure(2, 3, 0.3));
        assert!(!is_mass_failure(3, 10, 0.3));
        assert!(is_mass_failure(4, 10, 0.3));
        let mut p = policy();
        p.expected_brokers = None;
        let d = decide_broker(
            &input(BrokerAlertKind::Overloaded, 0),
            &BrokerObserved::default(),
            &p,
            &ClusterState::default(),
            t(0),
        );
        assert_eq!(d, skip(BrokerSkip::ClusterSizeUnknown));
        assert_eq!(
            BrokerSkip::MassFailure {
                alerting: 4,
                brokers: 10
            }
            .message(),
            "mass failure: 4 of 10 brokers alert at once; acting on none, a human should look"
        );
    }
}
