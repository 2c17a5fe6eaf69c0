#!/usr/bin/env bash
# `make bench`: runs the same load against a 3-member etcd cluster and a 3-member detcd cluster,
# one after the other, on loopback, and prints detcd's numbers as ratios of etcd's against the
# project's targets. The load generator is detcd-bench for both, so only the server differs.
#
# Both clusters get the same flags (names, --initial-cluster, --initial-cluster-token, the default
# heartbeat and election timeouts) and both fsync every WAL write (their default). Writes go to
# the leader and reads to all members, as in etcd's docs/op-guide/performance.md.
#
# Knobs (environment): PUT_TOTAL, PUT1_TOTAL, RANGE_TOTAL, TXN_TOTAL, KEEPALIVE_TOTAL,
# CHURN_TOTAL, WATCH_PUTS (0 skips the watch loads), CLIENTS, CONNS,
# KEY_SPACE, BENCH_DIR (where the data dirs go: it must be a real disk for fsync to count),
# BENCH_FLAGS (extra member flags, given to both systems alike, e.g. --snapshot-count=100000),
# BENCH_PORT_BASE, ETCD, DETCD, DETCD_BENCH, BENCH_SYSTEMS (the systems to run, in order: "etcd
# detcd" by default; name one to measure only it, without the ratio table).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ETCD="${ETCD:-$(command -v etcd || echo /usr/bin/etcd)}"
ETCDCTL="${ETCDCTL:-$(command -v etcdctl || echo /usr/bin/etcdctl)}"
DETCD="${DETCD:-$ROOT/target/release/detcd}"
DETCD_BENCH="${DETCD_BENCH:-$ROOT/target/release/detcd-bench}"

PUT_TOTAL="${PUT_TOTAL:-100000}"
PUT1_TOTAL="${PUT1_TOTAL:-3000}"
RANGE_TOTAL="${RANGE_TOTAL:-100000}"
TXN_TOTAL="${TXN_TOTAL:-50000}"
KEEPALIVE_TOTAL="${KEEPALIVE_TOTAL:-100000}"
CHURN_TOTAL="${CHURN_TOTAL:-10000}"
WATCH_PUTS="${WATCH_PUTS:-2000}"
CLIENTS="${CLIENTS:-100}"
CONNS="${CONNS:-10}"
KEY_SPACE="${KEY_SPACE:-100000}"
PORT_BASE="${BENCH_PORT_BASE:-24000}"
# Both systems snapshot every 10,000 entries unless told otherwise: etcd 3.6's default (which
# detcd follows), given explicitly because etcd 3.4's own default is 100,000.
BENCH_FLAGS="${BENCH_FLAGS---snapshot-count=10000}"
read -r -a EXTRA_FLAGS <<<"${BENCH_FLAGS}"
RANGE_KEY="bench-range-key"

for tool in "$ETCD" "$ETCDCTL" "$DETCD" "$DETCD_BENCH"; do
  [[ -x "$tool" ]] || { echo "bench: $tool is missing (make tools; make build)" >&2; exit 1; }
done

WORK="$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/detcd-bench.XXXXXX")"
PIDS=()

stop_cluster() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}

