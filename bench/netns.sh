# Network namespaces for the multi-node benchmarks, sourced after `tag` (a unique prefix) is
# set: a bridge in namespace $tag-sw and nodes on it, as tests/ha.rs builds them.

# lan_node I ADDRESS [HOSTS_LINE]: namespace $tag-nI on the bridge with ADDRESS/24.
lan_node() {
  local ns=$tag-n$1
  ip netns list | grep -q "^$tag-sw" || {
    ip netns add "$tag-sw"
    ip -n "$tag-sw" link add br0 type bridge
    ip -n "$tag-sw" link set br0 up
  }
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" link add eth0 type veth peer name p$1 netns "$tag-sw"
  ip -n "$ns" addr add "$2/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$tag-sw" link set p$1 master br0
  ip -n "$tag-sw" link set p$1 up
  mkdir -p "/etc/netns/$ns"
  printf '127.0.0.1 localhost\n%s\n' "${3:-}" > "/etc/netns/$ns/hosts"
}

# lan_cleanup: kills every process in the nodes' namespaces and deletes them.
lan_cleanup() {
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$tag-"); do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
  done
}

# ha_yaml FQDN VIP A1 A2 A3: an HA install.yaml on stdout.
ha_yaml() {
  printf 'apiVersion: airgap/v1\nkind: Installation\nmetadata: {name: bench}\nspec:\n  mode: ha\n  fqdn: %s\n  vip: %s\n  nodes: [{name: node1, address: %s}, {name: node2, address: %s}, {name: node3, address: %s}]\n' "$@"
}

# replicated NS ROOT: true once every node's registry reports 0 missing blobs.
replicated() {
  local missing
  missing=$(ip netns exec "$1" "$bin/airgap" status --json --root "$2" 2>/dev/null \
    | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(m.get("registryMissing", 1) for m in s["cluster"]["members"]))' 2>/dev/null || echo x)
  [[ $missing == 0 ]]
}
