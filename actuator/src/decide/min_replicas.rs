//! `on_autoscaler: raise_min_replicas`, the pure half: what to do with an HPA's `minReplicas`
//! (a KEDA ScaledObject's `minReplicaCount`) when the autoscaler scales the policy's
//! Deployment. No I/O; the engine (`engine/evaluate/min_replicas.rs`) reads the Deployment and
//! the autoscaler, calls [`decide_min`], claims the cooldown and writes the autoscaler.
//!
//! - Firing: the minimum goes up to `desired` = ceil(lag / lag_per_replica), capped at the
//!   partitions when the policy asks for it and clamped to [min_replicas, max_replicas] (the
//!   scaling formula), never below the original minimum and never above the autoscaler's
//!   maximum (clamped, and said so). One action changes the replicas by at most `max_step`:
//!   the new minimum is at most `max_step` above the larger of the current minimum and the
//!   Deployment's replicas. While the alert fires the minimum is only raised.
//! - Resolved: once `scale_down_cooldown` has passed since the last action, the minimum goes
//!   back to the original in one write (the autoscaler then scales down at its own pace).
//!
//! The checks run in the order of [`crate::decide::decide`]: paused, duplicate, then the
//! above, then the cooldown.

use std::time::Duration;

use jiff::Timestamp;

use super::{cooldown_remaining, desired_for_lag, AlertInput, Direction, TargetState, Trigger};
use crate::alert::AlertStatus;
use crate::policy::Policy;
use crate::reason::ReasonCode;

/// What the engine read before deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinObserved {
    /// The autoscaler's minimum now (`spec.minReplicas`, default 1; `spec.minReplicaCount`,
    /// default 0).
    pub current: u32,
    /// The minimum before kafka-medic raised it, from the autoscaler's annotation; `None`
    /// when it is not raised.
    pub original: Option<u32>,
    /// The autoscaler's maximum (`spec.maxReplicas`; `spec.maxReplicaCount`, default 100).
    pub max: u32,
    /// The Deployment's `spec.replicas`.
    pub replicas: u32,
    /// The group's lag, if known.
    pub lag: Option<u64>,
    /// Partitions the group consumes, when the policy caps at it and it is known.
    pub partitions: Option<u32>,
    /// An active broker alert on the cluster (holds a restore, as it holds a scale-down).
    pub broker_trouble: Option<String>,
}

/// Why the minimum is left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MinSkip {
    /// The global pause switch is on.
    Paused,
    /// This delivery was already handled.
    Duplicate,
    /// Firing, but no lag figure.
    LagUnknown,
    /// Firing, and the minimum already is what the lag needs (or the autoscaler's maximum).
    AtDesired {
        /// The minimum now.
        current: u32,
        /// What the policy's formula wants.
        desired: u32,
        /// The autoscaler's maximum, when it cut `desired` down.
        clamped_at: Option<u32>,
    },
    /// The target acted too recently.
    Cooldown {
        /// Up (raise) or down (restore).
        direction: Direction,
        /// The minimum that would have been set.
        to: u32,
        /// Time left.
        remaining: Duration,
    },
    /// A restore held while a broker alert is active on the cluster.
    BrokerTrouble {
        /// The broker alert's name.
        alertname: String,
    },
    /// Resolved, and the minimum is not raised (no annotation): nothing to do, the
    /// autoscaler scales the Deployment.
    NothingToRestore {
        /// The minimum now.
        current: u32,
    },
}

impl MinSkip {
    /// The audit record's reason. `NothingToRestore` is `managed_by_autoscaler`: the
    /// autoscaler owns the Deployment and the actuator has nothing left to do (a resolved alert
    /// settles on it).
    pub fn code(&self) -> ReasonCode {
        match self {
            MinSkip::Paused => ReasonCode::Paused,
            MinSkip::Duplicate => ReasonCode::Duplicate,
            MinSkip::LagUnknown => ReasonCode::LagUnknown,
            MinSkip::AtDesired { .. } => ReasonCode::AtDesired,
            MinSkip::Cooldown { .. } => ReasonCode::Cooldown,
            MinSkip::BrokerTrouble { .. } => ReasonCode::BrokerTrouble,
            MinSkip::NothingToRestore { .. } => ReasonCode::ManagedByAutoscaler,
        }
    }

