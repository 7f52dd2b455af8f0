//! The pure decision core: no I/O, the caller passes in everything including `now`.
//!
//! `decide(alert, observed, policy, state, now) -> LagDecision`. The engine reads the world
//! (Kubernetes, Prometheus, its own memory), calls `decide`, and then carries the decision out.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::alert::AlertStatus;
use crate::policy::Policy;
use crate::reason::ReasonCode;

pub mod min_replicas;

/// What started an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A webhook delivery from Alertmanager.
    Webhook,
    /// The periodic re-evaluation of an alert that is still firing (or settling after it resolved).
    Reevaluate,
    /// An operator request on the HTTP API (pause/resume).
    Api,
    /// The end of a broker action, reported by its background task.
    Executor,
    /// A change of a group's activity pushed to KEDA (or a KEDA request that was refused).
    Keda,
    /// A change of this replica's leadership (leader election on a Lease).
    Election,
    /// A reload of the configuration: SIGHUP, or a change of the files seen by the watcher.
    Reload,
    /// A broker action taken over from its intent (the process that started it stopped): its
    /// end, audited by the replica that followed it.
    Recovery,
}

/// The lag alert as far as the decision is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertInput {
    /// Firing or resolved.
    pub status: AlertStatus,
    /// Why this evaluation runs.
    pub trigger: Trigger,
}

/// Where the lag figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LagSource {
    /// A fresh instant query of the recording rule.
    Prometheus,
    /// The alert's `lag_offsets` annotation (Prometheus was unreachable or had no series).
    Annotation,
    /// No figure at all.
    #[default]
    None,
}

impl LagSource {
    /// The snake_case name used in the audit log and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            LagSource::Prometheus => "prometheus",
            LagSource::Annotation => "annotation",
            LagSource::None => "none",
        }
    }
}

/// What the engine observed just before deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `spec.replicas` of the Deployment's scale subresource.
    pub replicas: u32,
    /// The group's total lag in offsets, if known.
    pub lag: Option<u64>,
    /// Where `lag` came from.
    pub lag_source: LagSource,
    /// Partitions the group consumes, when the policy caps replicas at it and it is known.
    pub partitions: Option<u32>,
    /// The name of an active broker alert on the same cluster (holds scale-downs).
    pub broker_trouble: Option<String>,
}

/// Direction of a replica change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// More replicas.
    Up,
    /// Fewer replicas.
    Down,
}

impl Direction {
    /// `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// The last action taken on a target (from memory, the audit log or the Deployment annotation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastAction {
    /// When it was taken.
    pub at: Timestamp,
    /// Up or down.
    pub direction: Direction,
    /// Replicas before.
    pub from: u32,
    /// Replicas after.
    pub to: u32,
    /// The alert delivery that caused it (`fingerprint:status:startsAt`).
    pub alert: String,
    /// The actuator instance that took it.
    #[serde(default)]
    pub by: String,
}

/// What the engine knows about the target's history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetState {
    /// The most recent action, if any.
    pub last_action: Option<LastAction>,
    /// The global pause switch.
    pub paused: bool,
    /// This exact delivery (fingerprint, status, startsAt) was already handled recently.
    pub seen_recently: bool,
}

/// Why nothing is done about a lag alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LagReason {
    /// The global pause switch is on.
    Paused,
    /// This delivery was already handled (Alertmanager retry, or a second Alertmanager).
    Duplicate,
    /// The Deployment's replicas are outside the policy's bounds: someone else manages it.
    OutOfBounds {
        /// Current replicas.
        replicas: u32,
    },
    /// A firing alert but no lag figure from Prometheus nor from the annotation.
    LagUnknown,
    /// The replicas already are where the policy wants them.
    AtDesired {
        /// The desired replica count.
        desired: u32,
    },
    /// A scale-down held while a broker alert is active on the cluster.
    BrokerTrouble {
        /// The broker alert's name.
        alertname: String,
    },
    /// The target acted too recently.
    Cooldown {
        /// The direction that was wanted.
        direction: Direction,
        /// Replicas that would have been set.
        to: u32,
        /// Time left.
        remaining: Duration,
    },
    /// A HorizontalPodAutoscaler or KEDA ScaledObject scales the Deployment: the actuator does
    /// not fight it. Set by the engine when `decide` wanted to scale (it needs an API lookup).
    ManagedByAutoscaler {
        /// The object, e.g. `HorizontalPodAutoscaler shop/orders-hpa`.
        autoscaler: String,
    },
}

