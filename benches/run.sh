#!/usr/bin/env bash
# Builds both example sites in release mode, runs every load scenario RUNS times against
# each (loopback only), and prints the medians (with min-max) side by side.
#
#   benches/run.sh                        # the issue's scenarios
#   IDLE_CONNECTIONS=20000 RUNS=1 benches/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-100000}
IDLE_SECONDS=${IDLE_SECONDS:-30}
OUT=${OUT:-target/bench-results}
mkdir -p "$OUT"
# Room for 100k server sockets plus 100k client sockets (root may raise the hard limit).
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release -p chatroom-examples -p chatroom-benches --bins >&2

scenarios=(
  "burst --rooms 1 --clients 100 --senders 1 --messages 2000"
  "steady --rooms 10 --clients 50 --rate 200 --seconds 10"
  "idle --connections $IDLE_CONNECTIONS --rooms 1000 --seconds $IDLE_SECONDS"
  "churn --cycles 2000 --concurrency 10"
)

for site in axum-site actix-site; do
  for scenario in "${scenarios[@]}"; do
    name=${scenario%% *}
    for run in $(seq 1 "$RUNS"); do
      port=$((20000 + RANDOM % 20000))
      # The benchmark measures throughput, so the per-client rate limit is lifted;
      # keepalive stays on at its default.
      CHATROOM_ADDR=127.0.0.1:$port CHATROOM_RATE_BURST=1000000 CHATROOM_RATE_PER_SEC=1000000 \
        CHATROOM_MAX_MEMBERS=100000 RUST_LOG=error \
        target/release/$site >/dev/null 2>&1 &
      pid=$!
      for _ in $(seq 1 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
        sleep 0.05
      done
      echo "== $site $name run $run" >&2
      # shellcheck disable=SC2086
      target/release/chatroom-load $scenario --addr 127.0.0.1:$port --pid $pid \
        | tee /dev/stderr | tail -n 1 > "$OUT/$site-$name-$run.json" || true
      kill -INT $pid 2>/dev/null || true
      wait $pid 2>/dev/null || true
    done
  done
done

# The kernel's floor on this machine, in the same run: bare loopback TCP in the
# steady pattern, and connect + five round trips + close at the churn concurrency.
for run in $(seq 1 "$RUNS"); do
  echo "== tcp-floor run $run" >&2
  target/release/tcp-floor | tee /dev/stderr | tail -n 1 > "$OUT/floor-writes-$run.json" || true
  target/release/tcp-floor cycles --cycles 20000 --concurrency 10 --exchanges 5 \
    | tee /dev/stderr | tail -n 1 > "$OUT/floor-cycles-$run.json" || true
done

python3 - "$OUT" "$RUNS" <<'PY'
import json, statistics, sys, pathlib
out, runs = pathlib.Path(sys.argv[1]), int(sys.argv[2])
metrics = {
    "burst": [("deliveries_per_sec", "deliveries/s", "{:,.0f}"), ("lost", "lost", "{:.0f}"),
              ("lat_p50", "p50 µs", "{:.0f}"), ("lat_p99", "p99 µs", "{:.0f}"),
              ("server_cpu_s_per_million", "CPU s/M", "{:.2f}")],
    "steady": [("lost", "lost", "{:.0f}"), ("lat_p50", "p50 µs", "{:.0f}"), ("lat_p99", "p99 µs", "{:.0f}"),
               ("lat_p999", "p99.9 µs", "{:.0f}"), ("lat_max", "max µs", "{:.0f}"),
               ("server_cpu_s_per_million", "CPU s/M", "{:.2f}")],
    "idle": [("held", "held", "{:.0f}"), ("rss_per_connection", "RSS B/conn", "{:,.0f}"),
             ("joins_per_sec", "joins/s", "{:,.0f}")],
    "churn": [("joins_per_sec", "cycles/s", "{:,.0f}"), ("lost", "lost", "{:.0f}"),
              ("server_cpu_us_per_cycle", "CPU µs/cyc", "{:.0f}")],
}
def load(site, name):
    rows = []
    for run in range(1, runs + 1):
        p = out / f"{site}-{name}-{run}.json"
        try:
            r = json.loads(p.read_text())
        except Exception:
            continue
        lat = r.get("latency_us", [0, 0, 0, 0])
        r.update(lat_p50=lat[0], lat_p99=lat[1], lat_p999=lat[2], lat_max=lat[3])
        rows.append(r)
    return rows
print(f"{'scenario':<8} {'metric':<12} {'axum-site median (min-max)':>32} {'actix-site median (min-max)':>32}")
for name, ms in metrics.items():
    for key, label, fmt in ms:
        cells = []
        for site in ("axum-site", "actix-site"):
            vals = [r[key] for r in load(site, name) if r.get(key) is not None]
            if not vals:
                cells.append("n/a")
                continue
            med = statistics.median(vals)
            cells.append(f"{fmt.format(med)} ({fmt.format(min(vals))}-{fmt.format(max(vals))})")
        print(f"{name:<8} {label:<12} {cells[0]:>32} {cells[1]:>32}")

print()
print("kernel floor (tcp-floor, no WebSocket, no chat server), median (min-max):")
for kind, fields in (("writes", [("writer_cpu_s_per_million", "steady pattern: writer CPU s per million writes"),
                                 ("lat_p50", "steady pattern: p50 µs"), ("lat_p99", "steady pattern: p99 µs")]),
                     ("cycles", [("cycles_per_sec", "churn pattern: cycles/s"),
                                 ("cpu_us_per_cycle", "churn pattern: CPU µs per cycle, both ends")])):
    rows = []
    for run in range(1, runs + 1):
        try:
            r = json.loads((out / f"floor-{kind}-{run}.json").read_text())
        except Exception:
            continue
        lat = r.get("latency_us", [0, 0, 0, 0])
        r.update(lat_p50=lat[0], lat_p99=lat[1])
        rows.append(r)
    for key, label in fields:
        vals = [r[key] for r in rows if r.get(key) is not None]
        if vals:
            print(f"  {label:<48} {statistics.median(vals):,.2f} ({min(vals):,.2f}-{max(vals):,.2f})")
PY
