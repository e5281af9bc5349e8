# What the bench scripts share (sourced): free ports, waiting for one, starting a cmem node, and
# stopping everything at the end. Needs $bin (the build folder); sets $work and $pids.
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# waits until a TCP port accepts
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on port $1" >&2; exit 1; }

# starts a release cmem in $work/<name>; sets $url and $pid (and adds it to what cleanup stops)
start_cmem() { # name, extra args...
  local name=$1; shift
  local port; port=$(free_port)
  mkdir -p "$work/$name"
  RUST_LOG=warn "$bin/cmem" serve --data "$work/$name" --bind "127.0.0.1:$port" --status-interval-s 0 "$@" >/dev/null 2>"$work/$name.log" &
  pid=$!
  pids+=("$pid")
  wait_port "$port"
  url="http://127.0.0.1:$port"
}