impl LagReason {
    /// The reason code for audit records and metric labels.
    pub fn code(&self) -> ReasonCode {
        match self {
            LagReason::Paused => ReasonCode::Paused,
            LagReason::Duplicate => ReasonCode::Duplicate,
            LagReason::OutOfBounds { .. } => ReasonCode::OutOfBounds,
            LagReason::LagUnknown => ReasonCode::LagUnknown,
            LagReason::AtDesired { .. } => ReasonCode::AtDesired,
            LagReason::BrokerTrouble { .. } => ReasonCode::BrokerTrouble,
            LagReason::Cooldown { .. } => ReasonCode::Cooldown,
            LagReason::ManagedByAutoscaler { .. } => ReasonCode::ManagedByAutoscaler,
        }
    }

    /// A sentence for operators.
    pub fn message(&self, policy: &Policy) -> String {
        match self {
            LagReason::Paused => "actuator is paused".into(),
            LagReason::Duplicate => "this alert delivery was already handled".into(),
            LagReason::OutOfBounds { replicas } => format!(
                "replicas {replicas} are outside the policy bounds [{}, {}]; not touching a Deployment managed elsewhere",
                policy.min_replicas, policy.max_replicas
            ),
            LagReason::LagUnknown => {
                "no lag figure: Prometheus gave none and the alert has no lag_offsets annotation".into()
            }
            LagReason::AtDesired { desired } => format!("replicas already at the desired {desired}"),
            LagReason::BrokerTrouble { alertname } => {
                format!("scale-down held while {alertname} is active on the cluster")
            }
            LagReason::Cooldown {
                direction,
                to,
                remaining,
            } => format!(
                "scale {} to {to} held by cooldown, {}s left",
                direction.as_str(),
                remaining.as_secs()
            ),
            LagReason::ManagedByAutoscaler { autoscaler } => format!(
                "{autoscaler} scales {}: not changing its replicas (remove the autoscaler or this policy)",
                policy.deployment
            ),
        }
    }
}

/// The outcome of `decide` for a lag alert (broker alerts have their own,
/// `broker::gate::BrokerDecision`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LagDecision {
    /// Change the Deployment's replicas.
    Scale {
        /// Replicas now.
        from: u32,
        /// Replicas to set (one step of at most `max_step`).
        to: u32,
        /// Where the policy wants to end up.
        desired: u32,
        /// Up or down.
        direction: Direction,
    },
    /// Do nothing, and say why.
    Skip(LagReason),
}

/// Replicas the lag asks for: ceil(lag / lag_per_replica), capped at partitions, clamped to [min, max].
pub fn desired_for_lag(lag: u64, partitions: Option<u32>, policy: &Policy) -> u32 {
    let per = policy.lag_per_replica.max(1);
    let raw = lag.div_ceil(per);
    let mut desired = u32::try_from(raw).unwrap_or(u32::MAX);
    if let Some(p) = partitions {
        desired = desired.min(p);
    }
    desired.clamp(policy.min_replicas, policy.max_replicas)
}

