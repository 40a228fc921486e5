#!/usr/bin/env bash
# The full test suite. Installs what the tests need from Debian when it is missing (as root),
# then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v skopeo >/dev/null || missing+=(skopeo)
command -v tar >/dev/null || missing+=(tar)
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
command -v ip >/dev/null || missing+=(iproute2)
command -v man >/dev/null || missing+=(man-db)
[[ -x /usr/bin/containerd && -x /usr/bin/containerd-shim-runc-v2 ]] || missing+=(containerd)
[[ -x /usr/sbin/runc ]] || missing+=(runc)
# The runnable test images wrap a static busybox (Debian's `busybox` is dynamically linked).
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' ||
  missing+=(busybox-static)
# Debian's python3 with its cryptography unwraps tenant keys apart from airgap's code.
/usr/bin/python3 -c 'import cryptography' 2>/dev/null || missing+=(python3 python3-cryptography)
# ... and its jsonschema checks every --json output against its schema in docs/json.
/usr/bin/python3 -c 'import jsonschema' 2>/dev/null || missing+=(python3-jsonschema)
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "error: the tests need: ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The SBOM formats' own validators (CycloneDX's schema validator, the SPDX project's tools),
# pinned, in a virtual environment of their own that is made once.
venv=${AIRGAP_SBOM_VENV:-/var/tmp/airgap-sbom-venv}
if ! "$venv/bin/python" -c 'import cyclonedx.validation.json, spdx_tools' 2>/dev/null; then
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'cyclonedx-python-lib[json-validation]==11.12.0' 'spdx-tools==0.8.5'
fi
export AIRGAP_SBOM_PYTHON=$venv/bin/python
# A skopeo with sigstore (Debian 12's has it disabled) for the upstream-signature tests:
# Debian 13's package on its own libc, unpacked once, nothing installed into the system.
AIRGAP_SIGSTORE_SKOPEO=$(scripts/sigstore-skopeo.sh)
export AIRGAP_SIGSTORE_SKOPEO
# etcd 3.5 (Debian 12's is 3.4) for the rolling-upgrade test, whose etcd clients must see no
# failure while members restart: Debian 13's package, unpacked once, nothing installed.
AIRGAP_ETCD35=$(scripts/etcd35.sh)
export AIRGAP_ETCD35
# No doc-tests: the crates document with prose, not runnable examples. --no-fail-fast: one
# failing test binary must not hide the results of the others. The last line totals every
# binary's results and names each failed test; the exit status is cargo's.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets --locked --no-fail-fast 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^test .* \.\.\. FAILED$/ { failed = failed " " $2 }
     END { printf "tests: %d passed, %d failed%s\n", p, f, (failed == "" ? "" : ":" failed) }' "$log"
exit "$status"
