{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "snapblock.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: release + chart name, unless the release already says snapblock. */}}
{{- define "snapblock.fullname" -}}
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

{{- define "snapblock.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The standard app.kubernetes.io labels of every object. */}}
{{- define "snapblock.labels" -}}
helm.sh/chart: {{ include "snapblock.chart" . }}
{{ include "snapblock.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: snapblock
{{- end }}

{{- define "snapblock.selectorLabels" -}}
app.kubernetes.io/name: {{ include "snapblock.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component; call with (dict "root" $ "component" "controller"). */}}
{{- define "snapblock.componentLabels" -}}
{{ include "snapblock.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "snapblock.componentSelectorLabels" -}}
{{ include "snapblock.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "snapblock.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (printf "%s-controller" (include "snapblock.fullname" .)) .Values.controller.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "snapblock.node.serviceAccountName" -}}
{{- if .Values.node.serviceAccount.create }}
{{- default (printf "%s-node" (include "snapblock.fullname" .)) .Values.node.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.node.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given; fails on a missing tag. */}}
{{- define "snapblock.image" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- $tag := required (printf "a tag or digest is required for %s" .repository) .tag }}
{{- if eq (toString $tag) "latest" }}
{{- fail (printf "%s: pin a version, not latest" .repository) }}
{{- end }}
{{- printf "%s:%s" .repository (toString $tag) }}
{{- end }}
{{- end }}

{{- define "snapblock.mainImage" -}}
{{- $img := deepCopy .Values.image }}
{{- if not $img.tag }}{{ $_ := set $img "tag" .Chart.AppVersion }}{{ end }}
{{- include "snapblock.image" $img }}
{{- end }}

{{/* The kubelet's plugin directory of this driver (where the node socket lives on the host). */}}
{{- define "snapblock.pluginDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .Values.node.kubeletDir) .Values.driverName }}
{{- end }}

{{/* The Secret holding the engine CA (tls.crt: its certificate, tls.key: its key); only the controller mounts it. */}}
{{- define "snapblock.tls.caSecret" -}}
{{- if eq .Values.tls.mode "existingSecret" }}
{{- required "tls.existingSecret.ca is required with tls.mode=existingSecret" .Values.tls.existingSecret.ca }}
{{- else }}
{{- printf "%s-engine-ca" (include "snapblock.fullname" .) }}
{{- end }}
{{- end }}

{{/* The ConfigMap where the controller publishes the engine CA certificate for the node plugins. */}}
{{- define "snapblock.tls.caConfigMap" -}}
{{- printf "%s-engine-ca" (include "snapblock.fullname" .) }}
{{- end }}

{{- define "snapblock.tls.checkMode" -}}
{{- if not (has .Values.tls.mode (list "generate" "existingSecret" "certManager")) }}
{{- fail (printf "tls.mode %q: use generate, existingSecret or certManager" .Values.tls.mode) }}
{{- end }}
{{- end }}