/// Where the policy wants the target to end up, after clamping (before `max_step`, cooldowns
/// and holds): for a firing alert ceil(lag / lag_per_replica), capped at the partition count when
/// the policy asks for it, clamped to [min, max] (None without a lag figure); for a resolved alert
/// the same figure (or `min_replicas` without lag), but never above the current replicas.
pub fn wanted_replicas(status: AlertStatus, observed: &Observed, policy: &Policy) -> Option<u32> {
    let partitions = if policy.partition_cap.is_some() {
        observed.partitions
    } else {
        None
    };
    match status {
        AlertStatus::Firing => observed
            .lag
            .map(|lag| desired_for_lag(lag, partitions, policy)),
        // Resolved: step down toward min_replicas, but not below what the current lag needs,
        // and never up.
        AlertStatus::Resolved => {
            let floor = observed
                .lag
                .map(|lag| desired_for_lag(lag, partitions, policy))
                .unwrap_or(policy.min_replicas);
            Some(floor.min(observed.replicas))
        }
    }
}

/// The pure decision: what to do with one lag alert on one target.
pub fn decide(
    alert: &AlertInput,
    observed: &Observed,
    policy: &Policy,
    state: &TargetState,
    now: Timestamp,
) -> LagDecision {
    if state.paused {
        return LagDecision::Skip(LagReason::Paused);
    }
    if alert.trigger == Trigger::Webhook && state.seen_recently {
        return LagDecision::Skip(LagReason::Duplicate);
    }
    let from = observed.replicas;
    if from < policy.min_replicas || from > policy.max_replicas {
        return LagDecision::Skip(LagReason::OutOfBounds { replicas: from });
    }
    let Some(desired) = wanted_replicas(alert.status, observed, policy) else {
        return LagDecision::Skip(LagReason::LagUnknown);
    };
    let step = policy.max_step.max(1);
    let to = if desired > from {
        from.saturating_add(step).min(desired)
    } else {
        from.saturating_sub(step).max(desired)
    };
    if to == from {
        return LagDecision::Skip(LagReason::AtDesired { desired });
    }
    let direction = if to > from {
        Direction::Up
    } else {
        Direction::Down
    };
    if direction == Direction::Down {
        if let Some(alertname) = &observed.broker_trouble {
            return LagDecision::Skip(LagReason::BrokerTrouble {
                alertname: alertname.clone(),
            });
        }
    }
    if let Some(last) = &state.last_action {
        let cooldown = match direction {
            Direction::Up => policy.scale_up_cooldown,
            Direction::Down => policy.scale_down_cooldown,
        };
        let elapsed = now.duration_since(last.at);
        let cooldown_signed = SignedDuration::try_from(cooldown).unwrap_or(SignedDuration::MAX);
        if elapsed < cooldown_signed {
            let remaining = cooldown_signed
                .checked_sub(elapsed)
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or(cooldown);
            return LagDecision::Skip(LagReason::Cooldown {
                direction,
                to,
                remaining,
            });
        }
    }
    LagDecision::Scale {
        from,
        to,
        desired,
        direction,
    }
}

