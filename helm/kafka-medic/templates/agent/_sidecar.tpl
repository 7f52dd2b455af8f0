{{/*
=====================================================================================
kafka-medic.agentSidecar: the medic-agent sidecar container, as one item of a pod's
`containers:` list. Include it in your broker StatefulSet (README.md, "The agent sidecar"):

  spec:
    template:
      spec:
        shareProcessNamespace: true        # the agent finds the broker process in /proc
        containers:
          - name: kafka
            ...
          {{- include "kafka-medic.agentSidecar" (dict "agent" (index .Values "kafka-medic" "agent")) | nindent 10 }}
        volumes:
          ...
          {{- include "kafka-medic.agentSidecarVolumes" (dict "agent" (index .Values "kafka-medic" "agent")) | nindent 10 }}

Arguments (a dict):
  agent        the chart's `agent` values block (required)
  brokerIdEnv  optional: a whole env entry (dict) for MEDIC_AGENT_BROKER_ID, replacing the one
               agent.sidecar.brokerId.source selects (the Kyverno policy for Strimzi uses it)

It mounts every agent.sidecar.logDirs volume read-only (the volumes are the broker's own), the
SASL password and TLS files from their Secrets (volumes from kafka-medic.agentSidecarVolumes),
and sets every setting through MEDIC_AGENT_* variables, so it needs no ConfigMap in the
broker's namespace.
=====================================================================================
*/}}
{{- define "kafka-medic.agentSidecar" -}}
{{- $agent := required "kafka-medic.agentSidecar needs (dict \"agent\" <the kafka-medic agent values>)" .agent }}
{{- $s := $agent.sidecar }}
{{- $source := $s.brokerId.source }}
{{- if not (has $source (list "podIndexLabel" "hostnameSuffix")) }}
{{- fail (printf "agent.sidecar.brokerId.source must be podIndexLabel or hostnameSuffix, got %q" (toString $source)) }}
{{- end -}}
- name: medic-agent
  image: {{ include "kafka-medic.agentImage" $agent }}
  imagePullPolicy: {{ $agent.image.pullPolicy }}
  {{- if and (eq $source "hostnameSuffix") (not .brokerIdEnv) }}
  # The broker id is the number after the pod name's last dash (<statefulset>-<ordinal>).
  command:
    - /bin/sh
    - -c
    - 'MEDIC_AGENT_BROKER_ID="${HOSTNAME##*-}" exec medic-agent'
  {{- end }}
  env:
    - name: MEDIC_AGENT_BOOTSTRAP_SERVERS
      value: {{ required "agent.sidecar.bootstrapServers is required" $s.bootstrapServers | quote }}
    {{- if .brokerIdEnv }}
    {{- toYaml (list .brokerIdEnv) | nindent 4 }}
    {{- else if eq $source "podIndexLabel" }}
    # The broker id is the pod's ordinal in its StatefulSet (label set by Kubernetes 1.28+).
    - name: MEDIC_AGENT_BROKER_ID
      valueFrom:
        fieldRef:
          fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
    {{- end }}
    - name: MEDIC_AGENT_PROCESS_SOURCE
      value: {{ $s.process.source | quote }}
    {{- if eq $s.process.source "cmdline" }}
    - name: MEDIC_AGENT_PROCESS_CMDLINE_PATTERN
      value: {{ required "agent.sidecar.process.cmdlinePattern is required with process.source cmdline" $s.process.cmdlinePattern | quote }}
    {{- else if eq $s.process.source "pid_file" }}
    - name: MEDIC_AGENT_PROCESS_PID_FILE
      value: {{ required "agent.sidecar.process.pidFile is required with process.source pid_file" $s.process.pidFile | quote }}
    {{- else if eq $s.process.source "cgroup" }}
    - name: MEDIC_AGENT_PROCESS_CGROUP_DIR
      value: {{ required "agent.sidecar.process.cgroupDir is required with process.source cgroup" $s.process.cgroupDir | quote }}
    {{- else if ne $s.process.source "host" }}
    {{- fail (printf "agent.sidecar.process.source must be cmdline, pid_file, cgroup or host, got %q" (toString $s.process.source)) }}
    {{- end }}
    {{- with $s.logDirs }}
    {{- $paths := list }}
    {{- range $i, $d := . }}
    {{- if not (and $d.volume $d.mountPath) }}
    {{- fail (printf "agent.sidecar.logDirs[%d] needs volume and mountPath, got %s" $i (toJson $d)) }}
    {{- end }}
    {{- $paths = append $paths (default $d.mountPath $d.path) }}
    {{- end }}
    - name: MEDIC_AGENT_LOG_DIRS
      value: {{ join "," $paths | quote }}
    {{- end }}
    {{- include "kafka-medic.agentEnv" $agent | nindent 4 }}
  ports:
    - name: medic-metrics
      containerPort: {{ $agent.port }}
      protocol: TCP
  {{- with $agent.readinessProbe }}
  readinessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $agent.livenessProbe }}
  livenessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $agent.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $agent.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $mounts := include "kafka-medic.agentSecretMounts" $agent | trim }}
  {{- if or $s.logDirs $mounts }}
  volumeMounts:
    {{- range $s.logDirs }}
    # The broker's log directory, read-only: the agent only measures its filesystem.
    - name: {{ .volume }}
      mountPath: {{ .mountPath }}
      readOnly: true
    {{- end }}
    {{- with $mounts }}
    {{- . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end }}

