#!/usr/bin/env bash
# Hostile connections against a gateway (`loco-discovery serve`) watching a simulated
# cluster in another process (`loco-discovery sim`), on loopback; prints the connections
# the gateway still holds over time and the gateway's RSS alone.
# Usage: loadtest/hostile.sh [binary]   (default: $CARGO_TARGET_DIR or target, release
# build if present, else debug). Gateway flags: GATEWAY_FLAGS; client counts and watch
# time: HOSTILE_FLAGS (see loadtest/hostile.py); cluster size and churn: REPLICAS, PACE.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
bin="${1:-$target/release/loco-discovery}"
[ -x "$bin" ] || bin="$target/debug/loco-discovery"
port="${PORT:-18931}"; sim_port=$((port + 1))
kubeconfig="$(mktemp)"
"$bin" sim --listen "127.0.0.1:$sim_port" --scenario emulators --replicas "${REPLICAS:-1000}" \
  --pace "${PACE:-100ms}" --write-kubeconfig "$kubeconfig" >/tmp/hostile-sim.log 2>&1 &
sim=$!
trap 'kill "$sim" ${gw:-} 2>/dev/null || true; rm -f "$kubeconfig"' EXIT
sleep 1
KUBECONFIG="$kubeconfig" "$bin" serve --listen "127.0.0.1:$port" \
  ${GATEWAY_FLAGS:---header-read-timeout 10s --stream-write-timeout 10s} >/tmp/hostile-gateway.log 2>&1 &
gw=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
echo "gateway: $bin serve ${GATEWAY_FLAGS:---header-read-timeout 10s --stream-write-timeout 10s}; sim: ${REPLICAS:-1000} replicas, pace ${PACE:-100ms}"
python3 loadtest/hostile.py "127.0.0.1:$port" "$gw" ${HOSTILE_FLAGS:-}
echo "gateway still serves /live: $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/instances/live")"
echo "ERROR lines in the gateway log: $(grep -c ERROR /tmp/hostile-gateway.log || true)"
curl -s "http://127.0.0.1:$port/metrics" | grep -E '^loco_discovery_(connections_closed|accept_errors)_total' || true
