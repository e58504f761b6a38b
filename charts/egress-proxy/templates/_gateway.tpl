{{/*
The gateway: the proxy as pods of its own behind a ClusterIP Service. Application pods
may reach only this Service and DNS (their NetworkPolicy says so), so the allowlist is
enforced, not merely offered (DESIGN.md "Sidecar vs gateway").

Each template takes the args dict {scope, config} (see _helpers.tpl) and renders one
object. This chart's templates/*.yaml call them when gateway.enabled; an application chart
that depends on egress-proxy calls them itself (so one value of its own can switch modes).
The ConfigMap serves the sidecar too.
*/}}

{{/* egress-proxy.configmap: the ConfigMap holding proxy.yaml (named like the chart's objects). */}}
{{- define "egress-proxy.configmap" -}}
{{- $ := .scope }}
{{- $_ := include "egress-proxy.settings" . -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "egress-proxy.fullname" $ }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "egress-proxy.labels" $ | nindent 4 }}
data:
  proxy.yaml: |
    {{- .config | trimSuffix "\n" | nindent 4 }}
{{- end }}

{{/* egress-proxy.gateway.serviceaccount: the gateway's ServiceAccount; no token is mounted. */}}
{{- define "egress-proxy.gateway.serviceaccount" -}}
{{- $ := .scope -}}
{{- if $.Values.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "egress-proxy.serviceAccountName" $ }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "egress-proxy.labels" $ | nindent 4 }}
automountServiceAccountToken: false
{{- end }}
{{- end }}

{{/* egress-proxy.gateway.deployment: the gateway Deployment. */}}
{{- define "egress-proxy.gateway.deployment" -}}
{{- $ := .scope }}
{{- $v := $.Values }}
{{- $g := $v.gateway }}
{{- $s := fromJson (include "egress-proxy.settings" .) }}
{{- include "egress-proxy.checkGracePeriod" (dict "args" . "grace" $g.terminationGracePeriodSeconds "preStop" $g.preStopSleepSeconds "what" "egress-proxy gateway") }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "egress-proxy.fullname" $ }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "egress-proxy.labels" $ | nindent 4 }}
spec:
  replicas: {{ $g.replicaCount }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "egress-proxy.selectorLabels" $ | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        {{- include "egress-proxy.labels" $ | nindent 8 }}
      annotations:
        {{- include "egress-proxy.configChecksum" . | nindent 8 }}
        {{- with $g.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "egress-proxy.serviceAccountName" $ }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $g.terminationGracePeriodSeconds }}
      {{- with $g.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- include "egress-proxy.securityContext.pod" $v.securityContext | nindent 8 }}
      containers:
        - name: egress-proxy
          image: {{ include "egress-proxy.image" $v.image | quote }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args:
            - --config
            - {{ include "egress-proxy.configDir" . }}/proxy.yaml
            - --listen
            - {{ ternary (printf "[%s]" $g.listenHost) $g.listenHost (contains ":" $g.listenHost) }}:{{ int $s.port }}
          ports:
            - name: proxy
              containerPort: {{ int $s.port }}
              protocol: TCP
            - name: admin
              containerPort: {{ int $s.adminPort }}
              protocol: TCP
          {{- include "egress-proxy.probes" (dict "values" $v "port" "admin") | nindent 10 }}
          {{- if gt (int $g.preStopSleepSeconds) 0 }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ $g.preStopSleepSeconds }}
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- include "egress-proxy.securityContext.container" $v.securityContext | nindent 12 }}
          volumeMounts:
            - name: {{ include "egress-proxy.volumeName" . }}
              mountPath: {{ include "egress-proxy.configDir" . }}
              readOnly: true
      volumes:
        - name: {{ include "egress-proxy.volumeName" . }}
          configMap:
            name: {{ include "egress-proxy.fullname" $ }}
            defaultMode: 0444
      {{- with $g.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $g.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $g.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      topologySpreadConstraints:
        {{- if $g.topologySpreadConstraints }}
        {{- toYaml $g.topologySpreadConstraints | nindent 8 }}
        {{- else }}
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "egress-proxy.selectorLabels" $ | nindent 14 }}
        {{- end }}
{{- end }}

{{/* egress-proxy.gateway.service: the ClusterIP Service clients use as HTTP(S)_PROXY. */}}
{{- define "egress-proxy.gateway.service" -}}
{{- $ := .scope }}
{{- $s := fromJson (include "egress-proxy.settings" .) -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "egress-proxy.fullname" $ }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "egress-proxy.labels" $ | nindent 4 }}
spec:
  type: {{ $.Values.gateway.service.type }}
  selector:
    {{- include "egress-proxy.selectorLabels" $ | nindent 4 }}
  ports:
    - name: proxy
      port: {{ int $s.port }}
      targetPort: proxy
      protocol: TCP
{{- end }}

