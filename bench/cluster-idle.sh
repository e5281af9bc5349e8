#!/usr/bin/env bash
# Many idle connections over a cluster, and latency across nodes (BENCHMARKS.md has the figures):
#   1. one cmem node on its SQLite journal holding N/NODES idle WebSocket connections (the
#      single-node reference, same share as each cluster node);
#   2. NODES cmem nodes on one JetStream stream (one nats-server) holding N idle WebSocket
#      connections together, N/NODES each, all at once: one cmem-bench process per node (each
#      process stays below the 20,000 open files a process may have here), source addresses
#      spread over 127.0.0.x; server RSS per connection from each node's /proc status;
#   3. paced delivery latency across nodes: clients on node 2, events published on node 1,
#      next to clients and publisher on the same node.
# Needs target/release/cmem and cmem-bench (`cargo build --release -p cmem -p cmem-bench`) and
# Debian's nats-server. Loopback only; everything it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
N=${N:-100000}
NODES=${NODES:-6}
SETTLE=${SETTLE:-20}
per=$(( (N + NODES - 1) / NODES ))
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n 20000

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on port $1" >&2; exit 1; }

start_cmem() { # name, extra args...
  local name=$1; shift
  local port; port=$(free_port)
  mkdir -p "$work/$name"
  RUST_LOG=warn "$bin/cmem" serve --data "$work/$name" --bind "127.0.0.1:$port" --status-interval-s 0 "$@" >/dev/null 2>"$work/$name.log" &
  pids+=($!)
  wait_port "$port"
  echo "http://127.0.0.1:$port $!"
}

kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

echo "### single node, SQLite journal: $per idle WebSocket connections"
read -r url pid < <(start_cmem single)
"$bin/cmem-bench" idle --url "$url" --pid "$pid" -n "$per" --settle-s 5 --spread-sources
kill -9 "$pid"

np=$(free_port)
nats-server -js -a 127.0.0.1 -p "$np" -sd "$work/nats" >/dev/null 2>&1 &
pids+=($!)
wait_port "$np"
urls=(); npids=()
for i in $(seq "$NODES"); do
  read -r url pid < <(start_cmem "node$i" --cluster-nats-url "nats://127.0.0.1:$np" --cluster-stream IDLE --node-name "node$i")
  urls+=("$url"); npids+=("$pid")
done
before=0
for p in "${npids[@]}"; do before=$(( before + $(kib "$p") )); done
echo "### $NODES nodes on JetStream: $N idle WebSocket connections, $per per node, at once"
start=$(date +%s.%N); gens=()
for i in $(seq 0 $(( NODES - 1 ))); do
  "$bin/cmem-bench" idle --url "${urls[$i]}" --pid "${npids[$i]}" -n "$per" --settle-s "$SETTLE" --spread-sources >"$work/idle$i.txt" 2>&1 &
  gens+=($!)
done
# while every generator holds its connections: the cluster's own count and memory
sleep $(( SETTLE / 2 + 5 ))
total=0; after=0
for i in $(seq 0 $(( NODES - 1 ))); do
  n=$(curl -s "${urls[$i]}/api/websocket/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["connections"]["total"])')
  total=$(( total + n )); after=$(( after + $(kib "${npids[$i]}") ))
done
echo "held at once: $total connections; cmem RSS $(( before / 1024 )) MiB before, $(( after / 1024 )) MiB with them: $(awk -v a="$after" -v b="$before" -v n="$total" 'BEGIN { printf "%.1f", (a - b) / n }') KiB per connection"
curl -s "${urls[0]}/api/websocket/status" | python3 -c 'import json,sys; c=json.load(sys.stdin)["data"]["cluster"]; print("nodes seen by node1:", ", ".join(c["nodes"]))'
for g in "${gens[@]}"; do wait "$g"; done
echo "all generators done in $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s"
cat "$work"/idle*.txt

echo "### paced delivery, 100 clients on node2, published on node2 (same node)"
"$bin/cmem-bench" broadcast --url "${urls[1]}" --pid "${npids[1]}" -n 100 --events "${PACED:-500}" --rate 100 --batch 1
echo "### paced delivery, 100 clients on node2, published on node1 (across nodes)"
"$bin/cmem-bench" broadcast --url "${urls[1]}" --pid "${npids[1]}" --trigger "${urls[0]}/api/events" -n 100 --events "${PACED:-500}" --rate 100 --batch 1
