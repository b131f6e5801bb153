#!/usr/bin/env bash
# Builds the real components of the realstack test tier from the Go modules
# pinned beside this script, into a cache directory outside the checkout, and
# installs Debian's Prometheus and Alertmanager when they are missing.
#
#   tests/realstack/build.sh            # build what is missing, print the bin dir last
#   tests/realstack/build.sh --print    # only print the bin dir (no build)
#
# The cache is keyed by a hash of every go.mod, go.sum and .go file here, so a
# new pin builds afresh and a complete cache is reused as it is. Nothing is
# downloaded except Go modules through the Go module proxy and Debian packages.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache_root=${REALSTACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/remediation-realstack}
# A module's key: the hash of its go.mod, go.sum and .go files. Each module
# builds into a directory of its own key, so a new pin rebuilds only its module;
# bin/ (printed last) holds links to the current builds.
module_key() {
  (cd "$here/$1" && find . -name go.mod -o -name go.sum -o -name '*.go' | LC_ALL=C sort \
     | xargs sha256sum | sha256sum | cut -c1-16)
}
bin="$cache_root/bin-$(cd "$here" && find . -name go.mod -o -name go.sum -o -name '*.go' \
      | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"

if [ "${1:-}" = "--print" ]; then echo "$bin"; exit 0; fi
mkdir -p "$bin"

# component  module-dir  package
components=(
  "etcd                     etcd  ."
  "kube-apiserver           kube  k8s.io/kubernetes/cmd/kube-apiserver"
  "kube-controller-manager  kube  k8s.io/kubernetes/cmd/kube-controller-manager"
  "kube-scheduler           kube  k8s.io/kubernetes/cmd/kube-scheduler"
  "kwok                     kwok  sigs.k8s.io/kwok/cmd/kwok"
  "opa                      opa   github.com/open-policy-agent/opa"
)
# No Vault server: OpenBao is refused by the Go module proxy (403 for every
# version) and Vault 1.13/1.14 do not build from the published modules (see
# the README's real-stack section); the Vault tier stays on its double.

total_start=$(date +%s)
for row in "${components[@]}"; do
  read -r name dir pkg <<<"$row"
  out="$cache_root/$dir-$(module_key "$dir")"
  if [ ! -x "$out/$name" ]; then
    echo "realstack: building $name ($pkg) into $out" >&2
    mkdir -p "$out"
    start=$(date +%s)
    # -trimpath and -s -w: smaller binaries, no paths of this machine inside.
    (cd "$here/$dir" && go build -trimpath -ldflags="-s -w" -o "$out/$name.tmp" "$pkg")
    mv "$out/$name.tmp" "$out/$name"
    echo "realstack: built $name in $(( $(date +%s) - start )) s" >&2
  fi
  ln -sfn "$out/$name" "$bin/$name"
done

# kwok runs no stage unless given some: its own default ones (ready nodes with
# lease heartbeats, pods made ready, deletions completed) come from the pinned
# module as it sits in the module cache, concatenated next to the binary.
stages="$bin/kwok-stages.yaml"
if [ ! -s "$stages" ]; then
  kwok_dir=$(cd "$here/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    printf -- '---\n'; cat "$kwok_dir/kustomize/stage/$f"
  done > "$stages.tmp"
  mv "$stages.tmp" "$stages"
fi

# Debian's Prometheus, promtool, Alertmanager and amtool (run directly by the
# tests with their own config and data dirs; the packaged services are not used).
# Debian names the Alertmanager binary prometheus-alertmanager.
if ! command -v prometheus >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "realstack: installing Debian's prometheus and prometheus-alertmanager" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >&2
    # The packages start their own services where an init system runs; the tests
    # run their own instances on free ports, so stop those if they came up.
    for svc in prometheus prometheus-alertmanager prometheus-node-exporter; do
      (service "$svc" stop >/dev/null 2>&1 || true)
    done
  else
    echo "realstack: prometheus/alertmanager missing; install Debian's 'prometheus' and" \
         "'prometheus-alertmanager' (needs root)" >&2
    exit 1
  fi
fi
for name in prometheus promtool amtool; do
  ln -sf "$(command -v "$name")" "$bin/$name"
done
ln -sf "$(command -v prometheus-alertmanager)" "$bin/alertmanager"

echo "realstack: components ready in $(( $(date +%s) - total_start )) s" >&2
echo "$bin"
