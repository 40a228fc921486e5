#!/usr/bin/env bash
# `bundle verify` peak memory is flat in the bundle's size: the same content shape at SIZES
# GiB (default "2 20"), each verified from a file on disk (every core) and from a pipe (one
# pass), with wall time, throughput and peak RSS (target < 32 MiB at every size).
# Needs about twice the largest size free under $BENCH_DIR (/var/tmp): the generated layout
# and the bundle built from it exist together for a moment. The 20 GiB run takes minutes;
# SIZES=2 alone is the quick check.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"2 20"} IMAGES=${IMAGES:-20} LAYERS=${LAYERS:-2}
[[ -x /usr/bin/time ]] || { echo "need /usr/bin/time (apt-get install time)" >&2; exit 1; }
source bench/lib.sh
bench_start
"$bin/airgap" keygen -o "$work/k.key" >/dev/null

rows=()
for gib in $SIZES; do
  # IMAGES x LAYERS layers plus the shared base layer make up the size.
  layer_mib=$(( gib * 1024 / (IMAGES * LAYERS + 1) ))
  "$bin/airgap-testkit" bench "$work/content" "$IMAGES" "$LAYERS" $((layer_mib << 20)) > /dev/null
  "$bin/airgap" bundle build -f "$work/content/bundle.yaml" -o "$work/b.tar" --key "$work/k.key" --no-cache >/dev/null
  rm -rf "$work/content"
  size=$(stat -c %s "$work/b.tar")
  /usr/bin/time -f "%e %M" -o "$work/t.file" "$bin/airgap" bundle verify "$work/b.tar" --pub "$work/k.pub" >/dev/null
  /usr/bin/time -f "%e %M" -o "$work/t.pipe" bash -c "cat '$work/b.tar' | '$bin/airgap' bundle verify - --pub '$work/k.pub' >/dev/null"
  read -r fw fr < "$work/t.file"
  read -r pw pr < "$work/t.pipe"
  rows+=("$(awk -v s="$size" -v fw="$fw" -v fr="$fr" -v pw="$pw" -v pr="$pr" 'BEGIN {
    printf "%7.2f GiB  file %7.2f s %6.2f GB/s %5.0f MiB   pipe %7.2f s %6.2f GB/s %5.0f MiB",
      s / 2^30, fw, s / fw / 1e9, fr / 1024, pw, s / pw / 1e9, pr / 1024 }')")
  rm -f "$work/b.tar"
done
echo "bundle verify, peak RSS by bundle size (target < 32 MiB, flat); the pipe one's RSS is the"
echo "verifier's (bash and cat are measured with it, a few MiB):"
printf '%s\n' "${rows[@]}"
