{{/*
The gateway's alerting rules: the `groups` of the PrometheusRule (prometheusrule.yaml)
and, rendered with the default values, files/loco-discovery-rules.yaml for a Prometheus
without the operator. Every threshold, window and `for` comes from
.Values.prometheusRule.alerts; docs/runbook.md has a section per alert.

Series are picked with .Values.prometheusRule.selector, by default the job the chart's
ServiceMonitor gives them (the Service's name). A replica is told apart by `instance`
(and `pod`, which the operator adds); `namespace` keeps releases of the same name apart.
*/}}
{{- define "loco-discovery.rules.selector" -}}
{{- default (printf "job=%q" (include "loco-discovery.fullname" .)) .Values.prometheusRule.selector }}
{{- end }}

{{- define "loco-discovery.rules.labels" -}}
severity: {{ .alert.severity }}
{{- with .root.Values.prometheusRule.alertLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "loco-discovery.rules.runbook" -}}
runbook_url: {{ printf "%s#%s" .Values.prometheusRule.runbookUrl (lower .name) | quote }}
{{- end }}

{{- define "loco-discovery.ruleGroups" -}}
{{- $sel := include "loco-discovery.rules.selector" . }}
{{- $a := .Values.prometheusRule.alerts }}
{{- $replica := "namespace, job, pod, instance" -}}
groups:
  - name: loco-discovery.watch
    rules:
      - alert: LocoDiscoveryNotSynced
        expr: |-
          (
            max by ({{ $replica }}) (loco_discovery_synced{ {{- $sel -}} }) == 0
            and on ({{ $replica }})
            sum by ({{ $replica }}) (increase(loco_discovery_watch_errors_total{ {{- $sel -}} }[{{ $a.notSynced.errorWindow }}])) > 0
          )
          or
          max by ({{ $replica }}) (loco_discovery_watch_ready{ {{- $sel -}} }) == 0
        for: {{ $a.notSynced.for }}
        labels:
          {{- include "loco-discovery.rules.labels" (dict "root" . "alert" $a.notSynced) | nindent 10 }}
        annotations:
          summary: Discovery is not synced with the Kubernetes API.
          description: >-
            {{`{{ $labels.instance }}`}} ({{`{{ $labels.job }}`}}) has served a view that is not
            confirmed against the API for more than {{ $a.notSynced.for }}: its watch keeps failing
            (errors within the last {{ $a.notSynced.errorWindow }}), or its first list never completed.
            Clients get the last known instances, which may be stale.
          {{- include "loco-discovery.rules.runbook" (dict "Values" .Values "name" "LocoDiscoveryNotSynced") | nindent 10 }}
      - alert: LocoDiscoveryWatchErrors
        expr: |-
          sum by ({{ $replica }}) (increase(loco_discovery_watch_errors_total{ {{- $sel -}} }[{{ $a.watchErrors.window }}])) > {{ $a.watchErrors.threshold }}
        for: {{ $a.watchErrors.for }}
        labels:
          {{- include "loco-discovery.rules.labels" (dict "root" . "alert" $a.watchErrors) | nindent 10 }}
        annotations:
          summary: The Kubernetes watch fails at an unusual rate.
          description: >-
            {{`{{ $labels.instance }}`}} ({{`{{ $labels.job }}`}}) had {{`{{ $value | printf "%.0f" }}`}}
            watch errors in the last {{ $a.watchErrors.window }} (more than {{ $a.watchErrors.threshold }}).
            Each is retried with backoff; the reason label of loco_discovery_watch_errors_total says what failed.
          {{- include "loco-discovery.rules.runbook" (dict "Values" .Values "name" "LocoDiscoveryWatchErrors") | nindent 10 }}
      - alert: LocoDiscoveryRelisting
        expr: |-
          sum by ({{ $replica }}) (increase(loco_discovery_watch_relists_total{ {{- $sel -}} }[{{ $a.relists.window }}])) > {{ $a.relists.threshold }}
        for: {{ $a.relists.for }}
        labels:
          {{- include "loco-discovery.rules.labels" (dict "root" . "alert" $a.relists) | nindent 10 }}
        annotations:
          summary: The gateway re-lists EndpointSlices at an unusual rate.
          description: >-
            {{`{{ $labels.instance }}`}} ({{`{{ $labels.job }}`}}) applied {{`{{ $value | printf "%.0f" }}`}}
            complete lists in the last {{ $a.relists.window }} (more than {{ $a.relists.threshold }}).
            A re-list follows a 410 Gone or a failed list; each one sends every subscriber the
            changes it finds, and costs the API server a full list.
          {{- include "loco-discovery.rules.runbook" (dict "Values" .Values "name" "LocoDiscoveryRelisting") | nindent 10 }}
      - alert: LocoDiscoveryInstancesDisagree
        expr: |-
          abs(
            sum by ({{ $replica }}, service) (loco_discovery_instances{ {{- $sel -}} })
            - on (namespace, job, service) group_left
            quantile by (namespace, job, service) (0.5, sum by ({{ $replica }}, service) (loco_discovery_instances{ {{- $sel -}} }))
          ) > {{ $a.instancesDisagree.tolerance }}
        for: {{ $a.instancesDisagree.for }}
        labels:
          {{- include "loco-discovery.rules.labels" (dict "root" . "alert" $a.instancesDisagree) | nindent 10 }}
        annotations:
          summary: A gateway replica counts other instances than its peers.
          description: >-
            {{`{{ $labels.instance }}`}} ({{`{{ $labels.job }}`}}) counts {{`{{ $value | printf "%.0f" }}`}}
            instances more or fewer of service {{`{{ $labels.service }}`}} than the median of the
            job's replicas, for more than {{ $a.instancesDisagree.for }}. Its clients see another view
            than the others'.
          {{- include "loco-discovery.rules.runbook" (dict "Values" .Values "name" "LocoDiscoveryInstancesDisagree") | nindent 10 }}
  - name: loco-discovery.streams
    rules:
      - alert: LocoDiscoveryLatencyHigh
        expr: |-
          sum by (namespace, job, service) (
              label_replace(
                histogram_quantile(0.99, sum by (namespace, job, service, le) (rate(loco_discovery_change_to_gateway_seconds_bucket{ {{- $sel -}} }[{{ $a.latency.window }}]))) >= 0,
                "hop", "change_to_gateway", "", "")
            or
              label_replace(
                histogram_quantile(0.99, sum by (namespace, job, service, le) (rate(loco_discovery_receipt_to_published_seconds_bucket{ {{- $sel -}} }[{{ $a.latency.window }}]))) >= 0,
                "hop", "receipt_to_published", "", "")
            or
              label_replace(
                max by (namespace, job, service) (histogram_quantile(0.99, sum by (namespace, job, service, transport, le) (rate(loco_discovery_published_to_socket_seconds_bucket{ {{- $sel -}} }[{{ $a.latency.window }}]))) >= 0),
                "hop", "published_to_socket", "", "")
          ) > {{ $a.latency.thresholdSeconds }}
        for: {{ $a.latency.for }}
        labels:
          {{- include "loco-discovery.rules.labels" (dict "root" . "alert" $a.latency) | nindent 10 }}
        annotations:
          summary: Changes reach subscribers slowly.
          description: >-
            For service {{`{{ $labels.service }}`}} ({{`{{ $labels.job }}`}}), the p99 latencies of the
            three hops from the EndpointSlice change to the subscriber's socket add up to
            {{`{{ $value | humanizeDuration }}`}} over {{ $a.latency.window }}, above
            {{ $a.latency.thresholdSeconds }}s for more than {{ $a.latency.for }}.
          {{- include "loco-discovery.rules.runbook" (dict "Values" .Values "name" "LocoDiscoveryLatencyHigh") | nindent 10 }}
      - alert: LocoDiscoverySubscribersRejected
        expr: |-
          sum by ({{ $replica }}) (increase(loco_discovery_subscribers_rejected_total{ {{- $sel -}} }[{{ $a.subscribersRejected.window }}])) > {{ $a.subscribersRejected.threshold }}
        for: {{ $a.subscribersRejected.for }}
        labels:
          {{- include "loco-discovery.rules.labels" (dict "root" . "alert" $a.subscribersRejected) | nindent 10 }}
        annotations:
          summary: Stream subscribers are refused at the cap.
          description: >-
            {{`{{ $labels.instance }}`}} ({{`{{ $labels.job }}`}}) refused {{`{{ $value | printf "%.0f" }}`}}
            stream subscribers in the last {{ $a.subscribersRejected.window }} with 503: it holds
            as many streams as MAX_SUBSCRIBERS allows.
          {{- include "loco-discovery.rules.runbook" (dict "Values" .Values "name" "LocoDiscoverySubscribersRejected") | nindent 10 }}
  - name: loco-discovery.availability
    rules:
      - alert: LocoDiscoveryDown
        expr: |-
          up{ {{- $sel -}} } == 0
        for: {{ $a.down.for }}
        labels:
          {{- include "loco-discovery.rules.labels" (dict "root" . "alert" $a.down) | nindent 10 }}
        annotations:
          summary: A gateway replica cannot be scraped.
          description: >-
            Prometheus has failed to scrape {{`{{ $labels.instance }}`}} ({{`{{ $labels.job }}`}}) for more
            than {{ $a.down.for }}. Its subscribers are cut off until they reconnect to another replica.
          {{- include "loco-discovery.rules.runbook" (dict "Values" .Values "name" "LocoDiscoveryDown") | nindent 10 }}
      - alert: LocoDiscoveryAbsent
        expr: |-
          sum by (namespace, job) (up{ {{- $sel -}} }) == 0
          or
          absent(up{ {{- $sel -}} })
        for: {{ $a.absent.for }}
        labels:
          {{- include "loco-discovery.rules.labels" (dict "root" . "alert" $a.absent) | nindent 10 }}
        annotations:
          summary: No gateway replica is up.
          description: >-
            For more than {{ $a.absent.for }}, Prometheus has found no target of {{ $sel }}
            that answers: every replica is down, or none is scraped at all. Instance discovery and
            the streams are unavailable.
          {{- include "loco-discovery.rules.runbook" (dict "Values" .Values "name" "LocoDiscoveryAbsent") | nindent 10 }}
{{- end }}
