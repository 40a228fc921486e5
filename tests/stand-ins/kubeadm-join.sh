#!/bin/sh
set -eu
printf '%s\n' "$@" > "$RECORD/kubeadm.args"
rootfs=""; config=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rootfs) rootfs=$2; shift 2;;
    --config) config=$2; shift 2;;
    *) shift;;
  esac
done
file="$rootfs$config"
grep -q '^kind: JoinConfiguration$' "$file" || { echo "no JoinConfiguration in $file" >&2; exit 2; }
kubeconfig=$(sed -n 's/^ *kubeConfigPath: //p' "$file" | tr -d '"')
grep -q 'client-certificate-data:' "$rootfs$kubeconfig" || { echo "no credentials in $kubeconfig" >&2; exit 2; }
for f in etc/kubernetes/pki/ca.crt etc/kubernetes/pki/ca.key etc/kubernetes/pki/etcd/ca.crt etc/kubernetes/pki/apiserver-etcd-client.key etc/kubernetes/encryption-config.yaml; do
  [ -f "$rootfs/$f" ] || { echo "missing /$f" >&2; exit 2; }
done
cp "$file" "$RECORD/kubeadm-join.yaml"
echo "apiVersion: v1" > "$rootfs/etc/kubernetes/admin.conf"
