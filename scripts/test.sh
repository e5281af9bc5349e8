#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (real server, real sockets), then the
# end-to-end suites with the official socket.io-client, an EventSource client and a poll
# client, and the protocol conformance suite. Needs cargo and Node 20 with npm.
set -euo pipefail
cd "$(dirname "$0")/.."

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
