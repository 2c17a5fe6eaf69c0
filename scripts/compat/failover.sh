#!/bin/bash
# The Kubernetes watch pattern through Go clientv3 (go-kubernetes-watch.go) against three
# members on loopback, killing the leader with SIGKILL twice while it runs and restarting it
# two seconds later; the program judges what its watcher received (see its header).
# Usage: scripts/compat/failover.sh SERVER CLIENT
#   SERVER: detcd (or etcd: the same flags); CLIENT: the built go-kubernetes-watch.
set -u
SERVER=$1 CLIENT=$2
W=$(mktemp -d)
trap 'kill -9 $(cat "$W"/*.pid) 2>/dev/null; rm -rf "$W"' EXIT
BASE=$((28000 + RANDOM % 500 * 4))
CLUSTER="" EPS=""
for i in 0 1 2; do
  CLUSTER="$CLUSTER,m$i=http://127.0.0.1:$((BASE + i * 2 + 1))"
  EPS="$EPS,127.0.0.1:$((BASE + i * 2))"
done
CLUSTER=${CLUSTER#,} EPS=${EPS#,}

start() {
  local i=$1 state=$2
  "$SERVER" --name "m$i" --data-dir "$W/m$i" \
    --listen-client-urls "http://127.0.0.1:$((BASE + i * 2))" \
    --advertise-client-urls "http://127.0.0.1:$((BASE + i * 2))" \
    --listen-peer-urls "http://127.0.0.1:$((BASE + i * 2 + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((BASE + i * 2 + 1))" \
    --initial-cluster "$CLUSTER" --initial-cluster-state "$state" >>"$W/m$i.log" 2>&1 &
  echo $! >"$W/m$i.pid"
  disown  # killed on purpose: no "Killed" notices from the shell
}

# The member whose status names itself as leader, asked for ten seconds at most.
leader() {
  for _ in $(seq 20); do
    for i in 0 1 2; do
      ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$((BASE + i * 2))" --command-timeout=1s \
        endpoint status -w json 2>/dev/null |
        python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; sys.exit(s["header"]["member_id"]!=s["leader"])' &&
        { echo "$i"; return; }
    done
    sleep 0.5
  done
}

for i in 0 1 2; do start "$i" new; done
sleep 3
"$CLIENT" "$EPS" 16 >"$W/client.out" 2>&1 &
CLIENT_PID=$!
echo "$CLIENT_PID" >"$W/client.pid"
for round in 1 2; do
  sleep 4
  victim=$(leader)
  [[ -n "$victim" ]] || { echo "round $round: no leader found" >&2; exit 1; }
  kill -9 "$(cat "$W/m$victim.pid")"
  echo "round $round: killed the leader m$victim"
  sleep 2
  start "$victim" existing
done
wait "$CLIENT_PID"
status=$?
cat "$W/client.out"
if ((status != 0)); then
  echo "failover: the watcher's guarantees failed (logs of the members follow)" >&2
  tail -n 20 "$W"/m*.log >&2
fi
exit "$status"
