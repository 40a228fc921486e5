#!/usr/bin/env bash
# The main job end to end on the shipped example: keygen -> bundle build -> verify -> inspect
# -> serve the bundle with the built-in registry and list what it serves.
# Everything it writes goes to one directory ($AIRGAP_DEMO_DIR, or a new temporary one).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin airgap
bin=$PWD/target/release/airgap
work=${AIRGAP_DEMO_DIR:-$(mktemp -d -t airgap-demo.XXXXXX)}
mkdir -p "$work"

"$bin" keygen -o "$work/signing.key" --force
"$bin" bundle build -f examples/bundle.yaml -o "$work/bundle.tar" --key "$work/signing.key"
"$bin" bundle verify "$work/bundle.tar" --pub "$work/signing.pub"
"$bin" bundle inspect "$work/bundle.tar"

# The air-gapped side's embedded default: the built-in registry serving the verified bundle in
# place (loopback, plain HTTP, anonymous read-only pulls for the demo).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" registry serve "$work/bundle.tar" --pub "$work/signing.pub" --listen "127.0.0.1:$port" 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
echo
echo "built-in registry at http://127.0.0.1:$port serves:"
if command -v curl >/dev/null; then curl -fsS "http://127.0.0.1:$port/v2/_catalog"; else echo "(install curl to list it)"; fi
echo
echo "demo output in $work: signing.key (0600), signing.pub, bundle.tar"
