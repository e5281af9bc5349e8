#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (real server, real sockets), then the
# end-to-end suites with the official socket.io-client, an EventSource client and a poll
# client, the protocol conformance suite, the hostile-network suite (Debian's nginx as the
# proxy) and the client library's suites in Node and headless Chromium (Debian's chromium);
# nginx, chromium and nats-server (the JetStream journal's tests) are installed here when missing
# and apt-get can. Needs cargo and Node 20 with npm.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$PATH:/usr/sbin"
# nginx: the hostile-network suites put it between clients and the server; chromium: the browser
# suites drive Debian's build headless (a downloaded browser is never used)
need=()
command -v nginx >/dev/null || need+=(nginx)
[ -x "${CHROMIUM_BIN:-/usr/bin/chromium}" ] || need+=(chromium)
command -v nats-server >/dev/null || need+=(nats-server)
if ((${#need[@]})); then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "== installing ${need[*]} (the end-to-end suites need them)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "error: the tests need ${need[*]}; install them (e.g. sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

echo "== build (server binary and conformance example)"
cargo build --locked -p cmem --bins --examples

echo "== rust tests"
cargo test --locked --workspace

echo "== end-to-end suites (node)"
cd tests/e2e
# the client library is installed as a copy (.npmrc install-links), as from a registry: a
# change to it needs a fresh install
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ] \
  || [ -n "$(find ../../clients/js/src ../../clients/js/package.json -newer node_modules/.package-lock.json 2>/dev/null | head -1)" ]; then
  npm ci --no-audit --no-fund
fi
# bounded, so a hung client can never hold CI for long: a test that hangs fails after 3
# minutes, naming itself (the slowest take about 20 s)
timeout 900 node --test --test-concurrency=1 --test-reporter=spec --test-timeout=180000
