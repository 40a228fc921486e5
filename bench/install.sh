#!/usr/bin/env bash
# Install benchmark (issue 5), side by side in one run on the same content:
#   install: `airgap install` of a standalone node (own loopback address, own root) from the
#            bundle: time until etcd and the registry are healthy (seeding excluded), seeding
#            throughput, whole-install wall time and peak RSS
#   example: the same for the shipped example bundle (time to healthy, tiny seed)
#   skopeo:  `skopeo copy oci-archive:bundle.tar:REF docker://...` per image into the
#            distribution registry (TLS, htpasswd): the seeding baseline
# Content as in bench/format.sh (~2 GiB, 20 images). Needs etcd-server.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${IMAGES:-20} LAYERS=${LAYERS:-2} LAYER_MIB=${LAYER_MIB:-51}
for c in skopeo docker-registry openssl htpasswd etcd; do
  command -v $c >/dev/null || { echo "need $c (apt-get install skopeo docker-registry openssl apache2-utils etcd-server time)" >&2; exit 1; }
done
[[ -x /usr/bin/time ]] || { echo "need /usr/bin/time (apt-get install time)" >&2; exit 1; }

source bench/lib.sh
bench_start
# Installed roots run services: stop them before the scratch directory goes.
before_cleanup() {
  for r in "$work"/root-*; do [[ -d $r ]] && "$bin/airgap" stop --root "$r" >/dev/null 2>&1; done
}

"$bin/airgap-testkit" bench "$work/content" "$IMAGES" "$LAYERS" $((LAYER_MIB << 20)) --k8s > "$work/names"
"$bin/airgap" keygen -o "$work/k.key" >/dev/null
"$bin/airgap" bundle build -f "$work/content/bundle.yaml" -o "$work/bundle.tar" --key "$work/k.key" --no-cache >/dev/null
"$bin/airgap" bundle build -f examples/bundle.yaml -o "$work/example.tar" --key "$work/k.key" --no-cache >/dev/null
rm -rf "$work/content"

make_pki
node_yaml() { # ADDRESS
  printf 'apiVersion: airgap/v1\nkind: Installation\nmetadata: {name: bench}\nspec:\n  mode: standalone\n  fqdn: bench.example.internal\n  nodes: [{name: node1, address: %s}]\n' "$1"
}
node_yaml 127.77.1.11 > "$work/big.yaml"
node_yaml 127.77.1.12 > "$work/example.yaml"
skopeo_seed() {
  while read -r name; do
    skopeo copy --quiet --dest-creds bench:bench --dest-cert-dir "$work/certs" \
      "oci-archive:$work/bundle.tar:$name" "docker://127.0.0.1:$1/m/$name"
  done < "$work/names"
}
export -f skopeo_seed
export work bin

cat "$work/bundle.tar" > /dev/null
measure example "$bin/airgap" install -c "$work/example.yaml" --bundle "$work/example.tar" --pub "$work/k.pub" --root "$work/root-example"
example_healthy=$(grep -o 'healthy [0-9.]*s' "$work/out" | grep -o '[0-9.]*')
measure install "$bin/airgap" install -c "$work/big.yaml" --bundle "$work/bundle.tar" --pub "$work/k.pub" --root "$work/root-big" -j 8
healthy=$(grep -o 'healthy [0-9.]*s' "$work/out" | grep -o '[0-9.]*')
seeded=$(grep -o 'seeded .*/s)' "$work/out")
seed_secs=$(echo "$seeded" | grep -o 'in [0-9.]*s' | grep -o '[0-9.]*')
measure rerun "$bin/airgap" install -c "$work/big.yaml" --bundle "$work/bundle.tar" --pub "$work/k.pub" --root "$work/root-big" -j 8
distribution theirs; theirs=$reg_port
measure skopeo bash -c "skopeo_seed $theirs"

size=$(stat -c %s "$work/bundle.tar")
echo
echo "content: $IMAGES images, $(awk -v b="$size" 'BEGIN{printf "%.2f GiB", b/1073741824}') bundle"
printf '%-58s %9s %10s\n' operation wall "peak RSS"
printf '%-58s %8ss %10s\n' "install of the example bundle (whole run)" "${wall[example]}" "$(mib "${rss[example]}")"
printf '%-58s %8ss\n' "  of which start -> etcd and registry healthy" "$example_healthy"
printf '%-58s %8ss %10s\n' "install of the bench bundle (whole run, verify included)" "${wall[install]}" "$(mib "${rss[install]}")"
printf '%-58s %8ss\n' "  of which start -> etcd and registry healthy" "$healthy"
printf '%-58s %8ss\n' "  of which seeding the node's registry" "$seed_secs"
printf '%-58s %8ss %10s\n' "re-run of the same install (nothing to do)" "${wall[rerun]}" "$(mib "${rss[rerun]}")"
printf '%-58s %8ss %10s\n' "skopeo copy oci-archive: -> distribution, per image" "${wall[skopeo]}" "$(mib "${rss[skopeo]}")"
echo
echo "install seeding: $seeded"
echo "seeding vs skopeo: $(ratio "${wall[skopeo]}" "$seed_secs")x faster"
