#!/usr/bin/env bash
# Prints the path of a `node` binary of the version the image ships (the Dockerfile's
# ARG NODE_VERSION, or $1), so that the tests and the bench run what ships, whatever Node runs npm.
# The official build comes from the npm registry's node-linux-<arch> package (the `node` package's
# binaries), fetched with `npm pack` (never installed; npm checks its integrity) and unpacked once
# per machine into ~/.cache/baton/. A `node` on PATH of that exact version is used as it is.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
version=${1:-$(sed -n 's/^ARG NODE_VERSION=\([0-9.]*\)$/\1/p' "$repo/Dockerfile")}
if [[ ! $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  echo "ensure-node: the Dockerfile's ARG NODE_VERSION must be an exact version (x.y.z), not \"$version\"" >&2
  exit 1
fi
if [[ $(node --version 2>/dev/null) == "v$version" ]]; then command -v node; exit 0; fi

case $(uname -m) in
  x86_64) arch=x64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "ensure-node: no Node build for $(uname -m) in the npm registry" >&2; exit 1 ;;
esac
cache="${BATON_CACHE:-$HOME/.cache/baton}"
bin="$cache/node-$version-linux-$arch/bin/node"
if [[ -x $bin ]]; then echo "$bin"; exit 0; fi

mkdir -p "$cache"
exec 9>"$cache/node.lock"; flock 9   # one download at a time, even from parallel runs
if [[ -x $bin ]]; then echo "$bin"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "ensure-node: fetching node-linux-$arch@$version (Node $version, as the image ships)" >&2
(cd "$work" && npm pack --silent "node-linux-$arch@$version" >/dev/null)
tar -xzf "$work/node-linux-$arch-$version.tgz" -C "$work" package/bin/node
[[ $("$work/package/bin/node" --version) == "v$version" ]]
dir=$(dirname "$(dirname "$bin")")
mkdir -p "$dir.tmp/bin"
install -m 0755 "$work/package/bin/node" "$dir.tmp/bin/node"
rm -rf "$dir" && mv "$dir.tmp" "$dir"
echo "$bin"
