{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "nlu-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name when it already contains the chart name, else both. */}}
{{- define "nlu-operator.fullname" -}}
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

{{- define "nlu-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "nlu-operator.labels" -}}
helm.sh/chart: {{ include "nlu-operator.chart" . }}
app.kubernetes.io/name: {{ include "nlu-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nlu-operator
{{- end }}

{{/* Selector labels of the operator pods. */}}
{{- define "nlu-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nlu-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "nlu-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nlu-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* True (non-empty) when the chart runs its own Redis. */}}
{{- define "nlu-operator.redis.inCluster" -}}
{{- if and (not .Values.redis.url) (not .Values.redis.existingSecret) }}true{{ end }}
{{- end }}

{{- define "nlu-operator.redis.fullname" -}}
{{- printf "%s-redis" (include "nlu-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Secret (release namespace) whose `url` key the operator reads the Redis URL from. */}}
{{- define "nlu-operator.redis.secretName" -}}
{{- default (include "nlu-operator.redis.fullname" .) .Values.redis.existingSecret }}
{{- end }}

{{- define "nlu-operator.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nlu-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{/* An image reference from `repository`, `tag` (default: the second argument) and `digest`:
`repo:tag`, or `repo:tag@sha256:...` when pinned (the digest decides; the tag is for people). */}}
{{- define "nlu-operator.imageRef" -}}
{{- $image := index . 0 }}
{{- $ref := printf "%s:%s" $image.repository (default (index . 1) $image.tag) }}
{{- if $image.digest }}{{ $ref = printf "%s@%s" $ref $image.digest }}{{ end }}
{{- $ref }}
{{- end }}

{{- define "nlu-operator.image" -}}
{{- include "nlu-operator.imageRef" (list .Values.image .Chart.AppVersion) }}
{{- end }}

{{- define "nlu-operator.serverImage" -}}
{{- include "nlu-operator.imageRef" (list .Values.serverImage .Chart.AppVersion) }}
{{- end }}
