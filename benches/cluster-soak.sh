#!/usr/bin/env bash
# The soak scenario spread over a 3-node cluster on one Redis, with faults in the
# middle: at a third of the run the second node (actix-site) is killed (SIGKILL: no
# cleanup) and started again 5 s later on the same port; at two thirds Redis is frozen (SIGSTOP) for
# REDIS_PAUSE seconds (default 8: longer than a node's 6 s lease, shorter than the
# 30 s outage limit). Members connect round-robin over the three nodes and resume on
# whichever answers. Prints the soak's figures: loss, duplicates, members left over,
# and the runs of disruption clients saw (when each fault began and how long it took
# to heal).
#
# With CLUSTER=1 the nodes share a Redis Cluster of three masters instead (each node
# given another master as its seed), and the freeze stops one master only.
#
#   benches/cluster-soak.sh            # SECONDS_=600
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_=${SECONDS_:-600}
[ "$SECONDS_" -ge 60 ] || { echo "SECONDS_ must be 60 or more" >&2; exit 1; }
REDIS_PAUSE=${REDIS_PAUSE:-8}
OUT=${OUT:-target/bench-cluster}
mkdir -p "$OUT"
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
command -v redis-server >/dev/null || { echo "needs redis-server" >&2; exit 1; }

cargo build --release -p chatroom-examples -p chatroom-benches --bins >&2

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

rport=$((20000 + RANDOM % 10000))
seeds=()
if [ "${CLUSTER:-0}" = 1 ]; then
  cdir=$(mktemp -d)
  redises=()
  for i in 0 1 2; do
    mkdir -p "$cdir/$i"
    (cd "$cdir/$i" && exec redis-server --port $((rport + 10 + i)) --bind 127.0.0.1 \
      --save "" --appendonly no --maxmemory-policy noeviction --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-require-full-coverage no \
      --cluster-node-timeout 15000) >/dev/null 2>&1 &
    redises+=($!)
    wait_port $((rport + 10 + i))
    seeds+=("redis://127.0.0.1:$((rport + 10 + i))/")
  done
  redis-cli --cluster create 127.0.0.1:$((rport + 10)) 127.0.0.1:$((rport + 11)) \
    127.0.0.1:$((rport + 12)) --cluster-yes >/dev/null
  until redis-cli -p $((rport + 10)) CLUSTER INFO | grep -q cluster_state:ok; do sleep 0.1; done
  sleep 1
  # The master frozen at two thirds.
  redis=${redises[1]}
else
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
    --maxmemory-policy noeviction >/dev/null 2>&1 &
  redis=$!
  redises=("$redis")
  wait_port "$rport"
  seeds=("redis://127.0.0.1:$rport/" "redis://127.0.0.1:$rport/" "redis://127.0.0.1:$rport/")
fi

ports=($((rport + 1)) $((rport + 2)) $((rport + 3)))
bins=(axum-site actix-site axum-site)
pids=()
start_node() { # index
  CHATROOM_REDIS_URL=${seeds[$1]} CHATROOM_ADDR=127.0.0.1:${ports[$1]} RUST_LOG=warn \
    target/release/${bins[$1]} >>"$OUT/soak-node$1.log" 2>&1 &
  pids[$1]=$!
  wait_port "${ports[$1]}"
}
for i in 0 1 2; do start_node "$i"; done
cleanup() {
  kill -CONT "$redis" 2>/dev/null || true
  kill "${pids[@]}" "${redises[@]}" 2>/dev/null || true
  if [ -n "${cdir:-}" ]; then rm -rf "$cdir"; fi
}
trap cleanup EXIT

addrs="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
target/release/chatroom-load soak --addr "$addrs" --seconds "$SECONDS_" --warmup-ms 0 \
  >"$OUT/soak.txt" &
load=$!
start=$(date +%s%N)
stamp() {
  local ms=$((($(date +%s%N) - start) / 1000000))
  printf '%s at %d.%d s into the run\n' "$1" $((ms / 1000)) $((ms % 1000 / 100))
}

sleep $((SECONDS_ / 3))
stamp "the second node (${bins[1]}) killed"
kill -KILL "${pids[1]}"
sleep 5
start_node 1
stamp "the second node restarted"

sleep $((SECONDS_ / 3 - 5))
stamp "Redis frozen (with CLUSTER=1: its second master)"
kill -STOP "$redis"
sleep "$REDIS_PAUSE"
kill -CONT "$redis"
stamp "Redis thawed"

wait "$load"
cat "$OUT/soak.txt"
