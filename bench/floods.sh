#!/usr/bin/env bash
# Legitimate clients under floods (issue 28), before and after the hardening, in one run: the
# same scenarios against the release built from BEFORE (default 35271ea, the last commit
# before it) and from the working tree.
#
# Registry (`registry serve bundle.tar --htpasswd`, TLS on 127.0.0.1, a soft open-files limit
# of 1024 as systemd gives a service by default): a legitimate client on 127.0.0.1 pulls a 1 MiB blob with a first
# login (a user not yet verified, so one bcrypt) REPS times, calm, then while
#   passwords:   200 threads send distinct wrong passwords from 127.0.0.2
#   connections: 1,100 TCP connections from 127.0.0.3 that never speak
# Join API (an HA node installed in a network namespace): a legitimate `GET /healthz` over
# TLS from node2's address REPS times, calm and under the same two floods from a fourth
# address (wrong join tokens instead of passwords).
# Each flood runs FLOOD_SECONDS (default 10). Prints per scenario: median and max seconds,
# failures, and what the flood was answered.
# Needs root (ip netns), etcd-server, curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=${BEFORE:-35271ea} REPS=${REPS:-5} SETTLE=${SETTLE:-3} FLOOD_SECONDS=${FLOOD_SECONDS:-10}
for c in curl python3 etcd openssl; do
  command -v $c >/dev/null || { echo "need $c" >&2; exit 1; }
done

work=$(mktemp -d -p "${BENCH_DIR:-/var/tmp}" airgap-bench.XXXXXX)
tag=agf$$
pids=()
flood_pid=
cleanup() {
  set +e  # best effort: every step runs, and a step that finds nothing is no failure
  [[ -n $flood_pid ]] && kill "$flood_pid" 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  lan_cleanup
  git worktree remove --force "$work/before-src" 2>/dev/null || true
  rm -rf "$work"
  return 0
}
source bench/netns.sh
source bench/lib.sh
trap 'rc=$?; cleanup; exit "$rc"' EXIT

cargo build --release --locked --bin airgap -p airgap-cli --bin airgap-testkit -p testkit >/dev/null 2>&1
declare -A bin=([after]=$PWD/target/release/airgap)
git worktree add -q "$work/before-src" "$BEFORE"
echo "building $BEFORE (the 'before' side)..." >&2
(cd "$work/before-src" && CARGO_TARGET_DIR=${BEFORE_TARGET:-/var/tmp/airgap-before-target} \
  cargo build --release --bin airgap -p airgap-cli >/dev/null 2>&1)
bin[before]=${BEFORE_TARGET:-/var/tmp/airgap-before-target}/release/airgap

target/release/airgap-testkit bench "$work/content" 1 1 $((1 << 20)) > /dev/null
target/release/airgap keygen -o "$work/k.key" >/dev/null
target/release/airgap bundle build -f "$work/content/bundle.yaml" -o "$work/bundle.tar" --key "$work/k.key" >/dev/null
# make_pki writes distribution's htpasswd with apache2-utils' htpasswd; without it, the same
# bcrypt line from Python's crypt.
command -v htpasswd >/dev/null || htpasswd() {
  python3 -W ignore -c 'import crypt, sys; print(sys.argv[1] + ":" + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1024)))' "${@: -2}"
}
export -f htpasswd 2>/dev/null || true
make_pki
# Users u1..u40 (bcrypt cost 10, what the installer uses): every probe logs in as a user the
# server has not verified yet.
python3 -W ignore -c '
import crypt
for i in range(1, 41):
    print(f"u{i}:" + crypt.crypt("pw", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1024)))
' > "$work/users"

# flood MODE HOST PORT SOURCE N [NETNS]: starts bench/flood.py, sets $flood_pid; the flood
# writes its answer counts to a file of its own.
floods=0
flood() {
  local ns=${6:-}
  floods=$((floods + 1)); flood_out=$work/flood-$floods.json; flood_started=$(date +%s)
  if [[ -n $ns ]]; then
    ip netns exec "$ns" python3 bench/flood.py "$1" "$2" "$3" "$4" "$5" "$flood_out" 2>/dev/null &
  else
    python3 bench/flood.py "$1" "$2" "$3" "$4" "$5" "$flood_out" 2>/dev/null &
  fi
  flood_pid=$!
  sleep "$SETTLE"
}
# stop_flood: after at least FLOOD_SECONDS of flood; prints what the flood was answered.
stop_flood() {
  local elapsed=$(( $(date +%s) - flood_started ))
  (( elapsed < FLOOD_SECONDS )) && sleep $(( FLOOD_SECONDS - elapsed ))
  kill -TERM "$flood_pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$flood_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$flood_pid" 2>/dev/null || true
  wait "$flood_pid" 2>/dev/null || true
  flood_pid=
  tr -d '{}"' < "$flood_out" 2>/dev/null | tr ',' ' '
}

