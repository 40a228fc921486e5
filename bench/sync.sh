#!/usr/bin/env bash
# Registry-to-registry replication, side by side in one run on the same content (issue 17):
#   sync:   `airgap registry sync --from A --to B` of one release (its signed index verified,
#           every blob digest-checked as it streams through)
#   resync: the same again with everything present (no blob may be copied)
#   skopeo: `skopeo copy docker://A/... docker://C/...` per image, into a fresh registry
# All three registries are distribution with TLS (a CA made here) and htpasswd auth, on
# loopback. Prints wall time, peak RSS and ratios. Content as in bench/registry.sh (~2 GiB).
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
rm -rf "$work/content"

make_pki
distribution public; public=$reg_port
distribution private; private=$reg_port
distribution theirs; theirs=$reg_port
auth=$(printf bench:bench | base64)
cat > "$work/auth.json" <<JSON
{"auths":{"127.0.0.1:$public":{"auth":"$auth"},"127.0.0.1:$private":{"auth":"$auth"}}}
JSON
export REGISTRY_AUTH_FILE=$work/auth.json
echo bench | "$bin/airgap" registry seed "$work/bundle.tar" --pub "$work/k.pub" \
  --to "https://127.0.0.1:$public/m" --ca "$work/ca.crt" --username bench --password-stdin \
  -j 8 --config-dir "$work/cfg" >/dev/null
rm -f "$work/bundle.tar"   # only the public registry from here on

sync() { "$bin/airgap" registry sync --from "https://127.0.0.1:$public/m" --to "https://127.0.0.1:$private/m" \
  --pub "$work/k.pub" --from-ca "$work/ca.crt" --to-ca "$work/ca.crt" -j 8; }
skopeo_sync() {
  while read -r name; do
    skopeo copy --quiet --src-creds bench:bench --dest-creds bench:bench \
      --src-cert-dir "$work/certs" --dest-cert-dir "$work/certs" \
      "docker://127.0.0.1:$public/m/$name" "docker://127.0.0.1:$theirs/m/$name"
  done < "$work/names"
}
export -f sync skopeo_sync
export work bin public private theirs

measure sync bash -c sync
copied=$(grep -o 'blobs: [0-9]* copied ([^)]*)' "$work/out")
measure resync bash -c sync
recopied=$(grep -o 'blobs: [0-9]* copied' "$work/out" | grep -o '[0-9]*')
measure skopeo bash -c skopeo_sync

echo
echo "content: $IMAGES images x $LAYERS layers x $LAYER_MIB MiB; first sync: $copied"
printf '%-60s %10s %12s\n' "operation" "wall s" "peak RSS"
printf '%-60s %10s %12s\n' "skopeo copy docker:// -> docker:// (per image)" "${wall[skopeo]}" "$(mib "${rss[skopeo]}")"
printf '%-60s %10s %12s\n' "airgap registry sync -j 8 (cold)" "${wall[sync]}" "$(mib "${rss[sync]}")"
printf '%-60s %10s %12s\n' "airgap registry sync (everything present)" "${wall[resync]}" "$(mib "${rss[resync]}")"
echo
echo "sync speed-up over skopeo:            $(ratio "${wall[skopeo]}" "${wall[sync]}")x"
echo "re-sync time / cold sync time:        $(ratio "${wall[resync]}" "${wall[sync]}")x, blobs copied: $recopied (target 0)"
echo "sync peak RSS:                        $(mib "${rss[sync]}")   (target < 128 MiB)"