/// Seconds left before a target may act in `direction` again (0 when free).
pub fn cooldown_remaining(
    last: Option<&LastAction>,
    policy: &Policy,
    direction: Direction,
    now: Timestamp,
) -> Duration {
    let Some(last) = last else {
        return Duration::ZERO;
    };
    let cooldown = match direction {
        Direction::Up => policy.scale_up_cooldown,
        Direction::Down => policy.scale_down_cooldown,
    };
    let elapsed = Duration::try_from(now.duration_since(last.at)).unwrap_or(Duration::ZERO);
    cooldown.saturating_sub(elapsed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::policy::{DeploymentRef, PartitionCap};
    use proptest::prelude::*;

    fn policy() -> Policy {
        Policy {
            cluster: "prod".into(),
            consumergroup: "orders".into(),
            deployment: DeploymentRef {
                namespace: "shop".into(),
                name: "orders-consumer".into(),
            },
            min_replicas: 1,
            max_replicas: 10,
            lag_per_replica: 1000,
            scale_up_cooldown: Duration::from_secs(60),
            scale_down_cooldown: Duration::from_secs(300),
            max_step: 2,
            partition_cap: None,
            lag_threshold: None,
            sustain: None,
            scaler: crate::policy::Scaler::Actuator,
            on_autoscaler: crate::policy::OnAutoscaler::Refuse,
            lag_seconds_per_replica: None,
        }
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn obs(replicas: u32, lag: Option<u64>) -> Observed {
        Observed {
            replicas,
            lag,
            lag_source: if lag.is_some() {
                LagSource::Prometheus
            } else {
                LagSource::None
            },
            partitions: None,
            broker_trouble: None,
        }
    }

    fn firing() -> AlertInput {
        AlertInput {
            status: AlertStatus::Firing,
            trigger: Trigger::Webhook,
        }
    }

    fn resolved() -> AlertInput {
        AlertInput {
            status: AlertStatus::Resolved,
            trigger: Trigger::Webhook,
        }
    }

    fn last(at: i64, direction: Direction) -> LastAction {
        LastAction {
            at: t(at),
            direction,
            from: 2,
            to: 3,
            alert: "x".into(),
            by: "test".into(),
        }
    }

    fn scale(from: u32, to: u32, desired: u32) -> LagDecision {
        LagDecision::Scale {
            from,
            to,
            desired,
            direction: if to > from {
                Direction::Up
            } else {
                Direction::Down
            },
        }
    }

    #[test]
    fn decision_table() {
        let p = policy();
        let fresh = TargetState::default();
        let recent_up = TargetState {
            last_action: Some(last(0, Direction::Up)),
            ..Default::default()
        };
        let mut capped = policy();
        capped.partition_cap = Some(PartitionCap::Auto);
        let mut trouble = obs(5, Some(1000));
        trouble.broker_trouble = Some("KafkaBrokerDown".into());
        let mut with_partitions = obs(2, Some(9000));
        with_partitions.partitions = Some(3);
        #[rustfmt::skip]
        let cases: Vec<(&str, AlertInput, Observed, &Policy, TargetState, i64, LagDecision)> = vec![
            ("lag 3500 wants 4, step 2 from 1", firing(), obs(1, Some(3500)), &p, fresh.clone(), 10, scale(1, 3, 4)),
            ("lag 3500 from 3 reaches 4", firing(), obs(3, Some(3500)), &p, fresh.clone(), 10, scale(3, 4, 4)),
            ("exact multiple 3000 wants 3", firing(), obs(3, Some(3000)), &p, fresh.clone(), 10,
                LagDecision::Skip(LagReason::AtDesired { desired: 3 })),
            ("huge lag clamps to max", firing(), obs(9, Some(10_000_000)), &p, fresh.clone(), 10, scale(9, 10, 10)),
            ("lag 0 while firing steps down to min", firing(), obs(4, Some(0)), &p, fresh.clone(), 10, scale(4, 2, 1)),
            ("no lag while firing", firing(), obs(2, None), &p, fresh.clone(), 10, LagDecision::Skip(LagReason::LagUnknown)),
            ("up cooldown 60s not over", firing(), obs(3, Some(9000)), &p, recent_up.clone(), 59,
                LagDecision::Skip(LagReason::Cooldown { direction: Direction::Up, to: 5, remaining: Duration::from_secs(1) })),
            ("up cooldown over at 60s", firing(), obs(3, Some(9000)), &p, recent_up.clone(), 60, scale(3, 5, 9)),
            ("down cooldown 300s not over", resolved(), obs(5, None), &p, recent_up.clone(), 299,
                LagDecision::Skip(LagReason::Cooldown { direction: Direction::Down, to: 3, remaining: Duration::from_secs(1) })),
            ("resolved steps down toward min", resolved(), obs(5, None), &p, recent_up.clone(), 300, scale(5, 3, 1)),
            ("resolved keeps what lag needs", resolved(), obs(5, Some(3900)), &p, fresh.clone(), 10,
                scale(5, 4, 4)),
            ("resolved never scales up", resolved(), obs(2, Some(9000)), &p, fresh.clone(), 10,
                LagDecision::Skip(LagReason::AtDesired { desired: 2 })),
            ("resolved at min", resolved(), obs(1, None), &p, fresh.clone(), 10, LagDecision::Skip(LagReason::AtDesired { desired: 1 })),
            ("broker trouble holds scale-down", resolved(), trouble.clone(), &p, fresh.clone(), 10,
                LagDecision::Skip(LagReason::BrokerTrouble { alertname: "KafkaBrokerDown".into() })),
            ("broker trouble does not hold scale-up", firing(), Observed { lag: Some(9000), ..trouble.clone() }, &p, fresh.clone(), 10,
                scale(5, 7, 9)),
            ("replicas above max: not ours", firing(), obs(20, Some(9000)), &p, fresh.clone(), 10,
                LagDecision::Skip(LagReason::OutOfBounds { replicas: 20 })),
            ("replicas 0 below min: not ours", firing(), obs(0, Some(9000)), &p, fresh.clone(), 10,
                LagDecision::Skip(LagReason::OutOfBounds { replicas: 0 })),
            ("partition cap 3", firing(), with_partitions.clone(), &capped, fresh.clone(), 10, scale(2, 3, 3)),
            ("partitions ignored without cap", firing(), with_partitions.clone(), &p, fresh.clone(), 10, scale(2, 4, 9)),
            ("paused", firing(), obs(1, Some(9000)), &p, TargetState { paused: true, ..Default::default() }, 10,
                LagDecision::Skip(LagReason::Paused)),
            ("duplicate delivery", firing(), obs(1, Some(9000)), &p, TargetState { seen_recently: true, ..Default::default() }, 10,
                LagDecision::Skip(LagReason::Duplicate)),
            ("re-evaluation is not a duplicate", AlertInput { trigger: Trigger::Reevaluate, ..firing() }, obs(1, Some(9000)), &p,
                TargetState { seen_recently: true, ..Default::default() }, 10, scale(1, 3, 9)),
        ];
        for (name, alert, observed, policy, state, now, want) in cases {
            let got = decide(&alert, &observed, policy, &state, t(now));
            assert_eq!(got, want, "case {name:?}");
        }
    }

    #[test]
    fn desired_rounds_up_and_clamps() {
        let p = policy();
        assert_eq!(desired_for_lag(0, None, &p), 1);
        assert_eq!(desired_for_lag(1, None, &p), 1);
        assert_eq!(desired_for_lag(1001, None, &p), 2);
        assert_eq!(desired_for_lag(u64::MAX, None, &p), 10);
        assert_eq!(desired_for_lag(u64::MAX, Some(4), &p), 4);
        assert_eq!(
            desired_for_lag(5000, Some(0), &p),
            1,
            "min wins over a 0 cap"
        );
    }

    #[test]
    fn cooldown_remaining_counts_down() {
        let p = policy();
        let l = last(0, Direction::Up);
        assert_eq!(
            cooldown_remaining(Some(&l), &p, Direction::Up, t(20)),
            Duration::from_secs(40)
        );
        assert_eq!(
            cooldown_remaining(Some(&l), &p, Direction::Down, t(20)),
            Duration::from_secs(280)
        );
        assert_eq!(
            cooldown_remaining(Some(&l), &p, Direction::Up, t(999)),
            Duration::ZERO
        );
        assert_eq!(
            cooldown_remaining(None, &p, Direction::Up, t(0)),
            Duration::ZERO
        );
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (0u32..5, 1u32..30, 1u64..5000, 0u64..600, 0u64..600, 1u32..6).prop_map(
            |(min, span, per, up, down, step)| Policy {
                min_replicas: min,
                max_replicas: min + span,
                lag_per_replica: per,
                scale_up_cooldown: Duration::from_secs(up),
                scale_down_cooldown: Duration::from_secs(down),
                max_step: step,
                partition_cap: None,
                ..policy()
            },
        )
    }

    fn arb_status() -> impl Strategy<Value = AlertStatus> {
        prop_oneof![Just(AlertStatus::Firing), Just(AlertStatus::Resolved)]
    }

    proptest! {
        #[test]
        fn scale_stays_in_bounds_and_step(
            p in arb_policy(),
            replicas in 0u32..40,
            lag in proptest::option::of(0u64..1_000_000),
            partitions in proptest::option::of(0u32..50),
            cap in any::<bool>(),
            status in arb_status(),
        ) {
            let mut p = p;
            if cap { p.partition_cap = Some(PartitionCap::Auto); }
            let o = Observed { replicas, lag, lag_source: LagSource::Prometheus, partitions, broker_trouble: None };
            let a = AlertInput { status, trigger: Trigger::Webhook };
            if let LagDecision::Scale { from, to, desired, direction } = decide(&a, &o, &p, &TargetState::default(), t(0)) {
                prop_assert_eq!(from, replicas);
                prop_assert!(to >= p.min_replicas && to <= p.max_replicas, "to {} outside [{}, {}]", to, p.min_replicas, p.max_replicas);
                prop_assert!(desired >= p.min_replicas && desired <= p.max_replicas);
                prop_assert!(to.abs_diff(from) <= p.max_step, "step {} > {}", to.abs_diff(from), p.max_step);
                prop_assert!(to != from);
                prop_assert_eq!(direction == Direction::Up, to > from);
                if status == AlertStatus::Resolved {
                    prop_assert!(to < from, "resolved alert scaled up {} -> {}", from, to);
                }
            }
        }

        /// Replays a random stream of alerts against one target, applying every Scale, and checks
        /// that no two actions fall inside the cooldown of the second one.
        #[test]
        fn never_two_actions_within_cooldown(
            p in arb_policy(),
            events in proptest::collection::vec((0i64..200, arb_status(), proptest::option::of(0u64..100_000), any::<bool>()), 1..60),
        ) {
            let mut now = 0i64;
            let mut replicas = p.min_replicas;
            let mut last_action: Option<LastAction> = None;
            let mut actions: Vec<(i64, Direction)> = Vec::new();
            for (gap, status, lag, reeval) in events {
                now += gap;
                let a = AlertInput { status, trigger: if reeval { Trigger::Reevaluate } else { Trigger::Webhook } };
                let o = Observed { replicas, lag, lag_source: LagSource::Prometheus, partitions: None, broker_trouble: None };
                let s = TargetState { last_action: last_action.clone(), paused: false, seen_recently: false };
                if let LagDecision::Scale { from, to, direction, .. } = decide(&a, &o, &p, &s, t(now)) {
                    if let Some((prev, _)) = actions.last() {
                        let cd = match direction { Direction::Up => p.scale_up_cooldown, Direction::Down => p.scale_down_cooldown };
                        prop_assert!(u64::try_from(now - prev).unwrap() >= cd.as_secs(),
                            "action at {} only {}s after the previous one, cooldown {:?}", now, now - prev, cd);
                    }
                    actions.push((now, direction));
                    last_action = Some(LastAction { at: t(now), direction, from, to, alert: String::new(), by: String::new() });
                    replicas = to;
                }
            }
        }

        #[test]
        fn paused_never_acts(p in arb_policy(), replicas in 0u32..40, lag in 0u64..1_000_000, status in arb_status()) {
            let o = Observed { replicas, lag: Some(lag), lag_source: LagSource::Prometheus, partitions: None, broker_trouble: None };
            let s = TargetState { paused: true, ..Default::default() };
            let d = decide(&AlertInput { status, trigger: Trigger::Reevaluate }, &o, &p, &s, t(0));
            prop_assert_eq!(d, LagDecision::Skip(LagReason::Paused));
        }
    }
}
