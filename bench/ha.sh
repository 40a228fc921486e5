#!/usr/bin/env bash
# HA benchmark (issue 16): a 3-node cluster in network namespaces on one bridge, as in
# tests/ha.rs, with the ~2 GiB bench bundle:
#   install node1 (verify, PKI, etcd, keys, built-in registry seeded from the bundle, agent)
#   join node2 and node3 (each: token, etcd learner -> voter, registry whose blobs replicate
#   from the peers: on demand while the join seeds, then in the background)
#   until every node's registry holds every blob (`airgap status` on node1 reports 0 missing)
# Prints each step's wall time, the registry phase of each join (the node places the blobs of
# its own verified bundle in its store; only what it lacks would come from a peer), the total,
# and its ratio to one install. Then VIP failover, FAILOVER_ROUNDS times each (default 10):
# the holder's `cluster` service SIGKILLed (the agent restarts it), and the whole holder node
# SIGKILLed with its link cut, then brought back; the time until exactly one node carries the
# VIP for good, median and max. Two nodes carrying it at once aborts the benchmark.
# Needs root (ip netns), etcd-server.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${IMAGES:-20} LAYERS=${LAYERS:-2} LAYER_MIB=${LAYER_MIB:-51}
command -v etcd >/dev/null || { echo "need etcd (apt-get install etcd-server)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "need /usr/bin/time (apt-get install time)" >&2; exit 1; }

source bench/lib.sh
bench_start
tag=agb$$
nodes=(10.79.0.11 10.79.0.12 10.79.0.13)
vip=10.79.0.100
fqdn=bench.example.internal
source bench/netns.sh
before_cleanup() { lan_cleanup; }
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
# The join command's certificate key, for every join below (airgap join reads it from the environment).
export AIRGAP_CERTIFICATE_KEY=$(grep -o -- '--certificate-key [0-9a-f]*' "$work/out-install" | awk '{print $2}')
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
  printf '%-62s %8ss\n' "  of which registry phase (blobs placed from its own bundle)" "$(phase join$i registry)"
  printf '%-62s %8ss\n' "  of which verify (hashing its own bundle)" "$(phase join$i verify)"
done
printf '%-62s %8.2fs\n' "last join -> every registry complete (background catch-up)" "$(awk -v a=$joined -v b=$done_at 'BEGIN{print b-a}')"
printf '%-62s %8.2fs\n' "install on node1 -> all three nodes healthy and replicated" "$(awk -v a=$start -v b=$done_at 'BEGIN{print b-a}')"
printf '%-62s %8.2fx\n' "  as a multiple of one install" "$(awk -v a=$start -v b=$done_at -v i=${wall[install]} 'BEGIN{print (b-a)/i}')"

# --- VIP failover ---
rounds=${FAILOVER_ROUNDS:-10}
carriers() { # the nodes whose interface carries the VIP, space-separated
  local out=() i
  for i in 1 2 3; do ip -n "$tag-n$i" -o addr show | grep -q " $vip/32 " && out+=("$i"); done
  echo "${out[*]:-}"
}
settle() { # SINCE: waits until one node carries the VIP alone for 1 s; prints SECONDS-AFTER-SINCE NODE
  local since=$1 cur="" start=0 now c
  while :; do
    now=$(date +%s.%N); c=$(carriers)
    [[ $c == *" "* ]] && { echo "two nodes carry the VIP: $c" >&2; exit 1; }
    if [[ -n $c && $c == "$cur" ]]; then
      if awk -v n="$now" -v s="$start" 'BEGIN{exit !(n-s>=1.0)}'; then
        awk -v s="$start" -v t="$since" -v c="$c" 'BEGIN{printf "%.2f %s\n", s-t, c}'; return
      fi
    else cur=$c start=$now; fi
    sleep 0.02
  done
}
service_pid() { # I: the pid node I's agent runs its cluster service as
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["services"]["cluster"]["pid"] or "")' \
    "$work/root$1/var/lib/airgap/agent.json" 2>/dev/null
}
back() { # I: node I's own command again (install on node1, join on the others)
  if [[ $1 == 1 ]]; then
    ip netns exec "$tag-n1" "$bin/airgap" install -c "$work/install.yaml" --bundle "$work/bundle.tar" \
      --pub "$work/k.pub" --root "$work/root1" --skip-phases "$skip" >/dev/null
  else
    ip netns exec "$tag-n$1" "$bin/airgap" join --token "$token" --server "$vip" --bundle "$work/bundle.tar" \
      --pub "$work/k.pub" --root "$work/root$1" --skip-phases "$skip" >/dev/null
  fi
}
settled() { # true once node I's status shows all three etcd members healthy
  ip netns exec "$tag-n$1" "$bin/airgap" status --json --root "$work/root$1" 2>/dev/null \
    | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if sum(m["healthy"] for m in s["cluster"]["members"]) == 3 else 1)' 2>/dev/null
}
median_max() { sort -n | awk '{v[NR]=$1} END{printf "median %.2fs, max %.2fs", v[int((NR+1)/2)], v[NR]}'; }
read -r _ holder < <(settle "$(date +%s.%N)")
: > "$work/service-kills"; : > "$work/node-kills"
for ((r = 0; r < rounds; r++)); do
  for i in 1 2 3; do until [[ -n $(service_pid $i) ]] && kill -0 "$(service_pid $i)" 2>/dev/null; do sleep 0.1; done; done
  until settled "$holder"; do sleep 0.2; done
  kill -9 "$(service_pid "$holder")"
  read -r took holder < <(settle "$(date +%s.%N)")
  echo "$took" >> "$work/service-kills"
  until settled "$holder"; do sleep 0.2; done
  dead=$holder killed=$(date +%s.%N)
  for p in $(ip netns pids "$tag-n$dead"); do kill -9 "$p" 2>/dev/null || true; done
  ip -n "$tag-sw" link set "p$dead" down
  read -r took holder < <(settle "$killed")
  echo "$took" >> "$work/node-kills"
  ip -n "$tag-sw" link set "p$dead" up
  back "$dead"
done
echo
echo "VIP failover over $rounds rounds (time until exactly one node carries the VIP for good):"
printf '  %-60s %s\n' "holder's cluster service SIGKILLed (agent restarts it)" "$(median_max < "$work/service-kills")"
printf '  %-60s %s\n' "whole holder node SIGKILLed, link cut" "$(median_max < "$work/node-kills")"
