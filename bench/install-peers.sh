#!/usr/bin/env bash
# Installs the peer servers the benchmark compares cmem with into a folder outside the
# tracked tree (default target/bench-peers): the official Node socket.io server (npm) and
# python-socketio / Flask-SocketIO (PyPI). The servers themselves are bench/peers/*.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-target/bench-peers}"
mkdir -p "$dir"
(
  cd "$dir"
  [ -f package.json ] || echo '{"private": true}' > package.json
  npm install --no-audit --no-fund socket.io@4.8.1 >/dev/null
)
python3 -m venv "$dir/venv"
"$dir/venv/bin/pip" install --quiet --disable-pip-version-check \
  'python-socketio==5.*' 'aiohttp==3.*' 'flask-socketio==5.*' 'simple-websocket==1.*'
echo "peers installed in $dir:"
node -e "console.log('  socket.io', require('$PWD/$dir/node_modules/socket.io/package.json').version)"
"$dir/venv/bin/pip" list 2>/dev/null | grep -iE '^(python-socketio|flask-socketio|aiohttp|simple-websocket|python-engineio) ' | sed 's/^/  /'
