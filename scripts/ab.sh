#!/usr/bin/env bash
# scripts/ab.sh OLD NEW [ROUNDS]: two detcd builds side by side, for a change's cost on the KV
# path. Starts a 3-member cluster of each binary on loopback (ports 41001-41003 and 42001-42003,
# peers 10 above), then for each round runs, on both clusters in turn (the order alternating
# between rounds, so a slow spell of this shared machine falls on both): 100,000 linearizable
# and 100,000 serializable reads of one 256-byte key at all three members, then 50,000 puts
# of 256-byte values to the leader, 100 clients over 10 connections (detcd-bench). Prints each
# run's requests/s and the three members' CPU (user + system) per request. LOADS picks the loads
# and their order (default "rangel ranges put"; put1 is one client's 3,000 puts to the leader,
# whose average latency is 1/(requests/s)). OLD may be an etcd binary: the flags are etcd's.
# Needs target/release/detcd-bench (`cargo build --release --bins`) and etcdctl.
set -euo pipefail
OLD="$1" NEW="$2" ROUNDS="${3:-3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="$ROOT/target/release/detcd-bench"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/detcd-ab.XXXXXX")"
declare -A PIDS ENDPOINTS LEADER
trap 'kill ${PIDS[old]:-} ${PIDS[new]:-} 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

start() { # NAME BINARY PORT_BASE
  local name="$1" binary="$2" base="$3" initial="" i
  for i in 1 2 3; do initial+="${initial:+,}m$i=http://127.0.0.1:$((base + 10 + i))"; done
  PIDS[$name]="" ENDPOINTS[$name]=""
  for i in 1 2 3; do
    local client="http://127.0.0.1:$((base + i))" peer="http://127.0.0.1:$((base + 10 + i))"
    "$binary" --name "m$i" --data-dir "$WORK/$name/m$i" \
      --listen-client-urls "$client" --advertise-client-urls "$client" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "$initial" --initial-cluster-token ab --snapshot-count=10000 \
      >"$WORK/$name-m$i.log" 2>&1 &
    PIDS[$name]+="$! "
    ENDPOINTS[$name]+="${ENDPOINTS[$name]:+,}127.0.0.1:$((base + i))"
  done
}

ticks() { # PIDS: their user + system clock ticks
  local total=0 pid
  for pid in $1; do
    total=$((total + $(cut -d')' -f2- "/proc/$pid/stat" | awk '{print $12 + $13}')))
  done
  echo "$total"
}

leader() { # NAME: the client address of the member that logged becoming leader
  local i
  for i in 1 2 3; do
    if grep -q "became leader" "$WORK/$1-m$i.log"; then
      cut -d, -f"$i" <<<"${ENDPOINTS[$1]}"
      return
    fi
  done
}

run() { # NAME LABEL DETCD-BENCH-ARGS...
  local name="$1" label="$2"
  shift 2
  local before after out ok rps
  before="$(ticks "${PIDS[$name]}")"
  out="$("$BENCH" --json "$@")"
  after="$(ticks "${PIDS[$name]}")"
  rps="$(sed -E 's/.*"rps":([0-9.]+).*/\1/' <<<"$out")"
  ok="$(sed -E 's/.*"ok":([0-9]+).*/\1/' <<<"$out")"
  awk -v n="$name" -v l="$label" -v r="$rps" -v d=$((after - before)) -v k="$ok" \
    -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%-4s %-7s %9.0f req/s  %6.1f us CPU/request\n", n, l, r, d * 1e6 / hz / k }'
}

start old "$OLD" 41000
start new "$NEW" 42000
value="$(printf 'v%.0s' $(seq 256))"
for name in old new; do
  for _ in $(seq 60); do
    ETCDCTL_API=3 etcdctl --endpoints="${ENDPOINTS[$name]}" --command-timeout=2s \
      put bench-range-key "$value" >/dev/null 2>&1 && break
    sleep 0.5
  done
  LEADER[$name]="$(leader "$name")"
done
load() { # NAME LOAD
  case "$2" in
  rangel | ranges)
    run "$1" "$2" --endpoints="${ENDPOINTS[$1]}" --conns=10 --clients=100 \
      range bench-range-key --consistency="${2#range}" --total=100000 ;;
  put)
    run "$1" put --endpoints="${LEADER[$1]}" --conns=10 --clients=100 \
      put --key-size=8 --val-size=256 --key-space-size=100000 --total=50000 ;;
  put1)
    run "$1" put1 --endpoints="${LEADER[$1]}" --conns=1 --clients=1 \
      put --key-size=8 --val-size=256 --key-space-size=100000 --total=3000 ;;
  *) echo "unknown load $2" >&2; exit 2 ;;
  esac
}

for round in $(seq "$ROUNDS"); do
  order="old new"
  [ $((round % 2)) -eq 0 ] && order="new old"
  for l in ${LOADS:-rangel ranges put}; do
    for name in $order; do load "$name" "$l"; done
  done
done
