#!/usr/bin/env bash
# scripts/watch_ab.sh OLD NEW [ROUNDS]: two detcd builds under `make bench`'s watch pair, for
# a change's effect on a writer's puts under 10,000 watchers. Each round starts a fresh
# 3-member cluster of each binary in turn (the order alternating between rounds) and runs on
# it: 2,000 puts by 10 clients (16-byte values on 1,000 keys) unwatched, the same puts under
# 100 streams x 100 watchers of their prefix (detcd-bench watch), and the unwatched puts again.
# Prints per run the unwatched p99s, the watched put p99 and average, events per second, and
# the members' resident growth per watcher over the watchers' creation.
# Needs target/release/detcd-bench (`cargo build --release --bins`) and etcdctl.
set -euo pipefail
OLD="$1" NEW="$2" ROUNDS="${3:-3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="$ROOT/target/release/detcd-bench"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/detcd-watch-ab.XXXXXX")"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

start() { # BINARY: a fresh cluster on ports 43001-43003 (peers 10 above); sets ENDPOINTS
  local binary="$1" base=43000 initial="" i
  for i in 1 2 3; do initial+="${initial:+,}m$i=http://127.0.0.1:$((base + 10 + i))"; done
  rm -rf "$WORK/data"
  PIDS=() ENDPOINTS=""
  for i in 1 2 3; do
    local client="http://127.0.0.1:$((base + i))" peer="http://127.0.0.1:$((base + 10 + i))"
    "$binary" --name "m$i" --data-dir "$WORK/data/m$i" \
      --listen-client-urls "$client" --advertise-client-urls "$client" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "$initial" --initial-cluster-token watch-ab --snapshot-count=10000 \
      >"$WORK/m$i.log" 2>&1 &
    PIDS+=("$!")
    ENDPOINTS+="${ENDPOINTS:+,}127.0.0.1:$((base + i))"
  done
  for _ in $(seq 60); do
    ETCDCTL_API=3 etcdctl --endpoints="$ENDPOINTS" --command-timeout=2s put ready 1 \
      >/dev/null 2>&1 && all_serve && return
    sleep 0.5
  done
  echo "watch_ab: the cluster of $binary did not become writable" >&2
  exit 1
}

all_serve() { # whether every member answers a linearizable read
  local endpoint
  for endpoint in ${ENDPOINTS//,/ }; do
    ETCDCTL_API=3 etcdctl --endpoints="$endpoint" --command-timeout=2s get ready \
      >/dev/null 2>&1 || return 1
  done
}

stop() {
  kill "${PIDS[@]}"
  wait "${PIDS[@]}" 2>/dev/null || true
  PIDS=()
}

field() { sed -E "s/.*\"$2\":([0-9.]+).*/\1/" <<<"$1"; }

pair() { # NAME BINARY
  local small=(--key-size=8 --val-size=16 --key-space-size=1000) before watched after
  start "$2"
  before="$("$BENCH" --json --endpoints="$ENDPOINTS" --conns=10 --clients=10 put "${small[@]}" \
    --total=2000 --seed=5)"
  watched="$("$BENCH" --json --endpoints="$ENDPOINTS" --conns=10 --clients=10 watch \
    "${small[@]}" --streams=100 --watchers-per-stream=100 --total=2000 \
    --memory-pids="$(IFS=,; echo "${PIDS[*]}")")"
  after="$("$BENCH" --json --endpoints="$ENDPOINTS" --conns=10 --clients=10 put "${small[@]}" \
    --total=2000 --seed=7)"
  stop
  printf '%-4s unwatched p99 %6.2f / %6.2f ms  watched p99 %6.2f ms, avg %5.2f ms  %5.2fM events/s  %6s B/watcher\n' \
    "$1" "$(field "$before" p99_ms)" "$(field "$after" p99_ms)" "$(field "$watched" put_p99_ms)" \
    "$(field "$watched" put_avg_ms)" "$(awk -v e="$(field "$watched" events_per_sec)" 'BEGIN {print e / 1e6}')" \
    "$(field "$watched" bytes_per_watcher)"
}

for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then
    pair old "$OLD"
    pair new "$NEW"
  else
    pair new "$NEW"
    pair old "$OLD"
  fi
done