{{/*
kafka-medic.agentSidecarVolumes: the volumes the sidecar adds to the pod (the Secrets of the
SASL password and TLS files), as items of `volumes:`; nothing when none is configured.
Same argument as kafka-medic.agentSidecar.
*/}}
{{- define "kafka-medic.agentSidecarVolumes" -}}
{{- $agent := required "kafka-medic.agentSidecarVolumes needs (dict \"agent\" <the kafka-medic agent values>)" .agent }}
{{- include "kafka-medic.agentSecretVolumes" $agent }}
{{- end }}

{{/* ---- pieces shared by the sidecar and the cluster-mode Deployment (argument: the agent values) ---- */}}

{{/*
The agent image. The tag defaults to kafka-medic.appVersion, not to .Chart.AppVersion: when the
sidecar is included from a parent chart, .Chart is the parent's.
*/}}
{{- define "kafka-medic.agentImage" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default (include "kafka-medic.appVersion" .) .image.tag | toString) }}
{{- end }}
{{- end }}

{{/* Chart.yaml's appVersion, for templates that may run with another chart's .Chart
(helm/tests checks that the two are equal). */}}
{{- define "kafka-medic.appVersion" -}}
0.1.0
{{- end }}

{{/* The settings every agent shares, as env entries. */}}
{{- define "kafka-medic.agentEnv" -}}
- name: MEDIC_AGENT_LISTEN
  value: {{ printf "0.0.0.0:%v" .port | quote }}
- name: MEDIC_AGENT_CLUSTER
  value: {{ required "agent.cluster is required" .cluster | quote }}
