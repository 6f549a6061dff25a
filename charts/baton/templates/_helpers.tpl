{{/* The chart name, or nameOverride. */}}
{{- define "baton.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, else "<release>-<name>", or just the release
name when it already contains the chart name (release "baton" → "baton").
*/}}
{{- define "baton.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "baton.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels selecting the operator pods (stable across upgrades: a Deployment's selector is immutable). */}}
{{- define "baton.selectorLabels" -}}
app.kubernetes.io/name: {{ include "baton.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels of every resource the chart renders. */}}
{{- define "baton.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "baton.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: baton
{{- end }}

{{- define "baton.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "baton.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is set. */}}
{{- define "baton.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "baton.webhookName" -}}
{{- printf "%s-sidecar-injector" (include "baton.fullname" .) }}
{{- end }}

{{/* The Secret holding the webhook's serving certificate (made by the operator, or by cert-manager). */}}
{{- define "baton.webhookCertSecret" -}}
{{- printf "%s-webhook-cert" (include "baton.fullname" .) }}
{{- end }}

{{/* The cert-manager Certificate of the webhook (named in cert-manager.io/inject-ca-from). */}}
{{- define "baton.webhookCertificate" -}}
{{- printf "%s-webhook" (include "baton.fullname" .) }}
{{- end }}

{{/*
Whether to render a Prometheus Operator kind: `enabled` true or false decides, "auto" asks the
cluster whether it serves that kind (`helm template` without a cluster: pass
--api-versions monitoring.coreos.com/v1/<Kind>). Returns "true" or "".
Call with (list $ .Values.monitoring.serviceMonitor.enabled "ServiceMonitor").
*/}}
{{- define "baton.monitoringEnabled" -}}
{{- $root := index . 0 }}
{{- $enabled := toString (index . 1) }}
{{- if or (eq $enabled "true") (and (eq $enabled "auto") ($root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" (index . 2)))) -}}
true
{{- end }}
{{- end }}

{{/*
Rules of files/operator-rbac.yaml as YAML. Their resourceNames are the operator's default object
names; each becomes the name(s) the chart gives that object: the release's webhook configuration
and certificate Secret, and the admin-token Secret names of rbac.adminTokenSecretNames.
Call with (list $ rules).
*/}}
{{- define "baton.rules" -}}
{{- $root := index . 0 }}
{{- $names := dict "baton-sidecar-injector" (list (include "baton.webhookName" $root)) "baton-webhook-cert" (list (include "baton.webhookCertSecret" $root)) "baton-admin" $root.Values.rbac.adminTokenSecretNames }}
{{- $rules := list }}
{{- range index . 1 }}
{{- $rule := deepCopy . }}
{{- if hasKey $rule "resourceNames" }}
{{- $renamed := list }}
{{- range $rule.resourceNames }}
{{- $renamed = concat $renamed (get $names . | default (list .)) }}
{{- end }}
{{- $_ := set $rule "resourceNames" $renamed }}
{{- end }}
{{- $rules = append $rules $rule }}
{{- end }}
{{- toYaml $rules }}
{{- end }}
