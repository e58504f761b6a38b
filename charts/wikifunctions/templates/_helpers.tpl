{{/*
Helpers of the wikifunctions chart. The restricted securityContext helpers and the proxy's
sidecar/gateway templates come from the egress-proxy dependency (one helper everywhere).
*/}}

{{/* wikifunctions.fullname: fullnameOverride, the release name if it contains "wikifunctions", else <release>-wikifunctions. */}}
{{- define "wikifunctions.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else if contains "wikifunctions" .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-wikifunctions" .Release.Name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* wikifunctions.chart: chart name and version for the helm.sh/chart label. */}}
{{- define "wikifunctions.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Workloads: {name, app, component, values} per workload. `app` is the label egress-gen's
policies select (config/wikifunctions.yaml workloads[].selector), `port` the port it serves.
*/}}
{{- define "wikifunctions.workloads" -}}
orchestrator:
  name: function-orchestrator
  component: orchestrator
  port: 6254
evaluator:
  name: function-evaluator
  component: evaluator
  port: 6927
{{- end }}

{{/* wikifunctions.workload: one entry of wikifunctions.workloads as JSON. Takes {root, key}. */}}
{{- define "wikifunctions.workload" -}}
{{- get (fromYaml (include "wikifunctions.workloads" .root)) .key | toJson }}
{{- end }}

{{/* wikifunctions.name: <fullname>-<component>, e.g. wf-wikifunctions-orchestrator. Takes {root, key}. */}}
{{- define "wikifunctions.name" -}}
{{- printf "%s-%s" (include "wikifunctions.fullname" .root) .key | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* wikifunctions.selectorLabels: immutable Deployment selector, including the label the policies select. Takes {root, key}. */}}
{{- define "wikifunctions.selectorLabels" -}}
{{- $w := fromJson (include "wikifunctions.workload" .) -}}
app: {{ $w.name }}
app.kubernetes.io/name: {{ $w.name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{/* wikifunctions.labels: labels of a workload's objects and pods. Takes {root, key}. */}}
{{- define "wikifunctions.labels" -}}
{{- $w := fromJson (include "wikifunctions.workload" .) -}}
helm.sh/chart: {{ include "wikifunctions.chart" .root }}
{{ include "wikifunctions.selectorLabels" . }}
app.kubernetes.io/component: {{ $w.component }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: wikifunctions
{{- end }}

{{/* wikifunctions.serviceAccountName: the workload's ServiceAccount. Takes {root, key}. */}}
{{- define "wikifunctions.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create }}
{{- include "wikifunctions.name" . }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{/* wikifunctions.image: repository:tag@digest. */}}
{{- define "wikifunctions.image" -}}
{{- include "egress-proxy.image" . }}
{{- end }}

{{/* wikifunctions.evaluatorHost: the evaluator Service's cluster DNS name. */}}
{{- define "wikifunctions.evaluatorHost" -}}
{{- printf "%s.%s.svc.%s" (include "wikifunctions.name" (dict "root" . "key" "evaluator")) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* wikifunctions.evaluatorUrl: the URL the orchestrator calls the evaluator at. */}}
{{- define "wikifunctions.evaluatorUrl" -}}
{{- printf "http://%s:6927%s" (include "wikifunctions.evaluatorHost" .) .Values.orchestrator.evaluatorPath }}
{{- end }}

{{/*
wikifunctions.proxyConfig: files/proxy.yaml (rendered by egress-gen), or a clear failure. The args dict the egress-proxy
templates take cannot be returned by a template, so each caller builds it:
  {{- $proxy := dict "scope" (index .Subcharts "egress-proxy") "config" (include "wikifunctions.proxyConfig" .) }}
*/}}
{{- define "wikifunctions.proxyConfig" -}}
{{- $c := .Files.Get "files/proxy.yaml" -}}
{{- if not $c }}
{{- fail "wikifunctions: files/proxy.yaml is missing; run `make policies` (egress-gen chart) to render it from config/wikifunctions.yaml" }}
{{- end }}
{{- $c }}
{{- end }}

{{/* wikifunctions.probes: startup, readiness and liveness probes on the named http port. Takes the workload's values. */}}
{{- define "wikifunctions.probes" -}}
{{- $p := .probes -}}
{{- range $kind := list "startup" "readiness" "liveness" }}
{{- $q := get $p $kind }}
{{ $kind }}Probe:
  {{- if $p.httpPath }}
  httpGet:
    path: {{ $p.httpPath }}
    port: http
  {{- else }}
  tcpSocket:
    port: http
  {{- end }}
  periodSeconds: {{ $q.periodSeconds }}
  failureThreshold: {{ $q.failureThreshold }}
  timeoutSeconds: {{ $q.timeoutSeconds }}
{{- end }}
{{- end }}

{{/* wikifunctions.scheduling: nodeSelector, tolerations, affinity, topology spread. Takes {root, key}. */}}
{{- define "wikifunctions.scheduling" -}}
{{- $v := get .root.Values .key -}}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
topologySpreadConstraints:
  {{- if $v.topologySpreadConstraints }}
  {{- toYaml $v.topologySpreadConstraints | nindent 2 }}
  {{- else }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "wikifunctions.selectorLabels" . | nindent 8 }}
  {{- end }}
{{- end }}
