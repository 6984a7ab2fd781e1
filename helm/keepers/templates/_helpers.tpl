{{/* Names ------------------------------------------------------------------------------------ */}}

{{- define "keepers.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "keepers.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "keepers.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of one keeper identity's objects: (dict "root" $ "component" "pricing-oracle" "identity" "a") */}}
{{- define "keepers.identityName" -}}
{{- printf "%s-%s-%s" (include "keepers.fullname" .root) .component .identity | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "keepers.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "keepers.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The daemons this chart runs, as JSON: key in values, component label, binary. */}}
{{- define "keepers.daemons" -}}
{{- list (dict "key" "pricingOracle" "component" "pricing-oracle" "binary" "pricing-oracle-keeper") (dict "key" "bridgeHealth" "component" "bridge-health" "binary" "bridge-health-keeper") | toJson -}}
{{- end -}}

{{/* Labels: (dict "root" $ "component" "pricing-oracle" ["identity" "a"]) ---------------------- */}}

{{- define "keepers.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keepers.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- if .identity }}
keepers.tonsurance.io/identity: {{ .identity }}
{{- end }}
{{- end -}}

{{- define "keepers.labels" -}}
helm.sh/chart: {{ include "keepers.chart" .root }}
{{ include "keepers.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- /* The ServiceMonitor's jobLabel: every scraped keeper gets job="keepers", as the rules expect. */}}
app.kubernetes.io/part-of: keepers
{{- end -}}

{{- define "keepers.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Environment ---------------------------------------------------------------------------- */}}

{{/* A scalar as an env string: integral numbers without a decimal point or exponent. */}}
{{- define "keepers.scalar" -}}
{{- $k := kindOf . -}}
{{- if or (eq $k "float64") (eq $k "float32") -}}
{{- if eq (floor .) (float64 .) }}{{ int64 . }}{{ else }}{{ . }}{{ end -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{/*
EnvVar list from (dict "env" <merged map> "secretEnv" <merged map> "extra" <list>).
Sorted by name; a name may not be both plain and secret. A secret is never an env value: it is a
file of the "secrets" volume (keepers.secretsVolume) and the env carries only its path, NAME_FILE.
*/}}
{{- define "keepers.env" -}}
{{- $env := .env -}}
{{- $secretEnv := .secretEnv -}}
{{- range $name := keys $env | sortAlpha }}
{{- $ref := get $secretEnv $name }}
{{- if and $ref (kindIs "map" $ref) $ref.existingSecret }}
{{- fail (printf "%s is set both in env and in secretEnv: keep only one" $name) }}
{{- end }}
{{- $v := get $env $name }}
{{- if not (kindIs "invalid" $v) }}
- name: {{ $name }}
  value: {{ include "keepers.scalar" $v | quote }}
{{- end }}
{{- end }}
{{- range $name := keys $secretEnv | sortAlpha }}
{{- $ref := get $secretEnv $name }}
{{- if and $ref $ref.existingSecret }}
- name: {{ $name }}_FILE
  value: {{ printf "/run/secrets/keepers/%s" (include "keepers.credentialName" $name) | quote }}
{{- end }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The file a secret is mounted as: TON_API_KEY -> ton-api-key (systemd's credential name too). */}}
{{- define "keepers.credentialName" -}}
{{- . | lower | replace "_" "-" -}}
{{- end -}}

{{/*
The "secrets" volume: one projected volume holding every referenced secret as a file, mode 0400
(the kubelet adds read for the pod's fsGroup, so the keeper's non-root user can read it and no
other user can). (dict "secretEnv" <merged map> ["wallet" {existingSecret, key}]). Renders
nothing when there is no secret.
*/}}
{{- define "keepers.secretsVolume" -}}
{{- $sources := list }}
{{- with .wallet }}
{{- $sources = append $sources (dict "secret" (dict "name" .existingSecret "items" (list (dict "key" (default "mnemonic" .key) "path" "keeper-mnemonic")))) }}
{{- end }}
{{- range $name := keys .secretEnv | sortAlpha }}
{{- $ref := get $.secretEnv $name }}
{{- if and $ref (kindIs "map" $ref) $ref.existingSecret }}
{{- $sources = append $sources (dict "secret" (dict "name" $ref.existingSecret "items" (list (dict "key" (default $name $ref.key) "path" (include "keepers.credentialName" $name))))) }}
{{- end }}
{{- end }}
{{- if $sources }}
- name: secrets
  projected:
    defaultMode: 0400
    sources:
      {{- toYaml $sources | nindent 6 }}
{{- end }}
{{- end -}}

{{/* The mount of the "secrets" volume, when keepers.secretsVolume renders one. */}}
{{- define "keepers.secretsMount" -}}
{{- if include "keepers.secretsVolume" . }}
- name: secrets
  mountPath: /run/secrets/keepers
  readOnly: true
{{- end }}
{{- end -}}

{{/* Whether a merged secretEnv map references NAME: (dict "secretEnv" m "name" "DATABASE_URL") */}}
{{- define "keepers.hasSecret" -}}
{{- $ref := get .secretEnv .name -}}
{{- if and $ref (kindIs "map" $ref) $ref.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* The backup's plain environment (backup.env over env, plus the destination and the scratch
directory), as YAML for fromYaml: shared by the CronJob and the pre-upgrade hook. */}}
{{- define "keepers.backup.env" -}}
{{- $b := .Values.backup -}}
{{- $env := merge (dict) (deepCopy (default (dict) $b.env)) (deepCopy (default (dict) .Values.env)) -}}
{{- if $b.persistence.existingClaim -}}
{{- $_ := set $env "BACKUP_DIR" "/backups" -}}
{{- else -}}
{{- $_ := set $env "BACKUP_DIR" "/scratch" -}}
{{- $_ := set $env "BACKUP_KEEP_LOCAL" "false" -}}
{{- end -}}
{{- $_ := set $env "TMPDIR" "/scratch" -}}
{{- with $b.s3.url }}{{ $_ := set $env "BACKUP_S3_URL" . }}{{ end -}}
{{- with $b.s3.region }}{{ $_ := set $env "AWS_REGION" . }}{{ end -}}
{{- with $b.s3.endpoint }}{{ $_ := set $env "AWS_ENDPOINT_URL" . }}{{ end -}}
{{- with $b.pushgatewayUrl }}{{ $_ := set $env "PUSHGATEWAY_URL" . }}{{ end -}}
{{- toYaml $env -}}
{{- end -}}

{{/* TOML ------------------------------------------------------------------------------------
Helm's own toToml writes every number from values as a float ("60.0"), which the keepers'
strict integer settings reject; this writer keeps integral numbers integers.
*/}}

{{- define "keepers.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "keepers.toml.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) -}}
{{- if kindIs "map" (first .) -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{- define "keepers.toml.value" -}}
{{- $k := kindOf . -}}
{{- if eq $k "string" -}}{{ toJson . }}
{{- else if eq $k "bool" -}}{{ . }}
{{- else if or (eq $k "float64") (eq $k "float32") -}}{{ include "keepers.scalar" . }}
{{- else if or (hasPrefix "int" $k) (hasPrefix "uint" $k) -}}{{ . }}
{{- else if eq $k "slice" -}}[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "keepers.toml.value" $e }}{{ end }}]
{{- else if eq $k "map" -}}{ {{- range $i, $key := keys . | sortAlpha }}{{ if $i }},{{ end }} {{ include "keepers.toml.key" $key }} = {{ include "keepers.toml.value" (get $ $key) }}{{ end }} }
{{- else -}}{{ fail (printf "config: cannot write a %s value as TOML" $k) }}
{{- end -}}
{{- end -}}

{{/* One table: (dict "map" m "path" "a.b"); scalars first, then sub-tables, then table arrays. */}}
{{- define "keepers.toml.table" -}}
{{- $m := .map -}}
{{- $path := .path -}}
{{- range $key := keys $m | sortAlpha -}}
{{- $v := get $m $key -}}
{{- if not (or (kindIs "map" $v) (kindIs "invalid" $v) (include "keepers.toml.isTableArray" $v)) }}
{{ include "keepers.toml.key" $key }} = {{ include "keepers.toml.value" $v }}
{{- end -}}
{{- end -}}
{{- range $key := keys $m | sortAlpha -}}
{{- $v := get $m $key -}}
{{- $p := include "keepers.toml.key" $key -}}
{{- if $path }}{{ $p = printf "%s.%s" $path $p }}{{ end -}}
{{- if kindIs "map" $v }}

[{{ $p }}]
{{- include "keepers.toml.table" (dict "map" $v "path" $p) -}}
{{- else if include "keepers.toml.isTableArray" $v -}}
{{- range $e := $v -}}
{{- if not (kindIs "map" $e) -}}
{{- fail (printf "config: %s mixes tables and other values" $p) -}}
{{- end }}

[[{{ $p }}]]
{{- include "keepers.toml.table" (dict "map" $e "path" $p) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "keepers.toml" -}}
{{- include "keepers.toml.table" (dict "map" . "path" "") | trim -}}
{{- end -}}

{{/* Pod pieces ------------------------------------------------------------------------------ */}}

{{- define "keepers.podSecurity" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Host:port of a URL's port for NetworkPolicy egress, or nothing. */}}
{{- define "keepers.urlPort" -}}
{{- if . -}}
{{- $u := urlParse . -}}
{{- $hp := splitList ":" $u.host -}}
{{- if gt (len $hp) 1 -}}{{ last $hp }}
{{- else if eq $u.scheme "http" -}}80
{{- else if eq $u.scheme "https" -}}443
{{- end -}}
{{- end -}}
{{- end -}}