    /// A sentence for operators; `autoscaler` names the object (`HorizontalPodAutoscaler
    /// shop/orders-hpa`), `field` its minimum (`minReplicas`).
    pub fn message(&self, autoscaler: &str, field: &str, policy: &Policy) -> String {
        match self {
            MinSkip::Paused => "actuator is paused".into(),
            MinSkip::Duplicate => "this alert delivery was already handled".into(),
            MinSkip::LagUnknown => format!(
                "no lag figure: Prometheus gave none and the alert has no lag_offsets annotation; {autoscaler} {field} left at its value"
            ),
            MinSkip::AtDesired {
                current,
                desired,
                clamped_at: Some(max),
            } => format!(
                "{autoscaler} {field} is {current}, at its maximum {max} (desired {desired} clamped to it)"
            ),
            MinSkip::AtDesired {
                current,
                desired,
                clamped_at: None,
            } => format!(
                "{autoscaler} {field} is already {current}, at or above the desired {desired}; it is only raised while the alert fires"
            ),
            MinSkip::Cooldown {
                direction,
                to,
                remaining,
            } => format!(
                "{} of {autoscaler} {field} to {to} held by cooldown, {}s left",
                match direction {
                    Direction::Up => "raise",
                    Direction::Down => "restore",
                },
                remaining.as_secs()
            ),
            MinSkip::BrokerTrouble { alertname } => format!(
                "restore of {autoscaler} {field} held while {alertname} is active on the cluster"
            ),
            MinSkip::NothingToRestore { current } => format!(
                "{autoscaler} scales {}: its {field} {current} is not raised by kafka-medic, nothing to restore",
                policy.deployment
            ),
        }
    }
}

/// What to do with the autoscaler's minimum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MinDecision {
    /// Raise the minimum; remember `original` on the autoscaler.
    Raise {
        /// The minimum now.
        from: u32,
        /// The minimum to set.
        to: u32,
        /// What the policy's formula wants (before the autoscaler's maximum).
        desired: u32,
        /// The minimum to restore later (the annotation's, or `from` when not raised yet).
        original: u32,
        /// The autoscaler's maximum, when it cut the raise down.
        clamped_at: Option<u32>,
    },
    /// Put the original minimum back and forget it.
    Restore {
        /// The minimum now.
        from: u32,
        /// The original minimum.
        to: u32,
    },
    /// Leave it.
    Skip(MinSkip),
}

