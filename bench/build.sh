#!/usr/bin/env bash
# Connected-build benchmark (issue 3), side by side in one run on the same content:
#   cold:  `airgap bundle build -j 8` pulling 20+ images from the distribution registry into an
#          empty cache  vs  `skopeo copy docker://... oci:DIR` for the same images (one oci: DIR,
#          so skopeo too stores each shared blob once)
#   warm:  the same build again, to another file, with the first bundle kept (the cache reads
#          blobs from the bundles it built): no blob may be downloaded
# The registry runs on loopback with TLS (a CA made here) and htpasswd auth, as in the tests;
# credentials come from $REGISTRY_AUTH_FILE for both tools. Prints wall time, peak RSS, ratios.
# Content as in bench/format.sh (~2 GiB).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${IMAGES:-20} LAYERS=${LAYERS:-2} LAYER_MIB=${LAYER_MIB:-51}
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
distribution upstream; port=$reg_port
host=127.0.0.1:$port
echo bench | "$bin/airgap" registry seed "$work/seed.tar" --pub "$work/k.pub" --to "https://$host/up" \
  --ca "$work/ca.crt" --username bench --password-stdin -j 8 --config-dir "$work/cfg" >/dev/null
rm -f "$work/seed.tar"
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$host" "$(printf bench:bench | base64)" > "$work/auth.json"
export REGISTRY_AUTH_FILE=$work/auth.json

{
  printf 'apiVersion: airgap/v1\nkind: Bundle\nmetadata: {name: bench, version: 1.0.0}\nspec:\n  images:\n'
  while read -r name; do echo "    - $host/up/$name"; done < "$work/names"
  printf '  registries:\n    - {host: "%s", ca: %s}\n' "$host" "$work/ca.crt"
} > "$work/pull.yaml"

skopeo_all() {
  rm -rf "$work/skopeo-out"
  while read -r name; do
    skopeo copy --quiet --src-cert-dir "$work/certs" "docker://$host/up/$name" "oci:$work/skopeo-out:${name##*/}"
  done < "$work/names"
}
build() { rm -f "$work/out.tar"; "$bin/airgap" bundle build -f "$work/pull.yaml" -o "$work/out.tar" --key "$work/k.key" --cache "$work/cache" -j 8; }
build_warm() { rm -f "$work/warm.tar"; "$bin/airgap" bundle build -f "$work/pull.yaml" -o "$work/warm.tar" --key "$work/k.key" --cache "$work/cache" -j 8; }
build_no_cache() { rm -f "$work/out.tar"; "$bin/airgap" bundle build -f "$work/pull.yaml" -o "$work/out.tar" --key "$work/k.key" --no-cache -j 8; }
disk_floor() { dd if=/dev/zero of="$work/floor" bs=1M count=$(( $(stat -c %s "$work/out.tar") >> 20 )) conv=fsync status=none; rm -f "$work/floor"; }
export -f skopeo_all build build_warm build_no_cache disk_floor
export work bin host

# The registry's files in the page cache for every contender.
find "$work/upstream/storage" -type f -exec cat {} + > /dev/null
measure skopeo bash -c skopeo_all
rm -rf "$work/skopeo-out" "$work/cache"
measure cold bash -c build
cold_summary=$(cat "$work/out")
measure warm bash -c build_warm
rm -f "$work/warm.tar"
warm_summary=$(cat "$work/out")
measure nocache bash -c build_no_cache
measure floor bash -c disk_floor
downloaded_warm=$(grep -o 'downloaded [0-9]* blobs' <<<"$warm_summary" | grep -o '[0-9]*')

size=$(stat -c %s "$work/out.tar")
echo
echo "content: $IMAGES images pulled over TLS, bundle $(awk -v b="$size" 'BEGIN{printf "%.2f GiB", b/2^30}')"
echo "cold: $cold_summary"
echo "warm: $warm_summary"
printf '%-55s %10s %12s\n' "operation" "wall s" "peak RSS"
printf '%-55s %10s %12s\n' "skopeo copy docker:// -> oci: (per image)" "${wall[skopeo]}" "$(mib "${rss[skopeo]}")"
printf '%-55s %10s %12s\n' "airgap bundle build -j 8 (cold cache)" "${wall[cold]}" "$(mib "${rss[cold]}")"
printf '%-55s %10s %12s\n' "airgap bundle build -j 8 (warm cache)" "${wall[warm]}" "$(mib "${rss[warm]}")"
printf '%-55s %10s %12s\n' "airgap bundle build -j 8 --no-cache" "${wall[nocache]}" "$(mib "${rss[nocache]}")"
printf '%-55s %10s %12s\n' "disk floor: dd the bundle's size, fsync" "${wall[floor]}" "-"
echo
echo "cold build speed-up over skopeo:      $(ratio "${wall[skopeo]}" "${wall[cold]}")x   (target >= 2)"
echo "--no-cache speed-up over skopeo:      $(ratio "${wall[skopeo]}" "${wall[nocache]}")x   (writes the bundle only, as skopeo writes its layout)"
echo "cold build / write floor:             $(ratio "${wall[cold]}" "${wall[floor]}")x   (target <= 1.15: the bundle's bytes written once)"
echo "best possible on this disk:           $(ratio "${wall[skopeo]}" "${wall[floor]}")x   (skopeo time / time to write the bundle's bytes once)"
echo "warm rebuild / write floor:           $(ratio "${wall[warm]}" "${wall[floor]}")x   (target <= 1.0), blobs downloaded: $downloaded_warm (target 0)"
echo "build peak RSS at -j 8:               $(mib "${rss[cold]}")   (target < 128 MiB)"
