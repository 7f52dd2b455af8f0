"""The broker health dashboard: which brokers are up, CPU, disk and its prediction, memory, network."""

from .common import actuator_annotation
from .grafana import (Layout, dashboard, datasource_var, prom_annotation, query_var, row, stat,
                      state_timeline, table, targets, target, thresholds, timeseries)

UID = "kafka-medic-broker-health"

B = 'cluster=~"$cluster", broker=~"$broker"'
# The thresholds written in rules/kafka-medic.rules.yml (the dashboard test checks they match).
CPU_OVERLOADED = 0.8
DISK_FULL = 0.85
DISK_PREDICTED = 0.6


def build():
    L = Layout()
    panels = []

    panels.append(row(L, "Brokers"))
    panels.append(stat(
        L, "Brokers up",
        [target(f"count(max by (cluster, broker) (kafka_broker_up{{{B}}}) == 1) or vector(0)", instant=True)],
        description="Brokers whose sidecar agent got an answer from them in its last collection.",
        graph=False, w=4))
    panels.append(stat(
        L, "Brokers down",
        [target(f"count(max by (cluster, broker) (kafka_broker_up{{{B}}}) == 0)"
                f' + count(max by (cluster, broker) (up{{job="medic-agent", {B}}}) == 0) or vector(0)', instant=True)],
        description="Brokers that do not answer their sidecar, plus sidecar targets Prometheus "
                    "cannot scrape (a broker in both states counts twice).",
        threshold_steps=thresholds((1, "red")), graph=False, w=4))
    panels.append(stat(
        L, "Broker alerts firing",
        [target(f'count(ALERTS{{alertname=~"KafkaBrokerDown|KafkaBrokerOverloaded|KafkaBrokerDiskPressure", alertstate="firing", {B}}}) or vector(0)',
                instant=True)],
        threshold_steps=thresholds((1, "red")), graph=False, w=4))
    panels.append(stat(
        L, "Highest CPU use",
        [target(f"max(cluster_broker:kafka_broker_cpu_usage:ratio{{{B}}})")],
        unit="percentunit", decimals=0,
        threshold_steps=thresholds((CPU_OVERLOADED, "red")), w=4,
        description="CPU time used per second over the CPU capacity (5m average). "
                    "KafkaBrokerOverloaded fires after 10m above 80%."))
    panels.append(stat(
        L, "Fullest log directory",
        [target(f"max(cluster_broker_path:kafka_broker_disk_used:ratio{{{B}}})")],
        unit="percentunit", decimals=0,
        threshold_steps=thresholds((DISK_PREDICTED, "orange"), (DISK_FULL, "red")), w=4))
    panels.append(stat(
        L, "Memory used (total)",
        [target(f"sum(max by (cluster, broker) (kafka_broker_memory_used_bytes{{{B}}}))")],
        unit="bytes", w=4))

    up_map = [{"type": "value", "options": {
        "0": {"text": "down", "color": "red", "index": 0},
        "1": {"text": "up", "color": "green", "index": 1}}},
        {"type": "special", "options": {"match": "null", "result": {"text": "absent", "color": "text", "index": 2}}}]
    panels.append(state_timeline(
        L, "Broker up (answers its sidecar)",
        targets((f"max by (cluster, broker) (kafka_broker_up{{{B}}})", "broker {{broker}}")),
        mappings=up_map, w=12, h=7,
        threshold_steps=thresholds((1, "green"), base="red"),
        description="kafka_broker_up from each broker's sidecar: 1 if the broker answered a "
                    "request in the last collection."))
    panels.append(state_timeline(
        L, "Sidecar target up (scraped by Prometheus)",
        targets((f'max by (cluster, broker) (up{{job="medic-agent", {B}}})', "broker {{broker}}")),
        mappings=up_map, w=12, h=7,
        threshold_steps=thresholds((1, "green"), base="red"),
        description="Prometheus' `up` for each sidecar target (job medic-agent). Down or absent "
                    "means the pod is gone or unreachable: KafkaBrokerDown after 1m."))

    panels.append(row(L, "CPU"))
    panels.append(timeseries(
        L, "CPU use / capacity",
        targets((f"cluster_broker:kafka_broker_cpu_usage:ratio{{{B}}}", "broker {{broker}}")),
        unit="percentunit", max_=1,
        threshold_steps=thresholds((CPU_OVERLOADED, "red")), threshold_style="line+area",
        description="CPU seconds used per second by the broker process or cgroup, over the cores "
                    "available to it (5m average). The red line is KafkaBrokerOverloaded's 80%."))
    panels.append(timeseries(
        L, "CPU cores used and available",
        targets((f"max by (cluster, broker) (rate(kafka_broker_cpu_seconds_total{{{B}}}[$__rate_interval]))", "used {{broker}}"),
                (f"max by (cluster, broker) (kafka_broker_cpu_cores{{{B}}})", "capacity {{broker}}")),
        description="Cores in use (at the dashboard's resolution) and the capacity (cgroup quota, "
                    "else the host's cores)."))

    panels.append(row(L, "Disk"))
    panels.append(timeseries(
        L, "Log directory use",
        targets((f"cluster_broker_path:kafka_broker_disk_used:ratio{{{B}}}", "broker {{broker}} {{path}}")),
        unit="percentunit", max_=1,
        threshold_steps=thresholds((DISK_PREDICTED, "orange"), (DISK_FULL, "red")), threshold_style="line+area",
        description="Share of each log directory's filesystem in use. KafkaBrokerDiskPressure "
                    "fires above 85% (red), or above 60% (orange) when the trend fills it within 4h."))
    panels.append(timeseries(
        L, "Predicted use in 4h (trend of the last 6h)",
        targets((f"max by (cluster, broker, path) (predict_linear(kafka_broker_disk_used_bytes{{{B}}}[6h], 4 * 3600))"
                 f" / on (cluster, broker, path) max by (cluster, broker, path) (kafka_broker_disk_size_bytes{{{B}}})",
                 "broker {{broker}} {{path}}")),
        unit="percentunit", min_=None,
        threshold_steps=thresholds((1, "red")), threshold_style="line",
        description="Where each log directory will be in 4 hours if it keeps growing as in the "
                    "last 6 hours (the same prediction KafkaBrokerDiskPressure uses). Above the red "
                    "line (100%) it fills up within 4h."))
    panels.append(timeseries(
        L, "Log directory bytes used and size",
        targets((f"max by (cluster, broker, path) (kafka_broker_disk_used_bytes{{{B}}})", "used {{broker}} {{path}}"),
                (f"max by (cluster, broker, path) (kafka_broker_disk_size_bytes{{{B}}})", "size {{broker}} {{path}}")),
        unit="bytes", w=24))

    panels.append(row(L, "Memory and network"))
    panels.append(timeseries(
        L, "Memory used",
        targets((f"max by (cluster, broker) (kafka_broker_memory_used_bytes{{{B}}})", "broker {{broker}}")),
        unit="bytes", w=8,
        description="Resident memory of the broker process, or the working set of its cgroup."))
    panels.append(timeseries(
        L, "Network received",
        targets((f"max by (cluster, broker) (rate(kafka_broker_network_receive_bytes_total{{{B}}}[$__rate_interval]))", "broker {{broker}}")),
        unit="Bps", w=8))
    panels.append(timeseries(
        L, "Network transmitted",
        targets((f"max by (cluster, broker) (rate(kafka_broker_network_transmit_bytes_total{{{B}}}[$__rate_interval]))", "broker {{broker}}")),
        unit="Bps", w=8))

    panels.append(row(L, "Alerts"))
    BA = 'alertname=~"KafkaBrokerDown|KafkaBrokerOverloaded|KafkaBrokerDiskPressure", ' + B
    panels.append(state_timeline(
        L, "Broker alerts",
        targets((f'max by (alertname, cluster, broker) (ALERTS{{alertstate="firing", {BA}}} or 0.5 * ALERTS{{alertstate="pending", {BA}}})',
                 "{{alertname}} broker {{broker}}")),
        mappings=[{"type": "value", "options": {
            "0.5": {"text": "pending", "color": "orange", "index": 0},
            "1": {"text": "firing", "color": "red", "index": 1}}},
            {"type": "special", "options": {"match": "null", "result": {"text": "ok", "color": "green", "index": 2}}}],
        threshold_steps=thresholds((0.5, "orange"), (1, "red")),
        description="KafkaBrokerDown, KafkaBrokerOverloaded and KafkaBrokerDiskPressure per broker "
                    "(pending: the condition holds but its `for` has not passed yet)."))

    variables = [
        datasource_var(),
        query_var("cluster", "Cluster", "label_values(kafka_broker_up, cluster)"),
        query_var("broker", "Broker", 'label_values(kafka_broker_up{cluster=~"$cluster"}, broker)',
                  multi=True, include_all=True),
    ]
    annotations = [
        prom_annotation(
            "Broker alerts",
            f'ALERTS{{alertname=~"KafkaBrokerDown|KafkaBrokerOverloaded|KafkaBrokerDiskPressure", alertstate="firing", {B}}}',
            "{{alertname}} broker {{broker}}", "alertname,broker", "red"),
        actuator_annotation(),
    ]
    return dashboard(
        UID, "kafka-medic / Broker health",
        "Per-broker CPU use against capacity, log directory use and its 4h prediction, memory and "
        "network, which brokers are up, and the broker alerts, with their thresholds drawn. "
        "Data: medic-agent sidecars and the kafka-medic recording rules.",
        panels, variables, annotations)
