#!/usr/bin/env bash
# The dashboard, discovery-client.js and the lego-loco integration (liveInstances.js):
# unit tests of the client modules (node's test runner) and browser tests in headless
# Chromium (playwright-core driving Debian's chromium) against the real binaries. Installs
# what is missing (as root on Debian), builds the binary, and ends with one line
# "N passed, M failed"; exits non-zero on any failure. Screenshots go to
# ${CI_OUTPUT_DIR:-target/ci-output}.
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
export CI_OUTPUT_DIR="${CI_OUTPUT_DIR:-target/ci-output}"
export CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"

section() { printf '\n== %s\n' "$*"; }
setup_failed() {
  echo "browser-test: $*" >&2
  echo "0 passed, 1 failed"
  exit 1
}

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    apt-get update -qq || return 1
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

section "setup"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm >/dev/null || setup_failed "cannot install nodejs and npm"
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || setup_failed "Node.js 20 or newer is needed (found $(node --version))"
if [ ! -x "$CHROMIUM_BIN" ]; then
  echo "installing Debian's chromium"
  apt_install chromium >/dev/null || setup_failed "cannot install chromium"
fi
[ -x "$CHROMIUM_BIN" ] || setup_failed "no Chromium at $CHROMIUM_BIN"
locked=$(node -p 'require("./tests/browser/package-lock.json").packages["node_modules/playwright-core"].version')
installed=$(node -p 'try { require("./tests/browser/node_modules/playwright-core/package.json").version } catch { "" }')
if [ "$locked" != "$installed" ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error) || setup_failed "npm ci failed in tests/browser"
fi
echo "node $(node --version), $("$CHROMIUM_BIN" --version 2>/dev/null | head -1), playwright-core $locked"

section "build"
if [ -n "${LOCO_DISCOVERY_BIN:-}" ]; then
  [ -x "$LOCO_DISCOVERY_BIN" ] || setup_failed "LOCO_DISCOVERY_BIN=$LOCO_DISCOVERY_BIN is not an executable"
  echo "using $LOCO_DISCOVERY_BIN"
else
  cargo build --locked --quiet || setup_failed "cargo build failed"
  echo "using ${CARGO_TARGET_DIR:-target}/debug/loco-discovery"
fi

mkdir -p "$CI_OUTPUT_DIR"
rm -f "$CI_OUTPUT_DIR"/dashboard.png "$CI_OUTPUT_DIR"/dashboard-375.png
reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
passed=0
failed=0

# run NAME TIMEOUT FILE: node's test runner, readable output here, TAP kept for counting.
run() {
  local name=$1 limit=$2 file=$3 tap="$reports/$1.tap"
  section "$name"
  (cd tests/browser && timeout --kill-after=10 "$limit" node --test \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap" "$file")
  local status=$?
  local p f c
  p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$tap" 2>/dev/null | tail -1)
  f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$tap" 2>/dev/null | tail -1)
  c=$(sed -n 's/^# cancelled \([0-9]*\)$/\1/p' "$tap" 2>/dev/null | tail -1)
  if [ -z "$p" ] || [ -z "$f" ]; then
    echo "browser-test: $name ended without a summary (exit $status)" >&2
    p=${p:-0}
    f=1
  fi
  f=$((f + ${c:-0}))
  if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "browser-test: $name exited with $status" >&2
    f=1
  fi
  passed=$((passed + p))
  failed=$((failed + f))
}

run "unit tests of discovery-client.js" 60 unit/discovery-client.test.mjs
run "unit tests of liveInstances.js" 60 unit/liveInstances.test.mjs
run "unit tests of grid.js" 60 unit/grid.test.mjs
run "browser tests (headless Chromium)" 200 browser/dashboard.test.mjs
run "lego-loco integration in headless Chromium" 160 browser/lego-loco.test.mjs
run "access control in headless Chromium" 160 browser/access.test.mjs

section "summary"
[ -f "$CI_OUTPUT_DIR/dashboard.png" ] && echo "screenshot: $CI_OUTPUT_DIR/dashboard.png"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
