#!/usr/bin/env bash
# Many idle connections over a cluster, and latency across nodes (BENCHMARKS.md has the figures):
#   1. one cmem node on its SQLite journal holding N/NODES idle WebSocket connections (the
#      single-node reference, same share as each cluster node);
#   2. NODES cmem nodes on one JetStream stream (one nats-server): paced delivery latency
#      across nodes (clients on node 2, events published on node 1) next to clients and
#      publisher on the same node;
#   3. the same nodes holding N idle WebSocket connections together, N/NODES each, all at
#      once: one cmem-bench process per node (each process stays below the 20,000 open files a
#      process may have here), each from its own block of source addresses 127.0.<k>.x; server
#      RSS per connection from each node's /proc status.
# CLUSTER=0 runs the same six processes as six single nodes on SQLite, for comparison.
# Needs target/release/cmem and cmem-bench (`cargo build --release -p cmem -p cmem-bench`) and
# Debian's nats-server. Loopback only; everything it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
N=${N:-100000}
NODES=${NODES:-6}
SETTLE=${SETTLE:-90}
per=$(( (N + NODES - 1) / NODES ))
source bench/lib.sh
ulimit -n 20000

kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

echo "### single node, SQLite journal: $per idle WebSocket connections"
start_cmem single
"$bin/cmem-bench" idle --url "$url" --pid "$pid" -n "$per" --settle-s 5 --spread-sources
kill -9 "$pid"

np=$(free_port)
nats-server -js -a 127.0.0.1 -p "$np" -sd "$work/nats" >/dev/null 2>&1 &
pids+=($!)
wait_port "$np"
urls=(); npids=()
for i in $(seq "$NODES"); do
  if [[ "${CLUSTER:-1}" == 1 ]]; then
    start_cmem "node$i" --cluster-nats-url "nats://127.0.0.1:$np" --cluster-stream IDLE --node-name "node$i"
  else # the same six processes, each a single node on its own SQLite journal
    start_cmem "node$i" --node-name "node$i"
  fi
  urls+=("$url"); npids+=("$pid")
done

# latency first, while the loopback has its ports (100,000 closed connections leave many in
# TIME_WAIT)
echo "### paced delivery, 100 clients on node2, published on node2 (same node)"
"$bin/cmem-bench" broadcast --url "${urls[1]}" --pid "${npids[1]}" -n 100 --events "${PACED:-500}" --rate 100 --batch 1
if [[ "${CLUSTER:-1}" == 1 ]]; then
  echo "### paced delivery, 100 clients on node2, published on node1 (across nodes)"
  "$bin/cmem-bench" broadcast --url "${urls[1]}" --pid "${npids[1]}" --trigger "${urls[0]}/api/events" -n 100 --events "${PACED:-500}" --rate 100 --batch 1
fi

total() { # connections the nodes hold now
  local t=0 n
  for u in "${urls[@]}"; do
    n=$(curl -s "$u/api/websocket/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["connections"]["total"])')
    t=$(( t + n ))
  done
  echo "$t"
}
before=0
for p in "${npids[@]}"; do before=$(( before + $(kib "$p") )); done
echo "### $NODES nodes$([[ "${CLUSTER:-1}" == 1 ]] && echo " on JetStream" || echo ", each on its own SQLite journal"): $N idle WebSocket connections, $per per node, all held at once"
start=$(date +%s.%N); gens=()
for i in $(seq 0 $(( NODES - 1 ))); do
  # each generator holds its connections for SETTLE seconds after its last one connected,
  # from its own block of source addresses
  "$bin/cmem-bench" idle --url "${urls[$i]}" --pid "${npids[$i]}" -n "$per" --settle-s "$SETTLE" \
    --spread-sources --source-block $(( i + 1 )) >"$work/idle$i.txt" 2>&1 &
  gens+=($!)
done
# wait until every connection is up (or the count stops growing for 20 s)
held=0; still=0
while (( still < 10 )); do
  sleep 2
  now=$(total)
  if (( now >= N )); then held=$now; break; fi
  if (( now > held )); then held=$now; still=0; else still=$(( still + 1 )); fi
done
up=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
sleep 3 # settle
after=0
for p in "${npids[@]}"; do after=$(( after + $(kib "$p") )); done
held=$(total)
echo "held at once: $held connections (all up ${up} s after the start); cmem RSS over $NODES nodes $(( before / 1024 )) MiB before, $(( after / 1024 )) MiB with them: $(awk -v a="$after" -v b="$before" -v n="$held" 'BEGIN { printf "%.1f", (a - b) / n }') KiB per connection"
curl -s "${urls[0]}/api/websocket/status" | python3 -c 'import json,sys; c=json.load(sys.stdin)["data"]["cluster"]; print("nodes seen by node1:", ", ".join(c["nodes"]) if c else "(single nodes)")'
# why connections ended meanwhile, over all nodes
for u in "${urls[@]}"; do curl -s "$u/api/websocket/status"; echo; done | python3 -c '
import json, sys, collections
c = collections.Counter()
for line in sys.stdin:
    if line.strip():
        c.update(json.loads(line)["data"]["closes_by_reason"])
print("closed while connecting and holding:", dict(c) or "none")'
for g in "${gens[@]}"; do wait "$g"; done
cat "$work"/idle*.txt
