#!/usr/bin/env bash
# The main job end to end on the shipped example: keygen -> bundle build -> verify -> install a
# standalone node (PKI, etcd with mutual TLS, encrypted installation keys, built-in registry
# seeded from the bundle, supervising agent, CIS-hardened kubeadm/kubelet configuration and
# platform manifests rendered) into a local directory -> status.
# Everything it writes goes to one directory ($AIRGAP_DEMO_DIR, or a new temporary one). The
# node is stopped when the demo ends unless AIRGAP_DEMO_KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v etcd >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
  else
    echo "error: the install needs etcd on PATH (Debian: apt-get install etcd-server) or a pack carrying bin/etcd" >&2
    exit 1
  fi
fi
cargo build --release --locked --bin airgap
bin=$PWD/target/release/airgap
work=${AIRGAP_DEMO_DIR:-$(mktemp -d -t airgap-demo.XXXXXX)}
mkdir -p "$work"
root=$work/node

"$bin" keygen -o "$work/signing.key" --force
"$bin" bundle build -f examples/bundle.yaml -o "$work/bundle.tar" --key "$work/signing.key"
"$bin" bundle verify "$work/bundle.tar" --pub "$work/signing.pub"
"$bin" bundle inspect "$work/bundle.tar"
echo

if [[ ${AIRGAP_DEMO_KEEP:-0} != 1 ]]; then
  trap '"$bin" stop --root "$root" >/dev/null 2>&1 || true' EXIT
fi
"$bin" install -c examples/install.yaml --bundle "$work/bundle.tar" --pub "$work/signing.pub" --root "$root"
echo
"$bin" status --root "$root"
echo
echo "demo output in $work: signing.key (0600), signing.pub, bundle.tar, node/ (the installed root)"
if [[ ${AIRGAP_DEMO_KEEP:-0} != 1 ]]; then
  echo "stopping the node (AIRGAP_DEMO_KEEP=1 keeps it running; airgap reset --root $root removes it)"
fi
