#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (real server, real sockets), then the
# end-to-end suites with the official socket.io-client, an EventSource client and a poll
# client, the protocol conformance suite, and the hostile-network suite (Debian's nginx as
# the proxy, installed here when missing and apt-get can). Needs cargo and Node 20 with npm.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$PATH:/usr/sbin"
if ! command -v nginx >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "== installing nginx (the hostile-network suite puts it between clients and the server)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
  else
    echo "error: nginx is needed by tests/e2e/hostile.test.mjs; install it (e.g. sudo apt-get install nginx)" >&2
    exit 1
  fi
fi

echo "== build (server binary and conformance example)"
cargo build --locked -p cmem --bins --examples

echo "== rust tests"
cargo test --locked --workspace

echo "== end-to-end suites (node)"
cd tests/e2e
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
  npm ci --no-audit --no-fund
fi
# bounded, so a hung client can never hold CI for long
timeout 900 node --test --test-concurrency=1 --test-reporter=spec
