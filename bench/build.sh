#!/usr/bin/env bash
# Connected-build benchmark (issue 3), side by side in one run on the same content:
#   cold:  `airgap bundle build -j 8` pulling 20+ images from the distribution registry into an
#          empty cache  vs  `skopeo copy docker://... oci:DIR` for the same images (one oci: DIR,
#          so skopeo too stores each shared blob once)
#   warm:  the same build again with the cache full: no blob may be downloaded
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

cargo build --release --locked --bin airgap -p airgap-cli --bin airgap-testkit -p testkit >/dev/null 2>&1
bin=$PWD/target/release
work=$(mktemp -d -p "${BENCH_DIR:-/var/tmp}" airgap-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bin/airgap-testkit" bench "$work/content" "$IMAGES" "$LAYERS" $((LAYER_MIB << 20)) > "$work/names"
"$bin/airgap" keygen -o "$work/k.key" >/dev/null
"$bin/airgap" bundle build -f "$work/content/bundle.yaml" -o "$work/seed.tar" --key "$work/k.key" \
  --cache "$work/unused-cache" >/dev/null
rm -rf "$work/content" "$work/unused-cache"

(
  cd "$work"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=bench-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout tls.key -out tls.csr -subj /CN=localhost 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext
  openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt -days 2 -extfile ext 2>/dev/null
  mkdir -p certs && cp ca.crt certs/
  htpasswd -Bbn bench bench > htpasswd
)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/config.yml" <<CFG
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/storage}}
http: {addr: 127.0.0.1:$port, tls: {certificate: $work/tls.crt, key: $work/tls.key}}
auth: {htpasswd: {realm: bench, path: $work/htpasswd}}
CFG
docker-registry serve "$work/config.yml" >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
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

declare -A wall rss
measure() { # NAME CMD...: one run (each run's starting state is set up by the caller)
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  read -r w r < "$work/time"; wall[$name]=$w rss[$name]=$r
}
skopeo_all() {
  rm -rf "$work/skopeo-out"
  while read -r name; do
    skopeo copy --quiet --src-cert-dir "$work/certs" "docker://$host/up/$name" "oci:$work/skopeo-out:${name##*/}"
  done < "$work/names"
}
build() { rm -f "$work/out.tar"; "$bin/airgap" bundle build -f "$work/pull.yaml" -o "$work/out.tar" --key "$work/k.key" --cache "$work/cache" -j 8; }
build_no_cache() { rm -f "$work/out.tar"; "$bin/airgap" bundle build -f "$work/pull.yaml" -o "$work/out.tar" --key "$work/k.key" --no-cache -j 8; }
disk_floor() { dd if=/dev/zero of="$work/floor" bs=1M count=$(( $(stat -c %s "$work/out.tar") >> 20 )) conv=fsync status=none; rm -f "$work/floor"; }
export -f skopeo_all build build_no_cache disk_floor
export work bin host

# The registry's files in the page cache for every contender.
find "$work/storage" -type f -exec cat {} + > /dev/null
measure skopeo bash -c skopeo_all
rm -rf "$work/skopeo-out" "$work/cache"
measure cold bash -c build
cold_summary=$(cat "$work/out")
measure warm bash -c build
warm_summary=$(cat "$work/out")
measure nocache bash -c build_no_cache
measure floor bash -c disk_floor
downloaded_warm=$(grep -o 'downloaded [0-9]* blobs' <<<"$warm_summary" | grep -o '[0-9]*')

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b == 0) b = 0.001; printf "%.2f", a / b }'; }
mib() { awk -v k="$1" 'BEGIN{printf "%.0f MiB", k / 1024}'; }
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
echo "cold build speed-up over skopeo:      $(ratio "${wall[skopeo]}" "${wall[cold]}")x   (target >= 2; writes the bundle and the cache)"
echo "--no-cache speed-up over skopeo:      $(ratio "${wall[skopeo]}" "${wall[nocache]}")x   (writes the bundle only, as skopeo writes its layout)"
echo "best possible on this disk:           $(ratio "${wall[skopeo]}" "${wall[floor]}")x   (skopeo time / time to write the bundle's bytes once)"
echo "warm rebuild time / cold build time:  $(ratio "${wall[warm]}" "${wall[cold]}")x   (target < 0.10), blobs downloaded: $downloaded_warm (target 0)"
echo "build peak RSS at -j 8:               $(mib "${rss[cold]}")   (target < 128 MiB)"