- name: MEDIC_AGENT_INTERVAL
  value: {{ .interval | quote }}
{{- if not (has .granularity (list "partition" "topic")) }}
{{- fail (printf "agent.granularity must be partition or topic, got %q" (toString .granularity)) }}
{{- end }}
- name: MEDIC_AGENT_GRANULARITY
  value: {{ .granularity | quote }}
{{- with .maxSeries }}
- name: MEDIC_AGENT_MAX_SERIES
  value: {{ . | quote }}
{{- end }}
{{- range $key, $env := dict "groupAllow" "MEDIC_AGENT_GROUP_ALLOW" "groupDeny" "MEDIC_AGENT_GROUP_DENY" "topicAllow" "MEDIC_AGENT_TOPIC_ALLOW" "topicDeny" "MEDIC_AGENT_TOPIC_DENY" }}
{{- with index $ $key }}
{{- range . }}
{{- if contains "," . }}
{{- fail (printf "agent.%s: %q contains a comma; the agent takes the list comma-separated, so write the regex without one (e.g. [0-9][0-9]* for [0-9]{1,})" $key .) }}
{{- end }}
{{- end }}
- name: {{ $env }}
  value: {{ join "," . | quote }}
{{- end }}
{{- end }}
{{- $k := .kafka }}
{{- if not (has $k.securityProtocol (list "plaintext" "ssl" "sasl_plaintext" "sasl_ssl")) }}
{{- fail (printf "agent.kafka.securityProtocol must be plaintext, ssl, sasl_plaintext or sasl_ssl, got %q" (toString $k.securityProtocol)) }}
{{- end }}
- name: MEDIC_AGENT_SECURITY_PROTOCOL
  value: {{ $k.securityProtocol | quote }}
{{- if hasPrefix "sasl" $k.securityProtocol }}
{{- $m := required "agent.kafka.sasl.mechanism is required with a sasl_* securityProtocol" $k.sasl.mechanism }}
{{- if not (has $m (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512" "OAUTHBEARER" "AWS_MSK_IAM")) }}
{{- fail (printf "agent.kafka.sasl.mechanism must be PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM, got %q" $m) }}
{{- end }}
- name: MEDIC_AGENT_SASL_MECHANISM
  value: {{ $m | quote }}
{{- if eq $m "OAUTHBEARER" }}
{{- $o := $k.sasl.oauthbearer }}
- name: MEDIC_AGENT_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL
  value: {{ required "agent.kafka.sasl.oauthbearer.tokenEndpointUrl is required with mechanism OAUTHBEARER" $o.tokenEndpointUrl | quote }}
- name: MEDIC_AGENT_SASL_OAUTHBEARER_CLIENT_ID
  value: {{ required "agent.kafka.sasl.oauthbearer.clientId is required with mechanism OAUTHBEARER" $o.clientId | quote }}
{{- $_ := required "agent.kafka.sasl.oauthbearer.clientSecret.name is required with mechanism OAUTHBEARER (the secret is read from a file, never from values)" $o.clientSecret.name }}
- name: MEDIC_AGENT_SASL_OAUTHBEARER_CLIENT_SECRET_FILE
  value: {{ printf "/etc/medic-agent/oauth/%s" $o.clientSecret.key | quote }}
{{- with $o.scope }}
- name: MEDIC_AGENT_SASL_OAUTHBEARER_SCOPE
  value: {{ . | quote }}
{{- end }}
{{- if $o.caSecret.name }}
- name: MEDIC_AGENT_SASL_OAUTHBEARER_CA_FILE
  value: {{ printf "/etc/medic-agent/oauth-ca/%s" $o.caSecret.key | quote }}
{{- end }}
{{- else if eq $m "AWS_MSK_IAM" }}
- name: MEDIC_AGENT_SASL_AWS_REGION
  value: {{ required "agent.kafka.sasl.awsRegion is required with mechanism AWS_MSK_IAM" $k.sasl.awsRegion | quote }}
{{- else }}
- name: MEDIC_AGENT_SASL_USERNAME
  value: {{ required "agent.kafka.sasl.username is required with a sasl_* securityProtocol" $k.sasl.username | quote }}
{{- $_ := required "agent.kafka.sasl.passwordSecret.name is required with a sasl_* securityProtocol (the password is read from a file, never from values)" $k.sasl.passwordSecret.name }}
- name: MEDIC_AGENT_SASL_PASSWORD_FILE
  value: {{ printf "/etc/medic-agent/sasl/%s" $k.sasl.passwordSecret.key | quote }}
{{- end }}
{{- end }}
{{- if $k.tls.caSecret.name }}
- name: MEDIC_AGENT_TLS_CA_FILE
  value: {{ printf "/etc/medic-agent/tls-ca/%s" $k.tls.caSecret.key | quote }}
{{- end }}
{{- if $k.tls.clientCertSecret.name }}
- name: MEDIC_AGENT_TLS_CERT_FILE
  value: {{ printf "/etc/medic-agent/tls-client/%s" $k.tls.clientCertSecret.certKey | quote }}
- name: MEDIC_AGENT_TLS_KEY_FILE
  value: {{ printf "/etc/medic-agent/tls-client/%s" $k.tls.clientCertSecret.keyKey | quote }}
{{- end }}
{{- with $k.tls.serverName }}
- name: MEDIC_AGENT_TLS_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
- name: MEDIC_AGENT_LOG_FORMAT
  value: {{ .logFormat | quote }}
- name: RUST_LOG
  value: {{ .logLevel | quote }}
{{- with .extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kafka-medic.agentSecretMounts" -}}
{{- $k := .kafka }}
{{- if hasPrefix "sasl" $k.securityProtocol }}
{{- if eq $k.sasl.mechanism "OAUTHBEARER" }}
- name: medic-agent-oauth
  mountPath: /etc/medic-agent/oauth
  readOnly: true
{{- if $k.sasl.oauthbearer.caSecret.name }}
- name: medic-agent-oauth-ca
  mountPath: /etc/medic-agent/oauth-ca
  readOnly: true
{{- end }}
{{- else if ne $k.sasl.mechanism "AWS_MSK_IAM" }}
- name: medic-agent-sasl
  mountPath: /etc/medic-agent/sasl
  readOnly: true
{{- end }}
{{- end }}
{{- if $k.tls.caSecret.name }}
- name: medic-agent-tls-ca
  mountPath: /etc/medic-agent/tls-ca
  readOnly: true
{{- end }}
{{- if $k.tls.clientCertSecret.name }}
- name: medic-agent-tls-client
  mountPath: /etc/medic-agent/tls-client
  readOnly: true
{{- end }}
{{- end }}

{{- define "kafka-medic.agentSecretVolumes" -}}
{{- $k := .kafka }}
{{- if hasPrefix "sasl" $k.securityProtocol }}
{{- if eq $k.sasl.mechanism "OAUTHBEARER" }}
{{- $o := $k.sasl.oauthbearer }}
- name: medic-agent-oauth
  secret:
    secretName: {{ $o.clientSecret.name }}
    defaultMode: 0440
    items:
      - key: {{ $o.clientSecret.key }}
        path: {{ $o.clientSecret.key }}
{{- if $o.caSecret.name }}
- name: medic-agent-oauth-ca
  secret:
    secretName: {{ $o.caSecret.name }}
    defaultMode: 0444
    items:
      - key: {{ $o.caSecret.key }}
        path: {{ $o.caSecret.key }}
{{- end }}
{{- else if ne $k.sasl.mechanism "AWS_MSK_IAM" }}
- name: medic-agent-sasl
  secret:
    secretName: {{ $k.sasl.passwordSecret.name }}
    defaultMode: 0440
    items:
      - key: {{ $k.sasl.passwordSecret.key }}
        path: {{ $k.sasl.passwordSecret.key }}
{{- end }}
{{- end }}
{{- if $k.tls.caSecret.name }}
- name: medic-agent-tls-ca
  secret:
    secretName: {{ $k.tls.caSecret.name }}
    defaultMode: 0444
    items:
      - key: {{ $k.tls.caSecret.key }}
        path: {{ $k.tls.caSecret.key }}
{{- end }}
{{- if $k.tls.clientCertSecret.name }}
- name: medic-agent-tls-client
  secret:
    secretName: {{ $k.tls.clientCertSecret.name }}
    defaultMode: 0440
    items:
      - key: {{ $k.tls.clientCertSecret.certKey }}
        path: {{ $k.tls.clientCertSecret.certKey }}
      - key: {{ $k.tls.clientCertSecret.keyKey }}
        path: {{ $k.tls.clientCertSecret.keyKey }}
{{- end }}
{{- end }}
