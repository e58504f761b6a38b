{{/*
The sidecar API: named templates an application chart includes to run egress-proxy as a
native sidecar (Kubernetes >= 1.29: an init container with restartPolicy Always). The
startup probe (GET /readyz) holds back the application container until the proxy serves;
on shutdown the kubelet stops the sidecar after the application containers, so the pod's
terminationGracePeriodSeconds must exceed the drain time (egress-proxy.checkGracePeriod).

Sidecar mode protects a trusted client (SSRF): the sidecar shares the pod's network
namespace, so NetworkPolicy cannot tell its packets from the application's. Gateway mode
enforces the allowlist (DESIGN.md "Sidecar vs gateway").

Every template takes the args dict {scope, config} (see _helpers.tpl), e.g. in a chart that
lists egress-proxy under dependencies:

  {{- $proxy := dict "scope" (index .Subcharts "egress-proxy") "config" (.Files.Get "files/proxy.yaml") }}
  spec:
    initContainers:
      {{- include "egress-proxy.sidecar.container" $proxy | nindent 6 }}
    containers:
      - name: app
        env:
          {{- include "egress-proxy.sidecar.env" $proxy | nindent 10 }}
    volumes:
      {{- include "egress-proxy.sidecar.volumes" $proxy | nindent 6 }}

and render the ConfigMap the volume names with egress-proxy.configmap.
*/}}

{{/* Volume and mount names shared by the sidecar and the gateway. */}}
{{- define "egress-proxy.volumeName" -}}egress-proxy-config{{- end }}
{{- define "egress-proxy.configDir" -}}/etc/egress-proxy{{- end }}

{{/*
egress-proxy.probes: startup, readiness and liveness probes on the named admin port.
Takes {values, port} (port: the container port's name).
*/}}
{{- define "egress-proxy.probes" -}}
{{- $p := .values.probes -}}
startupProbe:
  httpGet:
    path: /readyz
    port: {{ .port }}
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ .port }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
{{- end }}

{{/*
egress-proxy.sidecar.container: one list item for the pod's initContainers (put it first).
Listens on 127.0.0.1 at the config's port; admin (probes, /metrics) on the config's admin
address and port, named "proxy-admin".
*/}}
{{- define "egress-proxy.sidecar.container" -}}
{{- $v := .scope.Values }}
{{- $s := fromJson (include "egress-proxy.settings" .) -}}
- name: egress-proxy
  image: {{ include "egress-proxy.image" $v.image | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  restartPolicy: Always
  args:
    - --config
    - {{ include "egress-proxy.configDir" . }}/proxy.yaml
    - --listen
    - 127.0.0.1:{{ int $s.port }}
  ports:
    - name: proxy-admin
      containerPort: {{ int $s.adminPort }}
      protocol: TCP
  {{- include "egress-proxy.probes" (dict "values" $v "port" "proxy-admin") | nindent 2 }}
  resources:
    {{- toYaml $v.resources | nindent 4 }}
  securityContext:
    {{- include "egress-proxy.securityContext.container" $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: {{ include "egress-proxy.volumeName" . }}
      mountPath: {{ include "egress-proxy.configDir" . }}
      readOnly: true
{{- end }}

{{/* egress-proxy.sidecar.volumes: list item(s) for the pod's volumes: the config ConfigMap. */}}
{{- define "egress-proxy.sidecar.volumes" -}}
- name: {{ include "egress-proxy.volumeName" . }}
  configMap:
    name: {{ include "egress-proxy.fullname" .scope }}
    defaultMode: 0444
{{- end }}

{{/*
egress-proxy.clientEnv: the proxy environment of an application container. Takes the args
dict plus `url` (the proxy URL) and optional `noProxy` (extra entries, list).
Upper and lower case: curl ignores upper-case HTTP_PROXY, Node's undici reads both;
NODE_USE_ENV_PROXY=1 makes Node's built-in fetch/http honour them.
*/}}
{{- define "egress-proxy.clientEnv" -}}
{{- $v := .scope.Values }}
{{- $no := list "localhost" "127.0.0.1" "::1" ".svc" (printf ".%s" $v.clusterDomain) }}
{{- $no = concat $no $v.sidecar.noProxy (.noProxy | default list) | uniq -}}
- name: HTTP_PROXY
  value: {{ .url | quote }}
- name: HTTPS_PROXY
  value: {{ .url | quote }}
- name: http_proxy
  value: {{ .url | quote }}
- name: https_proxy
  value: {{ .url | quote }}
- name: NO_PROXY
  value: {{ join "," $no | quote }}
- name: no_proxy
  value: {{ join "," $no | quote }}
- name: NODE_USE_ENV_PROXY
  value: "1"
{{- end }}

{{/* egress-proxy.sidecar.env: env list items pointing the application at the sidecar (http://127.0.0.1:<port>). Args dict, optional noProxy. */}}
{{- define "egress-proxy.sidecar.env" -}}
{{- $s := fromJson (include "egress-proxy.settings" .) -}}
{{- include "egress-proxy.clientEnv" (dict "scope" .scope "url" (printf "http://127.0.0.1:%d" (int $s.port)) "noProxy" .noProxy) }}
{{- end }}

{{/* egress-proxy.gateway.url: http://<fullname>.<namespace>.svc.<clusterDomain>:<port>. Args dict. */}}
{{- define "egress-proxy.gateway.url" -}}
{{- $s := fromJson (include "egress-proxy.settings" .) -}}
{{- printf "http://%s.%s.svc.%s:%d" (include "egress-proxy.fullname" .scope) .scope.Release.Namespace .scope.Values.clusterDomain (int $s.port) }}
{{- end }}

{{/* egress-proxy.gateway.env: env list items pointing the application at the gateway Service. Args dict, optional noProxy. */}}
{{- define "egress-proxy.gateway.env" -}}
{{- include "egress-proxy.clientEnv" (dict "scope" .scope "url" (include "egress-proxy.gateway.url" .) "noProxy" .noProxy) }}
{{- end }}
