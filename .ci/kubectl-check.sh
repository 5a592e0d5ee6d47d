#!/usr/bin/env bash
# The real kubectl against `loco-discovery sim`, with `loco-discovery serve` following:
# create, patch and delete an EndpointSlice and watch the gateway's view change.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/debug/loco-discovery"

kubectl_bin=$(command -v kubectl || true)
if [ -z "$kubectl_bin" ]; then
  echo "kubectl-check: no kubectl on this machine; skipped"
  exit 0
fi
real=$(readlink -f "$kubectl_bin")
[ -x "$(dirname "$real")/kubectl.1.30" ] && kubectl_bin="$(dirname "$real")/kubectl.1.30"

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_line() { # file pattern pid
  for _ in $(seq 1 200); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { echo "kubectl-check: the process exited" >&2; cat "${1%.out}.err" >&2; return 1; }
    sleep 0.05
  done
  echo "kubectl-check: timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

"$bin" sim --listen 127.0.0.1:0 --write-kubeconfig "$work/kubeconfig" >"$work/sim.out" 2>"$work/sim.err" &
pids+=($!)
wait_line "$work/sim.out" "listening on" "$!"
export KUBECONFIG="$work/kubeconfig" KUBECACHEDIR="$work/cache"

"$bin" serve --listen 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.err" &
pids+=($!)
wait_line "$work/serve.out" "serving on" "$!"
gateway=$(grep -o 'http://[0-9.:]*' "$work/serve.out" | head -1)

live() { curl -sf "$gateway/api/instances/live"; }
expect() { # python expression over `d` (the live JSON), description
  for _ in $(seq 1 100); do
    if live | python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if ($1) else 1)"; then
      echo "ok: $2"; return 0
    fi
    sleep 0.05
  done
  echo "kubectl-check: FAILED: $2" >&2; live >&2; return 1
}

cat >"$work/slice.yaml" <<'YAML'
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: loco-loco-emulator-ci
  namespace: loco
  labels: {kubernetes.io/service-name: loco-loco-emulator}
addressType: IPv4
ports: [{name: vnc, port: 5901}, {name: health, port: 8080}]
endpoints:
  - addresses: ["10.244.0.7"]
    conditions: {ready: true, serving: true, terminating: false}
    targetRef: {kind: Pod, name: loco-loco-emulator-2, namespace: loco}
YAML

k() { echo "+ kubectl $*"; "$kubectl_bin" "$@"; }
k version --output=yaml | grep -E 'gitVersion' || true
k create -f "$work/slice.yaml" --validate=false
k get endpointslices -n loco
expect "d['stats']['total'] == 1 and d['instances'][0]['status'] == 'ready'" "instance-2 appeared ready"
k patch endpointslice loco-loco-emulator-ci -n loco --type=merge \
  -p '{"endpoints":[{"addresses":["10.244.0.7"],"conditions":{"ready":true,"serving":false,"terminating":false},"targetRef":{"kind":"Pod","name":"loco-loco-emulator-2","namespace":"loco"}}]}'
expect "d['instances'][0]['status'] == 'booting'" "instance-2 turned not ready"
k get endpointslices -A -o wide
k delete endpointslice loco-loco-emulator-ci -n loco
expect "d['stats']['total'] == 0" "instance-2 disappeared"
echo "kubectl-check: passed"
