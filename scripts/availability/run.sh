#!/bin/bash
# Availability under member restarts: 3 members, 8 Go clientv3 writers on all endpoints (1 s
# put timeout), SIGKILL member r%3 in round r, restart it 2 s later; longest gap between
# acknowledged puts while it is down and in the 5 s after its restart.
# Usage: run.sh detcd|etcd ROUNDS   (DETCD=binary, WRITER=the built writer, WORK=scratch dir)
# The writer is scripts/availability/writer.go, built against Go clientv3 3.4 (Debian's
# golang-go and golang-etcd-server-dev, offline in GOPATH mode):
#   mkdir -p $GOPATH_DIR/src/availwriter && cp writer.go $GOPATH_DIR/src/availwriter/main.go
#   GOPATH=$GOPATH_DIR:/usr/share/gocode GO111MODULE=off go build -o /tmp/avail/writer availwriter
set -u
FLAVOR=$1; ROUNDS=${2:-5}
BIN_DETCD=${DETCD:-./target/release/detcd}
BASE=$((30000 + RANDOM % 2000 * 10))
W=${WORK:-/tmp/avail}/$FLAVOR; rm -rf $W; mkdir -p $W
IC=""; EPS=""
for i in 0 1 2; do
  IC="$IC,m$i=http://127.0.0.1:$((BASE+i*2+1))"; EPS="$EPS,127.0.0.1:$((BASE+i*2))"
done
IC=${IC#,}; EPS=${EPS#,}
start() {
  local i=$1
  local args="--name m$i --data-dir $W/m$i --listen-client-urls http://127.0.0.1:$((BASE+i*2)) --advertise-client-urls http://127.0.0.1:$((BASE+i*2)) --listen-peer-urls http://127.0.0.1:$((BASE+i*2+1)) --initial-advertise-peer-urls http://127.0.0.1:$((BASE+i*2+1)) --initial-cluster $IC --initial-cluster-state new"
  if [ $FLAVOR = etcd ]; then etcd $args >>$W/m$i.log 2>&1 & else $BIN_DETCD $args >>$W/m$i.log 2>&1 & fi
  echo $! > $W/m$i.pid
}
for i in 0 1 2; do start $i; done
sleep 3
${WRITER:-/tmp/avail/writer} $EPS 8 $((4 + ROUNDS * 8)) > $W/acks 2>$W/writer.err &
WPID=$!
sleep 3
for r in $(seq 1 $ROUNDS); do
  v=$(( r % 3 ))
  t0=$(date +%s.%N); kill -9 $(cat $W/m$v.pid); sleep 2; start $v; t1=$(date +%s.%N); sleep 6
  echo "$r m$v $t0 $t1" >> $W/rounds
done
wait $WPID
for i in 0 1 2; do kill $(cat $W/m$i.pid) 2>/dev/null; done
python3 - "$W" <<'PY'
import sys,collections
W=sys.argv[1]
per=collections.defaultdict(list)
for line in open(W+"/acks"):
    w,t=line.split(); per[w].append(float(t))
acks=sorted(x for p in per.values() for x in p)
def gap(xs,a,b):
    xs=[a]+[x for x in xs if a<=x<=b]+[b]
    return max(y-x for x,y in zip(xs,xs[1:]))
for line in open(W+"/rounds"):
    r,m,t0,t1=line.split(); t0=float(t0); t1=float(t1)
    worst=max(gap(sorted(p),t1,t1+5) for p in per.values())
    print(f"round {r} kill {m}: gap while down {gap(acks,t0+0.01,t1):.2f}s; after restart: all writers {gap(acks,t1,t1+5):.2f}s, worst writer {worst:.2f}s; acks/s {len([x for x in acks if t1<=x<=t1+5])/5:.0f}")
PY
