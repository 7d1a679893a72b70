{{/* Names: DNS labels of at most 63 characters; StatefulSet pod names add "-N". */}}
{{- define "scoring-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "scoring-worker.fullname" -}}
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

{{- define "scoring-worker.workerName" -}}
{{- printf "%s-worker" (include "scoring-worker.fullname" . | trunc 45 | trimSuffix "-") }}
{{- end }}

{{- define "scoring-worker.monitorName" -}}
{{- printf "%s-monitor" (include "scoring-worker.fullname" . | trunc 44 | trimSuffix "-") }}
{{- end }}

{{- define "scoring-worker.kafkaSecretName" -}}
{{- if .Values.kafka.secret.existingSecret }}
{{- .Values.kafka.secret.existingSecret }}
{{- else }}
{{- printf "%s-kafka" (include "scoring-worker.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{- define "scoring-worker.modelsClaimName" -}}
{{- if .Values.models.pvc.existingClaim }}
{{- .Values.models.pvc.existingClaim }}
{{- else }}
{{- printf "%s-models" (include "scoring-worker.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{- define "scoring-worker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "scoring-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "scoring-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scoring-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "scoring-worker.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/*
Settings the chart computes itself. Defaults of the code (worker/config.py,
worker/monitor_app/settings.py) are repeated here only where the chart needs the value;
tests/unit/deploy/test_helm.py checks them against the dataclasses.
*/}}
{{- define "scoring-worker.workerPort" -}}
{{- if hasKey .Values.worker.config "metrics_port" }}{{ .Values.worker.config.metrics_port | int }}{{ else }}8000{{ end }}
{{- end }}

{{- define "scoring-worker.monitorPort" -}}
{{- if hasKey .Values.monitor.config "metrics_port" }}{{ .Values.monitor.config.metrics_port | int }}{{ else }}8001{{ end }}
{{- end }}

{{- define "scoring-worker.modelPath" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.models.mountPath) .Values.models.name }}
{{- end }}

{{/*
TOML. Helm reads every number of a values file as a float, and toToml would write
`batch_max = 1000.0`; whole numbers are written as integers here, strings as JSON strings
(valid TOML basic strings), keys always quoted.
*/}}
{{- define "scoring-worker.tomlValue" -}}
{{- $kind := kindOf . }}
{{- if eq $kind "string" }}
{{- toJson . }}
{{- else if eq $kind "bool" }}
{{- . }}
{{- else if has $kind (list "int" "int32" "int64" "uint" "uint32" "uint64") }}
{{- . }}
{{- else if eq $kind "float64" }}
{{- if eq (floor .) . }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else }}
{{- fail (printf "settings: cannot write %v (a %s) into a TOML file; settings are strings, numbers or booleans" . $kind) }}
{{- end }}
{{- end }}

{{/* A TOML file: dict "settings" (top level), "kafka" ([kafka]), "alerts" ([[alerts]]). */}}
{{- define "scoring-worker.toml" -}}
{{- $settings := .settings }}
{{- range $key := keys $settings | sortAlpha }}
{{- $value := get $settings $key }}
{{- if not (kindIs "invalid" $value) }}
{{ toJson $key }} = {{ include "scoring-worker.tomlValue" $value }}
{{- end }}
{{- end }}
{{- if .kafka }}

[kafka]
{{- range $key := keys .kafka | sortAlpha }}
{{ toJson $key }} = {{ include "scoring-worker.tomlValue" (toString (get $.kafka $key)) }}
{{- end }}
{{- end }}
{{- range $i, $rule := .alerts }}
{{- if not (kindIs "map" $rule) }}
{{- fail (printf "monitor.alerts[%d] must be a table (name, metric, op, threshold, ...)" $i) }}
{{- end }}

[[alerts]]
{{- range $key := keys $rule | sortAlpha }}
{{ toJson $key }} = {{ include "scoring-worker.tomlValue" (get $rule $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
librdkafka properties of both processes: kafka.properties plus the paths of the secret
files. Secret values are never here (they come as environment variables).
*/}}
{{- define "scoring-worker.kafkaProperties" -}}
{{- $props := deepCopy (.Values.kafka.properties | default dict) }}
{{- range $prop, $key := .Values.kafka.secret.files }}
{{- $_ := set $props $prop (printf "/var/run/secrets/scoring-worker/kafka/%s" $key) }}
{{- end }}
{{- toJson $props }}
{{- end }}

{{/* The SCORING_KAFKA environment of both containers, from secretKeyRef. */}}
{{- define "scoring-worker.kafkaEnv" -}}
{{- $props := .Values.kafka.secret.properties | default dict }}
{{- if $props }}
{{- $pairs := list }}
{{- range $prop := keys $props | sortAlpha }}
{{- $var := printf "KAFKA_SECRET_%s" (regexReplaceAll "[^A-Za-z0-9]" $prop "_" | upper) }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ include "scoring-worker.kafkaSecretName" $ }}
      key: {{ get $props $prop }}
{{- $pairs = append $pairs (printf "%s=$(%s)" $prop $var) }}
{{- end }}
- name: SCORING_KAFKA
  value: {{ join ";" $pairs | quote }}
{{- end }}
{{- end }}

{{/* The schema registry's credentials (the worker's and the monitor's), from secretKeyRef. */}}
{{- define "scoring-worker.registryEnv" -}}
{{- with .Values.schemaRegistry.existingSecret }}
- name: SCORING_SCHEMA_REGISTRY_USER
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.schemaRegistry.userKey }}
- name: SCORING_SCHEMA_REGISTRY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.schemaRegistry.passwordKey }}
{{- end }}
{{- end }}

