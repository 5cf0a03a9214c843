{{/*
Names, labels and the small decisions more than one template needs.
Everything that two templates must agree on (a Secret's name and key, whether
Redis is configured, the effective replica count) is decided once here.
*/}}

{{/* Chart name, overridable. */}}
{{- define "clearout-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. Kubernetes names are DNS labels (63 characters);
a release already named after the chart is not repeated.
*/}}
{{- define "clearout-gateway.fullname" -}}
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

{{/* chart-version, as used by the helm.sh/chart label. */}}
{{- define "clearout-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "clearout-gateway.labels" -}}
helm.sh/chart: {{ include "clearout-gateway.chart" . }}
{{ include "clearout-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: clearout-gateway
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the gateway's pods; immutable once installed. */}}
{{- define "clearout-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "clearout-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "clearout-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "clearout-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "clearout-gateway.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Secrets. The chart creates one Secret holding whichever tokens were given
inline; a token named by an existing Secret never passes through the chart.
Each helper below prints a name or key, or nothing when that token is absent.
*/}}
{{- define "clearout-gateway.secretName" -}}
{{- printf "%s-credentials" (include "clearout-gateway.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "clearout-gateway.upstreamSecretName" -}}
{{- if .Values.upstream.existingSecret }}
{{- .Values.upstream.existingSecret }}
{{- else if .Values.upstream.token }}
{{- include "clearout-gateway.secretName" . }}
{{- end }}
{{- end }}

{{- define "clearout-gateway.upstreamSecretKey" -}}
{{- if .Values.upstream.existingSecret }}
{{- .Values.upstream.existingSecretKey | default "token" }}
{{- else }}
{{- print "upstream-token" }}
{{- end }}
{{- end }}

{{- define "clearout-gateway.adminSecretName" -}}
{{- if .Values.admin.existingSecret }}
{{- .Values.admin.existingSecret }}
{{- else if .Values.admin.token }}
{{- include "clearout-gateway.secretName" . }}
{{- end }}
{{- end }}

{{- define "clearout-gateway.adminSecretKey" -}}
{{- if .Values.admin.existingSecret }}
{{- .Values.admin.existingSecretKey | default "token" }}
{{- else }}
{{- print "admin-token" }}
{{- end }}
{{- end }}

{{/* "true" when the chart itself must create the credentials Secret. */}}
{{- define "clearout-gateway.createSecret" -}}
{{- if or (and .Values.upstream.token (not .Values.upstream.existingSecret)) (and .Values.admin.token (not .Values.admin.existingSecret)) }}
{{- print "true" }}
{{- end }}
{{- end }}

{{/* Where token files appear inside the container. */}}
{{- define "clearout-gateway.credentialsDir" -}}
/etc/clearout-gateway/credentials
{{- end }}

{{- define "clearout-gateway.teamsDir" -}}
/etc/clearout-gateway/teams
{{- end }}

{{/* "true" when a Redis URL reaches the gateway from either source. */}}
{{- define "clearout-gateway.redisConfigured" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret (and (eq .Values.redis.mode "sentinel") .Values.redis.sentinels) }}
{{- print "true" }}
{{- end }}
{{- end }}

{{/* The replica count the workload can reach: HPA maximum or replicaCount. */}}
{{- define "clearout-gateway.maxReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- .Values.autoscaling.maxReplicas | int }}
{{- else }}
{{- .Values.replicaCount | int }}
{{- end }}
{{- end }}

{{/* The replica count the workload keeps at least: HPA minimum or replicaCount. */}}
{{- define "clearout-gateway.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- .Values.autoscaling.minReplicas | int }}
{{- else }}
{{- .Values.replicaCount | int }}
{{- end }}
{{- end }}

{{/* The port name Prometheus scrapes: the separate metrics port or http. */}}
{{- define "clearout-gateway.metricsPortName" -}}
{{- if .Values.metrics.separatePort.enabled }}metrics{{ else }}http{{ end }}
{{- end }}

{{/*
Refuse combinations that would install but misbehave. Called from the
Deployment so every render checks them.
*/}}
{{- define "clearout-gateway.validate" -}}
{{- if and (gt (include "clearout-gateway.maxReplicas" . | int) 1) (not (include "clearout-gateway.redisConfigured" .)) }}
{{- fail "clearout-gateway: more than one replica needs Redis (set redis.url or redis.existingSecret): without it every pod keeps its own cache, quotas and list ownership" }}
{{- end }}
{{- if not (has .Values.redis.mode (list "standalone" "cluster" "sentinel")) }}
{{- fail (printf "clearout-gateway: redis.mode must be standalone, cluster or sentinel, got %q" .Values.redis.mode) }}
{{- end }}
{{- if and (eq .Values.redis.mode "sentinel") (not .Values.redis.sentinels) }}
{{- fail "clearout-gateway: redis.mode=sentinel needs redis.sentinels (host:port entries)" }}
{{- end }}
{{- if and .Values.redis.url .Values.redis.existingSecret }}
{{- fail "clearout-gateway: set only one of redis.url and redis.existingSecret" }}
{{- end }}
{{- end }}