# summary FILE: "median max failures" of the "CODE SECONDS" lines in FILE.
summary() {
  local failed; failed=$(awk '$1 != 200' "$1" | wc -l)
  awk '{print $2}' "$1" | sort -n |
    awk -v f="$failed" '{t[NR] = $1} END {printf "%6.3f %6.3f %3d", t[int((NR + 1) / 2)], t[NR], f}'
}

declare -A result answered
user=0
# probe_registry SIDE SCENARIO PORT BLOB_PATH: REPS pulls, each with a first login.
probe_registry() {
  : > "$work/lat"
  for ((r = 0; r < REPS; r++)); do
    user=$((user + 1))
    curl -s --max-time 30 --cacert "$work/ca.crt" -u "u$user:pw" -o /dev/null \
      -w '%{http_code} %{time_total}\n' "https://127.0.0.1:$3$4" >> "$work/lat" || echo "0 30" >> "$work/lat"
  done
  result[registry-$1-$2]=$(summary "$work/lat")
}

for side in before after; do
  p=$(port)
  (ulimit -Sn 1024; exec "${bin[$side]}" registry serve "$work/bundle.tar" --pub "$work/k.pub" \
    --listen "127.0.0.1:$p" --tls-cert "$work/tls.crt" --tls-key "$work/tls.key" \
    --htpasswd "$work/users") >/dev/null 2>&1 & pids+=($!)
  wait_port "$p"
  if [[ -z ${blob:-} ]]; then
    repo=$(curl -s --cacert "$work/ca.crt" -u u40:pw "https://127.0.0.1:$p/v2/_catalog" | python3 -c 'import json,sys; print(json.load(sys.stdin)["repositories"][0])')
    tag_=$(curl -s --cacert "$work/ca.crt" -u u40:pw "https://127.0.0.1:$p/v2/$repo/tags/list" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tags"][0])')
    digest=$(curl -s --cacert "$work/ca.crt" -u u40:pw -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      "https://127.0.0.1:$p/v2/$repo/manifests/$tag_" | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][0]["digest"])')
    blob=/v2/$repo/blobs/$digest
  fi
  probe_registry "$side" calm "$p" "$blob"
  flood passwords 127.0.0.1 "$p" 127.0.0.2 200
  probe_registry "$side" passwords "$p" "$blob"
  answered[registry-$side-passwords]=$(stop_flood)
  flood connections 127.0.0.1 "$p" 127.0.0.3 1100
  probe_registry "$side" connections "$p" "$blob"
  answered[registry-$side-connections]=$(stop_flood)
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
done

# The join API: node1 of an HA cluster (runtime, kubernetes and platform skipped), probed
# from node2's address; the floods come from a fourth address.
vip=10.82.0.100 fqdn=flood.example.internal
lan_node 1 10.82.0.11 "$vip $fqdn"; lan_node 2 10.82.0.12 "$vip $fqdn"; lan_node 4 10.82.0.14 "$vip $fqdn"
ha_yaml "$fqdn" "$vip" 10.82.0.11 10.82.0.12 10.82.0.13 > "$work/ha.yaml"
probe_join() {
  : > "$work/lat"
  for ((r = 0; r < REPS; r++)); do
    ip netns exec "$tag-n2" curl -sk --max-time 30 -o /dev/null -w '%{http_code} %{time_total}\n' \
      https://10.82.0.11:9443/healthz >> "$work/lat" || echo "0 30" >> "$work/lat"
  done
  result[join-$1-$2]=$(summary "$work/lat")
}
for side in before after; do
  ip netns exec "$tag-n1" bash -c 'ulimit -Sn 1024; exec "$@"' - "${bin[$side]}" install -c "$work/ha.yaml" --bundle "$work/bundle.tar" --pub "$work/k.pub" \
    --root "$work/root-$side" --skip-phases runtime,kubernetes,platform >/dev/null 2>&1
  for _ in $(seq 100); do
    ip netns exec "$tag-n2" curl -sk --max-time 2 -o /dev/null https://10.82.0.11:9443/healthz && break
    sleep 0.2
  done
  probe_join "$side" calm
  flood "$([[ $side == before ]] && echo joins-old || echo joins)" 10.82.0.11 9443 10.82.0.14 200 "$tag-n4"
  probe_join "$side" tokens
  answered[join-$side-tokens]=$(stop_flood)
  flood connections 10.82.0.11 9443 10.82.0.14 1100 "$tag-n4"
  probe_join "$side" connections
  answered[join-$side-connections]=$(stop_flood)
  for p in $(ip netns pids "$tag-n1"); do kill -9 "$p" 2>/dev/null || true; done
  sleep 1
done

echo
echo "legitimate client under floods: $REPS probes each; seconds; before = $BEFORE, after = $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
printf '%-34s %-7s %8s %8s %5s   %s\n' scenario side median max fail "flood answered (status: count)"
for what in registry-calm registry-passwords registry-connections join-calm join-tokens join-connections; do
  for side in before after; do
    key=${what%%-*}-$side-${what#*-}
    read -r med max fail <<< "${result[$key]}"
    printf '%-34s %-7s %8s %8s %5s   %s\n' "$what" "$side" "$med" "$max" "$fail" "${answered[$key]:-}"
  done
done
exit 0
