{{/*
Chart name, truncated to the 63 characters a DNS label allows.
*/}}
{{- define "backup-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: RELEASE-CHART, or RELEASE when it already contains
the chart name; fullnameOverride wins.
*/}}
{{- define "backup-service.fullname" -}}
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

{{/*
chart label value: NAME-VERSION.
*/}}
{{- define "backup-service.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels put on every resource.
*/}}
{{- define "backup-service.labels" -}}
helm.sh/chart: {{ include "backup-service.chart" . }}
{{ include "backup-service.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: backup-service
{{- end }}

{{/*
Selector labels: stable across upgrades, never add anything that changes.
*/}}
{{- define "backup-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "backup-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "backup-service.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "backup-service.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the Secret the pods read: existingSecret, or the chart's own.
*/}}
{{- define "backup-service.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- include "backup-service.fullname" . }}
{{- end }}
{{- end }}

{{/*
Container image reference: repository@digest, or repository:tag (tag defaults
to appVersion).
*/}}
{{- define "backup-service.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Name of the PVC mounted at /data, or empty when /data is an emptyDir.
*/}}
{{- define "backup-service.claimName" -}}
{{- if .Values.persistence.existingClaim }}
{{- .Values.persistence.existingClaim }}
{{- else if .Values.persistence.enabled }}
{{- printf "%s-data" (include "backup-service.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Whether a PodDisruptionBudget is rendered ("true" or "").
*/}}
{{- define "backup-service.pdbEnabled" -}}
{{- if or .Values.podDisruptionBudget.enabled (gt (int .Values.replicaCount) 1) }}true{{- end }}
{{- end }}

{{/*
The JWT secret for the chart-made Secret: the configured value, else the one
already stored in the cluster (kept across upgrades), else a new random one.
*/}}
{{- define "backup-service.jwtSecret" -}}
{{- if .Values.jwtSecret }}
{{- .Values.jwtSecret }}
{{- else }}
{{- /* Generated once per render and remembered, so the Secret and the
       Deployment's checksum annotation see the same value. */}}
{{- if not (hasKey .Values "__generatedJwtSecret") }}
{{- $value := randAlphaNum 48 }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "backup-service.fullname" .) }}
{{- $key := .Values.secretKeys.jwtSecret }}
{{- if and $existing $existing.data (hasKey $existing.data $key) }}
{{- $value = index $existing.data $key | b64dec }}
{{- end }}
{{- $_ := set .Values "__generatedJwtSecret" $value }}
{{- end }}
{{- get .Values "__generatedJwtSecret" }}
{{- end }}
{{- end }}

{{/*
Checksum of every secret value the pods read, for the pod annotation that
rolls the pods when one changes. For the chart-made Secret: every value set
in values (decryption keys included) and the JWT secret when it is set there;
a generated JWT secret is represented by the one already stored in the
cluster (empty on a first install or a plain `helm template`), so renders of
the same values give the same annotation. For existingSecret: the data of
that Secret as the cluster holds it at install/upgrade time. The whole list
is hashed, so the annotation reveals nothing about any one value.
*/}}
{{- define "backup-service.secretChecksum" -}}
{{- if .Values.existingSecret }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace .Values.existingSecret }}
{{- list "existing" .Values.existingSecret (dig "data" dict ($existing | default dict)) .Values.secretKeys | toJson | sha256sum }}
{{- else }}
{{- $stored := lookup "v1" "Secret" .Release.Namespace (include "backup-service.fullname" .) }}
{{- $storedJwt := dig "data" .Values.secretKeys.jwtSecret "" ($stored | default dict) }}
{{- list "chart" .Values.jwtSecret $storedJwt .Values.database.url .Values.storage.url .Values.cloudinary.url .Values.backup.encryptionKey .Values.backup.decryptionKeys .Values.secretKeys | toJson | sha256sum }}
{{- end }}
{{- end }}

{{/*
A probe with a gRPC check that names no port gets the gRPC container port.
Call with (dict "probe" .Values.readinessProbe "root" .).
*/}}
{{- define "backup-service.probe" -}}
{{- $probe := deepCopy .probe }}
{{- if and (hasKey $probe "grpc") (not (get $probe.grpc "port")) }}
{{- $_ := set $probe.grpc "port" (int .root.Values.containerPorts.grpc) }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/*
Host part of a listen address: IPv6 literals get brackets.
*/}}
{{- define "backup-service.hostPort" -}}
{{- if contains ":" . }}{{ printf "[%s]" (trimAll "[]" .) }}{{ else }}{{ . }}{{ end }}
{{- end }}
