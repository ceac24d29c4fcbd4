{{/* Chart name, overridable. */}}
{{- define "servicekey-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: fullnameOverride, or the release name (plus the chart name unless it is already in it). Kept short enough for the component suffixes. */}}
{{- define "servicekey-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "servicekey-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "servicekey-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: servicekey-operator
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "controller"). */}}
{{- define "servicekey-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "servicekey-operator.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's objects; same argument as selectorLabels. */}}
{{- define "servicekey-operator.componentLabels" -}}
{{ include "servicekey-operator.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The image reference, by digest when one is given. */}}
{{- define "servicekey-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* ServiceAccount names. */}}
{{- define "servicekey-operator.controller.serviceAccountName" -}}
{{- default (printf "%s-controller" (include "servicekey-operator.fullname" .)) .Values.controller.serviceAccount.name }}
{{- end }}
{{- define "servicekey-operator.tokenServer.serviceAccountName" -}}
{{- default (printf "%s-token-server" (include "servicekey-operator.fullname" .)) .Values.tokenServer.serviceAccount.name }}
{{- end }}

{{/* The issuer: the value, else https://<ingress host>, else the in-cluster Service URL. */}}
{{- define "servicekey-operator.issuer" -}}
{{- if .Values.issuer }}
{{- .Values.issuer | trimSuffix "/" }}
{{- else if and .Values.tokenServer.ingress.enabled .Values.tokenServer.ingress.host }}
{{- printf "https://%s" .Values.tokenServer.ingress.host }}
{{- else }}
{{- $url := printf "http://%s-token-server.%s.svc" (include "servicekey-operator.fullname" .) .Release.Namespace }}
{{- if ne (int .Values.tokenServer.service.port) 80 }}
{{- $url = printf "%s:%d" $url (int .Values.tokenServer.service.port) }}
{{- end }}
{{- $url }}
{{- end }}
{{- end }}

{{/* The token endpoint URL: the value, else <issuer>/oauth2/token. The controller writes it into key files; the token server advertises it. */}}
{{- define "servicekey-operator.tokenURL" -}}
{{- default (printf "%s/oauth2/token" (include "servicekey-operator.issuer" .)) .Values.tokenURL }}
{{- end }}

{{/* namespace/name of the signing-key Secret, as both components' --signing-key-secret. */}}
{{- define "servicekey-operator.signingKeyRef" -}}
{{- printf "%s/%s" .Release.Namespace .Values.signingKey.secretName }}
{{- end }}

{{/* Flags both components share: logging. */}}
{{- define "servicekey-operator.logArgs" -}}
- --zap-log-level={{ .Values.logging.level }}
- --zap-encoder={{ .Values.logging.format }}
{{- end }}
