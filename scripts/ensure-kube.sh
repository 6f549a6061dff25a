#!/usr/bin/env bash
# Prints a directory holding etcd, kube-apiserver and kube-controller-manager for the
# operator tests. Honours KUBEBUILDER_ASSETS (the envtest convention) when it already
# holds them; otherwise builds Kubernetes 1.20 from Debian's source package once per
# machine and caches the binaries under ~/.cache/baton/ (about 6 minutes on 2 cores).
set -euo pipefail

need=(etcd kube-apiserver kube-controller-manager)
has_all() { local d=$1; for b in "${need[@]}"; do [[ -x "$d/$b" ]] || return 1; done; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]] && has_all "$KUBEBUILDER_ASSETS"; then
  echo "$KUBEBUILDER_ASSETS"; exit 0
fi

cache="${BATON_CACHE:-$HOME/.cache/baton}"
# "-r2": rebuilt with reflect2 1.0.2 (see below); older caches hold an apiserver that crashes.
bin="$cache/kube-1.20.2-r2/bin"
if has_all "$bin"; then echo "$bin"; exit 0; fi

log() { echo "ensure-kube: $*" >&2; }
mkdir -p "$cache" "$bin"
exec 9>"$cache/kube.lock"; flock 9   # one build at a time, even from parallel runs
if has_all "$bin"; then echo "$bin"; exit 0; fi

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
if ! command -v go >/dev/null || [[ ! -x /usr/bin/etcd ]] || ! command -v rsync >/dev/null || [[ ! -d $reflect2 ]]; then
  log "installing golang-go etcd-server rsync golang-github-modern-go-reflect2-dev"
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq golang-go etcd-server rsync golang-github-modern-go-reflect2-dev >&2
fi

src="$cache/kube-src"
if [[ ! -d "$src/kubernetes-1.20.2" ]]; then
  # Same archive as the binary sources, with deb-src added for bookworm.
  list=/etc/apt/sources.list.d/baton-deb-src.sources
  if [[ ! -f $list ]]; then
    log "enabling deb-src for bookworm"
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' | as_root tee "$list" >/dev/null
    as_root apt-get update -qq >&2
  fi
  mkdir -p "$src"
  log "downloading the kubernetes source package"
  (cd "$src" && apt-get source --download-only kubernetes >&2)
  tarball=$(ls "$src"/kubernetes_*.orig.tar.gz | head -1)
  tar -xzf "$tarball" -C "$src"
fi

# Kubernetes 1.20 vendors reflect2 1.0.1, whose map iteration segfaults when built with Go 1.18+
# (kube-apiserver dies on the first custom resource it encodes). 1.0.2 fixes that; Debian ships it.
rsync -a --delete --exclude '*_test.go' "$reflect2/" "$src/kubernetes-1.20.2/vendor/github.com/modern-go/reflect2/"

log "building kube-apiserver and kube-controller-manager (several minutes)"
(cd "$src/kubernetes-1.20.2" && GOFLAGS=-mod=vendor make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >&2)
out="$src/kubernetes-1.20.2/_output/bin"
cp "$out/kube-apiserver" "$out/kube-controller-manager" "$bin/"
ln -sf /usr/bin/etcd "$bin/etcd"
has_all "$bin"
echo "$bin"
