#!/usr/bin/env bash
# Bundle-format benchmarks, side by side in one run on the same content:
#   build:  `airgap bundle build` from a local OCI layout  vs  `skopeo copy oci: oci:` per image
#   verify: `airgap bundle verify` over the bundle         vs  `sha256sum`, and vs the all-core
#           sha256 rate of `openssl dgst` (one per core) over the same file
# Prints wall time, peak RSS and ratios. Content: IMAGES images x LAYERS layers x LAYER_MIB MiB,
# plus one base layer every image shares (default 20 x 2 x 51 MiB + 51 MiB = ~2.05 GiB).
# Both tools read from the page cache: each is run once to warm it, then measured.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${IMAGES:-20} LAYERS=${LAYERS:-2} LAYER_MIB=${LAYER_MIB:-51} RUNS=${RUNS:-3}
command -v skopeo >/dev/null && [[ -x /usr/bin/time ]] || { echo "need skopeo and /usr/bin/time (apt-get install skopeo time)" >&2; exit 1; }

source bench/lib.sh
bench_start

"$bin/airgap-testkit" bench "$work/content" "$IMAGES" "$LAYERS" $((LAYER_MIB << 20)) > "$work/names"
"$bin/airgap" keygen -o "$work/k.key" >/dev/null
content=$(du -sb "$work/content/layout" | cut -f1)

# measure NAME CMD...: best (lowest) wall time of $RUNS runs, with that run's peak RSS.
declare -A wall rss
measure() {
  local name=$1; shift
  local best="" best_rss=""
  for ((i = 0; i < RUNS; i++)); do
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    read -r w r < "$work/time"
    if [[ -z $best ]] || awk -v a="$w" -v b="$best" 'BEGIN{exit !(a<b)}'; then best=$w best_rss=$r; fi
  done
  wall[$name]=$best rss[$name]=$best_rss
}

skopeo_all() {
  rm -rf "$work/skopeo-out"
  while read -r name; do
    skopeo copy --quiet "oci:$work/content/layout:$name" "oci:$work/skopeo-out:$name"
  done < "$work/names"
}
build() { rm -f "$work/bundle.tar"; "$bin/airgap" bundle build -f "$work/content/bundle.yaml" -o "$work/bundle.tar" --key "$work/k.key" --no-cache; }
export -f skopeo_all build
export work bin

cat "$work"/content/layout/blobs/sha256/* > /dev/null   # warm the cache for both
measure skopeo bash -c skopeo_all
measure build bash -c build
bundle_size=$(stat -c %s "$work/bundle.tar")
measure sha256sum sha256sum "$work/bundle.tar"
# The machine's sha256 rate on every core: one `openssl dgst -sha256` (SHA-NI where the CPU
# has it, as airgap's hashing does) per core over the same cached file.
cores=$(nproc)
hash_all_cores() { for _ in $(seq "$cores"); do openssl dgst -sha256 "$work/bundle.tar" >/dev/null & done; wait; }
export -f hash_all_cores
export cores
measure sha256_cores bash -c hash_all_cores
measure verify "$bin/airgap" bundle verify "$work/bundle.tar" --pub "$work/k.pub"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b == 0) b = 0.001; printf "%.2f", a / b }'; }
mib() { awk -v k="$1" 'BEGIN{printf "%.0f MiB", k / 1024}'; }
echo
echo "content: $IMAGES images, $(awk -v b="$content" 'BEGIN{printf "%.2f GiB", b/2^30}') layout, bundle $(awk -v b="$bundle_size" 'BEGIN{printf "%.2f GiB", b/2^30}'); best of $RUNS runs"
printf '%-40s %10s %12s\n' "operation" "wall s" "peak RSS"
printf '%-40s %10s %12s\n' "skopeo copy oci: -> oci: (per image)" "${wall[skopeo]}" "$(mib "${rss[skopeo]}")"
printf '%-40s %10s %12s\n' "airgap bundle build" "${wall[build]}" "$(mib "${rss[build]}")"
printf '%-40s %10s %12s\n' "sha256sum bundle.tar" "${wall[sha256sum]}" "$(mib "${rss[sha256sum]}")"
printf '%-40s %10s %12s\n' "airgap bundle verify" "${wall[verify]}" "$(mib "${rss[verify]}")"
echo
echo "build speed-up over skopeo:        $(ratio "${wall[skopeo]}" "${wall[build]}")x"
echo "verify time / sha256sum time:      $(ratio "${wall[verify]}" "${wall[sha256sum]}")x   (one core's hash rate: < 1 means faster than it)"
gbs() { awk -v b="$1" -v s="$2" 'BEGIN{ if (s == 0) s = 0.001; printf "%.2f GB/s", b / s / 1e9 }'; }
echo "verify throughput:                 $(gbs "$bundle_size" "${wall[verify]}"); all-core ($cores) sha256 rate: $(gbs $((bundle_size * cores)) "${wall[sha256_cores]}")"
echo "verify / all-core hash rate:       $(awk -v v="${wall[verify]}" -v h="${wall[sha256_cores]}" -v c="$cores" 'BEGIN{ if (v == 0) v = 0.001; printf "%.2f", (1 / v) / (c / h) }')   (target >= 0.80)"
echo "verify peak RSS:                   $(mib "${rss[verify]}")   (target < 64 MiB)"
