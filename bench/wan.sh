#!/usr/bin/env bash
# Build and seed over a WAN-like link, side by side with skopeo in one run on the same content.
# A shaping proxy of ours (`airgap-testkit wan-proxy`: RTT_MS round trip, MB_PER_S per
# connection and direction) sits between each tool and a distribution registry (TLS, htpasswd):
#   build: `airgap bundle build -j JOBS` (cold cache) from the upstream registry
#          vs `skopeo copy docker://... oci:DIR` for the same images
#   seed:  `airgap registry seed -j JOBS` of the bundle into an empty registry
#          vs `skopeo copy oci-archive:... docker://...` per image into another empty one
# Prints wall times, peak RSS and the speed-ups (target >= 4x for both).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${IMAGES:-20} LAYERS=${LAYERS:-2} LAYER_MIB=${LAYER_MIB:-25}
RTT_MS=${RTT_MS:-40} MB_PER_S=${MB_PER_S:-25} JOBS=${JOBS:-16}
for c in skopeo docker-registry openssl htpasswd; do
  command -v $c >/dev/null || { echo "need $c (apt-get install skopeo docker-registry openssl apache2-utils time)" >&2; exit 1; }
done
[[ -x /usr/bin/time ]] || { echo "need /usr/bin/time (apt-get install time)" >&2; exit 1; }

source bench/lib.sh
bench_start

"$bin/airgap-testkit" bench "$work/content" "$IMAGES" "$LAYERS" $((LAYER_MIB << 20)) > "$work/names"
"$bin/airgap" keygen -o "$work/k.key" >/dev/null
"$bin/airgap" bundle build -f "$work/content/bundle.yaml" -o "$work/seed.tar" --key "$work/k.key" --no-cache >/dev/null
rm -rf "$work/content"

make_pki
# wan NAME UPSTREAM_PORT: a shaping proxy in front of a registry; sets $wan_port.
wan() {
  "$bin/airgap-testkit" wan-proxy 127.0.0.1:0 "127.0.0.1:$2" "$RTT_MS" "$MB_PER_S" > "$work/$1.port" & pids+=($!)
  for _ in $(seq 100); do [[ -s $work/$1.port ]] && break; sleep 0.05; done
  wan_port=$(cat "$work/$1.port")
}

distribution upstream; up=$reg_port
echo bench | "$bin/airgap" registry seed "$work/seed.tar" --pub "$work/k.pub" --to "https://127.0.0.1:$up/up" \
  --ca "$work/ca.crt" --username bench --password-stdin -j 8 --config-dir "$work/cfg" >/dev/null
wan upstream "$up"; up_wan=127.0.0.1:$wan_port
distribution ours; wan ours "$reg_port"; ours_wan=127.0.0.1:$wan_port
distribution theirs; wan theirs "$reg_port"; theirs_wan=127.0.0.1:$wan_port
printf '{"auths":{"%s":{"auth":"%s"},"%s":{"auth":"%s"},"%s":{"auth":"%s"}}}\n' \
  "$up_wan" "$(printf bench:bench | base64)" "$ours_wan" "$(printf bench:bench | base64)" \
  "$theirs_wan" "$(printf bench:bench | base64)" > "$work/auth.json"
export REGISTRY_AUTH_FILE=$work/auth.json
{
  printf 'apiVersion: airgap/v1\nkind: Bundle\nmetadata: {name: bench, version: 1.0.0}\nspec:\n  images:\n'
  while read -r name; do echo "    - $up_wan/up/$name"; done < "$work/names"
  printf '  registries:\n    - {host: "%s", ca: %s}\n' "$up_wan" "$work/ca.crt"
} > "$work/pull.yaml"

skopeo_build() {
  while read -r name; do
    skopeo copy --quiet --src-cert-dir "$work/certs" "docker://$up_wan/up/$name" "oci:$work/skopeo-out:${name##*/}"
  done < "$work/names"
}
build() { "$bin/airgap" bundle build -f "$work/pull.yaml" -o "$work/out.tar" --key "$work/k.key" --cache "$work/cache" -j "$JOBS"; }
seed() { echo bench | "$bin/airgap" registry seed "$work/seed.tar" --pub "$work/k.pub" --to "https://$ours_wan/m" \
  --ca "$work/ca.crt" --username bench --password-stdin -j "$JOBS" --config-dir "$work/cfg"; }
skopeo_seed() {
  while read -r name; do
    skopeo copy --quiet --dest-cert-dir "$work/certs" "oci-archive:$work/seed.tar:$name" "docker://$theirs_wan/m/$name"
  done < "$work/names"
}
export -f skopeo_build build seed skopeo_seed
export work bin up_wan ours_wan theirs_wan JOBS

find "$work/upstream/storage" -type f -exec cat {} + > /dev/null
cat "$work/seed.tar" > /dev/null
measure skopeo_build bash -c skopeo_build
rm -rf "$work/skopeo-out"
measure build bash -c build
build_summary=$(cat "$work/out")
measure skopeo_seed bash -c skopeo_seed
measure seed bash -c seed

size=$(stat -c %s "$work/seed.tar")
echo
echo "content: $IMAGES images ($LAYERS layers of $LAYER_MIB MiB), bundle $(awk -v b="$size" 'BEGIN{printf "%.2f GiB", b/2^30}')"
echo "link: ${RTT_MS} ms round trip, ${MB_PER_S} MB/s per connection and direction (bench's own proxy)"
echo "build: $build_summary"
printf '%-58s %10s %12s\n' "operation" "wall s" "peak RSS"
printf '%-58s %10s %12s\n' "skopeo copy docker:// -> oci: (per image)" "${wall[skopeo_build]}" "$(mib "${rss[skopeo_build]}")"
printf '%-58s %10s %12s\n' "airgap bundle build -j $JOBS (cold cache)" "${wall[build]}" "$(mib "${rss[build]}")"
printf '%-58s %10s %12s\n' "skopeo copy oci-archive: -> docker:// (per image)" "${wall[skopeo_seed]}" "$(mib "${rss[skopeo_seed]}")"
printf '%-58s %10s %12s\n' "airgap registry seed -j $JOBS" "${wall[seed]}" "$(mib "${rss[seed]}")"
echo
echo "build speed-up over skopeo over the WAN:  $(ratio "${wall[skopeo_build]}" "${wall[build]}")x   (target >= 4)"
echo "seed speed-up over skopeo over the WAN:   $(ratio "${wall[skopeo_seed]}" "${wall[seed]}")x   (target >= 4)"
