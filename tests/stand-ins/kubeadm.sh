#!/bin/sh
# Stand-in kubeadm for tests: records arguments, checks the config file, fakes admin.conf.
set -eu
printf '%s\n' "$@" > "$RECORD/kubeadm.$$.args"
[ "${STAND_IN_FAIL:-}" = 1 ] && { echo "[preflight] stand-in refuses: STAND_IN_FAIL=1" >&2; exit 1; }
first=$1; rootfs=""; config=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rootfs) rootfs=$2; shift 2;;
    --config) config=$2; shift 2;;
    *) shift;;
  esac
done
if [ "$first" = upgrade ]; then
  [ -f "$rootfs/etc/kubernetes/admin.conf" ] || { echo "no cluster to upgrade" >&2; exit 2; }
  echo "[upgrade/successful] (stand-in)"; exit 0
fi
file="$rootfs$config"
[ -f "$file" ] || { echo "no config file $file" >&2; exit 2; }
grep -q '^kind: InitConfiguration$' "$file" || { echo "no InitConfiguration" >&2; exit 2; }
grep -q '^kind: ClusterConfiguration$' "$file" || { echo "no ClusterConfiguration" >&2; exit 2; }
grep -q '^kind: KubeletConfiguration$' "$file" || { echo "no KubeletConfiguration" >&2; exit 2; }
for f in etc/kubernetes/pki/ca.crt etc/kubernetes/pki/ca.key etc/kubernetes/pki/etcd/ca.crt etc/kubernetes/pki/apiserver-etcd-client.key etc/kubernetes/encryption-config.yaml; do
  [ -f "$rootfs/$f" ] || { echo "missing /$f" >&2; exit 2; }
done
cp "$file" "$RECORD/kubeadm.yaml"
echo "apiVersion: v1" > "$rootfs/etc/kubernetes/admin.conf"
echo "Your Kubernetes control-plane has initialized successfully! (stand-in)"
