{{/* The chart name, overridable. */}}
{{- define "bookstore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the operator's objects: `<release>-operator`, or the release
name if it already says `bookstore-operator`. With `helm install bookstore`
that is `bookstore-operator`, the name the operator assumes by default.
*/}}
{{- define "bookstore.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains "bookstore-operator" .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "bookstore.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of the operator's pods and the selector of its Service. The name is
`<chart>-operator`, never `bookstore`: store pods carry
app.kubernetes.io/name=bookstore and the NetworkPolicies tell them apart.
*/}}
{{- define "bookstore.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bookstore.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object of the chart. */}}
{{- define "bookstore.labels" -}}
helm.sh/chart: {{ include "bookstore.chart" . }}
{{ include "bookstore.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bookstore
{{- end }}

{{/* Labels the operator puts on every pod of every store. */}}
{{- define "bookstore.storePodLabels" -}}
app.kubernetes.io/name: bookstore
app.kubernetes.io/managed-by: bookstore-operator
{{- end }}

{{/* The coordinator base URL as the stores' pods reach it: this chart's Service. */}}
{{- define "bookstore.operatorURL" -}}
{{- printf "http://%s.%s.svc:%v" (include "bookstore.fullname" .) .Release.Namespace .Values.service.coordinatorPort }}
{{- end }}

{{/* Namespaces with store pods that get a NetworkPolicy. */}}
{{- define "bookstore.networkPolicyNamespaces" -}}
{{- if .Values.networkPolicy.storeNamespaces }}
{{- toYaml (uniq .Values.networkPolicy.storeNamespaces) }}
{{- else }}
{{- toYaml (list .Release.Namespace) }}
{{- end }}
{{- end }}