cleanup() {
  stop_cluster
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Results, keyed "<system>.<metric>".
declare -A R

# Whether every member answers a linearizable read (the loads spread over all of them).
all_serve() {
  local url
  for url in "${CLIENT_URLS[@]}"; do
    ETCDCTL_API=3 "$ETCDCTL" --endpoints="$url" --command-timeout=2s get "$RANGE_KEY" \
      >/dev/null 2>&1 || return 1
  done
}

# start_cluster SYSTEM BINARY PORT_OFFSET: three members on loopback with fresh data dirs.
start_cluster() {
  local system="$1" binary="$2" base=$((PORT_BASE + $3)) i initial=""
  CLIENT_URLS=()
  for i in 1 2 3; do
    initial+="${initial:+,}m$i=http://127.0.0.1:$((base + 10 + i))"
  done
  mkdir -p "$WORK/$system"
  for i in 1 2 3; do
    local client="http://127.0.0.1:$((base + i))" peer="http://127.0.0.1:$((base + 10 + i))"
    CLIENT_URLS+=("127.0.0.1:$((base + i))")
    "$binary" --name "m$i" --data-dir "$WORK/$system/m$i" \
      --listen-client-urls "$client" --advertise-client-urls "$client" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "$initial" --initial-cluster-token bench-cluster \
      --initial-cluster-state new "${EXTRA_FLAGS[@]}" \
      >"$WORK/$system/m$i.log" 2>&1 &
    PIDS+=("$!")
  done
  local all
  all="$(IFS=,; echo "${CLIENT_URLS[*]}")"
  for _ in $(seq 60); do
    if ETCDCTL_API=3 "$ETCDCTL" --endpoints="$all" --command-timeout=2s \
      put "$RANGE_KEY" "$(printf 'v%.0s' $(seq 256))" >/dev/null 2>&1 && all_serve; then
      return 0
    fi
    sleep 0.5
  done
  echo "bench: the $system cluster did not become writable; logs in $WORK/$system" >&2
  tail -n 20 "$WORK/$system"/m*.log >&2
  exit 1
}

# The client URL of the member whose log says it became leader at the highest term. Both etcd
# (raft's log line) and detcd log "became leader at term N".
leader_url() {
  local system="$1" best_term=-1 best=0 i term
  for i in 1 2 3; do
    term="$(grep -o 'became leader at term [0-9]*' "$WORK/$system/m$i.log" |
      awk '{print $NF}' | sort -n | tail -n 1)"
    if [[ -n "$term" && "$term" -gt "$best_term" ]]; then best_term="$term"; best="$i"; fi
  done
  [[ "$best" != 0 ]] || { echo "bench: no leader found in the $system logs" >&2; exit 1; }
  echo "${CLIENT_URLS[$((best - 1))]}"
}

field() { sed -E "s/.*\"$2\":([0-9.eE+-]+).*/\1/" <<<"$1"; }

# run_load SYSTEM NAME ENDPOINTS ARGS...: one detcd-bench run; keeps its JSON line.
run_load() {
  local system="$1" name="$2" endpoints="$3" line
  shift 3
  line="$("$DETCD_BENCH" --json --endpoints="$endpoints" "$@")"
  echo "  $name: $line"
  R[$system.$name.rps]="$(field "$line" rps)"
  R[$system.$name.avg]="$(field "$line" avg_ms)"
  R[$system.$name.p99]="$(field "$line" p99_ms)"
  R[$system.$name.errors]="$(field "$line" errors)"
}

# run_watch SYSTEM NAME ENDPOINTS ARGS...: one detcd-bench watch run; keeps its JSON line.
run_watch() {
  local system="$1" name="$2" endpoints="$3" line
  shift 3
  line="$("$DETCD_BENCH" --json --endpoints="$endpoints" "$@")"
  echo "  $name: $line"
  R[$system.$name.events]="$(field "$line" events_per_sec)"
  R[$system.$name.p99]="$(field "$line" event_p99_ms)"
  R[$system.$name.put_p99]="$(field "$line" put_p99_ms)"
  R[$system.$name.bytes]="$(field "$line" bytes_per_watcher)"
  R[$system.$name.errors]="$(field "$line" errors)"
}

