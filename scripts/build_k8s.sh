#!/usr/bin/env bash
# Build the Kubernetes 1.20.2 control plane (kube-apiserver, kube-controller-manager, kube-scheduler)
# from Debian 12's own source package, offline with Debian's Go, and cache the binaries OUTSIDE the
# repository under /var/cache/torchyard-k8s/<debian version>-<patch hash>/bin (see
# /work/shared/KUBERNETES.md for how this was worked out). Idempotent: when the cached binaries exist it
# returns at once. Prints the bin directory on its last line.
# Usage: bash scripts/build_k8s.sh [--kubelet]   (--check: print the bin folder if cached, else exit 1)
#   --kubelet: also the real-node tier (tests/integration/test_k8s_node.py): the kubelet, a static
#   `pause` built from the tree's build/pause/linux/pause.c, and the Debian packages that tier runs
#   (containerd runc podman busybox-static containernetworking-plugins), installed only when asked.
#   --check --kubelet: print the bin folder if all of that is there, else exit 1.
set -euo pipefail

VERSION="1.20.5+really1.20.2-1.1+deb12u1"
ROOT="${TORCHYARD_K8S_CACHE:-/var/cache/torchyard-k8s}"
WANT_KUBELET=0
CHECK=0
for arg in "$@"; do
  case "$arg" in
    --kubelet) WANT_KUBELET=1 ;;
    --check) CHECK=1 ;;
    *) echo "usage: bash scripts/build_k8s.sh [--check] [--kubelet]" >&2; exit 2 ;;
  esac
done
# what the real-node tier runs besides the kubelet (Debian 12 packages)
NODE_PKGS=(containerd runc podman busybox-static containernetworking-plugins)
node_pkgs_missing() {
  local p
  for p in "${NODE_PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done
}

# The one patch applied to the tree: swap the vendored reflect2 1.0.1 (segfaults under Go >= 1.18
# when CRDs register) for Debian's 1.0.2. Its description is hashed into the cache key, so changing
# the patch rebuilds.
PATCH_DESC="reflect2: vendor/github.com/modern-go/reflect2 <- /usr/share/gocode/src/github.com/modern-go/reflect2 (Debian golang-github-modern-go-reflect2-dev); CGO_ENABLED=0"
PATCH_HASH="$(printf '%s' "$PATCH_DESC" | sha256sum | cut -c1-12)"
KEY="${VERSION//+/_}-${PATCH_HASH}"
BIN="$ROOT/$KEY/bin"

have_bins() {
  for b in kube-apiserver kube-controller-manager kube-scheduler; do [ -x "$BIN/$b" ] || return 1; done
  [ "$WANT_KUBELET" = 0 ] || { [ -x "$BIN/kubelet" ] && [ -x "$BIN/pause" ] && [ -z "$(node_pkgs_missing)" ]; } || return 1
  command -v etcd >/dev/null 2>&1 || return 1
}
if have_bins; then echo "$BIN"; exit 0; fi
[ "$CHECK" = 1 ] && { echo "not built: bash scripts/build_k8s.sh" >&2; exit 1; }

need=()
command -v go >/dev/null 2>&1 || need+=(golang-go)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
[ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ] || need+=(golang-github-modern-go-reflect2-dev)
if [ "$WANT_KUBELET" = 1 ]; then
  command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
  mapfile -t missing < <(node_pkgs_missing)
  need+=("${missing[@]}")
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

W="$ROOT/src"
mkdir -p "$W/apt/parts" "$W/apt/lists/partial" "$W/apt/cache/archives/partial" "$W/home"
# A private deb-src source list: /etc/apt is left unchanged.
sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$W/apt/parts/debian-src.sources"
APTO=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$W/apt/parts"
      -o "Dir::State::Lists=$W/apt/lists" -o "Dir::Cache=$W/apt/cache")
ORIG="$W/kubernetes_1.20.5+really1.20.2.orig.tar.gz"
if [ ! -f "$ORIG" ]; then
  apt-get "${APTO[@]}" update -qq
  (cd "$W" && apt-get "${APTO[@]}" source --download-only "kubernetes=$VERSION" >&2)
fi
TREE="$W/kubernetes-1.20.2"
if [ ! -f "$TREE/.torchyard-patched-$PATCH_HASH" ]; then
  rm -rf "$TREE"
  tar xzf "$ORIG" -C "$W"
  R2=/usr/share/gocode/src/github.com/modern-go/reflect2
  rm -f "$TREE"/vendor/github.com/modern-go/reflect2/*.go "$TREE"/vendor/github.com/modern-go/reflect2/*.s
  cp "$R2"/*.go "$TREE/vendor/github.com/modern-go/reflect2/"
  cp "$R2"/*.s "$TREE/vendor/github.com/modern-go/reflect2/" 2>/dev/null || true
  touch "$TREE/.torchyard-patched-$PATCH_HASH"
fi
cd "$TREE"
if [ "$WANT_KUBELET" = 1 ] && [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kubelet" ] && [ ! -x "$BIN/pause" ]; then
  WHAT_DONE=1  # only the pause binary is missing
fi
WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler"
[ "$WANT_KUBELET" = 1 ] && WHAT="$WHAT cmd/kubelet"
mkdir -p "$BIN.tmp"
[ -d "$BIN" ] && cp "$BIN"/* "$BIN.tmp/" 2>/dev/null || true
if [ -z "${WHAT_DONE:-}" ]; then
  CGO_ENABLED=0 HOME="$W/home" make WHAT="$WHAT" >&2
  for b in $WHAT; do cp "_output/bin/$(basename "$b")" "$BIN.tmp/"; done
fi
if [ "$WANT_KUBELET" = 1 ]; then
  # the pod sandbox's process (the image containerd's sandbox_image names), static: its image holds nothing else
  gcc -Os -static -DVERSION=v1.20.2-torchyard -o "$BIN.tmp/pause" build/pause/linux/pause.c
fi
rm -rf "$BIN"; mv "$BIN.tmp" "$BIN"
echo "$VERSION" > "$ROOT/$KEY/VERSION"
echo "$BIN"
