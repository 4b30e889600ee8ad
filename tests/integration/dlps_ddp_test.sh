#!/bin/bash
# dlps.ddp's edges (dlps_ddp_errors.py) on a dlps-server for 2 workers and 2 ranks of Debian's python3-torch,
# gloo over 127.0.0.1. Usage: dlps_ddp_test.sh DLPS_SERVER PYTHON_DIR
set -euo pipefail
server=$1 python_dir=$2
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
"$server" --listen 127.0.0.1:0 --workers 2 >"$dir/server.log" 2>&1 &
for _ in $(seq 100); do grep -q "listening on" "$dir/server.log" && break; sleep 0.05; done
address=$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$dir/server.log")
[ -n "$address" ] || { echo "dlps-server did not start:"; cat "$dir/server.log"; exit 1; }
# torch's store: a free port, found by binding port 0.
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export DLPS_SERVERS=$address DLPS_NUM_WORKERS=2 DLPS_DEADLINE=30s MASTER_ADDR=127.0.0.1 MASTER_PORT=$port WORLD_SIZE=2 PYTHONPATH=$python_dir
# A sanitized build's library needs the sanitizer runtimes loaded first (as dlps_clients_test.sh).
preload=()
libs=$(ldd "$python_dir/dlps/libdlps.so.0")
if grep -q libasan <<<"$libs"; then
  preload=(env LD_PRELOAD="$(awk '/libasan|libubsan/ {print $3}' <<<"$libs" | tr '\n' ' ')" ASAN_OPTIONS=detect_leaks=0)
fi
script=$(dirname "$0")/dlps_ddp_errors.py
DLPS_RANK=1 RANK=1 timeout 120 "${preload[@]}" /usr/bin/python3 "$script" >"$dir/rank1.log" 2>&1 &
rank1=$!
rc=0
DLPS_RANK=0 RANK=0 timeout 120 "${preload[@]}" /usr/bin/python3 "$script" || rc=1
wait $rank1 || rc=1
sed 's/^/rank 1: /' "$dir/rank1.log"
exit $rc
