#!/usr/bin/env bash
# Authentication under a flood of wrong passwords (issue 13), side by side in one run:
# `airgap registry serve --htpasswd` vs the distribution registry, both on loopback with TLS
# and the same bcrypt htpasswd file. For each: the latency of an authenticated `GET /v2/`
# (one curl process, keep-alive) alone, then while FLOOD clients send distinct wrong passwords
# as fast as they can. bcrypt is ~50 ms of CPU per check; a server that runs it on its request
# threads answers everyone late. Prints medians, p99, the flood's slowdown, and peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOOD=${FLOOD:-8} REQUESTS=${REQUESTS:-200} FLOOD_SECONDS=${FLOOD_SECONDS:-5}
for c in docker-registry openssl htpasswd curl; do
  command -v $c >/dev/null || { echo "need $c (apt-get install docker-registry openssl apache2-utils curl)" >&2; exit 1; }
done

source bench/lib.sh
bench_start

"$bin/airgap-testkit" bench "$work/content" 1 1 $((1 << 20)) > /dev/null
"$bin/airgap" keygen -o "$work/k.key" >/dev/null
"$bin/airgap" bundle build -f "$work/content/bundle.yaml" -o "$work/bundle.tar" --key "$work/k.key" >/dev/null

make_pki
# The cost airgap's installer generates (10, ~50 ms), not htpasswd's default (5).
htpasswd -Bbn -C 10 bench bench > "$work/htpasswd"

distribution theirs; theirs=$reg_port; theirs_pid=${pids[-1]}
ours=$(port)
"$bin/airgap" registry serve "$work/bundle.tar" --pub "$work/k.pub" --listen "127.0.0.1:$ours" \
  --tls-cert "$work/tls.crt" --tls-key "$work/tls.key" --htpasswd "$work/htpasswd" >/dev/null 2>&1 & pids+=($!)
ours_pid=$!
wait_port "$ours"

# latency PORT NAME: REQUESTS authenticated GET /v2/ on one connection; "median p99" in ms.
latency() {
  local urls=() i
  for ((i = 0; i < REQUESTS; i++)); do urls+=(-o /dev/null "https://127.0.0.1:$1/v2/"); done
  curl -s --cacert "$work/ca.crt" -u bench:bench -w '%{http_code} %{time_total}\n' "${urls[@]}" > "$work/lat-$2"
  if grep -qv '^200 ' "$work/lat-$2"; then
    echo "authenticated requests to $2 failed: $(sort "$work/lat-$2" | cut -d' ' -f1 | uniq -c | tr '\n' ' ')" >&2
    exit 1
  fi
  awk '{print $2 * 1000}' "$work/lat-$2" | sort -n |
    awk '{v[NR] = $1} END {printf "%.2f %.2f", v[int(NR * 0.5) + 1], v[int(NR * 0.99)]}'
}

# flood PORT: FLOOD clients, each an endless stream of distinct wrong passwords; every answer's
# status is appended to $work/flood-codes so the report shows the flood really ran.
flood() {
  local i
  : > "$work/flood-codes"
  flood_started=$(date +%s)
  for ((i = 0; i < FLOOD; i++)); do
    (
      n=0
      while :; do
        args=()
        for ((j = 0; j < 4; j++)); do
          ((j)) && args+=(--next)
          args+=(-s --cacert "$work/ca.crt" -u "bench:wrong-$i-$n-$j" -o /dev/null -w '%{http_code}\n'
                 "https://127.0.0.1:$1/v2/")
        done
        curl "${args[@]}" >> "$work/flood-codes" 2>/dev/null || true
        n=$((n + 1))
      done
    ) &
    flood_pids+=($!)
  done
  sleep 1
}
stop_flood() {
  ((${#flood_pids[@]})) || return 0   # a bare `wait` would wait for the servers too
  kill "${flood_pids[@]}" 2>/dev/null || true
  wait "${flood_pids[@]}" 2>/dev/null || true
  flood_pids=()
}
flood_pids=()
before_cleanup() { stop_flood; }

declare -A calm loaded refused window
for target in ours theirs; do
  port=${!target}
  latency "$port" "$target" > /dev/null   # warm: the first bcrypt and TLS session
  calm[$target]=$(latency "$port" "$target")
  flood "$port"
  loaded[$target]=$(latency "$port" "$target")
  # A fixed window (at least FLOOD_SECONDS) so the refusal rates compare.
  elapsed=$(( $(date +%s) - flood_started ))
  (( elapsed < FLOOD_SECONDS )) && sleep $(( FLOOD_SECONDS - elapsed ))
  window[$target]=$(( $(date +%s) - flood_started ))
  stop_flood
  refused[$target]=$(grep -c '^401$' "$work/flood-codes" || true)
done
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

printf '%-32s %10s %10s %13s %13s %9s %10s\n' "server" "median ms" "p99 ms" "flood med ms" "flood p99 ms" "401/s" "peak RSS"
for target in ours theirs; do
  read -r cm cp <<< "${calm[$target]}"; read -r lm lp <<< "${loaded[$target]}"
  pid_var=${target}_pid
  name=$([[ $target == ours ]] && echo "airgap registry serve" || echo "distribution (docker-registry)")
  printf '%-32s %10s %10s %13s %13s %9s %10s\n' "$name" "$cm" "$cp" "$lm" "$lp" "$(ratio "${refused[$target]}" "${window[$target]}")" "$(mib "$(hwm "${!pid_var}")")"
done
read -r ocm _ <<< "${calm[ours]}"; read -r olm _ <<< "${loaded[ours]}"
read -r tcm _ <<< "${calm[theirs]}"; read -r tlm _ <<< "${loaded[theirs]}"
echo
echo "flood slowdown (flood median / calm median): ours $(ratio "$olm" "$ocm")x, distribution $(ratio "$tlm" "$tcm")x   (target: ours < 5)"
echo "under flood, distribution median / ours:     $(ratio "$tlm" "$olm")x   (target >= 1)"
