#!/usr/bin/env bash
# The real kubectl against `loco-discovery sim`, with `loco-discovery serve` following:
# apply an EndpointSlice, apply a changed file, diff (which shows no trigger-time
# annotation changing: only controllers write it), apply it server-side, patch it
# (strategic merge), try a server-side dry run, delete it, and watch the gateway's view
# change. Installs kubectl when the machine has none (.ci/install-kubectl.sh) and fails
# when it cannot be had: this check never passes without running kubectl.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/debug/loco-discovery"

versions=$(bash .ci/install-kubectl.sh) || { echo "kubectl-check: FAILED: no kubectl" >&2; exit 1; }
echo "$versions"
kubectl_bin=$(echo "$versions" | sed -n 's/^kubectl 1\.30: //p')
[ -n "$kubectl_bin" ] || kubectl_bin=$(echo "$versions" | sed -n 's/^kubectl 1\.[0-9]*: //p' | tail -1)
if [ -z "$kubectl_bin" ] || [ ! -x "$kubectl_bin" ]; then
  echo "kubectl-check: FAILED: no kubectl to run" >&2
  exit 1
fi

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

slice() { # ip serving terminating -> the EndpointSlice of pod 2, as a user writes it
  cat <<YAML
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: loco-loco-emulator-ci
  namespace: loco
  labels: {kubernetes.io/service-name: loco-loco-emulator}
addressType: IPv4
ports: [{name: vnc, port: 5901}, {name: health, port: 8080}]
endpoints:
  - addresses: ["$1"]
    conditions: {ready: true, serving: $2, terminating: $3}
    targetRef: {kind: Pod, name: loco-loco-emulator-2, namespace: loco}
YAML
}

k() { echo "+ kubectl $*"; "$kubectl_bin" "$@"; }
k version --output=yaml | grep -E 'gitVersion' || true
slice 10.244.0.7 true false >"$work/slice.yaml"
k apply -f "$work/slice.yaml"
k get endpointslices -n loco
expect "d['stats']['total'] == 1 and d['instances'][0]['state'] == 'ready'" "instance-2 appeared ready"
slice 10.244.0.7 false false >"$work/slice.yaml"
k apply -f "$work/slice.yaml"
expect "d['instances'][0]['state'] == 'booting'" "instance-2 turned not ready (apply of a changed file)"
slice 10.244.0.8 false false >"$work/slice.yaml"
rc=0; k diff -f "$work/slice.yaml" >"$work/diff.out" || rc=$?
cat "$work/diff.out"
[ "$rc" -eq 1 ] || { echo "kubectl-check: FAILED: diff exited $rc, not 1 (differences)" >&2; exit 1; }
# The server never stamps the trigger time: a dry run leaves the annotation alone.
if grep -q 'last-change-trigger-time' "$work/diff.out"; then
  echo "kubectl-check: FAILED: diff shows the trigger-time annotation changing" >&2; exit 1
fi
k apply --server-side -f "$work/slice.yaml"
expect "d['instances'][0]['addresses']['podIP'] == '10.244.0.8'" "instance-2 moved (server-side apply)"
k patch endpointslice loco-loco-emulator-ci -n loco \
  -p '{"endpoints":[{"addresses":["10.244.0.8"],"conditions":{"ready":true,"serving":false,"terminating":true},"targetRef":{"kind":"Pod","name":"loco-loco-emulator-2","namespace":"loco"}}]}'
expect "d['instances'][0]['state'] == 'offline' and d['instances'][0]['status'] == 'degraded'" "instance-2 terminating (strategic merge patch)"
k delete endpointslice loco-loco-emulator-ci -n loco --dry-run=server
expect "d['stats']['total'] == 1" "a server-side dry run changed nothing"
k get endpointslices -A -o wide
k delete endpointslice loco-loco-emulator-ci -n loco
expect "d['stats']['total'] == 0" "instance-2 disappeared"
echo "kubectl-check: passed"
