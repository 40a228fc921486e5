#!/usr/bin/env bash
# A skopeo that signs and verifies sigstore signatures, for the upstream-signature tests.
#
# Debian 12's skopeo (1.9.3) is built with sigstore disabled ("Debian-local change: sigstore
# disabled") for signing and for verifying. Debian 13's skopeo (1.18) has it. This fetches that
# package and the libc it is linked against (glibc 2.38+; Debian 12 has 2.36) from Debian's
# archive through apt (signatures checked against debian-archive-keyring), with lists and cache
# of its own so the system's apt is untouched, unpacks both under one directory, and writes a
# wrapper that runs the binary through the unpacked libc's loader. Nothing is installed into
# the system. Idempotent: a second run only prints the wrapper's path.
#
#   scripts/sigstore-skopeo.sh [DIR]     (default /var/tmp/airgap-skopeo-sigstore)
set -euo pipefail
dir=${1:-${AIRGAP_SIGSTORE_SKOPEO_DIR:-/var/tmp/airgap-skopeo-sigstore}}
wrapper=$dir/bin/skopeo
if [[ -x $wrapper ]] && "$wrapper" --version >/dev/null 2>&1; then
  echo "$wrapper"
  exit 0
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -r $keyring ]] || { echo "error: $keyring is missing (apt-get install debian-archive-keyring)" >&2; exit 1; }
rm -rf "$dir"
mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial" "$dir/debs" "$dir/root" "$dir/bin"
echo "deb [signed-by=$keyring] http://deb.debian.org/debian trixie main" >"$dir/apt/sources.list"
apt=(apt-get -qq
  -o "Dir::Etc::SourceList=$dir/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$dir/apt/lists" -o "Dir::Cache=$dir/apt/cache"
  -o APT::Sandbox::User=root)
"${apt[@]}" update
(cd "$dir/debs" && "${apt[@]}" download skopeo libc6)
for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$dir/root"; done
libs=$dir/root/usr/lib/x86_64-linux-gnu
cat >"$wrapper" <<EOF
#!/bin/sh
# Debian 13's skopeo on its own libc; everything else from this system (scripts/sigstore-skopeo.sh).
exec "$libs/ld-linux-x86-64.so.2" --library-path "$libs:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu" "$dir/root/usr/bin/skopeo" "\$@"
EOF
chmod 755 "$wrapper"
"$wrapper" --version >/dev/null
echo "$wrapper"
