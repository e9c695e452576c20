#!/usr/bin/env bash
# The cost of the cluster per message: the burst and steady scenarios on
#   local   1 node, in-process backplane
#   redis1  1 node on Redis
#   redis3  3 nodes on one Redis (connections round-robin over the nodes, so the members
#           of a room, senders among them, are spread over them)
#   cluster3  3 nodes on a Redis Cluster of 3 masters (each node given another master
#           as its seed; rooms spread over the masters, sharded pub/sub)
# all with axum-site, RUNS times each, in one run; prints medians (min-max).
# SETUPS="redis3 cluster3" runs some of them only; SCENARIOS="light" some scenarios
# (burst, steady, light: steady at a quarter of the rate, far from saturating 2 cores).
# Server CPU counts every node and redis-server. Redis round trips per message are
# Redis's own count of commands (INFO commandstats) over the messages sent.
#
#   benches/cluster.sh            # RUNS=3, every setup
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SETUPS=${SETUPS:-local redis1 redis3 cluster3}
SCENARIOS=${SCENARIOS:-burst steady light}
OUT=${OUT:-target/bench-cluster}
mkdir -p "$OUT"
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
command -v redis-server >/dev/null || { echo "needs redis-server" >&2; exit 1; }

cargo build --release -p chatroom-examples -p chatroom-benches --bins >&2

# name, chatroom-load arguments, messages sent (for round trips per message)
scenarios=(
  "burst|burst --rooms 1 --clients 100 --senders 1 --messages 2000|2000"
  "steady|steady --rooms 10 --clients 50 --rate 200 --seconds 10|20000"
  "light|steady --rooms 10 --clients 50 --rate 50 --seconds 10|5000"
)

free_port() { echo $((20000 + RANDOM % 20000)); }
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
# Every command Redis ran (those inside scripts too), and the round trips: the calls a
# node makes (scripts, and the XRANGE/HMGET/SMEMBERS/ZRANGEBYSCORE it sends itself).
# Summed over every Redis port given (the masters of a cluster).
commands() { for p in "$@"; do redis-cli -p "$p" INFO commandstats; done | awk -F'[=,:]' '/^cmdstat_/ {n += $3} END {print n}'; }
trips() { for p in "$@"; do redis-cli -p "$p" INFO commandstats; done | awk -F'[=,:]' '/^cmdstat_(evalsha|eval|xrange|hmget|smembers|zrangebyscore|zcard):/ {n += $3} END {print n}'; }

for setup in $SETUPS; do
  for scenario in "${scenarios[@]}"; do
    IFS='|' read -r name args messages <<<"$scenario"
    [[ " $SCENARIOS " == *" $name "* ]] || continue
    for run in $(seq 1 "$RUNS"); do
      redis_pids=(); rports=()
      if [ "$setup" = cluster3 ]; then
        cdir=$(mktemp -d)
        for i in 1 2 3; do
          rport=$((20000 + RANDOM % 20000))
          mkdir -p "$cdir/$i"
          (cd "$cdir/$i" && exec redis-server --port "$rport" --bind 127.0.0.1 --save "" \
            --appendonly no --maxmemory-policy noeviction --cluster-enabled yes \
            --cluster-config-file nodes.conf --cluster-require-full-coverage no) >/dev/null 2>&1 &
          redis_pids+=($!); rports+=("$rport")
          wait_port "$rport"
        done
        redis-cli --cluster create "${rports[@]/#/127.0.0.1:}" --cluster-yes >/dev/null
        until redis-cli -p "${rports[0]}" CLUSTER INFO | grep -q cluster_state:ok; do sleep 0.1; done
        sleep 1
      elif [ "$setup" != local ]; then
        rport=$(free_port)
        redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
          --maxmemory-policy noeviction >/dev/null 2>&1 &
        redis_pids+=($!); rports+=("$rport")
        wait_port "$rport"
      fi
      nodes=1; [ "$setup" = redis3 ] || [ "$setup" = cluster3 ] && nodes=3
      addrs=(); pids=()
      for n in $(seq 1 "$nodes"); do
        port=$(free_port)
        env=()
        [ ${#rports[@]} -gt 0 ] && env=(CHATROOM_REDIS_URL=redis://127.0.0.1:${rports[$(( (n - 1) % ${#rports[@]} ))]}/)
        env "${env[@]}" CHATROOM_ADDR=127.0.0.1:$port CHATROOM_RATE_BURST=1000000 \
          CHATROOM_RATE_PER_SEC=1000000 CHATROOM_MAX_MEMBERS=100000 RUST_LOG=error \
          target/release/axum-site >/dev/null 2>&1 &
        pids+=($!); addrs+=(127.0.0.1:$port)
        wait_port "$port"
      done
      all_pids=("${pids[@]}" "${redis_pids[@]}")
      before=0; tbefore=0
      [ ${#rports[@]} -gt 0 ] && { before=$(commands "${rports[@]}"); tbefore=$(trips "${rports[@]}"); }
      echo "== $setup $name run $run" >&2
      # shellcheck disable=SC2086
      target/release/chatroom-load $args --addr "$(IFS=,; echo "${addrs[*]}")" \
        --pid "$(IFS=,; echo "${all_pids[*]}")" \
        | tee /dev/stderr | tail -n 1 > "$OUT/$setup-$name-$run.json" || true
      if [ ${#rports[@]} -gt 0 ]; then
        after=$(commands "${rports[@]}"); tafter=$(trips "${rports[@]}")
        # Per message taken (sent minus refused).
        python3 -c "import json,sys; p=sys.argv[1]; d=json.load(open(p)); m=int(sys.argv[4])-d.get('refused',0); d['redis_per_message']=(int(sys.argv[2])-int(sys.argv[3]))/m; d['trips_per_message']=(int(sys.argv[5])-int(sys.argv[6]))/m; json.dump(d,open(p,'w'))" \
          "$OUT/$setup-$name-$run.json" "$after" "$before" "$messages" "$tafter" "$tbefore" || true
      fi
      for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
      for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
      for p in "${redis_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
      if [ "$setup" = cluster3 ]; then rm -rf "$cdir"; fi
    done
  done
done

python3 - "$OUT" "$RUNS" "$SCENARIOS" $SETUPS <<'PY'
import json, statistics, sys, pathlib
out, runs, names, setups = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(), sys.argv[4:]
cols = [("deliveries_per_sec", "deliveries/s", "{:,.0f}"), ("lost", "lost", "{:.0f}"),
        ("refused", "refused msgs", "{:.0f}"),
        ("p50", "p50 µs", "{:.0f}"), ("p99", "p99 µs", "{:.0f}"),
        ("server_cpu_s_per_million", "CPU s/M (nodes+redis)", "{:.2f}"),
        ("trips_per_message", "round trips/msg", "{:.2f}"),
        ("redis_per_message", "Redis cmds/msg", "{:.1f}")]
for name in names:
    print(f"\n{name}")
    print("| setup | " + " | ".join(c[1] for c in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for setup in setups:
        rows = []
        for run in range(1, runs + 1):
            try:
                d = json.loads((out / f"{setup}-{name}-{run}.json").read_text())
            except Exception:
                continue
            d["p50"], d["p99"] = d["latency_us"][0], d["latency_us"][1]
            rows.append(d)
        cells = []
        for key, _, fmt in cols:
            vals = [r[key] for r in rows if r.get(key) is not None]
            if not vals:
                cells.append("-")
                continue
            med = statistics.median(vals)
            cells.append(f"{fmt.format(med)} ({fmt.format(min(vals))}–{fmt.format(max(vals))})")
        print(f"| {setup} | " + " | ".join(cells) + " |")
PY
