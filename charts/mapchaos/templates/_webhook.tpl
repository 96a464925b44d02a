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

{{/* Where the webhook's TLS Secret is mounted. */}}
{{- define "mapchaos.webhookTLSDir" -}}/etc/mapchaos/webhook-tls{{- end }}

{{/* The injected sidecar's image: its own setting, or the operator's. */}}
{{- define "mapchaos.sidecarImage" -}}
{{- default (include "mapchaos.image" .) .Values.webhook.sidecar.image }}
{{- end }}
