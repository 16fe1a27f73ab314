{{/* Names and labels. */}}
{{- define "profiles.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 40 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "profiles.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "profiles.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "profiles.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "profiles.fullname" .)) -}}
{{- end -}}

{{/* The base URLs of every instance of a StatefulSet, through its headless
Service: http://<pod>.<headless>.<namespace>.svc:<port>, comma-separated. */}}
{{- define "profiles.instanceURLs" -}}
{{- $full := include "profiles.fullname" .root -}}
{{- $urls := list -}}
{{- range $i := until (int .replicas) -}}
{{- $urls = append $urls (printf "http://%s-%s-%d.%s-%s-headless.%s.svc:%d" $full $.component $i $full $.component $.root.Release.Namespace (int $.port)) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}

{{/* The environment every service shares: Kafka, secrets, drain, logs.
The instance's identity comes from its pod: INSTANCE_ID is the pod name
(a static group member: a restart in place keeps its partitions) and
ADVERTISE_URL its address through the headless Service. */}}
{{- define "profiles.commonEnv" -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: INSTANCE_ID
  value: "$(POD_NAME)"
{{- include "profiles.tracingEnv" .root }}
- name: KAFKA_BROKERS
  value: {{ .root.Values.kafka.brokers | quote }}
- name: TOPIC_PARTITIONS
  value: {{ .root.Values.kafka.partitions | quote }}
- name: TOPIC_REPLICATION
  value: {{ .root.Values.kafka.replication | quote }}
- name: SESSION_TIMEOUT
  value: {{ .root.Values.kafka.sessionTimeout | quote }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ .root.Values.kafka.securityProtocol | quote }}
{{- with .root.Values.kafka.sasl }}
{{- if eq .mechanism "OAUTHBEARER" }}
- name: KAFKA_SASL_MECHANISM
  value: "OAUTHBEARER"
- name: KAFKA_OAUTH_TOKEN_URL
  value: {{ .oauth.tokenUrl | quote }}
- name: KAFKA_OAUTH_CLIENT_ID
  value: {{ .oauth.clientId | quote }}
- name: KAFKA_OAUTH_CLIENT_SECRET_FILE
  value: /etc/profiles/kafka-oauth/client-secret
{{- with .oauth.scopes }}
- name: KAFKA_OAUTH_SCOPES
  value: {{ join " " . | quote }}
{{- end }}
{{- with .oauth.extensions }}
{{- $ext := list }}
{{- range $k, $v := . }}
{{- $ext = append $ext (printf "%s=%s" $k (toString $v)) }}
{{- end }}
- name: KAFKA_SASL_EXTENSIONS
  value: {{ join "," $ext | quote }}
{{- end }}
{{- else if .mechanism }}
- name: KAFKA_SASL_MECHANISM
  value: {{ .mechanism | quote }}
- name: KAFKA_SASL_USERNAME
  value: {{ .username | quote }}
- name: KAFKA_SASL_PASSWORD_FILE
  value: /etc/profiles/kafka-sasl/password
{{- end }}
{{- end }}
{{- if .root.Values.kafka.tls.caSecret }}
- name: KAFKA_TLS_CA_FILE
  value: /etc/profiles/kafka-tls/ca.pem
{{- end }}
- name: PII_KEK
  valueFrom: {secretKeyRef: {name: {{ include "profiles.secretName" .root }}, key: PII_KEK}}
- name: INTERNAL_SECRET
  valueFrom: {secretKeyRef: {name: {{ include "profiles.secretName" .root }}, key: INTERNAL_SECRET}}
- name: AUTH_MODE
  value: {{ .root.Values.auth.mode | quote }}
{{- with .root.Values.auth.jwksUrl }}
- name: AUTH_JWKS_URL
  value: {{ . | quote }}
{{- end }}
{{- with .root.Values.auth.issuer }}
- name: AUTH_ISSUER
  value: {{ . | quote }}
{{- end }}
{{- with .root.Values.auth.audience }}
- name: AUTH_AUDIENCE
  value: {{ . | quote }}
{{- end }}
- name: DRAIN_GRACE
  value: {{ .root.Values.drain.drainGrace | quote }}
- name: DRAIN_HANDOVER
  value: {{ .root.Values.drain.drainHandover | quote }}
- name: SHUTDOWN_GRACE
  value: {{ .root.Values.drain.shutdownGrace | quote }}
- name: ACCESS_LOG
  value: {{ .root.Values.observability.accessLog | quote }}
- name: LOG_LEVEL
  value: {{ .root.Values.observability.logLevel | quote }}
- name: LOG_FORMAT
  value: json
{{- with .svc.resources.limits.memory }}
- name: GOMEMLIMIT
  value: {{ include "profiles.gomemlimit" . | quote }}
{{- end }}
{{- end -}}

{{/* 80% of a memory limit such as 1Gi or 1536Mi, in MiB. */}}
{{- define "profiles.gomemlimit" -}}
{{- $s := toString . -}}
{{- $mib := 0 -}}
{{- if hasSuffix "Gi" $s -}}{{- $mib = mul (trimSuffix "Gi" $s | int) 1024 -}}
{{- else if hasSuffix "Mi" $s -}}{{- $mib = trimSuffix "Mi" $s | int -}}
{{- else -}}{{- fail (printf "memory limit %q: use Mi or Gi" $s) -}}{{- end -}}
{{- printf "%dMiB" (div (mul $mib 8) 10) -}}
{{- end -}}

{{/* The Kafka credentials and CA, each from its Secret as a file: the
password (SCRAM, PLAIN) or the OAuth client secret (OAUTHBEARER). */}}
{{- define "profiles.kafkaVolumes" -}}
{{- $sasl := .Values.kafka.sasl }}
{{- if eq $sasl.mechanism "OAUTHBEARER" }}
- name: kafka-oauth
  secret: {secretName: {{ $sasl.oauth.clientSecretSecret }}, items: [{key: {{ $sasl.oauth.clientSecretKey | quote }}, path: client-secret}]}
{{- else if $sasl.mechanism }}
- name: kafka-sasl
  secret: {secretName: {{ $sasl.passwordSecret }}, items: [{key: password, path: password}]}
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-tls
  secret: {secretName: {{ .Values.kafka.tls.caSecret }}, items: [{key: ca.pem, path: ca.pem}]}
{{- end }}
{{- end -}}

{{- define "profiles.kafkaMounts" -}}
{{- if eq .Values.kafka.sasl.mechanism "OAUTHBEARER" }}
- {name: kafka-oauth, mountPath: /etc/profiles/kafka-oauth, readOnly: true}
{{- else if .Values.kafka.sasl.mechanism }}
- {name: kafka-sasl, mountPath: /etc/profiles/kafka-sasl, readOnly: true}
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
- {name: kafka-tls, mountPath: /etc/profiles/kafka-tls, readOnly: true}
{{- end }}
{{- end -}}

{{/* Probes: /healthz for liveness, /readyz for readiness (it fails while
an instance catches up, and from SIGTERM on). */}}
{{- define "profiles.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 2
  failureThreshold: 150
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 6
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 2
  timeoutSeconds: 3
  failureThreshold: 1
{{- end -}}

{{- define "profiles.securityContext" -}}
securityContext:
  runAsNonRoot: true
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end -}}

{{/* terminationGracePeriodSeconds: the drain, the requests in flight, and
a margin. */}}
{{- define "profiles.terminationGrace" -}}
{{- $d := .Values.drain -}}
{{- add (include "profiles.seconds" $d.drainGrace) (include "profiles.seconds" $d.drainHandover) (include "profiles.seconds" $d.shutdownGrace) 10 -}}
{{- end -}}

{{/* Whole seconds of a duration such as 5s, 2m or 500ms (rounded up). */}}
{{- define "profiles.seconds" -}}
{{- $s := toString . -}}
{{- if hasSuffix "ms" $s -}}{{- div (add (trimSuffix "ms" $s | int) 999) 1000 -}}
{{- else if hasSuffix "s" $s -}}{{- trimSuffix "s" $s | int -}}
{{- else if hasSuffix "m" $s -}}{{- mul (trimSuffix "m" $s | int) 60 -}}
{{- else -}}{{- fail (printf "duration %q: use ms, s or m" $s) -}}{{- end -}}
{{- end -}}

{{/* The OTEL_* variables of observability.tracing, after POD_NAME: none
while its endpoint is empty (tracing off). */}}
{{- define "profiles.tracingEnv" -}}
{{- with .Values.observability.tracing }}
{{- if .endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .endpoint | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: "service.instance.id=$(POD_NAME)"
{{- with .sampler }}
- name: OTEL_TRACES_SAMPLER
  value: {{ . | quote }}
{{- end }}
{{- with .samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
