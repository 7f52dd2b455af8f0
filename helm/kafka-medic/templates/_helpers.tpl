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
The namespaces the policies name, as a dict namespace -> {names: sorted Deployment names the
actuator scales there, any: true for a namespace of rbac.extraNamespaces without such a policy
(any Deployment)}. A policy with scaler: keda adds its namespace (the actuator lists the
autoscalers there at start-up) but not its Deployment, which the actuator never reads nor
patches. Fails with a clear message on a policy that lacks a field the chart needs or has a
scaler/on_autoscaler the actuator would refuse.
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
{{- $scaler := toString (default "actuator" $p.scaler) }}
{{- $onAutoscaler := toString (default "refuse" $p.on_autoscaler) }}
{{- if not (has $scaler (list "actuator" "keda")) }}
{{- fail (printf "actuator.policies[%d] (%s/%s): scaler must be actuator or keda; got %q" $i $p.cluster $p.consumergroup $scaler) }}
{{- end }}
{{- if not (has $onAutoscaler (list "refuse" "raise_min_replicas")) }}
{{- fail (printf "actuator.policies[%d] (%s/%s): on_autoscaler must be refuse or raise_min_replicas; got %q" $i $p.cluster $p.consumergroup $onAutoscaler) }}
{{- end }}
{{- if and (eq $scaler "keda") (eq $onAutoscaler "raise_min_replicas") }}
{{- fail (printf "actuator.policies[%d] (%s/%s): on_autoscaler: raise_min_replicas does not go with scaler: keda (KEDA scales that Deployment from the External Scaler's answers; the actuator changes nothing on it)" $i $p.cluster $p.consumergroup) }}
{{- end }}
{{- if and (eq $scaler "keda") (not $.Values.actuator.keda.enabled) }}
{{- fail (printf "actuator.policies[%d] (%s/%s): scaler: keda needs actuator.keda.enabled=true (KEDA reaches the actuator's External Scaler on that port; without it nothing would scale %s/%s)" $i $p.cluster $p.consumergroup $p.deployment.namespace $p.deployment.name) }}
{{- end }}
{{- $t := get $targets $p.deployment.namespace | default (dict "names" list "any" false) }}
{{- if eq $scaler "actuator" }}
{{- $_ := set $t "names" (append $t.names $p.deployment.name | uniq | sortAlpha) }}
{{- end }}
{{- $_ := set $targets $p.deployment.namespace $t }}
{{- end }}
{{- range $ns := .Values.actuator.rbac.extraNamespaces }}
{{- $t := get $targets $ns | default (dict "names" list "any" false) }}
{{- if not $t.names }}
{{- $_ := set $t "any" true }}
{{- end }}
{{- $_ := set $targets $ns $t }}
{{- end }}
{{- toJson $targets }}
{{- end }}

{{/*
The namespaces of the policies with on_autoscaler: raise_min_replicas, as a sorted JSON list:
there the actuator gets and patches HorizontalPodAutoscalers and ScaledObjects.
*/}}
{{- define "kafka-medic.actuator.raiseNamespaces" -}}
{{- $nss := list }}
{{- range $p := .Values.actuator.policies }}
{{- if and $p.deployment (eq (toString $p.on_autoscaler) "raise_min_replicas") }}
{{- $nss = append $nss $p.deployment.namespace }}
{{- end }}
{{- end }}
{{- $nss | uniq | sortAlpha | toJson }}
{{- end }}

{{/*
KEDA's External Scaler: checks actuator.keda and fails with a message naming the value.
*/}}
{{- define "kafka-medic.actuator.validateKeda" -}}
{{- $k := .Values.actuator.keda }}
{{- if and $k.tls.requireClientCert (not $k.tls.existingSecret) }}
{{- fail "actuator.keda.tls.requireClientCert needs actuator.keda.tls.existingSecret: the client CA (ca.crt) and the server certificate come from that kubernetes.io/tls Secret (mutual TLS is TLS with a client certificate)" }}
{{- end }}
{{- if and $k.tls.existingSecret (not $k.enabled) }}
{{- fail "actuator.keda.tls.existingSecret needs actuator.keda.enabled=true (it secures the External Scaler port, which is off)" }}
{{- end }}
{{- if $k.enabled }}
{{- $numeric := or (kindIs "float64" $k.port) (kindIs "int64" $k.port) (kindIs "int" $k.port) }}
{{- if or (not $numeric) (ne (float64 $k.port) (float64 (int $k.port))) (lt (int $k.port) 1) (gt (int $k.port) 65535) }}
{{- fail (printf "actuator.keda.port must be a port number from 1 to 65535; got %v" $k.port) }}
{{- end }}
{{- if eq (int $k.port) (int .Values.actuator.containerPort) }}
{{- fail (printf "actuator.keda.port %v is actuator.containerPort, the webhook's: the External Scaler needs a port of its own" $k.port) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The External Scaler address of this release, as KEDA's scalerAddress: <Service>.<namespace>.svc:<port>. */}}
{{- define "kafka-medic.actuator.kedaAddress" -}}
{{- printf "%s.%s.svc:%v" (include "kafka-medic.actuator.fullname" .) .Release.Namespace .Values.actuator.keda.port }}
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
