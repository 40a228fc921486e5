#!/usr/bin/env bash
# The main job end to end on the shipped example: keygen -> bundle build -> verify -> inspect.
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
echo
echo "demo output in $work: signing.key (0600), signing.pub, bundle.tar"
