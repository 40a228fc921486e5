#!/usr/bin/env bash
# The built-in registry at scale (issue 15): seeding bundles of 1,000 / 4,000 / 16,000 small
# images (one repository each, a shared base layer mounted across them, one small layer of its
# own) into `airgap registry serve DIR`, with the metadata in the store's log and then in
# etcd, all in one run. A push's cost must not grow with what the store already holds: the
# report gives time per image and the ratio of each run's per-image time to the smallest
# run's (target: the largest within 1.5x), and the registry's peak RSS.
#   SIZES="1000 4000 16000" BACKENDS="log etcd" bench/registry_scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"1000 4000 16000"} BACKENDS=${BACKENDS:-"log etcd"} JOBS=${JOBS:-8}
for c in openssl htpasswd etcd; do
  command -v $c >/dev/null || { echo "need $c (apt-get install openssl apache2-utils etcd-server)" >&2; exit 1; }
done

source bench/lib.sh
bench_start
source bench/lib.sh
make_pki
"$bin/airgap" keygen -o "$work/k.key" >/dev/null

for n in $SIZES; do
  "$bin/airgap-testkit" bench "$work/content-$n" "$n" 1 64 > /dev/null
  "$bin/airgap" bundle build -f "$work/content-$n/bundle.yaml" -o "$work/bundle-$n.tar" --key "$work/k.key" >/dev/null
  rm -rf "$work/content-$n"
done

# start_etcd: a fresh single-member etcd with mutual TLS; sets $etcd_port.
start_etcd() {
  local c p; c=$(port); p=$(port)
  etcd --name b --data-dir "$work/etcd-$c" \
    --listen-client-urls "https://127.0.0.1:$c" --advertise-client-urls "https://127.0.0.1:$c" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
    --initial-cluster "b=http://127.0.0.1:$p" --cert-file "$work/tls.crt" --key-file "$work/tls.key" \
    --trusted-ca-file "$work/ca.crt" --client-cert-auth >/dev/null 2>&1 & pids+=($!)
  wait_port "$c"; etcd_port=$c
}

printf '%-8s %7s %9s %10s %9s %14s\n' backend images seconds "ms/image" "vs first" "registry RSS"
smallest=${SIZES%% *}
for backend in $BACKENDS; do
  first=""
  # A discarded warm-up run of the smallest size first, so no measured run pays for cold
  # caches (the first run was up to 2x slower than a repeat of itself).
  for n in warmup $SIZES; do
    bundle=$work/bundle-$n.tar
    [ "$n" = warmup ] && bundle=$work/bundle-$smallest.tar
    extra=()
    if [ "$backend" = etcd ]; then
      start_etcd; etcd_pid=${pids[-1]}
      extra=(--etcd "https://127.0.0.1:$etcd_port" --etcd-ca "$work/ca.crt" --etcd-cert "$work/tls.crt" --etcd-key "$work/tls.key")
    fi
    p=$(port)
    "$bin/airgap" registry serve "$work/store-$backend-$n" --listen "127.0.0.1:$p" \
      --tls-cert "$work/tls.crt" --tls-key "$work/tls.key" --htpasswd "$work/htpasswd" "${extra[@]}" \
      >/dev/null 2>&1 & pids+=($!)
    server=$!
    wait_port "$p"
    start=$(date +%s.%N)
    echo bench | "$bin/airgap" registry seed "$bundle" --pub "$work/k.pub" \
      --to "https://127.0.0.1:$p" --ca "$work/ca.crt" --username bench --password-stdin \
      -j "$JOBS" --config-dir "$work/mirror-$n" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    end=$(date +%s.%N)
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
    kill "$server"; wait "$server" 2>/dev/null || true
    if [ "$backend" = etcd ]; then kill "$etcd_pid"; wait "$etcd_pid" 2>/dev/null || true; fi
    if [ "$n" = warmup ]; then rm -rf "$work/store-$backend-$n"; continue; fi
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.2f", b - a}')
    per=$(awk -v s="$secs" -v n="$n" 'BEGIN{printf "%.3f", s * 1000 / n}')
    [ -n "$first" ] || first=$per
    printf '%-8s %7d %9s %10s %9s %14s\n' "$backend" "$n" "$secs" "$per" "$(ratio "$per" "$first")x" "$(mib "$hwm")"
    rm -rf "$work/store-$backend-$n"
  done
done
