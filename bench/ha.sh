#!/usr/bin/env bash
# HA benchmark (issue 16): a 3-node cluster in network namespaces on one bridge, as in
# tests/ha.rs, with the ~2 GiB bench bundle:
#   install node1 (verify, PKI, etcd, keys, built-in registry seeded from the bundle, agent)
#   join node2 and node3 (each: token, etcd learner -> voter, registry whose blobs replicate
#   from the peers: on demand while the join seeds, then in the background)
#   until every node's registry holds every blob (`airgap status` on node1 reports 0 missing)
# Prints each step's wall time, the registry phase of each join (that is replication: the
# node's own bundle is only hashed, the bytes come from a peer), and the total.
# Needs root (ip netns), etcd-server.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${IMAGES:-20} LAYERS=${LAYERS:-2} LAYER_MIB=${LAYER_MIB:-51}
command -v etcd >/dev/null || { echo "need etcd (apt-get install etcd-server)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "need /usr/bin/time (apt-get install time)" >&2; exit 1; }

cargo build --release --locked --bin airgap -p airgap-cli --bin airgap-testkit -p testkit >/dev/null 2>&1
bin=$PWD/target/release
work=$(mktemp -d -p "${BENCH_DIR:-/var/tmp}" airgap-bench.XXXXXX)
tag=agb$$
nodes=(10.79.0.11 10.79.0.12 10.79.0.13)
vip=10.79.0.100
fqdn=bench.example.internal
source bench/netns.sh
trap 'lan_cleanup; rm -rf "$work"' EXIT
for i in 1 2 3; do lan_node $i "${nodes[$((i-1))]}" "$vip $fqdn"; done

"$bin/airgap-testkit" bench "$work/content" "$IMAGES" "$LAYERS" $((LAYER_MIB << 20)) > "$work/names"
"$bin/airgap" keygen -o "$work/k.key" >/dev/null
"$bin/airgap" bundle build -f "$work/content/bundle.yaml" -o "$work/bundle.tar" --key "$work/k.key" --no-cache >/dev/null
rm -rf "$work/content"
ha_yaml "$fqdn" "$vip" "${nodes[@]}" > "$work/install.yaml"

declare -A wall rss
measure() { # NAME CMD...
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out-$name" 2>"$work/err" || { cat "$work/err" "$work/out-$name" >&2; exit 1; }
  read -r w r < "$work/time"; wall[$name]=$w rss[$name]=$r
}
skip=runtime,kubernetes,platform

cat "$work/bundle.tar" > /dev/null
start=$(date +%s.%N)
measure install ip netns exec "$tag-n1" "$bin/airgap" install -c "$work/install.yaml" --bundle "$work/bundle.tar" \
  --pub "$work/k.pub" --root "$work/root1" --skip-phases "$skip" -j 8
token=$(grep -o 'airgap join --token [^ ]*' "$work/out-install" | awk '{print $4}')
for i in 2 3; do
  measure join$i ip netns exec "$tag-n$i" "$bin/airgap" join --token "$token" --server "$vip" --bundle "$work/bundle.tar" \
    --pub "$work/k.pub" --root "$work/root$i" --skip-phases "$skip" -j 8
done
joined=$(date +%s.%N)
until replicated "$tag-n1" "$work/root1"; do sleep 0.2; done
done_at=$(date +%s.%N)

phase() { grep -o "^\[$2\].*" "$work/out-$1" | grep -o '([0-9.]*s)$' | tr -d '()s'; }
size=$(stat -c %s "$work/bundle.tar")
echo
echo "content: $IMAGES images, $(awk -v b="$size" 'BEGIN{printf "%.2f GiB", b/1073741824}') bundle; 3 nodes on one bridge (veth)"
printf '%-62s %9s %10s\n' step wall "peak RSS"
printf '%-62s %8ss %7.0f MiB\n' "install node1 (whole run)" "${wall[install]}" "$(awk -v k=${rss[install]} 'BEGIN{print k/1024}')"
printf '%-62s %8ss\n' "  of which seeding its registry from the bundle" "$(phase install registry)"
for i in 2 3; do
  printf '%-62s %8ss %7.0f MiB\n' "join node$i (whole run)" "${wall[join$i]}" "$(awk -v k=${rss[join$i]} 'BEGIN{print k/1024}')"
  printf '%-62s %8ss\n' "  of which registry phase (blobs replicated from peers)" "$(phase join$i registry)"
  printf '%-62s %8ss\n' "  of which verify (hashing its own bundle)" "$(phase join$i verify)"
done
printf '%-62s %8.2fs\n' "last join -> every registry complete (background catch-up)" "$(awk -v a=$joined -v b=$done_at 'BEGIN{print b-a}')"
printf '%-62s %8.2fs\n' "install on node1 -> all three nodes healthy and replicated" "$(awk -v a=$start -v b=$done_at 'BEGIN{print b-a}')"
