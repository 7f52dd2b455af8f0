"""The consumer lag dashboard: lag in offsets and seconds, time to drain, persistent-lag state."""

from .grafana import (Layout, dashboard, dashed, datasource_var, prom_annotation, query_var,
                      row, stat, state_timeline, table, target, targets, thresholds, timeseries)
from .common import actuator_annotation

UID = "kafka-medic-consumer-lag"

# Label matchers every query uses; Grafana fills in the variables.
G = 'cluster=~"$cluster", consumergroup=~"$consumergroup"'
GT = G + ', topic=~"$topic"'


def build():
    L = Layout()
    panels = []

    panels.append(row(L, "Overview"))
    panels.append(stat(
        L, "Groups lagging persistently",
        [target(f'count(ALERTS{{alertname="KafkaConsumerLagPersistent", alertstate="firing", {G}}}) or vector(0)',
                instant=True)],
        description="Consumer groups for which KafkaConsumerLagPersistent fires now: their lag "
                    "has stayed above the group's threshold for the group's whole sustain window.",
        threshold_steps=thresholds((1, "red")), graph=False, w=4))
    panels.append(stat(
        L, "Groups stalled",
        [target(f'count(count by (cluster, consumergroup) (ALERTS{{alertname="KafkaConsumerStalled", alertstate="firing", {G}}})) or vector(0)',
                instant=True)],
        description="Consumer groups with at least one topic for which KafkaConsumerStalled fires: "
                    "lag above zero and no committed offset moved for about 15 minutes.",
        threshold_steps=thresholds((1, "red")), graph=False, w=4))
    panels.append(stat(
        L, "Total lag",
        [target(f"sum(cluster_consumergroup:kafka_consumergroup_lag:sum{{{G}}})")],
        description="Sum of the selected groups' lag, in messages (offsets).", w=4))
    panels.append(stat(
        L, "Oldest unconsumed message",
        [target(f"max(cluster_consumergroup:kafka_consumergroup_lag_seconds:max{{{G}}})")],
        unit="s", description="Age of the oldest message not yet consumed, over the selected groups.",
        threshold_steps=thresholds((60, "orange"), (600, "red")), w=4))
    panels.append(stat(
        L, "Longest time to drain",
        [target(f"max(kafka_consumergroup_drain_seconds{{{GT}}})")],
        unit="s", description="At each group's recent consumption rate, the longest time until a "
                              "selected group catches up on a topic. Absent while nothing is consumed.",
        threshold_steps=thresholds((300, "orange"), (3600, "red")), w=4))
    panels.append(stat(
        L, "Consumption",
        [target(f"sum(cluster_consumergroup_topic:kafka_consumergroup_consumed:rate5m{{{GT}}})")],
        unit="ops", description="Offsets committed per second by the selected groups (5m average).",
        w=4))

    link = {"title": "Drill down into ${__data.fields.consumergroup}",
            "url": "/d/" + UID + "?var-datasource=${datasource}&var-cluster=${__data.fields.cluster}"
                   "&var-consumergroup=${__data.fields.consumergroup}&${__url_time_range}"}
    panels.append(table(
        L, "Consumer groups",
        targets(
            (f"cluster_consumergroup:kafka_consumergroup_lag:sum{{{G}}}", ""),
            (f"cluster_consumergroup:kafka_consumergroup_lag_seconds:max{{{G}}}", ""),
            (f"cluster_consumergroup:medic_consumergroup_lag_threshold:effective{{{G}}}", ""),
            (f"cluster_consumergroup:medic_consumergroup_lag_sustain_seconds:effective{{{G}}}", ""),
            (f"time() - cluster_consumergroup:kafka_consumergroup_lag_above_threshold:since{{{G}}}", ""),
            (f"sum by (cluster, consumergroup) (cluster_consumergroup_topic:kafka_consumergroup_consumed:rate5m{{{G}}})", ""),
            instant=True, table=True),
        rename={"Value #A": "Lag (offsets)", "Value #B": "Lag (seconds)",
                "Value #C": "Threshold (offsets)", "Value #D": "Sustain window",
                "Value #E": "Above threshold for", "Value #F": "Consumed/s"},
        units={"Lag (seconds)": "s", "Sustain window": "s", "Above threshold for": "s",
               "Consumed/s": "ops"},
        links={"consumergroup": link}, sort_by="Lag (offsets)", h=9,
        description="One line per group: lag, the oldest unconsumed message, the group's alert "
                    "threshold and sustain window (the actuator's per-group override, else the "
                    "rules' defaults), how long the lag has been above the threshold without a "
                    "break, and the consumption rate. Click a group to drill down."))

    panels.append(row(L, "Per consumer group"))
    panels.append(timeseries(
        L, "Lag (offsets) and threshold",
        targets((f"cluster_consumergroup:kafka_consumergroup_lag:sum{{{G}}}", "{{consumergroup}}"),
                (f"cluster_consumergroup:medic_consumergroup_lag_threshold:effective{{{G}}}",
                 "{{consumergroup}} threshold")),
        overrides=[dashed("/ threshold$/")],
        description="Total lag of each group in messages. The dashed line is the group's "
                    "KafkaConsumerLagPersistent threshold."))
    panels.append(timeseries(
        L, "Lag (seconds)",
        targets((f"cluster_consumergroup:kafka_consumergroup_lag_seconds:max{{{G}}}", "{{consumergroup}}")),
        unit="s", description="Age of the oldest message each group has not consumed yet."))
    panels.append(timeseries(
        L, "Time above threshold vs sustain window",
        targets((f"time() - cluster_consumergroup:kafka_consumergroup_lag_above_threshold:since{{{G}}}",
                 "{{consumergroup}} above threshold for"),
                (f"cluster_consumergroup:medic_consumergroup_lag_sustain_seconds:effective{{{G}}}",
                 "{{consumergroup}} sustain window")),
        unit="s", overrides=[dashed("/ sustain window$/")],
        description="How long each group's lag has been above its threshold without a break. "
                    "KafkaConsumerLagPersistent fires when the solid line reaches the dashed one; "
                    "a dip to or below the threshold restarts it from zero."))
    panels.append(timeseries(
        L, "Consumption rate",
        targets((f"sum by (cluster, consumergroup) (cluster_consumergroup_topic:kafka_consumergroup_consumed:rate5m{{{GT}}})",
                 "{{consumergroup}}")),
        unit="ops", description="Offsets committed per second (5m, rewinds counted as 0)."))
    panels.append(state_timeline(
        L, "Persistent-lag alert",
        targets((f'max by (cluster, consumergroup) (ALERTS{{alertname="KafkaConsumerLagPersistent", alertstate="firing", {G}}})',
                 "{{consumergroup}}")),
        mappings=[{"type": "value", "options": {"1": {"text": "firing", "color": "red", "index": 0}}},
                  {"type": "special", "options": {"match": "null", "result": {"text": "ok", "color": "green", "index": 1}}}],
        threshold_steps=thresholds((1, "red")), h=6,
        description="When KafkaConsumerLagPersistent fired for each group in the time range. "
                    "Groups that never fired in the range are not listed."))

    panels.append(row(L, "Per topic"))
    panels.append(timeseries(
        L, "Lag per topic (offsets)",
        targets((f"cluster_consumergroup_topic:kafka_consumergroup_lag:sum{{{GT}}}", "{{consumergroup}} / {{topic}}")),
        description="Lag of each group on each topic, in messages."))
    panels.append(timeseries(
        L, "Lag per topic (seconds)",
        targets((f"cluster_consumergroup_topic:kafka_consumergroup_lag_seconds:max{{{GT}}}", "{{consumergroup}} / {{topic}}")),
        unit="s", description="Age of the oldest unconsumed message of each group on each topic."))
    panels.append(timeseries(
        L, "Time to drain",
        targets((f"max by (cluster, consumergroup, topic) (kafka_consumergroup_drain_seconds{{{GT}}})",
                 "{{consumergroup}} / {{topic}}")),
        unit="s", threshold_steps=thresholds((3600, "red")), threshold_style="line",
        description="Seconds until the group catches up on the topic at its recent consumption "
                    "rate (medic-agent's estimate; 0 when there is no lag, absent while nothing "
                    "is consumed). The red line marks one hour."))
    panels.append(timeseries(
        L, "Produced vs consumed",
        targets((f'sum by (cluster, topic) (max by (cluster, topic, partition) (rate(kafka_topic_partition_current_offset{{cluster=~"$cluster", topic=~"$topic"}}[$__rate_interval])))',
                 "produced {{topic}}"),
                (f"sum by (cluster, consumergroup, topic) (cluster_consumergroup_topic:kafka_consumergroup_consumed:rate5m{{{GT}}})",
                 "consumed {{consumergroup}} / {{topic}}")),
        unit="ops",
        description="Messages appended per second to each topic, and offsets committed per second "
                    "by each group on it. Lag grows while production is above consumption."))
    panels.append(timeseries(
        L, "Largest partition lag per topic",
        targets((f"cluster_consumergroup_topic:kafka_consumergroup_lag:max{{{GT}}}", "{{consumergroup}} / {{topic}}")),
        description="The lag of the most lagging partition. Far above the topic's lag divided by "
                    "its partitions means a skewed or stuck partition: drill down below."))
    panels.append(state_timeline(
        L, "Stalled consumers",
        targets((f'max by (cluster, consumergroup, topic) (ALERTS{{alertname="KafkaConsumerStalled", alertstate=~"firing|pending", {GT}}})',
                 "{{consumergroup}} / {{topic}}")),
        mappings=[{"type": "value", "options": {"1": {"text": "stalled", "color": "red", "index": 0}}},
                  {"type": "special", "options": {"match": "null", "result": {"text": "ok", "color": "green", "index": 1}}}],
        threshold_steps=thresholds((1, "red")), w=12, h=8,
        description="KafkaConsumerStalled, pending or firing: lag above zero and no commit on a "
                    "partition of the topic."))

    parts_row = row(L, "Partitions (drill-down)", collapsed=True)
    parts_row["panels"] = [
        timeseries(L, "Lag per partition (offsets)",
                   targets((f"max by (cluster, consumergroup, topic, partition) (kafka_consumergroup_lag{{{GT}}})",
                            "{{consumergroup}} / {{topic}} [{{partition}}]")),
                   description="Per-partition lag. Pick one group and one topic above to keep "
                               "this readable."),
        timeseries(L, "Lag per partition (seconds)",
                   targets((f"max by (cluster, consumergroup, topic, partition) (kafka_consumergroup_lag_seconds{{{GT}}})",
                            "{{consumergroup}} / {{topic}} [{{partition}}]")),
                   unit="s"),
        table(L, "Partitions",
              targets(
                  (f"max by (cluster, consumergroup, topic, partition) (kafka_consumergroup_lag{{{GT}}})", ""),
                  (f"max by (cluster, consumergroup, topic, partition) (kafka_consumergroup_lag_seconds{{{GT}}})", ""),
                  (f"max by (cluster, consumergroup, topic, partition) (kafka_consumergroup_current_offset{{{GT}}})", ""),
                  (f'max by (cluster, consumergroup, topic, partition) (kafka_consumergroup_current_offset{{{GT}}})'
                   f' * 0 + on (cluster, topic, partition) group_left () max by (cluster, topic, partition) (kafka_topic_partition_current_offset{{cluster=~"$cluster", topic=~"$topic"}})', ""),
                  instant=True, table=True),
              rename={"Value #A": "Lag", "Value #B": "Lag (seconds)",
                      "Value #C": "Committed offset", "Value #D": "Log end offset"},
              units={"Lag (seconds)": "s"}, sort_by="Lag", h=10,
              description="Every partition of the selected groups and topics: lag, oldest "
                          "unconsumed message, committed and log end offsets."),
    ]
    panels.append(parts_row)

    A = 'cluster=~"$cluster"'
    agent_row = row(L, "Collection (medic-agent)", collapsed=True)
    agent_row["panels"] = [
        timeseries(L, "Snapshot age",
                   targets((f"max by (cluster, instance) (medic_agent_snapshot_age_seconds{{{A}}})", "{{instance}}")),
                   unit="s", w=8,
                   description="Seconds since each agent's served snapshot was collected. It grows "
                               "while Kafka cannot be reached; lag figures are then stale."),
        timeseries(L, "Collection duration (p99)",
                   targets((f"histogram_quantile(0.99, sum by (cluster, instance, le) (rate(medic_agent_collection_duration_seconds_bucket{{{A}}}[$__rate_interval])))",
                            "{{instance}}")),
                   unit="s", w=8),
        timeseries(L, "Failed collections",
                   targets((f'sum by (cluster, instance) (increase(medic_agent_collections_total{{{A}, result="failure"}}[$__rate_interval]))',
                            "{{instance}}")),
                   bars=True, w=8,
                   description="Collections that failed; /healthz turns 503 and the agent is "
                               "taken out of its Service while they last."),
        timeseries(L, "Collection errors by stage",
                   targets((f"sum by (cluster, stage) (increase(medic_agent_collection_errors_total{{{A}}}[$__rate_interval]))", "{{stage}}")),
                   bars=True, w=8, legend_calcs=("sum",),
                   description="Problems met while collecting: a Kafka request (metadata, "
                               "list_groups, offset_fetch, list_offsets, fetch) or a broker health "
                               "reading (process, cpu, memory, network, disk)."),
        timeseries(L, "Groups and partitions reported",
                   targets((f"sum by (cluster, instance) (medic_agent_groups{{{A}}})", "groups {{instance}}"),
                           (f"sum by (cluster, instance) (medic_agent_partitions{{{A}}})", "partitions {{instance}}")),
                   w=8,
                   description="In sidecar mode each agent reports the groups its broker "
                               "coordinates, so the counts split between brokers."),
        timeseries(L, "Kafka requests",
                   targets((f"sum by (cluster, api) (rate(medic_agent_kafka_requests_total{{{A}}}[$__rate_interval]))", "{{api}}")),
                   unit="reqps", w=8),
        timeseries(L, "Kafka request latency (p99)",
                   targets((f"histogram_quantile(0.99, sum by (cluster, api, le) (rate(medic_agent_kafka_request_duration_seconds_bucket{{{A}}}[$__rate_interval])))", "{{api}}")),
                   unit="s", w=24),
    ]
    panels.append(agent_row)

    variables = [
        datasource_var(),
        query_var("cluster", "Cluster", "label_values(cluster_consumergroup:kafka_consumergroup_lag:sum, cluster)",
                  description="The Kafka cluster (the agent's `cluster` setting)."),
        query_var("consumergroup", "Consumer group",
                  'label_values(cluster_consumergroup:kafka_consumergroup_lag:sum{cluster=~"$cluster"}, consumergroup)',
                  multi=True, include_all=True),
        query_var("topic", "Topic",
                  'label_values(cluster_consumergroup_topic:kafka_consumergroup_lag:sum{cluster=~"$cluster", consumergroup=~"$consumergroup"}, topic)',
                  multi=True, include_all=True),
    ]
    annotations = [
        prom_annotation(
            "Persistent lag", f'ALERTS{{alertname="KafkaConsumerLagPersistent", alertstate="firing", {G}}}',
            "KafkaConsumerLagPersistent {{consumergroup}}", "consumergroup", "red",
            enable=False),
        actuator_annotation(),
    ]
    return dashboard(
        UID, "kafka-medic / Consumer lag",
        "Consumer lag in offsets and seconds, time to drain and persistent-lag alert state, per "
        "consumer group, topic and partition. Data: medic-agent and the kafka-medic recording rules.",
        panels, variables, annotations)
