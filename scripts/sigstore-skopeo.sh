#!/usr/bin/env bash
# A skopeo that signs and verifies sigstore signatures, for the upstream-signature tests.
#
# Debian 12's skopeo (1.9.3) is built with sigstore disabled ("Debian-local change: sigstore
# disabled") for signing and for verifying. Debian 13's skopeo (1.18) has it. This unpacks that
# package and the libc it is linked against (glibc 2.38+; Debian 12 has 2.36) with
# scripts/debian13-packages.sh, and writes a wrapper that runs the binary through the unpacked
# libc's loader. Nothing is installed into the system. Idempotent: a second run only prints
# the wrapper's path.
#
#   scripts/sigstore-skopeo.sh [DIR]     (default /var/tmp/airgap-skopeo-sigstore)
set -euo pipefail
dir=${1:-${AIRGAP_SIGSTORE_SKOPEO_DIR:-/var/tmp/airgap-skopeo-sigstore}}
wrapper=$dir/bin/skopeo
if [[ -x $wrapper ]] && "$wrapper" --version >/dev/null 2>&1; then
  echo "$wrapper"
  exit 0
fi
"$(dirname "$0")/debian13-packages.sh" "$dir" skopeo libc6
mkdir -p "$dir/bin"
libs=$dir/root/usr/lib/x86_64-linux-gnu
cat >"$wrapper" <<WRAPPER
#!/bin/sh
# Debian 13's skopeo on its own libc; everything else from this system (scripts/sigstore-skopeo.sh).
exec "$libs/ld-linux-x86-64.so.2" --library-path "$libs:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu" "$dir/root/usr/bin/skopeo" "\$@"
WRAPPER
chmod 755 "$wrapper"
"$wrapper" --version >/dev/null
echo "$wrapper"