bench_system() {
  local system="$1" binary="$2" offset="$3" leader all pid rss sum=0 max=0
  echo "== $system: $("$binary" --version | head -n 1)"
  start_cluster "$system" "$binary" "$offset"
  leader="$(leader_url "$system")"
  all="$(IFS=,; echo "${CLIENT_URLS[*]}")"
  echo "  leader $leader; writes to the leader, reads to all of $all"
  # Watch: the writer's puts alone first (10 clients, 16-byte values on 1000 keys), then the
  # same puts under 10,000 watchers of their prefix over 100 streams spread over the members;
  # and 1,000 watchers of one key at 200 puts/s for event latency. Memory per watcher is the
  # members' resident growth over the watchers' creation; they run first, on fresh members,
  # so that a garbage collection of earlier loads' memory cannot hide it (etcd's RSS fell while
  # its watchers were created when they ran last).
  local pids small=(--key-size=8 --val-size=16 --key-space-size=1000)
  pids="$(IFS=,; echo "${PIDS[*]}")"
  if ((WATCH_PUTS > 0)); then
    run_load "$system" put_small "$all" --conns=10 --clients=10 \
      put "${small[@]}" --total="$WATCH_PUTS" --seed=5
    run_watch "$system" watch "$all" --conns=10 --clients=10 watch "${small[@]}" \
      --streams=100 --watchers-per-stream=100 --total="$WATCH_PUTS" --memory-pids="$pids"
    run_watch "$system" watchl "$all" watch-latency --streams=10 --watchers-per-stream=100 \
      --put-rate=200 --total=1000 --memory-pids="$pids"
  fi
  local common=(--key-size=8 --val-size=256 --key-space-size="$KEY_SPACE")
  run_load "$system" put "$leader" --conns="$CONNS" --clients="$CLIENTS" \
    put "${common[@]}" --total="$PUT_TOTAL"
  run_load "$system" put1 "$leader" --conns=1 --clients=1 \
    put "${common[@]}" --total="$PUT1_TOTAL" --seed=2
  run_load "$system" txn "$leader" --conns="$CONNS" --clients="$CLIENTS" \
    txn-put "${common[@]}" --total="$TXN_TOTAL" --seed=3
  run_load "$system" rangel "$all" --conns="$CONNS" --clients="$CLIENTS" \
    range "$RANGE_KEY" --consistency=l --total="$RANGE_TOTAL"
  run_load "$system" ranges "$all" --conns="$CONNS" --clients="$CLIENTS" \
    range "$RANGE_KEY" --consistency=s --total="$RANGE_TOTAL"
  # Keepalives to the leader, which alone keeps lease clocks in both systems; then to every
  # member, whose followers pass them on to it.
  run_load "$system" keepalive "$leader" --conns="$CONNS" --clients="$CLIENTS" \
    lease-keepalive --total="$KEEPALIVE_TOTAL"
  run_load "$system" keepalive_all "$all" --conns="$CONNS" --clients="$CLIENTS" \
    lease-keepalive --total="$KEEPALIVE_TOTAL"
  run_load "$system" churn "$leader" --conns="$CONNS" --clients="$CLIENTS" \
    lease-churn "${common[@]}" --total="$CHURN_TOTAL" --seed=4
  for pid in "${PIDS[@]}"; do
    rss="$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")"
    sum=$((sum + rss))
    ((rss > max)) && max="$rss"
  done
  R[$system.rss_max]="$(awk -v k="$max" 'BEGIN {printf "%.1f", k / 1024}')"
  R[$system.rss_mean]="$(awk -v k="$sum" 'BEGIN {printf "%.1f", k / 3 / 1024}')"
  echo "  resident memory per member after the load: max ${R[$system.rss_max]} MiB," \
    "mean ${R[$system.rss_mean]} MiB"
  stop_cluster
}

echo "bench: data in $WORK ($(df -T "$WORK" | awk 'NR == 2 {print $2}')), $(nproc) cores;" \
  "puts ${PUT_TOTAL}x, 1-client puts ${PUT1_TOTAL}x, txns ${TXN_TOTAL}x, ranges ${RANGE_TOTAL}x," \
  "keepalives ${KEEPALIVE_TOTAL}x, lease churn cycles ${CHURN_TOTAL}x;" \
  "$CLIENTS clients over $CONNS conns; key 8 B, value 256 B, key space $KEY_SPACE;" \
  "member flags: defaults${BENCH_FLAGS:+ + $BENCH_FLAGS}"
BENCH_SYSTEMS="${BENCH_SYSTEMS:-etcd detcd}"
for system in $BENCH_SYSTEMS; do
  case "$system" in
    etcd) bench_system etcd "$ETCD" 0 ;;
    detcd) bench_system detcd "$DETCD" 100 ;;
    *) echo "bench: unknown system $system in BENCH_SYSTEMS" >&2; exit 1 ;;
  esac
done
[[ " $BENCH_SYSTEMS " == *" etcd "* && " $BENCH_SYSTEMS " == *" detcd "* ]] || exit 0

