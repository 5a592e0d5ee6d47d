{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "loco-discovery.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release "loco" gives loco-loco-discovery. */}}
{{- define "loco-discovery.fullname" -}}
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

{{- define "loco-discovery.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of the release. */}}
{{- define "loco-discovery.selectorLabels" -}}
app.kubernetes.io/name: {{ include "loco-discovery.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "loco-discovery.labels" -}}
helm.sh/chart: {{ include "loco-discovery.chart" . }}
{{ include "loco-discovery.selectorLabels" . }}
app.kubernetes.io/component: discovery-gateway
app.kubernetes.io/part-of: lego-loco-cluster
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "loco-discovery.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "loco-discovery.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "loco-discovery.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The gateway's DISCOVERY_MODE from the plan's keys: discoveryMode names the mode, and
serviceDiscovery.useEndpointSlices: false selects kubernetes-endpoints.
*/}}
{{- define "loco-discovery.mode" -}}
{{- $mode := default "kubernetes-endpointslices" .Values.discoveryMode }}
{{- $useSlices := true }}
{{- if hasKey .Values.serviceDiscovery "useEndpointSlices" }}
{{- $useSlices = ne (toString .Values.serviceDiscovery.useEndpointSlices) "false" }}
{{- end }}
{{- if eq $mode "static" }}
{{- print "static" }}
{{- else if or (eq $mode "kubernetes-endpoints") (not $useSlices) }}
{{- print "kubernetes-endpoints" }}
{{- else if eq $mode "kubernetes-endpointslices" }}
{{- print "kubernetes-endpointslices" }}
{{- else }}
{{- fail (printf "discoveryMode %q is not supported: use kubernetes-endpointslices, kubernetes-endpoints or static" $mode) }}
{{- end }}
{{- end }}

{{/* true when the mode reads the Kubernetes API (and so needs RBAC and a token). */}}
{{- define "loco-discovery.usesApi" -}}
{{- if eq (include "loco-discovery.mode" .) "static" }}false{{ else }}true{{ end }}
{{- end }}

{{/* Namespace of the watched Services. */}}
{{- define "loco-discovery.watchNamespace" -}}
{{- default .Release.Namespace .Values.serviceDiscovery.namespace }}
{{- end }}

{{/* The watched Service names as a list. */}}
{{- define "loco-discovery.serviceNames" -}}
{{- $names := list }}
{{- $raw := .Values.serviceDiscovery.serviceName }}
{{- if kindIs "slice" $raw }}
{{- $names = $raw }}
{{- else }}
{{- range splitList "," (toString $raw) }}
{{- $names = append $names (trim .) }}
{{- end }}
{{- end }}
{{- $clean := list }}
{{- range $names }}
{{- if . }}
{{- $clean = append $clean (toString .) }}
{{- end }}
{{- end }}
{{- if and (not $clean) (ne (include "loco-discovery.mode" .) "static") }}
{{- fail "serviceDiscovery.serviceName must name at least one Service" }}
{{- end }}
{{- toJson $clean }}
{{- end }}

{{- define "loco-discovery.emulatorServiceName" -}}
{{- $names := include "loco-discovery.serviceNames" . | fromJsonArray }}
{{- default (first $names) .Values.emulatorService.name }}
{{- end }}

{{/* Container port the probes use: the admin port when it is on, else the API port. */}}
{{- define "loco-discovery.probePort" -}}
{{- if .Values.admin.enabled }}metrics{{ else }}http{{ end }}
{{- end }}

{{- define "loco-discovery.metadataConfigMapName" -}}
{{- default (printf "%s-metadata" (include "loco-discovery.fullname" .)) .Values.instanceMetadata.existingConfigMap }}
{{- end }}

{{/* Checks of values that belong together; rendered once, from the Deployment. */}}
{{- define "loco-discovery.validate" -}}
{{- $grace := int .Values.stream.shutdownGraceSeconds }}
{{- $sleep := int .Values.lifecycle.preStopSleepSeconds }}
{{- if le (int .Values.terminationGracePeriodSeconds) (add $grace $sleep) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed stream.shutdownGraceSeconds (%d) + lifecycle.preStopSleepSeconds (%d)" (int .Values.terminationGracePeriodSeconds) $grace $sleep) }}
{{- end }}
{{- if and .Values.ingress.enabled (le (int .Values.ingress.proxyTimeoutSeconds) (int .Values.stream.heartbeatSeconds)) }}
{{- fail "ingress.proxyTimeoutSeconds must exceed stream.heartbeatSeconds, or the proxy cuts idle streams" }}
{{- end }}
{{- if and (eq (include "loco-discovery.mode" .) "static") (not .Values.staticInstances) }}
{{- fail "discoveryMode static needs staticInstances" }}
{{- end }}
{{- $minAvailable := .Values.podDisruptionBudget.minAvailable }}
{{- if and .Values.podDisruptionBudget.enabled (not .Values.autoscaling.enabled) (regexMatch "^[0-9]+$" (toString $minAvailable)) }}
{{- if ge (int $minAvailable) (int .Values.replicaCount) }}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) must be below replicaCount (%d), or no node can ever be drained" (int $minAvailable) (int .Values.replicaCount)) }}
{{- end }}
{{- end }}
{{- if and .Values.admin.enabled (eq (int .Values.admin.port) (int .Values.port)) }}
{{- fail "admin.port must differ from port" }}
{{- end }}
{{- if and (has "*" .Values.cors.allowOrigins) (or .Values.auth.tokens.existingSecret .Values.auth.jwt.existingSecret) }}
{{- fail "cors.allowOrigins \"*\" is refused with authentication on: list the allowed origins" }}
{{- end }}
{{- end }}
