#!/usr/bin/env bash
# etcd 3.5, for the rolling-upgrade test: Debian 12's etcd-server is 3.4, which serves gRPC over
# TLS through its HTTP server and cuts calls under way when a member stops; 3.5 with the JSON
# gateway on a listener of its own (--listen-client-http-urls) drains them. Debian 13's
# etcd-server (3.5.16) is linked against glibc 2.34+, which Debian 12 has, so it runs as it is.
# Unpacked with scripts/debian13-packages.sh; nothing is installed into the system. Prints the
# binary's path.
#
#   scripts/etcd35.sh [DIR]     (default /var/tmp/airgap-etcd35)
set -euo pipefail
dir=${1:-${AIRGAP_ETCD35_DIR:-/var/tmp/airgap-etcd35}}
"$(dirname "$0")/debian13-packages.sh" "$dir" etcd-server
etcd=$dir/root/usr/bin/etcd
"$etcd" --version | grep -q '^etcd Version: 3\.5\.' || { echo "error: $etcd is not etcd 3.5" >&2; exit 1; }
echo "$etcd"