{{- define "scoring-worker.kafkaSecretVolume" -}}
{{- if .Values.kafka.secret.files }}
- name: kafka-secret
  secret:
    secretName: {{ include "scoring-worker.kafkaSecretName" . }}
    defaultMode: 0440
    items:
{{- range $prop := keys .Values.kafka.secret.files | sortAlpha }}
{{- $key := get $.Values.kafka.secret.files $prop }}
      - key: {{ $key }}
        path: {{ $key }}
{{- end }}
{{- end }}
{{- end }}

{{- define "scoring-worker.kafkaSecretMount" -}}
{{- if .Values.kafka.secret.files }}
- name: kafka-secret
  mountPath: /var/run/secrets/scoring-worker/kafka
  readOnly: true
{{- end }}
{{- end }}

{{/* The model store: the volume, and the init container that fills it (demo, image). */}}
{{- define "scoring-worker.modelsVolume" -}}
- name: models
{{- if eq .Values.models.source "pvc" }}
  persistentVolumeClaim:
    claimName: {{ include "scoring-worker.modelsClaimName" . }}
    readOnly: true
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}

{{/*
The init containers write the store through /model-store (in the image source, mounting it
at models.mountPath could hide the image's own folder of that name).
*/}}
{{- define "scoring-worker.modelsInit" -}}
{{- $m := .Values.models }}
{{- if eq $m.source "demo" }}
- name: models
  image: {{ include "scoring-worker.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["/bin/sh", "-ec"]
  args:
    - |
      scoring-worker train-demo --out /tmp/demo/{{ $m.name }}
      scoring-worker models add --store /model-store /tmp/demo/{{ $m.name }}
      scoring-worker models promote --store /model-store {{ $m.name }} 1
      rm -rf /tmp/demo
  resources: {{- toYaml $m.initResources | nindent 4 }}
  securityContext: {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - {name: models, mountPath: /model-store}
    - {name: tmp, mountPath: /tmp}
{{- else if eq $m.source "image" }}
- name: models
  image: {{ printf "%s:%s" $m.image.repository ($m.image.tag | default "latest" | toString) }}
  imagePullPolicy: {{ $m.image.pullPolicy }}
  command: ["/bin/sh", "-ec"]
  args:
    - cp -R {{ trimSuffix "/" $m.image.path }}/. /model-store/
  resources: {{- toYaml $m.initResources | nindent 4 }}
  securityContext: {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - {name: models, mountPath: /model-store}
{{- end }}
{{- end }}

{{/* Every check that must stop a release before it reaches the cluster. */}}
{{- define "scoring-worker.validate" -}}
{{- $w := .Values.worker }}
{{- $mon := .Values.monitor }}
{{- $k := .Values.keda }}
{{- if lt (int $w.partitions) 1 }}
{{- fail "worker.partitions must be the input topic's partition count (at least 1)" }}
{{- end }}
{{- if and (not $k.enabled) (gt (int $w.replicas) (int $w.partitions)) }}
{{- fail (printf "worker.replicas (%d) exceeds worker.partitions (%d): workers beyond the input topic's partition count get no partitions and sit idle; lower worker.replicas or add partitions to the topic and raise worker.partitions" (int $w.replicas) (int $w.partitions)) }}
{{- end }}
{{- if $k.enabled }}
{{- if gt (int $k.maxReplicaCount) (int $w.partitions) }}
{{- fail (printf "keda.maxReplicaCount (%d) exceeds worker.partitions (%d): KEDA would never use the extra replicas; lower it or add partitions to the topic and raise worker.partitions" (int $k.maxReplicaCount) (int $w.partitions)) }}
{{- end }}
{{- if gt (int $k.minReplicaCount) (int $k.maxReplicaCount) }}
{{- fail (printf "keda.minReplicaCount (%d) exceeds keda.maxReplicaCount (%d)" (int $k.minReplicaCount) (int $k.maxReplicaCount)) }}
{{- end }}
{{- if or (not $w.config.group) (not $w.config.input_topic) }}
{{- fail "keda needs worker.config.group and worker.config.input_topic (the consumer group and topic whose lag it reads)" }}
{{- end }}
{{- if and $k.auth (not (or .Values.kafka.secret.existingSecret .Values.kafka.secret.create)) }}
{{- fail "keda.auth maps keys of the kafka Secret: set kafka.secret.existingSecret or kafka.secret.create" }}
{{- end }}
{{- end }}
{{- if $mon.enabled }}
{{- if lt (int $mon.partitions) 1 }}
{{- fail "monitor.partitions must be at least 1" }}
{{- end }}
{{- if gt (int $mon.replicas) (int $mon.partitions) }}
{{- fail (printf "monitor.replicas (%d) exceeds monitor.partitions (%d): instances share the monitor's internal topics' partitions, extra instances would sit idle" (int $mon.replicas) (int $mon.partitions)) }}
{{- end }}
{{- end }}
{{- if or $w.config.schema_registry_password $w.config.schema_registry_user }}
{{- fail "worker.config.schema_registry_user/password would be rendered in clear into the ConfigMap: put them in a Secret and name it in schemaRegistry.existingSecret" }}
{{- end }}
{{- if or $mon.config.schema_registry_password $mon.config.schema_registry_user }}
{{- fail "monitor.config.schema_registry_user/password would be rendered in clear into the ConfigMap: put them in a Secret and name it in schemaRegistry.existingSecret" }}
{{- end }}
{{- range $key := list "bootstrap" "kafka" "model" }}
{{- if hasKey $w.config $key }}
{{- fail (printf "worker.config.%s is set by the chart: use %s" $key (get (dict "bootstrap" "kafka.bootstrap" "kafka" "kafka.properties and kafka.secret" "model" "models.mountPath and models.name") $key)) }}
{{- end }}
{{- end }}
{{- range $key := list "bootstrap" "kafka" "instance_id" "partitions" "alerts" }}
{{- if hasKey $mon.config $key }}
{{- fail (printf "monitor.config.%s is set by the chart: use %s" $key (get (dict "bootstrap" "kafka.bootstrap" "kafka" "kafka.properties and kafka.secret" "instance_id" "nothing (each pod's name is its instance id)" "partitions" "monitor.partitions" "alerts" "monitor.alerts") $key)) }}
{{- end }}
{{- end }}
{{- if or (eq (include "scoring-worker.workerPort" .) "0") (eq (include "scoring-worker.monitorPort" .) "0") }}
{{- fail "metrics_port 0 turns off /healthz and /readyz, which the probes need" }}
{{- end }}
{{- $flush := 30.0 }}
{{- if hasKey $w.config "flush_timeout_s" }}{{ $flush = $w.config.flush_timeout_s | float64 }}{{ end }}
{{- if le (float64 $w.terminationGracePeriodSeconds) $flush }}
{{- fail (printf "worker.terminationGracePeriodSeconds (%v) must exceed flush_timeout_s (%v): SIGTERM finishes the batch, flushes and commits before the worker exits" $w.terminationGracePeriodSeconds $flush) }}
{{- end }}
{{- range $prop, $_ := .Values.kafka.properties }}
{{- $p := lower $prop }}
{{- if and (or (contains "password" $p) (contains "secret" $p) (contains "token" $p) (contains "key" $p) (contains "credential" $p) (contains "passphrase" $p) (contains "jaas" $p) (contains "oauthbearer.config" $p)) (not (hasSuffix ".location" $p)) }}
{{- fail (printf "kafka.properties.%s looks secret and would be written into the ConfigMap: put it in a Secret and map it with kafka.secret.properties" $prop) }}
{{- end }}
{{- end }}
{{- $s := .Values.kafka.secret }}
{{- if and $s.existingSecret $s.create }}
{{- fail "kafka.secret: set existingSecret or create, not both" }}
{{- end }}
{{- if and (or $s.properties $s.files) (not (or $s.existingSecret $s.create)) }}
{{- fail "kafka.secret.properties/files need a Secret: set kafka.secret.existingSecret or kafka.secret.create" }}
{{- end }}
{{- if and $s.data (not $s.create) }}
{{- fail "kafka.secret.data is only used with kafka.secret.create: true (the chart never renders secret values anywhere else)" }}
{{- end }}
{{- if $s.create }}
{{- range $map := list $s.properties $s.files $k.auth }}
{{- range $_, $key := $map }}
{{- if not (hasKey $s.data $key) }}
{{- fail (printf "kafka.secret.data has no key %q, which kafka.secret.properties/files or keda.auth refer to" $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $prop, $_ := $s.files }}
{{- if not (hasSuffix ".location" $prop) }}
{{- fail (printf "kafka.secret.files.%s: files are for librdkafka's *.location properties (paths)" $prop) }}
{{- end }}
{{- end }}
{{- $m := .Values.models }}
{{- if not (has $m.source (list "demo" "pvc" "image")) }}
{{- fail (printf "models.source must be demo, pvc or image, not %q" $m.source) }}
{{- end }}
{{- if and (eq $m.source "demo") (ne $m.name "fraud-demo") }}
{{- fail "models.source demo trains the demo model, whose name is fraud-demo: set models.name to fraud-demo or use another source" }}
{{- end }}
{{- if and (eq $m.source "pvc") (not (or $m.pvc.existingClaim $m.pvc.create)) }}
{{- fail "models.source pvc: set models.pvc.existingClaim (or models.pvc.create)" }}
{{- end }}
{{- if and (eq $m.source "image") (not $m.image.repository) }}
{{- fail "models.source image: set models.image.repository (an image holding the store under models.image.path)" }}
{{- end }}
{{- end }}
