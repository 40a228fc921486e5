#!/usr/bin/env bash
# The full test suite. Installs what the tests need from Debian when it is missing (as root),
# then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v skopeo >/dev/null || missing+=(skopeo)
command -v tar >/dev/null || missing+=(tar)
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "error: the tests need: ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo test --workspace --locked
