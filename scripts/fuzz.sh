#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (default 10 s each; CI gives 5, by
# hand give more: `scripts/fuzz.sh 600`, or one target: `scripts/fuzz.sh 600 yjs`).
# Starts from the seeds in fuzz/corpus/<target> (copied, so the repository is not written to)
# and fails on the first crash, leaving the input in fuzz/artifacts/<target>/.
#
# cargo fuzz wants a nightly compiler for its sanitizer flags; RUSTC_BOOTSTRAP lets the pinned
# stable one accept them. Builds are unoptimised with debug assertions on, without a sanitizer
# (Rust code needs none for memory safety; debug assertions catch more, as they did in yrs).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
only="${2:-}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
cd fuzz
cargo fuzz build --dev -s none
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in $(cargo fuzz list); do
  [ -n "$only" ] && [ "$target" != "$only" ] && continue
  rm -rf "artifacts/$target"
  mkdir -p "$work/$target"
  cp corpus/"$target"/* "$work/$target"/ 2>/dev/null || true
  echo "== fuzz $target for ${seconds}s"
  cargo fuzz run --dev -s none "$target" "$work/$target" -- \
    -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
    | grep -E '^(stat::number_of_executed_units|Done|==|SUMMARY|thread|panicked)|ERROR' || true
  # cargo fuzz exits non-zero on a crash; the pipeline above hides that, so check artifacts
  if compgen -G "artifacts/$target/*" >/dev/null; then
    echo "fuzz: $target crashed; inputs in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
