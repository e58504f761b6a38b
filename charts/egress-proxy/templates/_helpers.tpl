{{/*
Helpers of the egress-proxy chart.

Calling convention. Helpers that only name or label things take the chart's scope: `.`
inside this chart, `(index .Subcharts "egress-proxy")` from a chart that depends on it
(that scope has this chart's Values, Chart, Release and Files). The public templates that
render objects or container specs (_sidecar.tpl, _gateway.tpl) take a dict:

  scope   this chart's scope, as above (required)
  config  the `kind: proxy` YAML text the proxy loads (required); ports, drain time and
          upstream ports are read from it so the pod spec always agrees with the proxy

The restricted securityContext helpers take plain maps so an application chart can use the
same ones for its own containers (one helper everywhere).
*/}}

{{/* egress-proxy.name: fixed; egress-gen's gateway policies select app.kubernetes.io/name: egress-proxy. */}}
{{- define "egress-proxy.name" -}}
egress-proxy
{{- end }}

{{/* egress-proxy.fullname: fullnameOverride, or <release>-egress-proxy (the release name if it already contains it). */}}
{{- define "egress-proxy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains "egress-proxy" .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-egress-proxy" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* egress-proxy.chart: chart name and version for the helm.sh/chart label. */}}
{{- define "egress-proxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* egress-proxy.selectorLabels: the gateway pods' immutable selector. */}}
{{- define "egress-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "egress-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{/* egress-proxy.commonLabels: labels every object of this chart carries (no name/component). */}}
{{- define "egress-proxy.commonLabels" -}}
helm.sh/chart: {{ include "egress-proxy.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: egress-guard
{{- end }}

{{/* egress-proxy.labels: labels of the gateway objects. */}}
{{- define "egress-proxy.labels" -}}
{{ include "egress-proxy.commonLabels" . }}
app.kubernetes.io/name: {{ include "egress-proxy.name" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{/* egress-proxy.serviceAccountName: the gateway's ServiceAccount. */}}
{{- define "egress-proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "egress-proxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* egress-proxy.image: repository:tag@digest from an image map {repository, tag, digest}. */}}
{{- define "egress-proxy.image" -}}
{{- printf "%s:%s@%s" .repository .tag .digest }}
{{- end }}

{{/*
egress-proxy.appArmorProfile: an appArmorProfile field from {type, localhostProfile}.
Only RuntimeDefault and Localhost (the schema excludes Unconfined).
*/}}
{{- define "egress-proxy.appArmorProfile" -}}
type: {{ .type }}
{{- if eq .type "Localhost" }}
localhostProfile: {{ required "appArmorProfile.localhostProfile is required when type is Localhost" .localhostProfile | quote }}
{{- end }}
{{- end }}

{{/*
egress-proxy.securityContext.pod: the restricted pod securityContext.
Takes {runAsUser, runAsGroup}: non-root numeric IDs (the schemas require >= 1).
The pod-level AppArmor profile is RuntimeDefault; containers may narrow it to Localhost.
*/}}
{{- define "egress-proxy.securityContext.pod" -}}
runAsNonRoot: true
runAsUser: {{ int .runAsUser }}
runAsGroup: {{ int .runAsGroup }}
seccompProfile:
  type: RuntimeDefault
appArmorProfile:
  type: RuntimeDefault
{{- end }}

{{/*
egress-proxy.securityContext.container: the restricted container securityContext used by
every container, init container, sidecar and test pod of both charts.
Takes {runAsUser, runAsGroup, appArmorProfile: {type, localhostProfile}}.
*/}}
{{- define "egress-proxy.securityContext.container" -}}
runAsNonRoot: true
runAsUser: {{ int .runAsUser }}
runAsGroup: {{ int .runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
appArmorProfile:
  {{- include "egress-proxy.appArmorProfile" .appArmorProfile | nindent 2 }}
{{- end }}

{{/* egress-proxy.configText: this chart's own config: config.inline, else files/proxy.yaml. */}}
{{- define "egress-proxy.configText" -}}
{{- if .Values.config.inline }}
{{- .Values.config.inline }}
{{- else }}
{{- .Files.Get "files/proxy.yaml" }}
{{- end }}
{{- end }}

{{/*
egress-proxy.settings: what the chart needs from the proxy config, as JSON
(use `fromJson (include "egress-proxy.settings" $args)`):
  port, adminPort       listeners (proxy.port, proxy.admin_port; defaults 3128, 9901)
  drainMs               proxy.limits.drain_timeout_ms (default 20000)
  upstreamPorts         every allowlist port, file order, unique (default [443] per entry)
  upstreamCidrs, deniedCidrs, allowCidrs   the address lists (for the gateway NetworkPolicy)
  deniedListed          whether the file lists denied_cidrs (egress-gen writes every default)
Fails when the text is empty, not YAML, or not a `kind: proxy` document.
*/}}
{{- define "egress-proxy.settings" -}}
{{- if not .config }}
{{- fail "egress-proxy: the proxy config is empty (render it with `egress-gen render` or `make policies`)" }}
{{- end }}
{{- $doc := fromYaml .config }}
{{- if hasKey $doc "Error" }}
{{- fail (printf "egress-proxy: the proxy config is not valid YAML: %s" (get $doc "Error")) }}
{{- end }}
{{- if ne (toString (get $doc "kind")) "proxy" }}
{{- fail "egress-proxy: the proxy config must be the `kind: proxy` file egress-gen renders (policies/<deployment>/proxy.yaml)" }}
{{- end }}
{{- $p := get $doc "proxy" | default dict }}
{{- $limits := get $p "limits" | default dict }}
{{- $ports := list }}
{{- range (get $doc "allowlist" | default list) }}
{{- range (get . "ports" | default (list 443)) }}
{{- $ports = append $ports (int .) }}
{{- end }}
{{- end }}
{{- $upstream := get $doc "upstream_cidrs" | default (list "0.0.0.0/0" "::/0") }}
{{- dict "port" (int (get $p "port" | default 3128)) "adminPort" (int (get $p "admin_port" | default 9901)) "drainMs" (int (get $limits "drain_timeout_ms" | default 20000)) "upstreamPorts" (uniq $ports) "upstreamCidrs" $upstream "deniedListed" (hasKey $doc "denied_cidrs") "deniedCidrs" (get $doc "denied_cidrs" | default list) "allowCidrs" (get $doc "allow_cidrs" | default list) | toJson }}
{{- end }}

{{/* egress-proxy.configChecksum: pod annotation that rolls pods when the config changes. Takes the args dict. */}}
{{- define "egress-proxy.configChecksum" -}}
checksum/egress-proxy-config: {{ .config | sha256sum }}
{{- end }}

{{/*
egress-proxy.drainSeconds: the config's drain time rounded up to whole seconds. Takes the
args dict. A pod running the proxy needs terminationGracePeriodSeconds above this.
*/}}
{{- define "egress-proxy.drainSeconds" -}}
{{- $s := fromJson (include "egress-proxy.settings" .) -}}
{{- div (add (int $s.drainMs) 999) 1000 }}
{{- end }}

{{/*
egress-proxy.checkGracePeriod: fails unless grace > drain (+ preStop). Takes
{args, grace, preStop, what} where args is the args dict.
*/}}
{{- define "egress-proxy.checkGracePeriod" -}}
{{- $s := fromJson (include "egress-proxy.settings" .args) }}
{{- $needMs := add (int $s.drainMs) (mul (int (default 0 .preStop)) 1000) -}}
{{- if le (mul (int .grace) 1000) $needMs }}
{{- fail (printf "%s: terminationGracePeriodSeconds (%d) must exceed the proxy's drain_timeout_ms (%d ms) plus the preStop sleep (%d s)" .what (int .grace) (int $s.drainMs) (int (default 0 .preStop))) }}
{{- end }}
{{- end }}
