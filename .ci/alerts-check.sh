#!/usr/bin/env bash
# Checks of the alerting rules and the Grafana dashboard that the chart ships.
#
#   bash .ci/alerts-check.sh           run the checks
#   bash .ci/alerts-check.sh --write   rewrite the plain rules file from the chart first
#
# Installs promtool (Debian package prometheus) and helm (.ci/helm-tool.sh, into
# .ci/.tools/ or $DEPLOY_TOOLS_DIR) when missing, builds the gateway, then:
#   1. the plain rules file equals the `groups` of the chart's PrometheusRule rendered with
#      the default values (the chart is the one source; --write regenerates the file);
#   2. promtool check rules on it (and on the rules rendered with ci/full-values.yaml),
#      and promtool test rules .ci/alerts/*.test.yaml, which must hold a firing and a
#      non-firing case for every alert;
#   3. the dashboard ConfigMap renders with the dashboard file unchanged;
#   4. .ci/check_monitoring.py: the dashboard is valid JSON, every query parses
#      (promtool check rules on a scratch file with each query as a recording rule), and
#      every metric that the dashboard and the rules name is in a live /metrics scrape of
#      `loco-discovery demo` after streams, a refusal at the cap, a reset and a failing API;
#      every alert has a section in docs/runbook.md.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

