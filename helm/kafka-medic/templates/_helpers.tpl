{{/*
The chart name, or nameOverride. Truncated to 63 characters (the DNS label limit).
*/}}
{{- define "kafka-medic.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified app name: fullnameOverride, else <release>-<chart name> (only the release
name when it already contains the chart name). Truncated to 63 characters.
*/}}
{{- define "kafka-medic.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The name of one component's objects: <fullname>-<component>, the whole truncated to 63
characters so that the suffix is never cut off.
Usage: include "kafka-medic.componentName" (list $ "actuator")
*/}}
{{- define "kafka-medic.componentName" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- $full := include "kafka-medic.fullname" $root }}
{{- printf "%s-%s" ($full | trunc (int (sub 62 (len $component))) | trimSuffix "-") $component }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "kafka-medic.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "kafka-medic.labels" -}}
helm.sh/chart: {{ include "kafka-medic.chart" . }}
{{ include "kafka-medic.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kafka-medic
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels (stable across upgrades: never add a label here that can change).
*/}}
{{- define "kafka-medic.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kafka-medic.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels and selector labels of one component. Usage: include "kafka-medic.componentLabels" (list $ "actuator")
*/}}
{{- define "kafka-medic.componentLabels" -}}
{{ include "kafka-medic.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "kafka-medic.componentSelectorLabels" -}}
{{ include "kafka-medic.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
An image reference: repository:tag (tag defaults to the chart's appVersion), or
repository@digest when a digest is given.
Usage: include "kafka-medic.image" (list $ .Values.actuator.image)
*/}}
{{- define "kafka-medic.image" -}}
{{- $root := index . 0 }}
{{- $image := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag | toString) }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- actuator */}}

{{- define "kafka-medic.actuator.fullname" -}}
{{- include "kafka-medic.componentName" (list . "actuator") }}
{{- end }}

{{- define "kafka-medic.actuator.serviceAccountName" -}}
{{- if .Values.actuator.serviceAccount.create }}
{{- default (include "kafka-medic.actuator.fullname" .) .Values.actuator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.actuator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the webhook token: the existing one, or the one the chart creates. */}}
{{- define "kafka-medic.actuator.tokenSecretName" -}}
{{- default (include "kafka-medic.actuator.fullname" .) .Values.actuator.auth.existingSecret }}
{{- end }}

{{/* http or https, depending on whether the actuator serves TLS. */}}
{{- define "kafka-medic.actuator.scheme" -}}
{{- if .Values.actuator.tls.existingSecret }}https{{ else }}http{{ end }}
{{- end }}

{{/* The webhook URL Alertmanager must call. */}}
{{- define "kafka-medic.actuator.webhookUrl" -}}
{{- printf "%s://%s.%s.svc:%v/api/v1/alerts" (include "kafka-medic.actuator.scheme" .) (include "kafka-medic.actuator.fullname" .) .Release.Namespace .Values.actuator.service.port }}
{{- end }}

{{/*
The namespaces and Deployment names the policies name, as a dict namespace -> sorted list of
names. Fails with a clear message on a policy that lacks a field the chart needs.
*/}}
{{- define "kafka-medic.actuator.targets" -}}
{{- $targets := dict }}
{{- range $i, $p := .Values.actuator.policies }}
{{- if not (and $p.cluster $p.consumergroup $p.deployment) }}
{{- fail (printf "actuator.policies[%d]: cluster, consumergroup and deployment (namespace, name) are required; got %s" $i (toJson $p)) }}
{{- end }}
{{- if not (and $p.deployment.namespace $p.deployment.name) }}
{{- fail (printf "actuator.policies[%d] (%s/%s): deployment needs both namespace and name; got %s" $i $p.cluster $p.consumergroup (toJson $p.deployment)) }}
{{- end }}
{{- $names := get $targets $p.deployment.namespace | default list }}
{{- $_ := set $targets $p.deployment.namespace (append $names $p.deployment.name | uniq | sortAlpha) }}
{{- end }}
{{- range $ns := .Values.actuator.rbac.extraNamespaces }}
{{- if not (hasKey $targets $ns) }}
{{- $_ := set $targets $ns list }}
{{- end }}
{{- end }}
{{- toJson $targets }}
{{- end }}

{{/*
The name of the leader-election Lease: actuator.config.leader_election.lease_name, else the
actuator's full name (not the binary's default medic-actuator, so that two releases in one
namespace never share a Lease).
*/}}
{{- define "kafka-medic.actuator.leaseName" -}}
{{- $le := get (default (dict) .Values.actuator.config) "leader_election" | default (dict) }}
{{- default (include "kafka-medic.actuator.fullname" .) (get $le "lease_name") }}
{{- end }}

{{/* The namespace of that Lease: leader_election.namespace, else the release namespace ($POD_NAMESPACE). */}}
{{- define "kafka-medic.actuator.leaseNamespace" -}}
{{- $le := get (default (dict) .Values.actuator.config) "leader_election" | default (dict) }}
{{- default .Release.Namespace (get $le "namespace") }}
{{- end }}

{{/*
The name of the ConfigMap holding the intent of broker actions of one cluster, exactly as
medic-actuator makes it (configmap_name in actuator/src/intent.rs): medic-actuator-intent-<cluster>
when the cluster name is already a lowercase DNS label that fits in 63 characters; otherwise
every character outside [a-z0-9-] (after lowercasing) becomes "-", dashes are trimmed, at most 32
characters are kept, and "-" and the first 8 hex digits of the cluster name's SHA-256 are appended.
Usage: include "kafka-medic.actuator.intentName" "prod"
*/}}
{{- define "kafka-medic.actuator.intentName" -}}
{{- $cluster := toString . }}
{{- $prefix := "medic-actuator-intent-" }}
{{- $clean := regexReplaceAll "[^a-zA-Z0-9-]" $cluster "-" | lower | trimAll "-" }}
{{- if and (eq $clean $cluster) (le (add (len $prefix) (len $clean)) 63) }}
{{- printf "%s%s" $prefix $clean }}
{{- else }}
{{- $hash := sha256sum $cluster | trunc 8 }}
{{- $kept := regexReplaceAll "-+$" ($clean | trunc 32) "" }}
{{- if $kept }}
{{- printf "%s%s-%s" $prefix $kept $hash }}
{{- else }}
{{- printf "%s%s" $prefix $hash }}
{{- end }}
{{- end }}
{{- end }}

{{/* The intent ConfigMap names of the broker clusters of actuator.brokers, as a sorted JSON list. */}}
{{- define "kafka-medic.actuator.intentNames" -}}
{{- $names := list }}
{{- range $i, $b := .Values.actuator.brokers }}
{{- if not $b.cluster }}
{{- fail (printf "actuator.brokers[%d]: cluster is required; got %s" $i (toJson $b)) }}
{{- end }}
{{- $names = append $names (include "kafka-medic.actuator.intentName" $b.cluster) }}
{{- end }}
{{- $names | uniq | sortAlpha | toJson }}
{{- end }}

{{/* ---------------------------------------------------------------- agent */}}

{{- define "kafka-medic.agent.fullname" -}}
{{- include "kafka-medic.componentName" (list . "agent") }}
{{- end }}
