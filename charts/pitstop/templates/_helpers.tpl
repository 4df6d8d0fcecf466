{{/*
Chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "pitstop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources: <release>-<chart>, or <release> when it already
contains the chart name, or fullnameOverride.
*/}}
{{- define "pitstop.fullname" -}}
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

{{- define "pitstop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "pitstop.labels" -}}
helm.sh/chart: {{ include "pitstop.chart" . }}
{{ include "pitstop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the controller pods.
*/}}
{{- define "pitstop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pitstop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the ServiceAccount the controller runs as.
*/}}
{{- define "pitstop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pitstop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the leader-election Lease in the release namespace ("pitstop-controller" for a
release named pitstop). Per release, so two releases never share a leader.
*/}}
{{- define "pitstop.stopConfigMapName" -}}
{{- printf "%s-stop" (include "pitstop.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pitstop.leaseName" -}}
{{- printf "%s-controller" (include "pitstop.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The image reference.
*/}}
{{- define "pitstop.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
RBAC rules for MaintenancePlans and the Events the controller records about them.
Shared by the ClusterRole (all namespaces) and the Role (watchNamespace).
*/}}
{{- define "pitstop.planRules" -}}
- apiGroups: ["pitstop.dev"]
  resources: ["maintenanceplans"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["pitstop.dev"]
  resources: ["maintenanceplans/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["pitstop.dev"]
  resources: ["maintenanceplans/finalizers"]
  verbs: ["update"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.notifications.readSecrets }}
# spec.notify: the webhook URL, from the Secret a plan names in its own namespace (pitstop
# never reads another; RBAC cannot say so).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- end }}
