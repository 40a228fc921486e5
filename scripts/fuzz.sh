#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser that reads untrusted bytes (fuzz/src/lib.rs lists
# them), with libFuzzer on the machine's stable toolchain.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 60 s each, every target
#
# Each target starts from, and adds what raises coverage to, fuzz/corpus/<target>.tar.gz; the
# inputs are merged minimally (-merge=1) and packed back, one small file per target in git.
# A crash leaves its input in fuzz/artifacts/<target>/: move it to fuzz/regressions/<target>/
# (never merged away), fix the bug, and `cargo test -p airgap-fuzz` replays it from then on
# (CI does, with no fuzzing time).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
# cargo-fuzz's instrumentation, without -Zsanitizer (safe Rust; overflow checks and debug
# assertions stay on in the fuzz profile), so no nightly toolchain is needed.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
export CARGO_TARGET_DIR=$PWD/target/fuzz
# An explicit --target keeps the instrumentation out of build scripts and proc macros.
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --target "$host" --manifest-path fuzz/libfuzzer/Cargo.toml
bin=$CARGO_TARGET_DIR/$host/release/airgap-libfuzzer
if (($#)); then
  targets=("$@")
else
  mapfile -t targets < <(ls fuzz/corpus | sed 's/\.tar\.gz$//')
fi
summary=()
for target in "${targets[@]}"; do
  packed=fuzz/corpus/$target.tar.gz
  [[ -f $packed ]] || { echo "error: no target named $target (fuzz/corpus has: $(ls fuzz/corpus | tr '\n' ' '))" >&2; exit 1; }
  work=$(mktemp -d)
  corpus=$work/corpus
  mkdir "$corpus" "$work/new"
  tar xzf "$packed" -C "$corpus"
  mkdir -p "fuzz/artifacts/$target"
  echo "== $target: ${seconds}s"
  log=$work/log
  status=0
  # Bundles need room for an index and a few entries; everything else is small text.
  case $target in bundle_verify | bundle_index | tar_reader) max_len=100000 ;; *) max_len=16384 ;; esac
  regressions=()
  [[ -d fuzz/regressions/$target ]] && regressions=("fuzz/regressions/$target")
  AIRGAP_FUZZ_TARGET=$target "$bin" "$work/new" "$corpus" "${regressions[@]}" -max_total_time="$seconds" \
    -max_len=$max_len -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$target/" 2>"$log" || status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|cov:' "$log" | tail -3 || true
  if ((status != 0)); then
    tail -40 "$log"
    echo "error: $target crashed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  # Keep only what adds coverage: merge the new inputs into the committed corpus.
  merged=$work/merged
  mkdir "$merged"
  AIRGAP_FUZZ_TARGET=$target "$bin" -merge=1 "$merged" "$corpus" "$work/new" -max_len=$max_len 2>/dev/null >/dev/null
  tar czf "$packed.new" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$merged" .
  mv "$packed.new" "$packed"
  execs=$(awk '/stat::number_of_executed_units/ {print $NF}' "$log")
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  summary+=("$(printf '%-18s %6ss %12s execs  cov %6s  corpus %4s files' "$target" "$seconds" "$execs" "$cov" "$(ls "$merged" | wc -l)")")
  rm -rf "$work"
done
printf '%s\n' "${summary[@]}"
