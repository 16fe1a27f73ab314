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
{{ include "profiles.kafkaEnv" .root }}
- name: SESSION_TIMEOUT
  value: {{ .root.Values.kafka.sessionTimeout | quote }}
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
{{ include "profiles.runtimeEnv" (dict "root" .root "resources" .svc.resources) }}
{{- end -}}

{{/* The cluster and topics of the profiles, and how to reach them. */}}
{{- define "profiles.kafkaEnv" -}}
- name: KAFKA_BROKERS
  value: {{ .Values.kafka.brokers | quote }}
- name: TOPIC_PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
- name: TOPIC_REPLICATION
  value: {{ .Values.kafka.replication | quote }}
{{- include "profiles.kafkaSecurityEnv" (dict "kafka" .Values.kafka "prefix" "KAFKA_" "name" "kafka") }}
{{- end -}}

{{/* The drain, the logs, and GOMEMLIMIT from .resources' memory limit. */}}
{{- define "profiles.runtimeEnv" -}}
- name: DRAIN_GRACE
  value: {{ .root.Values.drain.drainGrace | quote }}
- name: DRAIN_HANDOVER
  value: {{ .root.Values.drain.drainHandover | quote }}
- name: SHUTDOWN_GRACE
  value: {{ .root.Values.drain.shutdownGrace | quote }}
- name: STOP_TIMEOUT
  value: {{ .root.Values.drain.stopTimeout | quote }}
- name: ACCESS_LOG
  value: {{ .root.Values.observability.accessLog | quote }}
- name: LOG_LEVEL
  value: {{ .root.Values.observability.logLevel | quote }}
- name: LOG_FORMAT
  value: json
{{- with .resources.limits.memory }}
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

{{/* The security settings of a Kafka cluster: .kafka holds its values
(securityProtocol, sasl, tls), .prefix the variables' prefix (KAFKA_, or
TARGET_KAFKA_ for the replicator's target cluster) and .name the prefix of
the volumes that "profiles.kafkaVolumes" makes from its Secrets, each
mounted under /etc/profiles/<volume>: the password (SCRAM, PLAIN) or the
OAuth client secret (OAUTHBEARER), the CA, and the client certificate. */}}
{{- define "profiles.kafkaSecurityEnv" -}}
{{- $p := .prefix }}
{{- $dir := printf "/etc/profiles/%s" .name }}
- name: {{ $p }}SECURITY_PROTOCOL
  value: {{ .kafka.securityProtocol | quote }}
{{- with .kafka.sasl }}
{{- if eq .mechanism "OAUTHBEARER" }}
- name: {{ $p }}SASL_MECHANISM
  value: "OAUTHBEARER"
- name: {{ $p }}OAUTH_TOKEN_URL
  value: {{ .oauth.tokenUrl | quote }}
- name: {{ $p }}OAUTH_CLIENT_ID
  value: {{ .oauth.clientId | quote }}
- name: {{ $p }}OAUTH_CLIENT_SECRET_FILE
  value: {{ $dir }}-oauth/client-secret
{{- with .oauth.scopes }}
- name: {{ $p }}OAUTH_SCOPES
  value: {{ join " " . | quote }}
{{- end }}
{{- with .oauth.extensions }}
{{- $ext := list }}
{{- range $k, $v := . }}
{{- $ext = append $ext (printf "%s=%s" $k (toString $v)) }}
{{- end }}
- name: {{ $p }}SASL_EXTENSIONS
  value: {{ join "," $ext | quote }}
{{- end }}
{{- else if .mechanism }}
- name: {{ $p }}SASL_MECHANISM
  value: {{ .mechanism | quote }}
- name: {{ $p }}SASL_USERNAME
  value: {{ .username | quote }}
- name: {{ $p }}SASL_PASSWORD_FILE
  value: {{ $dir }}-sasl/password
{{- end }}
{{- end }}
{{- with .kafka.tls }}
{{- if .caSecret }}
- name: {{ $p }}TLS_CA_FILE
  value: {{ $dir }}-tls/ca.pem
{{- end }}
{{- if .clientCert.secret }}
- name: {{ $p }}TLS_CERT_FILE
  value: {{ $dir }}-tls-client/tls.crt
- name: {{ $p }}TLS_KEY_FILE
  value: {{ $dir }}-tls-client/tls.key
{{- end }}
{{- end }}
{{- end -}}

{{/* The volumes of "profiles.kafkaSecurityEnv" (same arguments): each key
of an existing Secret as a file. */}}
{{- define "profiles.kafkaVolumes" -}}
{{- $n := .name }}
{{- $sasl := .kafka.sasl }}
{{- if eq $sasl.mechanism "OAUTHBEARER" }}
- name: {{ $n }}-oauth
  secret: {secretName: {{ $sasl.oauth.clientSecretSecret }}, items: [{key: {{ $sasl.oauth.clientSecretKey | quote }}, path: client-secret}]}
{{- else if $sasl.mechanism }}
- name: {{ $n }}-sasl
  secret: {secretName: {{ $sasl.passwordSecret }}, items: [{key: password, path: password}]}
{{- end }}
{{- with .kafka.tls }}
{{- if .caSecret }}
- name: {{ $n }}-tls
  secret: {secretName: {{ .caSecret }}, items: [{key: {{ .caKey | default "ca.pem" | quote }}, path: ca.pem}]}
{{- end }}
{{- with .clientCert }}
{{- if .secret }}
- name: {{ $n }}-tls-client
  secret: {secretName: {{ .secret }}, items: [{key: {{ .certKey | default "tls.crt" | quote }}, path: tls.crt}, {key: {{ .keyKey | default "tls.key" | quote }}, path: tls.key}]}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The mounts of the volumes of "profiles.kafkaVolumes" (same arguments),
read-only. */}}
{{- define "profiles.kafkaMounts" -}}
{{- $n := .name }}
{{- if eq .kafka.sasl.mechanism "OAUTHBEARER" }}
- {name: {{ $n }}-oauth, mountPath: /etc/profiles/{{ $n }}-oauth, readOnly: true}
{{- else if .kafka.sasl.mechanism }}
- {name: {{ $n }}-sasl, mountPath: /etc/profiles/{{ $n }}-sasl, readOnly: true}
{{- end }}
{{- if .kafka.tls.caSecret }}
- {name: {{ $n }}-tls, mountPath: /etc/profiles/{{ $n }}-tls, readOnly: true}
{{- end }}
{{- if .kafka.tls.clientCert.secret }}
- {name: {{ $n }}-tls-client, mountPath: /etc/profiles/{{ $n }}-tls-client, readOnly: true}
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
{{- add (include "profiles.seconds" $d.drainGrace) (include "profiles.seconds" $d.drainHandover) (include "profiles.seconds" $d.shutdownGrace) (include "profiles.seconds" $d.stopTimeout) 10 -}}
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
