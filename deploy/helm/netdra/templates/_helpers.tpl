{{/* The name of every object of a release: the release's name. */}}
{{- define "netdra.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "netdra.labels" -}}
app.kubernetes.io/name: netdra
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* The agent's ServiceAccount as the API server names its requests. */}}
{{- define "netdra.user" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "netdra.name" . }}
{{- end -}}

{{/* The driver's plugin directory on the host (and in the agent's pod: the same path). */}}
{{- define "netdra.pluginDir" -}}
{{ .Values.kubeletRootDir }}/plugins/{{ .Values.driverName }}
{{- end -}}

{{/* The metrics port, from host:port. */}}
{{- define "netdra.metricsPort" -}}
{{- regexReplaceAll "^.*:" .Values.metricsAddress "" -}}
{{- end -}}

{{/* Where the kubelet's probes connect: the listener's own address, or loopback for a
wildcard one (the pod shares the node's network, so the kubelet reaches it there). */}}
{{- define "netdra.probeHost" -}}
{{- $host := regexReplaceAll ":[0-9]+$" .Values.metricsAddress "" | trimPrefix "[" | trimSuffix "]" -}}
{{- if or (eq $host "0.0.0.0") (eq $host "::") (eq $host "") -}}
127.0.0.1
{{- else -}}
{{ $host }}
{{- end -}}
{{- end -}}