CHART=helm/loco-discovery
RELEASE=loco-discovery   # the job name the plain rules file is rendered for
RULES=$CHART/files/loco-discovery-rules.yaml
DASHBOARD=$CHART/files/loco-discovery-dashboard.json
TESTS=(.ci/alerts/*.test.yaml)
TOOLS=${DEPLOY_TOOLS_DIR:-.ci/.tools}
write=false
[ "${1:-}" = "--write" ] && write=true

section() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

section "tools"
if ! command -v promtool >/dev/null; then
  echo "installing promtool (Debian package prometheus)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# shellcheck source=.ci/helm-tool.sh
. .ci/helm-tool.sh
ensure_helm "$TOOLS"
promtool --version | head -1
"$HELM" version --short

work=$(mktemp -d)
pid=""
stream=""
cleanup() {
  [ -n "$stream" ] && kill "$stream" 2>/dev/null
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# The spec of the chart's PrometheusRule rendered with these helm arguments, one level
# out: a Prometheus rules file.
render_rules() {
  local out=$1; shift
  "$HELM" template "$RELEASE" "$CHART" --namespace loco --set prometheusRule.enabled=true "$@" \
    --show-only templates/prometheusrule.yaml >"$work/prometheusrule.yaml" || fail "helm template (prometheusRule $*)"
  sed -n '/^spec:$/,$p' "$work/prometheusrule.yaml" | sed -e '1d' -e 's/^  //' >"$out"
  grep -q '^groups:$' "$out" || fail "the rendered PrometheusRule has no spec.groups"
}

section "plain rules file = the chart's PrometheusRule ($RULES)"
render_rules "$work/rules.yaml"
if $write; then
  {
    echo "# loco-discovery alerts for a Prometheus without the prometheus-operator: list this file"
    echo "# under rule_files. The series are picked by job=\"loco-discovery\" (name your scrape job"
    echo "# so, or change the selector). It is the chart's PrometheusRule with the default values"
    echo "# (templates/_rules.tpl), written by \`bash .ci/alerts-check.sh --write\`; CI fails when"
    echo "# the two differ. Runbook: docs/runbook.md."
    cat "$work/rules.yaml"
  } >"$RULES"
  echo "-- wrote $RULES"
fi
if ! diff -u <(grep -v '^#' "$RULES") "$work/rules.yaml"; then
  fail "$RULES differs from the chart's rules: run bash .ci/alerts-check.sh --write"
fi
echo "-- $(grep -c '^ *- alert:' "$RULES") alerts in $(grep -c '^ *- name:' "$RULES") groups, identical"

section "promtool check rules / test rules"
promtool check rules "$RULES"
promtool test rules "${TESTS[@]}"
# Other values (thresholds, a selector, labels) give valid rules too.
render_rules "$work/full-rules.yaml" -f "$CHART/ci/full-values.yaml"
echo "-- rendered with $CHART/ci/full-values.yaml:"
promtool check rules "$work/full-rules.yaml"

section "dashboard ConfigMap ($DASHBOARD)"
"$HELM" template "$RELEASE" "$CHART" --namespace loco --set grafanaDashboard.enabled=true \
  --show-only templates/dashboard-configmap.yaml >"$work/dashboard-cm.yaml" || fail "helm template (grafanaDashboard)"
grep -q '^    grafana_dashboard: "1"$' "$work/dashboard-cm.yaml" || fail "the dashboard ConfigMap lacks the sidecar label grafana_dashboard: \"1\""
sed -n '/^  loco-discovery.json: |-$/,$p' "$work/dashboard-cm.yaml" | sed -e '1d' -e 's/^    //' >"$work/dashboard.json"
python3 - "$DASHBOARD" "$work/dashboard.json" <<'PY' || fail "the rendered dashboard differs from $DASHBOARD"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
sys.exit(0 if a == b else 1)
PY
echo "-- rendered with the sidecar label, dashboard unchanged"

section "live /metrics of the demo"
bin="${CARGO_TARGET_DIR:-target}/debug/loco-discovery"
cargo build --locked --quiet -p loco-discovery --bin loco-discovery
# One subscriber slot, so a second stream is refused; a short heartbeat.
"$bin" demo --listen 127.0.0.1:0 --pace 50ms --max-subscribers 1 --heartbeat 1s \
  >"$work/demo.out" 2>"$work/demo.err" &
pid=$!
for _ in $(seq 1 200); do grep -q "demo: open" "$work/demo.out" && break; sleep 0.05; done
url=$(sed -n 's|.*demo: open \(http://[0-9.:]*\).*|\1|p' "$work/demo.out" | tail -1)
sim=$(sed -n 's|^simulated cluster: \(http://[0-9.:]*\).*|\1|p' "$work/demo.out" | tail -1)
[ -n "$url" ] && [ -n "$sim" ] || { echo "alerts-check: the demo did not start" >&2; cat "$work/demo.err" >&2; exit 1; }
# Scrapes until a series matching $1 appears (10 s at most).
scrape_until() {
  for _ in $(seq 1 100); do
    curl -sf "$url/metrics" >"$work/metrics.txt" && grep -q "$1" "$work/metrics.txt" && return 0
    sleep 0.1
  done
  return 1
}
# A stream, until an event has reached it (subscribers, the published → socket hop);
curl -sN "$url/api/instances/stream" >/dev/null &
stream=$!
scrape_until '^loco_discovery_published_to_socket_seconds_count{' || fail "no event reached the stream"
# a second stream, refused at the cap;
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url/api/instances/stream" || true)
[ "$code" = 503 ] || fail "a second stream at --max-subscribers 1 got $code, not 503"
kill "$stream" && wait "$stream" 2>/dev/null || true
stream=""
# a resume from an unknown id, once the slot is free (a reset);
for _ in $(seq 1 20); do
  timeout 1 curl -sN -H 'Last-Event-ID: unknown' "$url/api/instances/stream" >/dev/null || true
  scrape_until '^loco_discovery_resets_total{' && break
done
grep -q '^loco_discovery_resets_total{' "$work/metrics.txt" || fail "no reset after a resume from an unknown id"
# a failing API (watch errors).
curl -sf -X POST "$sim/sim/faults/errors?status=500&seconds=1" >/dev/null
curl -sf -X POST "$sim/sim/faults/cut-watches" >/dev/null
scrape_until '^loco_discovery_watch_errors_total{' || fail "no watch error counted after the injected API failure"
echo "-- $(grep -c '^loco_discovery_' "$work/metrics.txt") series of $(grep -c '^# TYPE loco_discovery_' "$work/metrics.txt") metrics"
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
pid=""

section "dashboard and rules against the scrape (.ci/check_monitoring.py)"
python3 .ci/check_monitoring.py --self-test || fail "check_monitoring.py self-test"
python3 .ci/check_monitoring.py --metrics "$work/metrics.txt" --dashboard "$DASHBOARD" \
  --rules "$RULES" --tests "${TESTS[@]}" --runbook docs/runbook.md || fail "check_monitoring.py"

section "alerts checks passed in $(( $(date +%s) - started ))s"
