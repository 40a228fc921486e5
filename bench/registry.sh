#!/usr/bin/env bash
# Registry benchmarks, side by side in one run on the same content (issue 4):
#   seed:   `airgap registry seed -j 8` into the distribution registry
#           vs `skopeo copy oci-archive:bundle.tar:REF docker://...` per image, into a fresh one
#   reseed: `airgap registry seed` again with everything present (no blob may be uploaded)
#   serve:  `skopeo copy docker://... oci:` of every image from `airgap registry serve bundle.tar`
#           vs from the distribution registry holding the same content
# Both registries run on loopback with TLS (a CA made here) and htpasswd auth, as in the
# tests. Prints wall time, peak RSS and ratios. Content as in bench/format.sh (~2 GiB).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${IMAGES:-20} LAYERS=${LAYERS:-2} LAYER_MIB=${LAYER_MIB:-51}
for c in skopeo docker-registry openssl htpasswd curl; do
  command -v $c >/dev/null || { echo "need $c (apt-get install skopeo docker-registry openssl apache2-utils curl time)" >&2; exit 1; }
done
[[ -x /usr/bin/time ]] || { echo "need /usr/bin/time (apt-get install time)" >&2; exit 1; }

source bench/lib.sh
bench_start

"$bin/airgap-testkit" bench "$work/content" "$IMAGES" "$LAYERS" $((LAYER_MIB << 20)) > "$work/names"
"$bin/airgap" keygen -o "$work/k.key" >/dev/null
"$bin/airgap" bundle build -f "$work/content/bundle.yaml" -o "$work/bundle.tar" --key "$work/k.key" --no-cache >/dev/null
rm -rf "$work/content"   # only the bundle is needed from here on

make_pki

seed() { echo bench | "$bin/airgap" registry seed "$work/bundle.tar" --pub "$work/k.pub" \
  --to "https://127.0.0.1:$1/m" --ca "$work/ca.crt" --username bench --password-stdin -j 8 --config-dir "$work/cfg"; }
skopeo_seed() {
  while read -r name; do
    skopeo copy --quiet --dest-creds bench:bench --dest-cert-dir "$work/certs" \
      "oci-archive:$work/bundle.tar:$name" "docker://127.0.0.1:$1/m/$name"
  done < "$work/names"
}
pull_all() { # HOST_PREFIX CREDS
  rm -rf "$work/pulled"
  while read -r name; do
    skopeo copy --quiet $2 --src-cert-dir "$work/certs" "docker://$1/$name" "oci:$work/pulled:$name"
  done < "$work/names"
}
export -f seed skopeo_seed pull_all
export work bin

cat "$work/bundle.tar" > /dev/null   # the bundle in the page cache for every contender
distribution ours; ours=$reg_port
distribution theirs; theirs=$reg_port
measure seed bash -c "seed $ours"
grep -o 'blobs: [0-9]* uploaded' "$work/out" | head -1 > "$work/cold"
measure reseed bash -c "seed $ours"
reseed_uploads=$(grep -o 'blobs: [0-9]* uploaded' "$work/out" | grep -o '[0-9]*')
measure skopeo_seed bash -c "skopeo_seed $theirs"

sp=$(port)
"$bin/airgap" registry serve "$work/bundle.tar" --pub "$work/k.pub" --listen "127.0.0.1:$sp" \
  --tls-cert "$work/tls.crt" --tls-key "$work/tls.key" >/dev/null 2>&1 & pids+=($!)
wait_port "$sp"
measure pull_ours bash -c "pull_all 127.0.0.1:$sp --src-no-creds"
measure pull_distribution bash -c "pull_all 127.0.0.1:$theirs/m '--src-creds bench:bench'"

size=$(stat -c %s "$work/bundle.tar")
echo
echo "content: $IMAGES images, bundle $(awk -v b="$size" 'BEGIN{printf "%.2f GiB", b/2^30}'); cold seed: $(cat "$work/cold")"
printf '%-55s %10s %12s\n' "operation" "wall s" "peak RSS"
printf '%-55s %10s %12s\n' "skopeo copy oci-archive: -> docker:// (per image)" "${wall[skopeo_seed]}" "$(mib "${rss[skopeo_seed]}")"
printf '%-55s %10s %12s\n' "airgap registry seed -j 8 (cold)" "${wall[seed]}" "$(mib "${rss[seed]}")"
printf '%-55s %10s %12s\n' "airgap registry seed (everything present)" "${wall[reseed]}" "$(mib "${rss[reseed]}")"
printf '%-55s %10s %12s\n' "skopeo pull all from distribution" "${wall[pull_distribution]}" "-"
printf '%-55s %10s %12s\n' "skopeo pull all from airgap registry serve" "${wall[pull_ours]}" "-"
echo
echo "seed speed-up over skopeo:            $(ratio "${wall[skopeo_seed]}" "${wall[seed]}")x   (target >= 2)"
echo "re-seed time / cold seed time:        $(ratio "${wall[reseed]}" "${wall[seed]}")x   (target < 0.05), blobs uploaded: $reseed_uploads (target 0)"
echo "serve: distribution time / ours:      $(ratio "${wall[pull_distribution]}" "${wall[pull_ours]}")x   (target >= 1)"
echo "seeder peak RSS:                      $(mib "${rss[seed]}")   (target < 128 MiB)"