{{/* egress-proxy.gateway.pdb: the gateway's PodDisruptionBudget (when podDisruptionBudget.enabled). */}}
{{- define "egress-proxy.gateway.pdb" -}}
{{- $ := .scope -}}
{{- if $.Values.podDisruptionBudget.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "egress-proxy.fullname" $ }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "egress-proxy.labels" $ | nindent 4 }}
spec:
  maxUnavailable: {{ $.Values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "egress-proxy.selectorLabels" $ | nindent 6 }}
{{- end }}
{{- end }}

{{/*
egress-proxy.gateway.networkpolicy: the gateway's own NetworkPolicy, for standalone use
(egress-gen renders the equivalent for a whole deployment). Ingress: networkPolicy.clients
to the proxy port, networkPolicy.metricsFrom to the admin port. Egress: cluster DNS, and the
config's upstream ranges minus its denied ranges (plus allow_cidrs) on the allowlist's
ports. ipBlock.except must lie inside cidr, so only /0 upstream ranges are supported here.
*/}}
{{- define "egress-proxy.gateway.networkpolicy" -}}
{{- $ := .scope }}
{{- $np := $.Values.networkPolicy }}
{{- $s := fromJson (include "egress-proxy.settings" .) -}}
{{- if not $s.deniedListed }}
{{- fail "egress-proxy networkPolicy: the proxy config lists no denied_cidrs; use the file egress-gen renders (it writes every default) so the NetworkPolicy can exclude them" }}
{{- end }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "egress-proxy.fullname" $ }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "egress-proxy.labels" $ | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "egress-proxy.selectorLabels" $ | nindent 6 }}
  policyTypes:
    - Ingress
    - Egress
  {{- if or $np.clients $np.metricsFrom }}
  ingress:
    {{- with $np.clients }}
    - from:
        {{- toYaml . | nindent 8 }}
      ports:
        - protocol: TCP
          port: {{ int $s.port }}
    {{- end }}
    {{- with $np.metricsFrom }}
    - from:
        {{- toYaml . | nindent 8 }}
      ports:
        - protocol: TCP
          port: {{ int $s.adminPort }}
    {{- end }}
  {{- end }}
  egress:
    - to:
        - namespaceSelector:
            matchLabels:
              {{- toYaml $np.dns.namespaceSelector | nindent 14 }}
          podSelector:
            matchLabels:
              {{- toYaml $np.dns.podSelector | nindent 14 }}
      ports:
        - protocol: UDP
          port: 53
        - protocol: TCP
          port: 53
    - to:
        {{- range $u := $s.upstreamCidrs }}
        {{- $v6 := contains ":" $u }}
        {{- if not (has $u (list "0.0.0.0/0" "::/0")) }}
        {{- fail (printf "egress-proxy networkPolicy: upstream_cidrs entry %q is not 0.0.0.0/0 or ::/0; set networkPolicy.enabled=false and apply the policies egress-gen renders" $u) }}
        {{- end }}
        - ipBlock:
            cidr: {{ $u | quote }}
            {{- $except := list }}
            {{- range $d := $s.deniedCidrs }}
            {{- if eq $v6 (contains ":" $d) }}
            {{- $except = append $except $d }}
            {{- end }}
            {{- end }}
            {{- with $except }}
            except:
              {{- range . }}
              - {{ . | quote }}
              {{- end }}
            {{- end }}
        {{- end }}
        {{- range $s.allowCidrs }}
        - ipBlock:
            cidr: {{ . | quote }}
        {{- end }}
      ports:
        {{- range $s.upstreamPorts }}
        - protocol: TCP
          port: {{ int . }}
        {{- end }}
{{- end }}

{{/*
egress-proxy.test.pod: a `helm test` Pod that runs `egress-proxy --check-config` on the
ConfigMap with the deployed image: proves the image starts under the restricted profile
and accepts the config. Needs no network. Takes the args dict plus `name` (the pod name).
*/}}
{{- define "egress-proxy.test.pod" -}}
{{- $ := .scope }}
{{- $v := $.Values -}}
apiVersion: v1
kind: Pod
metadata:
  name: {{ .name }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "egress-proxy.commonLabels" $ | nindent 4 }}
    app.kubernetes.io/name: egress-proxy-test
    app.kubernetes.io/component: test
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- include "egress-proxy.securityContext.pod" $v.securityContext | nindent 4 }}
  containers:
    - name: check-config
      image: {{ include "egress-proxy.image" $v.image | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args:
        - --config
        - {{ include "egress-proxy.configDir" . }}/proxy.yaml
        - --check-config
      resources:
        {{- toYaml $v.resources | nindent 8 }}
      securityContext:
        {{- include "egress-proxy.securityContext.container" $v.securityContext | nindent 8 }}
      volumeMounts:
        - name: {{ include "egress-proxy.volumeName" . }}
          mountPath: {{ include "egress-proxy.configDir" . }}
          readOnly: true
  volumes:
    - name: {{ include "egress-proxy.volumeName" . }}
      configMap:
        name: {{ include "egress-proxy.fullname" $ }}
        defaultMode: 0444
{{- end }}