/// The pure decision for a target whose autoscaler's minimum the policy may raise.
pub fn decide_min(
    alert: &AlertInput,
    observed: &MinObserved,
    policy: &Policy,
    state: &TargetState,
    now: Timestamp,
) -> MinDecision {
    if state.paused {
        return MinDecision::Skip(MinSkip::Paused);
    }
    if alert.trigger == Trigger::Webhook && state.seen_recently {
        return MinDecision::Skip(MinSkip::Duplicate);
    }
    let current = observed.current;
    let held = |direction: Direction, to: u32| {
        let remaining = cooldown_remaining(state.last_action.as_ref(), policy, direction, now);
        (!remaining.is_zero()).then_some(MinDecision::Skip(MinSkip::Cooldown {
            direction,
            to,
            remaining,
        }))
    };
    match alert.status {
        AlertStatus::Firing => {
            let Some(lag) = observed.lag else {
                return MinDecision::Skip(MinSkip::LagUnknown);
            };
            let partitions = policy.partition_cap.and(observed.partitions);
            let desired = desired_for_lag(lag, partitions, policy);
            let original = observed.original.unwrap_or(current);
            // Never below the original minimum, never above the autoscaler's maximum.
            let wanted = desired.max(original);
            let clamped_at = (wanted > observed.max).then_some(observed.max);
            let want = wanted.min(observed.max);
            if want <= current {
                return MinDecision::Skip(MinSkip::AtDesired {
                    current,
                    desired,
                    clamped_at,
                });
            }
            // At most max_step more replicas than the Deployment has now (or than the current
            // minimum guarantees, if that is more).
            let base = current.max(observed.replicas);
            let to = want.min(base.saturating_add(policy.max_step.max(1)));
            if let Some(skip) = held(Direction::Up, to) {
                return skip;
            }
            MinDecision::Raise {
                from: current,
                to,
                desired,
                original,
                // Only said when the maximum is what stopped this raise.
                clamped_at: clamped_at.filter(|max| to == *max),
            }
        }
        AlertStatus::Resolved => {
            let Some(original) = observed.original else {
                return MinDecision::Skip(MinSkip::NothingToRestore { current });
            };
            if let Some(alertname) = &observed.broker_trouble {
                return MinDecision::Skip(MinSkip::BrokerTrouble {
                    alertname: alertname.clone(),
                });
            }
            if let Some(skip) = held(Direction::Down, original) {
                return skip;
            }
            MinDecision::Restore {
                from: current,
                to: original,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::decide::LastAction;
    use crate::policy::{OnAutoscaler, PartitionCap, Policies, PolicyError};
    use proptest::prelude::*;
    use std::path::Path;

    /// Parsed, so that fields added to `Policy` later keep their defaults here.
    fn policy() -> Policy {
        let yaml = "policies:\n  - cluster: prod\n    consumergroup: orders\n    deployment: {namespace: shop, name: orders-consumer}\n    on_autoscaler: raise_min_replicas\n";
        let p = Policies::parse(yaml, Path::new("p.yaml")).unwrap().all()[0].clone();
        assert_eq!(
            (
                p.min_replicas,
                p.max_replicas,
                p.lag_per_replica,
                p.max_step
            ),
            (1, 10, 1000, 2)
        );
        assert_eq!(
            (p.scale_up_cooldown, p.scale_down_cooldown),
            (Duration::from_secs(60), Duration::from_secs(300))
        );
        p
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn obs(current: u32, original: Option<u32>, max: u32, replicas: u32, lag: u64) -> MinObserved {
        MinObserved {
            current,
            original,
            max,
            replicas,
            lag: Some(lag),
            partitions: None,
            broker_trouble: None,
        }
    }

    fn alert(status: AlertStatus) -> AlertInput {
        AlertInput {
            status,
            trigger: Trigger::Webhook,
        }
    }

    fn after(at: i64, direction: Direction) -> TargetState {
        TargetState {
            last_action: Some(LastAction {
                at: t(at),
                direction,
                from: 2,
                to: 4,
                alert: "x".into(),
                by: "test".into(),
            }),
            ..Default::default()
        }
    }

    fn raise(from: u32, to: u32, desired: u32, original: u32) -> MinDecision {
        MinDecision::Raise {
            from,
            to,
            desired,
            original,
            clamped_at: None,
        }
    }

    #[test]
    fn decision_table() {
        use AlertStatus::{Firing, Resolved};
        let p = policy();
        let fresh = TargetState::default();
        let mut capped = policy();
        capped.partition_cap = Some(PartitionCap::Fixed(3));
        let mut trouble = obs(4, Some(2), 10, 4, 0);
        trouble.broker_trouble = Some("KafkaBrokerDown".into());
        #[rustfmt::skip]
        let cases: Vec<(&str, AlertStatus, MinObserved, &Policy, TargetState, i64, MinDecision)> = vec![
            ("lag 3500 wants 4: 2 -> 4, original 2", Firing, obs(2, None, 10, 2, 3500), &p, fresh.clone(), 0, raise(2, 4, 4, 2)),
            ("lag 9000 wants 9: one step of 2 above the replicas", Firing, obs(2, None, 10, 2, 9000), &p, fresh.clone(), 0, raise(2, 4, 9, 2)),
            ("raised again: the first original is kept", Firing, obs(4, Some(2), 10, 4, 9000), &p, after(0, Direction::Up), 60, raise(4, 6, 9, 2)),
            ("the step counts from the replicas when they are higher", Firing, obs(1, None, 10, 6, 9000), &p, fresh.clone(), 0, raise(1, 8, 9, 1)),
            ("replicas already there: the minimum goes straight to desired", Firing, obs(1, None, 10, 7, 5000), &p, fresh.clone(), 0, raise(1, 5, 5, 1)),
            ("KEDA's 0 is raised too", Firing, obs(0, None, 100, 0, 1500), &p, fresh.clone(), 0, raise(0, 2, 2, 0)),
            ("clamped at the HPA's maximum", Firing, obs(2, None, 3, 2, 9000), &p, fresh.clone(), 0,
                MinDecision::Raise { from: 2, to: 3, desired: 9, original: 2, clamped_at: Some(3) }),
            ("at the HPA's maximum", Firing, obs(3, Some(2), 3, 3, 9000), &p, fresh.clone(), 0,
                MinDecision::Skip(MinSkip::AtDesired { current: 3, desired: 9, clamped_at: Some(3) })),
            ("the maximum is not what stopped this step", Firing, obs(2, None, 5, 2, 9000), &p, fresh.clone(), 0, raise(2, 4, 9, 2)),
            ("already at desired", Firing, obs(4, Some(2), 10, 4, 3500), &p, fresh.clone(), 0,
                MinDecision::Skip(MinSkip::AtDesired { current: 4, desired: 4, clamped_at: None })),
            ("less lag while firing: never lowered", Firing, obs(6, Some(2), 10, 6, 1000), &p, fresh.clone(), 0,
                MinDecision::Skip(MinSkip::AtDesired { current: 6, desired: 1, clamped_at: None })),
            ("the HPA's own minimum above desired is left", Firing, obs(5, None, 10, 5, 1000), &p, fresh.clone(), 0,
                MinDecision::Skip(MinSkip::AtDesired { current: 5, desired: 1, clamped_at: None })),
            ("never below the original, even when someone lowered it", Firing, obs(1, Some(3), 10, 1, 0), &p, fresh.clone(), 0, raise(1, 3, 1, 3)),
            ("partition cap 3", Firing, MinObserved { partitions: Some(3), ..obs(1, None, 10, 1, 9000) }, &capped, fresh.clone(), 0, raise(1, 3, 3, 1)),
            ("no lag", Firing, MinObserved { lag: None, ..obs(2, None, 10, 2, 0) }, &p, fresh.clone(), 0, MinDecision::Skip(MinSkip::LagUnknown)),
            ("up cooldown", Firing, obs(4, Some(2), 10, 4, 9000), &p, after(0, Direction::Up), 59,
                MinDecision::Skip(MinSkip::Cooldown { direction: Direction::Up, to: 6, remaining: Duration::from_secs(1) })),
            ("resolved inside the down cooldown", Resolved, obs(4, Some(2), 10, 4, 0), &p, after(0, Direction::Up), 299,
                MinDecision::Skip(MinSkip::Cooldown { direction: Direction::Down, to: 2, remaining: Duration::from_secs(1) })),
            ("resolved after the down cooldown: restore", Resolved, obs(4, Some(2), 10, 4, 0), &p, after(0, Direction::Up), 300,
                MinDecision::Restore { from: 4, to: 2 }),
            ("resolved with lag still there: restore all the same", Resolved, obs(6, Some(2), 10, 6, 9000), &p, fresh.clone(), 0,
                MinDecision::Restore { from: 6, to: 2 }),
            ("resolved, not raised", Resolved, obs(2, None, 10, 2, 0), &p, fresh.clone(), 0,
                MinDecision::Skip(MinSkip::NothingToRestore { current: 2 })),
            ("broker trouble holds the restore", Resolved, trouble, &p, fresh.clone(), 0,
                MinDecision::Skip(MinSkip::BrokerTrouble { alertname: "KafkaBrokerDown".into() })),
            ("paused", Firing, obs(2, None, 10, 2, 9000), &p, TargetState { paused: true, ..Default::default() }, 0,
                MinDecision::Skip(MinSkip::Paused)),
            ("duplicate", Resolved, obs(4, Some(2), 10, 4, 0), &p, TargetState { seen_recently: true, ..Default::default() }, 0,
                MinDecision::Skip(MinSkip::Duplicate)),
        ];
        for (name, status, observed, policy, state, now, want) in cases {
            let got = decide_min(&alert(status), &observed, policy, &state, t(now));
            assert_eq!(got, want, "case {name:?}");
        }
    }

    #[test]
    fn skips_name_the_object_and_their_code() {
        let p = policy();
        let hpa = "HorizontalPodAutoscaler shop/orders-hpa";
        let cases = [
            (
                MinSkip::AtDesired { current: 3, desired: 9, clamped_at: Some(3) },
                ReasonCode::AtDesired,
                "HorizontalPodAutoscaler shop/orders-hpa minReplicas is 3, at its maximum 3 (desired 9 clamped to it)",
            ),
            (
                MinSkip::Cooldown { direction: Direction::Down, to: 2, remaining: Duration::from_secs(200) },
                ReasonCode::Cooldown,
                "restore of HorizontalPodAutoscaler shop/orders-hpa minReplicas to 2 held by cooldown, 200s left",
            ),
            (
                MinSkip::NothingToRestore { current: 2 },
                ReasonCode::ManagedByAutoscaler,
                "HorizontalPodAutoscaler shop/orders-hpa scales shop/orders-consumer: its minReplicas 2 is not raised by kafka-medic, nothing to restore",
            ),
        ];
        for (skip, code, message) in cases {
            assert_eq!(skip.code(), code);
            assert_eq!(skip.message(hpa, "minReplicas", &p), message);
        }
    }

    #[test]
    fn the_policy_key_is_validated_and_named() {
        let base = "policies:\n  - cluster: a\n    consumergroup: b\n    deployment: {namespace: a, name: b}\n";
        let p = Policies::parse(base, Path::new("p.yaml")).unwrap();
        assert_eq!(
            p.all()[0].on_autoscaler,
            OnAutoscaler::Refuse,
            "the default"
        );
        let p = Policies::parse(
            &format!("{base}    on_autoscaler: raise_min_replicas\n"),
            Path::new("p.yaml"),
        )
        .unwrap();
        assert_eq!(p.all()[0].on_autoscaler, OnAutoscaler::RaiseMinReplicas);
        assert_eq!(p.all()[0].on_autoscaler.as_str(), "raise_min_replicas");
        let err = Policies::parse(
            &format!("{base}    on_autoscaler: raise\n"),
            Path::new("p.yaml"),
        )
        .unwrap_err();
        let PolicyError::Parse { message, .. } = &err else {
            panic!("{err}")
        };
        assert!(
            message.starts_with(
                "policies[0]: on_autoscaler must be \"refuse\" or \"raise_min_replicas\", got \"raise\" at line"
            ),
            "{message}"
        );
        let err = Policies::parse(
            &format!("{base}    scaler: keda\n    on_autoscaler: raise_min_replicas\n"),
            Path::new("p.yaml"),
        )
        .unwrap_err();
        let PolicyError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(
            problems,
            &vec!["policies[0].on_autoscaler: raise_min_replicas does not go with scaler: keda (KEDA scales that Deployment from the External Scaler's answers; the actuator changes nothing on it)".to_string()]
        );
    }

    proptest! {
        /// Whatever the inputs, a raise goes up, stays within the autoscaler's maximum, never
        /// drops below the original, moves the replicas by at most max_step and keeps the
        /// first original; a resolved alert never raises.
        #[test]
        fn raises_stay_within_the_bounds(
            current in 0u32..20,
            original in proptest::option::of(0u32..20),
            max in 1u32..30,
            replicas in 0u32..30,
            lag in 0u64..100_000,
            step in 1u32..5,
            firing in any::<bool>(),
        ) {
            let p = Policy { max_step: step, ..policy() };
            let o = obs(current, original, max, replicas, lag);
            let status = if firing { AlertStatus::Firing } else { AlertStatus::Resolved };
            match decide_min(&alert(status), &o, &p, &TargetState::default(), t(0)) {
                MinDecision::Raise { from, to, original: kept, .. } => {
                    prop_assert!(firing);
                    prop_assert_eq!(from, current);
                    prop_assert!(to > from && to <= max, "{} -> {} max {}", from, to, max);
                    prop_assert_eq!(kept, original.unwrap_or(current));
                    prop_assert!(to <= current.max(replicas) + step);
                }
                MinDecision::Restore { to, .. } => {
                    prop_assert!(!firing);
                    prop_assert_eq!(Some(to), original);
                }
                MinDecision::Skip(_) => {}
            }
        }
    }
}