# row LABEL METRIC_KEY UNIT TARGET_OP TARGET: ratio = detcd / etcd; PASS when the ratio meets
# the target (">=" for throughput, "<=" for latency and memory); "-" rows are informational.
FAILS=0
row() {
  local label="$1" key="$2" unit="$3" op="$4" target="$5" e d ratio verdict
  e="${R[etcd.$key]}"
  d="${R[detcd.$key]}"
  ratio="$(awk -v e="$e" -v d="$d" 'BEGIN {if (e > 0) printf "%.2f", d / e; else print "n/a"}')"
  verdict="-"
  if [[ "$op" != "-" ]]; then
    verdict="$(awk -v r="$ratio" -v t="$target" -v op="$op" 'BEGIN {
      ok = (op == ">=") ? (r + 0 >= t) : (r + 0 <= t); print (r != "n/a" && ok) ? "PASS" : "FAIL" }')"
    [[ "$verdict" == PASS ]] || FAILS=$((FAILS + 1))
  fi
  [[ "$op" == "-" ]] && op=""
  printf '%-42s %10s %10s %6s %7s  %s\n' "$label ($unit)" "$e" "$d" "$ratio" "$op$target" \
    "$verdict"
}

echo
printf '%-42s %10s %10s %6s %7s  %s\n' metric etcd detcd ratio target result
row "put, $CLIENTS clients, throughput" put.rps "req/s" ">=" 1.5
row "put, $CLIENTS clients, p99 latency" put.p99 ms "<=" 1.0
row "put, $CLIENTS clients, avg latency" put.avg ms - ""
row "put, 1 client, avg latency" put1.avg ms "<=" 1.0
row "put, 1 client, p99 latency" put1.p99 ms - ""
row "range linearizable, throughput" rangel.rps "req/s" ">=" 1.5
row "range linearizable, p99 latency" rangel.p99 ms - ""
row "range serializable, throughput" ranges.rps "req/s" ">=" 1.5
row "range serializable, p99 latency" ranges.p99 ms - ""
row "txn-put, $CLIENTS clients, throughput" txn.rps "req/s" - ""
row "txn-put, $CLIENTS clients, p99" txn.p99 ms - ""
row "lease keepalive (leader), throughput" keepalive.rps "req/s" ">=" 2.0
row "lease keepalive (leader), p99 latency" keepalive.p99 ms "<=" 1.0
row "lease keepalive (all members), throughput" keepalive_all.rps "req/s" - ""
row "lease keepalive (all members), p99" keepalive_all.p99 ms - ""
row "lease grant+put+revoke, throughput" churn.rps "cycle/s" - ""
row "lease grant+put+revoke, p99 latency" churn.p99 ms - ""
row "watch, 10k watchers, events/s" watch.events "ev/s" ">=" 10
row "watch, 10k watchers, writer put p99" watch.put_p99 ms - ""
row "  the same puts unwatched, p99" put_small.p99 ms - ""
row "watch, memory per watcher" watch.bytes B "<=" 0.5
row "watch-latency, 1k watchers, p99" watchl.p99 ms "<=" 0.5
row "RSS per member, max" rss_max MiB "<=" 0.5
row "RSS per member, mean" rss_mean MiB - ""
# The writer's put p99 under the watchers, as a multiple of its unwatched p99 (detcd's own,
# not a ratio to etcd): at most 2.
if ((WATCH_PUTS > 0)); then
  watched="$(awk -v w="${R[detcd.watch.put_p99]}" -v u="${R[detcd.put_small.p99]}" \
    'BEGIN {if (u > 0) printf "%.2f", w / u; else print "n/a"}')"
  verdict="$(awk -v r="$watched" 'BEGIN {print (r != "n/a" && r + 0 <= 2) ? "PASS" : "FAIL"}')"
  [[ "$verdict" == PASS ]] || FAILS=$((FAILS + 1))
  printf '%-42s %10s %10s %6s %7s  %s\n' "detcd put p99 watched / unwatched" "" "" "$watched" \
    "<=2" "$verdict"
fi
errors=0
for s in etcd detcd; do
  for w in put put1 txn rangel ranges keepalive keepalive_all churn put_small watch watchl; do
    e="${R[$s.$w.errors]:-0}"
    errors=$((errors + ${e%.*}))
  done
done
echo
echo "ratio = detcd / etcd; writes to the leader, reads to all members; request errors: $errors"
echo "targets missed: $FAILS"
