{{/* The sidecar-injection webhook's Service (its certificate names it). */}}
{{- define "mapchaos.webhookService" -}}
{{- printf "%s-webhook" (include "mapchaos.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The TLS Secret the webhook serves with (tls.crt, tls.key). */}}
{{- define "mapchaos.webhookSecret" -}}
{{- if eq .Values.webhook.certificates.mode "secret" }}
{{- required "webhook.certificates.existingSecret is required with mode: secret" .Values.webhook.certificates.existingSecret }}
{{- else }}
{{- printf "%s-webhook-tls" (include "mapchaos.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* "true" when the operator serves HTTPS admission webhooks: sidecar injection, the
     MapChaos admission webhooks, or both. */}}
{{- define "mapchaos.webhookServer" -}}
{{- if or .Values.webhook.enabled .Values.guardrails.admission.enabled }}true{{ end }}
{{- end }}

{{/* The MapChaos admission webhook configurations (validating and mutating). */}}
{{- define "mapchaos.admissionName" -}}
{{- printf "%s-admission" (include "mapchaos.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Where the webhook's TLS Secret is mounted. */}}
{{- define "mapchaos.webhookTLSDir" -}}/etc/mapchaos/webhook-tls{{- end }}

{{/* The injected sidecar's image: its own setting, or the operator's. */}}
{{- define "mapchaos.sidecarImage" -}}
{{- default (include "mapchaos.image" .) .Values.webhook.sidecar.image }}
{{- end }}

{{/* One MapChaos admission webhook entry (after its name): root, path, caBundle. */}}
{{- define "mapchaos.admissionWebhook" -}}
{{- $root := .root -}}
admissionReviewVersions: ["v1"]
sideEffects: None
failurePolicy: {{ $root.Values.guardrails.admission.failurePolicy }}
timeoutSeconds: {{ $root.Values.guardrails.admission.timeoutSeconds }}
matchPolicy: Equivalent
clientConfig:
  service:
    name: {{ include "mapchaos.webhookService" $root }}
    namespace: {{ $root.Release.Namespace }}
    path: {{ .path }}
    port: 443
  {{- with .caBundle }}
  caBundle: {{ . }}
  {{- end }}
rules:
  - operations: ["CREATE", "UPDATE"]
    apiGroups: ["mapchaos.io"]
    apiVersions: ["*"]
    resources: ["mapchaos"]
    scope: Namespaced
{{- end }}
