"""The actuator dashboard: actions by kind and result, replicas vs desired, cooldowns, skips,
webhook errors, the Kubernetes API and the audit log."""

from .common import actuator_annotation
from .grafana import (Layout, dashboard, datasource_var, query_var, row, stat, table, target,
                      targets, thresholds, timeseries)

UID = "kafka-medic-actuator"

I = 'instance=~"$instance"'
T = 'target=~"$target"'


def build():
    L = Layout()
    panels = []

    panels.append(row(L, "Overview"))
    onoff = [{"type": "value", "options": {
        "0": {"text": "no", "color": "green", "index": 0},
        "1": {"text": "yes", "color": "orange", "index": 1}}}]
    panels.append(stat(
        L, "Paused", [target(f"max(medic_actuator_paused{{{I}}})", instant=True)],
        mappings=onoff, threshold_steps=thresholds((1, "orange")), graph=False, w=3,
        description="Paused by configuration or POST /api/v1/pause: decisions are audited as "
                    "skipped, nothing is patched. With several replicas, each has its own switch."))
    panels.append(stat(
        L, "Dry run", [target(f"max(medic_actuator_dry_run{{{I}}})", instant=True)],
        mappings=onoff, threshold_steps=thresholds((1, "orange")), graph=False, w=3))
    panels.append(stat(
        L, "Policies", [target(f"max(medic_actuator_policies{{{I}}})", instant=True)],
        graph=False, w=3, description="Scaling policies loaded from the policy file."))
    panels.append(stat(
        L, "Lag alerts tracked",
        [target(f'max(medic_actuator_tracked_alerts{{{I}, state="firing"}})', instant=True)],
        graph=False, w=3,
        description="Targets with a firing KafkaConsumerLagPersistent alert that the actuator "
                    "re-evaluates on its interval."))
    panels.append(stat(
        L, "Scaled (range)",
        [target(f'sum(increase(medic_actuator_actions_total{{{I}, action=~"scale_up|scale_down", outcome="applied"}}[$__range])) or vector(0)',
                instant=True)],
        graph=False, w=3, decimals=0))
    panels.append(stat(
        L, "Failed (range)",
        [target(f'sum(increase(medic_actuator_actions_total{{{I}, outcome="failed"}}[$__range])) or vector(0)',
                instant=True)],
        threshold_steps=thresholds((1, "red")), graph=False, w=3, decimals=0))
    panels.append(stat(
        L, "Webhook errors (range)",
        [target(f'sum(increase(medic_actuator_webhooks_total{{{I}, result!="ok"}}[$__range])) or vector(0)',
                instant=True)],
        threshold_steps=thresholds((1, "red")), graph=False, w=3, decimals=0,
        description="Webhook requests not answered 2xx: bad payloads, bad credentials, bodies over "
                    "the limit, audit failures."))
    panels.append(stat(
        L, "Version",
        [target(f"count by (version) (medic_actuator_build_info{{{I}}})", "{{version}}", instant=True)],
        graph=False, w=3, color_mode="none",
        description="Running builds and how many replicas run each."))

    panels.append(row(L, "Actions"))
    panels.append(timeseries(
        L, "Actions by kind and result",
        targets((f'sum by (action, outcome) (increase(medic_actuator_actions_total{{{I}, action!="none"}}[$__rate_interval]))',
                 "{{action}} {{outcome}}")),
        bars=True, stack=True, legend_calcs=("sum",), decimals=0,
        description="Decisions that scaled, paused or resumed, by result (applied, dry_run, "
                    "failed, skipped)."))
    panels.append(timeseries(
        L, "Skipped and failed decisions by reason",
        targets((f"sum by (reason) (increase(medic_actuator_decision_reasons_total{{{I}}}[$__rate_interval]))", "{{reason}}")),
        bars=True, stack=True, legend_calcs=("sum",), decimals=0,
        description="Why the actuator did nothing, or failed: cooldown, no policy, duplicate, "
                    "dry run, paused, held by a broker alert, another autoscaler (HPA or KEDA) "
                    "owns the Deployment, a Kubernetes error..."))
    panels.append(timeseries(
        L, "Replicas vs desired",
        targets((f"max by (target) (medic_actuator_target_replicas{{{T}}})", "{{target}} replicas"),
                (f"max by (target) (medic_actuator_target_desired_replicas{{{T}}})", "{{target}} desired")),
        overrides=[{"matcher": {"id": "byRegexp", "options": "/ desired$/"},
                    "properties": [{"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}},
                                   {"id": "custom.fillOpacity", "value": 0}]}],
        decimals=0,
        description="The replicas of each Deployment a policy names, as the actuator last read "
                    "them, and the replicas its formula wants (ceil(lag / lag_per_replica), within "
                    "[min, max]); the actuator moves toward the dashed line by at most max_step "
                    "per cooldown."))
    panels.append(timeseries(
        L, "Cooldown remaining",
        targets((f"max by (target, direction) (medic_actuator_cooldown_remaining_seconds{{{T}}})", "{{target}} {{direction}}")),
        unit="s",
        description="Seconds before each target may be scaled again, up or down."))
    panels.append(timeseries(
        L, "Alerts received",
        targets((f"sum by (kind, status) (rate(medic_actuator_alerts_total{{{I}}}[$__rate_interval]))", "{{kind}} {{status}}")),
        unit="reqps", w=8))
    panels.append(timeseries(
        L, "Lag alerts tracked",
        targets((f"sum by (state) (medic_actuator_tracked_alerts{{{I}}})", "{{state}}")),
        w=8, decimals=0))
    panels.append(timeseries(
        L, "Where the lag came from",
        targets((f"sum by (source) (increase(medic_actuator_lag_source_total{{{I}}}[$__rate_interval]))", "{{source}}"),
                (f"sum(increase(medic_actuator_prometheus_errors_total{{{I}}}[$__rate_interval]))", "Prometheus errors")),
        bars=True, w=8, legend_calcs=("sum",),
        description="prometheus: fresh lag from the recording rules; annotation: the alert's "
                    "lag_offsets, used when Prometheus cannot be reached."))

    panels.append(row(L, "Webhook"))
    panels.append(timeseries(
        L, "Webhook requests by result",
        targets((f"sum by (result) (rate(medic_actuator_webhooks_total{{{I}}}[$__rate_interval]))", "{{result}}")),
        unit="reqps", w=8))
    panels.append(timeseries(
        L, "Webhook errors",
        targets((f'sum by (result) (increase(medic_actuator_webhooks_total{{{I}, result!="ok"}}[$__rate_interval]))', "{{result}}")),
        bars=True, w=8, legend_calcs=("sum",), decimals=0,
        threshold_steps=thresholds((1, "red")),
        description="unauthorized: Alertmanager's token does not match; bad_request: a payload "
                    "that is not Alertmanager webhook v4; unavailable/error: retried by Alertmanager."))
    panels.append(timeseries(
        L, "Webhook latency",
        targets((f"histogram_quantile(0.5, sum by (le) (rate(medic_actuator_webhook_duration_seconds_bucket{{{I}}}[$__rate_interval])))", "p50"),
                (f"histogram_quantile(0.99, sum by (le) (rate(medic_actuator_webhook_duration_seconds_bucket{{{I}}}[$__rate_interval])))", "p99")),
        unit="s", w=8,
        description="Time to answer a webhook, the audit fsync included."))

    panels.append(row(L, "Kubernetes API and audit log"))
    panels.append(timeseries(
        L, "Kubernetes API requests",
        targets((f"sum by (verb, resource, code) (rate(medic_actuator_kube_requests_total{{{I}}}[$__rate_interval]))",
                 "{{verb}} {{resource}} {{code}}")),
        unit="reqps", w=8,
        description="A 403 names a missing RBAC permission; 409 is a lost cooldown claim, retried."))
    panels.append(timeseries(
        L, "Kubernetes API latency (p99)",
        targets((f"histogram_quantile(0.99, sum by (verb, resource, le) (rate(medic_actuator_kube_request_duration_seconds_bucket{{{I}}}[$__rate_interval])))",
                 "{{verb}} {{resource}}")),
        unit="s", w=8))
    panels.append(timeseries(
        L, "Audit log",
        targets((f"sum(rate(medic_actuator_audit_records_total{{{I}}}[$__rate_interval]))", "records/s"),
                (f"sum(increase(medic_actuator_audit_write_errors_total{{{I}}}[$__rate_interval]))", "write errors"),
                (f"histogram_quantile(0.99, sum by (le) (rate(medic_actuator_audit_fsync_duration_seconds_bucket{{{I}}}[$__rate_interval])))", "fsync p99 (s)")),
        w=8,
        description="Records made durable, failed appends (the webhook was answered 500), and "
                    "the p99 time of one write + fsync."))

    panels.append(row(L, "Per-group alert overrides"))
    panels.append(table(
        L, "Alert thresholds from the policy file",
        targets(("max by (cluster, consumergroup) (medic_consumergroup_lag_threshold)", ""),
                ("max by (cluster, consumergroup) (medic_consumergroup_lag_sustain_seconds)", ""),
                instant=True, table=True),
        rename={"Value #A": "Lag threshold (offsets)", "Value #B": "Sustain window"},
        units={"Sustain window": "s"}, h=7,
        description="The per-group overrides the actuator exports for KafkaConsumerLagPersistent "
                    "(lag_threshold and sustain in its policies). Groups not listed use the rules' "
                    "defaults (500 offsets, 120s)."))

    variables = [
        datasource_var(),
        query_var("instance", "Actuator instance", "label_values(medic_actuator_build_info, instance)",
                  multi=True, include_all=True),
        query_var("target", "Target Deployment",
                  "label_values(medic_actuator_cooldown_remaining_seconds, target)",
                  multi=True, include_all=True,
                  description="namespace/name of a Deployment named by a policy."),
    ]
    return dashboard(
        UID, "kafka-medic / Actuator",
        "What medic-actuator did and why: actions by kind and result, replicas against desired, "
        "cooldowns, skips by reason, webhook errors, the Kubernetes API and the audit log.",
        panels, variables, [actuator_annotation()], time_from="now-24h")
