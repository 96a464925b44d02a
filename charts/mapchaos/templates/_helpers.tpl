{{/* Chart name, truncated to 63 characters (DNS label). */}}
{{- define "mapchaos.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-mapchaos, or the release name when it already contains the chart name. */}}
{{- define "mapchaos.fullname" -}}
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

{{- define "mapchaos.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "mapchaos.labels" -}}
helm.sh/chart: {{ include "mapchaos.chart" . }}
{{ include "mapchaos.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mapchaos
{{- end }}

{{/* The operator's selector labels (stable across upgrades). */}}
{{- define "mapchaos.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mapchaos.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "mapchaos.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mapchaos.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the storm-signing key. */}}
{{- define "mapchaos.signingKeySecret" -}}
{{- if .Values.signingKey.existingSecret }}
{{- .Values.signingKey.existingSecret }}
{{- else }}
{{- printf "%s-signing-key" (include "mapchaos.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "mapchaos.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when the operator runs with --leader-election. */}}
{{- define "mapchaos.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* "true" when the Prometheus Operator's API is served (or faked with --api-versions). */}}
{{- define "mapchaos.hasMonitoringAPI" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- end }}

{{/* "true" when a ServiceMonitor for the operator is rendered. */}}
{{- define "mapchaos.serviceMonitorRendered" -}}
{{- if and .Values.monitoring.serviceMonitor.enabled (include "mapchaos.hasMonitoringAPI" .) }}true{{ end }}
{{- end }}

{{/* Where the operator's data lives: the signing key mount. */}}
{{- define "mapchaos.signingKeyDir" -}}/etc/mapchaos/signing-key{{- end }}

{{/* RBAC rules the operator needs wherever it watches MapChaos resources. */}}
{{- define "mapchaos.watchRules" -}}
# MapChaos resources: read and watch them, add/remove the finalizer (an update of the
# object), write status.
- apiGroups: ["mapchaos.io"]
  resources: ["mapchaos"]
  verbs: ["get", "list", "watch", "update", "patch"]
- apiGroups: ["mapchaos.io"]
  resources: ["mapchaos/status"]
  verbs: ["get", "update", "patch"]
- apiGroups: ["mapchaos.io"]
  resources: ["mapchaos/finalizers"]
  verbs: ["update"]
# Target selection: read pods (their labels, annotations, IPs and readiness).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# The guardrails: read the namespaces' opt-in label and existing-keys annotation (a Role
# in a watched namespace lets the operator read that one Namespace).
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
# Kubernetes Events on MapChaos resources (both Event APIs).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Storm reports: one Secret per finished target, owned by its MapChaos; listed by label,
# pruned with historyLimit. The operator never reads a Secret by name (no get).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create", "list", "delete"]
{{- end }}
