#!/usr/bin/env bash
# The load test's smoke case: a release build, then ~50 SSE and 50 WebSocket subscribers
# against the gateway and, side by side, nginx + nchan (installed by the load test when
# missing). Exits 0 only when every expected delivery (writes × subscribers) arrived for
# both. It prints figures; nothing here asserts on time.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
target_dir=${CARGO_TARGET_DIR:-target}
cargo build --locked --release -p loco-discovery -p loco-loadtest
# Bounded: the run itself takes well under a minute; the timeout catches a hang.
timeout 110 "$target_dir/release/loco-loadtest" run \
  --gateway-bin "$target_dir/release/loco-discovery" \
  --subscribers 50 --processes 1 --writes 10 --interval 200ms \
  --transports sse,ws --targets gateway,nchan --settle 20s
