"""Pieces shared by several dashboards."""

from .grafana import prom_annotation

# Actuator decisions that did something (or would have, in dry run, or tried and failed):
# every action but `none`, every outcome but `skipped`. `increase(...) > 0` sees an increment
# of an existing series; `x unless x offset 2m` sees a series that has just appeared, which is
# how a counter's first increment after the actuator starts shows up.
ACTIONS = 'medic_actuator_actions_total{action!="none", outcome!="skipped"}'
ACTUATOR_ACTIONS_EXPR = (
    f"sum by (action, outcome) ((increase({ACTIONS}[2m]) > 0) or ({ACTIONS} unless {ACTIONS} offset 2m))"
)


def actuator_annotation(enable=True):
    """One annotation per minute in which medic-actuator scaled, paused or resumed."""
    return prom_annotation(
        "Actuator actions", ACTUATOR_ACTIONS_EXPR, "medic-actuator: {{action}} ({{outcome}})",
        "action,outcome", "purple",
        text="See GET /api/v1/audit on the actuator for the target and the reason.",
        enable=enable)
