#!/usr/bin/env bash
# Scrapes /metrics from a running demo after some activity and checks the exposition
# with promtool (Debian package `prometheus`).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v promtool >/dev/null; then
  echo "metrics-check: installing promtool (Debian package prometheus)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
cargo build --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/debug/loco-discovery"
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bin" demo --listen 127.0.0.1:0 --pace 50ms >"$work/demo.out" 2>"$work/demo.err" &
pid=$!
for _ in $(seq 1 200); do grep -q "demo: open" "$work/demo.out" && break; sleep 0.05; done
url=$(grep -o 'http://[0-9.:]*' "$work/demo.out" | tail -1)
[ -n "$url" ] || { echo "metrics-check: the demo did not start" >&2; cat "$work/demo.err" >&2; exit 1; }
# A stream subscriber, so the published → socket hop has samples too.
timeout 3 curl -sN "$url/api/instances/stream" >/dev/null || true
curl -sf "$url/metrics" >"$work/metrics.txt"
echo "metrics-check: $(grep -c '^loco_discovery_' "$work/metrics.txt") series, e.g.:"
grep -E '^loco_discovery_(change_to_gateway|published_to_socket)_seconds_count' "$work/metrics.txt"
grep -q '^loco_discovery_change_to_gateway_seconds_count' "$work/metrics.txt"
grep -q 'loco_discovery_published_to_socket_seconds_count{.*transport="sse"' "$work/metrics.txt"
promtool --version | head -1
promtool check metrics <"$work/metrics.txt"
echo "metrics-check: passed"
