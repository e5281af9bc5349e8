#!/usr/bin/env bash
# Windows, on every CI run: cross-builds cmem for x86_64-pc-windows-gnu with mingw, runs the
# Rust test suite under Wine, then the end-to-end suites (official socket.io-client on Linux
# Node over WebSocket, polling and upgrade, plus SSE and poll, Yjs) against cmem.exe under Wine.
#
# Wine 8 lacks ProcessPrng in bcryptprimitives.dll, which Rust's std imports, so a stand-in
# built here from tools/wine/bcryptprimitives.c is put into the Wine prefix first.
# If the tools cannot be installed this says so loudly and stops without failing the run; a
# failing build or test fails it.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
TARGET=x86_64-pc-windows-gnu

not_run() {
  printf '\n%s\n!!! WINDOWS CHECKS NOT RUN: %s\n%s\n\n' \
    '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!' "$*" \
    '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!' >&2
  exit 0
}

need=()
command -v x86_64-w64-mingw32-gcc >/dev/null || need+=(gcc-mingw-w64-x86-64)
command -v wine >/dev/null || need+=(wine64)
if ((${#need[@]})); then
  command -v apt-get >/dev/null || not_run "no apt-get to install ${need[*]}"
  echo "installing ${need[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; } \
    || not_run "apt-get could not install ${need[*]}"
fi
command -v wine >/dev/null || not_run "wine is not available after installing wine64"
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" \
  || not_run "rustup could not add the $TARGET target"

export WINEPREFIX="$root/target/wine-prefix" WINEDEBUG=-all WINEDLLOVERRIDES="bcryptprimitives=n,b"
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine
trap 'wineserver -k >/dev/null 2>&1 || true' EXIT

# Runs a step with its output kept in target/windows-<name>.log as well. A step that fails
# (or hangs until its timeout) ends the run with a summary of what it said, printed after
# Wine is stopped: the last lines of a run are the ones read, and stopping Wine can print a
# dump of its leftover objects that would otherwise bury them.
step() {
  local name=$1
  shift
  local log="$root/target/windows-$name.log" rc=0
  mkdir -p "$root/target"
  "$@" 2>&1 | tee "$log" || rc=$?
  ((rc == 0)) && return 0
  wineserver -k >/dev/null 2>&1 || true
  sleep 1
  {
    echo
    echo "!!! Windows: $name failed (exit $rc$( ((rc == 124)) && echo ': timed out')); full output: $log"
    echo "--- what it flagged (slow, failed, panicked):"
    grep -aE 'running for over|FAILED|[1-9][0-9]* failed|panicked|^not ok|✖|timed out|did not exit' "$log" | tail -40 || true
    echo "--- its last lines:"
    tail -30 "$log"
  } >&2
  exit "$rc"
}

echo "== Windows: Wine prefix with the ProcessPrng stand-in"
mkdir -p "$WINEPREFIX"
[ -d "$WINEPREFIX/drive_c/windows/system32" ] || timeout 300 wineboot -i >/dev/null 2>&1 || true
[ -d "$WINEPREFIX/drive_c/windows/system32" ] || not_run "wineboot could not create a Wine prefix"
x86_64-w64-mingw32-gcc -shared -O2 -o "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" \
  tools/wine/bcryptprimitives.c tools/wine/bcryptprimitives.def -ladvapi32
wine --version

echo "== Windows: build ($TARGET), warnings denied"
# Warnings fail the Windows build (its own code paths: `cfg(windows)`); clippy runs on Linux
# only: on this target it cost a separate check of every dependency, about 3 minutes of a run
# that should stay under 30. Set for the target only, so every cargo call below shares the
# build.
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUSTFLAGS="-D warnings"
cargo build --locked --target "$TARGET" -p cmem --bins
timeout 60 wine "target/$TARGET/debug/cmem.exe" --version

echo "== Windows: Rust test suite under Wine"
# the suite takes about 4 minutes under Wine; libtest names a test that runs over 60 s
step rust-tests timeout 900 cargo test --locked --target "$TARGET" -p cmem --no-fail-fast -- --test-threads=2

echo "== Windows: end-to-end suites against cmem.exe under Wine"
cd tests/e2e
# about 90 s under Wine; a test that hangs fails after 3 minutes and names itself
step e2e env CMEM_BIN="$root/scripts/wine-cmem" CMEM_GRACEFUL_SIGNAL=SIGINT \
  timeout 900 node --test --test-concurrency=1 --test-reporter=spec --test-timeout=180000 \
  hub.test.mjs memory.test.mjs teams.test.mjs mcp.test.mjs
