#!/usr/bin/env bash
# Upgrade benchmark (issue 17): a release of 2 GiB (20 images) replacing one of 1 GiB
# (its first 10 images, so half the new bundle is new content), with `airgap upgrade --bundle`:
#   standalone: one node in a network namespace
#   HA:         three nodes on one bridge (bench/netns.sh), upgraded one at a time in order
# For each upgrade: wall time, of which seeding the new content (the registry phase) and the
# rest (the node's etcd, agent: the roll), and peak RSS. Needs root (ip netns), etcd-server.
set -euo pipefail
cd "$(dirname "$0")/.."
LAYER_MIB=${LAYER_MIB:-51}
command -v etcd >/dev/null || { echo "need etcd (apt-get install etcd-server)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "need /usr/bin/time (apt-get install time)" >&2; exit 1; }

source bench/lib.sh
bench_start
tag=agu$$
source bench/netns.sh
before_cleanup() { lan_cleanup; }

"$bin/airgap" keygen -o "$work/k.key" >/dev/null
for images in 10 20; do
  "$bin/airgap-testkit" bench "$work/c$images" "$images" 2 $((LAYER_MIB << 20)) >/dev/null
  version=1.0.0; [[ $images == 20 ]] && version=1.1.0
  sed -i "s/version: 1.0.0/version: $version/" "$work/c$images/bundle.yaml"
  "$bin/airgap" bundle build -f "$work/c$images/bundle.yaml" -o "$work/v$version.tar" --key "$work/k.key" --no-cache >/dev/null
  rm -rf "$work/c$images"
done

declare -A wall rss
measure() { # NAME CMD...
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out-$name" 2>"$work/err" || { cat "$work/err" "$work/out-$name" >&2; exit 1; }
  read -r w r < "$work/time"; wall[$name]=$w rss[$name]=$r
}
phase() { grep -o "^\[$2\].*" "$work/out-$1" | grep -o '([0-9.]*s)$' | tr -d '()s'; }
skip=runtime,kubernetes,platform
fqdn=bench.example.internal vip=10.80.0.100

# Standalone.
lan_node 9 10.80.0.9 "10.80.0.9 $fqdn"
printf 'apiVersion: airgap/v1\nkind: Installation\nmetadata: {name: bench}\nspec:\n  mode: standalone\n  fqdn: %s\n  nodes: [{name: node1, address: 10.80.0.9}]\n' "$fqdn" > "$work/one.yaml"
ip netns exec "$tag-n9" "$bin/airgap" install -c "$work/one.yaml" --bundle "$work/v1.0.0.tar" --pub "$work/k.pub" \
  --root "$work/one" --skip-phases "$skip" >/dev/null
cat "$work/v1.1.0.tar" > /dev/null
measure one ip netns exec "$tag-n9" "$bin/airgap" upgrade --bundle "$work/v1.1.0.tar" --pub "$work/k.pub" \
  --root "$work/one" --skip-phases "$skip"

# Three nodes.
ha_yaml "$fqdn" "$vip" 10.80.0.11 10.80.0.12 10.80.0.13 > "$work/ha.yaml"
for i in 1 2 3; do lan_node $i 10.80.0.1$i "$vip $fqdn"; done
ip netns exec "$tag-n1" "$bin/airgap" install -c "$work/ha.yaml" --bundle "$work/v1.0.0.tar" --pub "$work/k.pub" \
  --root "$work/r1" --skip-phases "$skip" > "$work/out-install"
token=$(grep -o 'airgap join --token [^ ]*' "$work/out-install" | awk '{print $4}')
# The join command's certificate key, for every join below (airgap join reads it from the environment).
export AIRGAP_CERTIFICATE_KEY=$(grep -o -- '--certificate-key [0-9a-f]*' "$work/out-install" | awk '{print $2}')
for i in 2 3; do
  ip netns exec "$tag-n$i" "$bin/airgap" join --token "$token" --server "$vip" --bundle "$work/v1.0.0.tar" \
    --pub "$work/k.pub" --root "$work/r$i" --skip-phases "$skip" >/dev/null
done
until replicated "$tag-n1" "$work/r1"; do sleep 0.2; done
start=$(date +%s.%N)
for i in 1 2 3; do
  measure ha$i ip netns exec "$tag-n$i" "$bin/airgap" upgrade --bundle "$work/v1.1.0.tar" --pub "$work/k.pub" \
    --root "$work/r$i" --skip-phases "$skip"
done
rolled=$(date +%s.%N)
until replicated "$tag-n1" "$work/r1"; do sleep 0.2; done
done_at=$(date +%s.%N)

old=$(stat -c %s "$work/v1.0.0.tar") new=$(stat -c %s "$work/v1.1.0.tar")
echo
echo "upgrade $(awk -v b="$old" 'BEGIN{printf "%.2f", b/1073741824}') GiB (10 images) -> $(awk -v b="$new" 'BEGIN{printf "%.2f", b/1073741824}') GiB (20 images, half of it new)"
printf '%-58s %9s %10s\n' step wall "peak RSS"
printf '%-58s %8ss %7.0f MiB\n' "standalone upgrade (whole run, verify included)" "${wall[one]}" "$(awk -v k=${rss[one]} 'BEGIN{print k/1024}')"
printf '%-58s %8ss\n' "  of which seeding the new content (registry phase)" "$(phase one registry)"
printf '%-58s %8ss\n' "  of which verify" "$(phase one verify)"
for i in 1 2 3; do
  printf '%-58s %8ss %7.0f MiB\n' "HA node$i upgrade (whole run)" "${wall[ha$i]}" "$(awk -v k=${rss[ha$i]} 'BEGIN{print k/1024}')"
  printf '%-58s %8ss\n' "  of which registry phase (node1: seeding; others: replication)" "$(phase ha$i registry)"
done
printf '%-58s %8.2fs\n' "HA: three nodes rolled (sum of the three runs)" "$(awk -v a=$start -v b=$rolled 'BEGIN{print b-a}')"
printf '%-58s %8.2fs\n' "HA: last node done -> every registry complete" "$(awk -v a=$rolled -v b=$done_at 'BEGIN{print b-a}')"
