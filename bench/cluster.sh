#!/usr/bin/env bash
# Cluster mode next to a single node, in one run (BENCHMARKS.md has the figures): durable publish
# throughput and paced delivery latency on
#   1. one cmem node on its SQLite journal (the default),
#   2. one cmem node on JetStream with 1 replica (one nats-server),
#   3. one cmem node on JetStream with 3 replicas (three clustered nats-servers on loopback).
# Needs target/release/cmem and cmem-bench (`cargo build --release -p cmem -p cmem-bench`) and
# Debian's nats-server. Loopback only; everything it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
source bench/lib.sh

run() { # label, url, pid
  local label=$1 url=$2 pid=$3
  echo "### $label"
  "$bin/cmem-bench" journal --url "$url" --pid "$pid" --events "${EVENTS:-20000}" --batch 100 --publishers 4
  "$bin/cmem-bench" journal --url "$url" --pid "$pid" --events "${SINGLES:-3000}" --batch 1 --publishers 16
  "$bin/cmem-bench" broadcast --url "$url" --pid "$pid" -n 100 --events "${PACED:-500}" --rate 100 --batch 1
}

start_cmem single
run "single node, SQLite journal" "$url" "$pid"

np=$(free_port)
nats-server -js -a 127.0.0.1 -p "$np" -sd "$work/nats1" >/dev/null 2>&1 &
pids+=($!)
wait_port "$np"
start_cmem r1 --cluster-nats-url "nats://127.0.0.1:$np" --cluster-stream R1
run "cluster mode, JetStream, 1 replica" "$url" "$pid"

ports=(); cports=()
for i in 0 1 2; do ports+=("$(free_port)"); cports+=("$(free_port)"); done
routes="nats://127.0.0.1:${cports[0]},nats://127.0.0.1:${cports[1]},nats://127.0.0.1:${cports[2]}"
for i in 0 1 2; do
  nats-server -js -a 127.0.0.1 -p "${ports[$i]}" -n "n$i" --cluster_name bench \
    --cluster "nats://127.0.0.1:${cports[$i]}" --routes "$routes" -sd "$work/nats3-$i" >/dev/null 2>&1 &
  pids+=($!)
done
for i in 0 1 2; do wait_port "${ports[$i]}"; done
sleep 3 # the JetStream meta leader is elected
start_cmem r3 --cluster-nats-url "nats://127.0.0.1:${ports[0]},nats://127.0.0.1:${ports[1]}" --cluster-stream R3 --cluster-replicas 3
run "cluster mode, JetStream, 3 replicas" "$url" "$pid"
