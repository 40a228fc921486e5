#!/usr/bin/env bash
# Unpacks Debian 13 (trixie) packages into DIR/root without installing them, for test peers
# that Debian 12 lacks or ships crippled (scripts/sigstore-skopeo.sh, scripts/etcd35.sh).
#
# The packages come from Debian's archive through apt, their signatures checked against
# debian-archive-keyring, with lists and a cache of apt's own under DIR so the system's apt is
# untouched. Idempotent: a DIR already holding these packages is left as it is.
#
#   scripts/debian13-packages.sh DIR PACKAGE...
set -euo pipefail
(($# >= 2)) || { echo "usage: $0 DIR PACKAGE..." >&2; exit 2; }
dir=$1
shift
want="$*"
if [[ -f $dir/packages && $(cat "$dir/packages") == "$want" ]]; then
  exit 0
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -r $keyring ]] || { echo "error: $keyring is missing (apt-get install debian-archive-keyring)" >&2; exit 1; }
rm -rf "$dir"
mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial" "$dir/debs" "$dir/root"
echo "deb [signed-by=$keyring] http://deb.debian.org/debian trixie main" >"$dir/apt/sources.list"
apt=(apt-get -qq
  -o "Dir::Etc::SourceList=$dir/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$dir/apt/lists" -o "Dir::Cache=$dir/apt/cache"
  -o APT::Sandbox::User=root)
"${apt[@]}" update
(cd "$dir/debs" && "${apt[@]}" download "$@")
for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$dir/root"; done
echo "$want" >"$dir/packages"
