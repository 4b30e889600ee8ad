#!/bin/bash
# One job, two languages: a dlps-server for 2 workers, rank 0 through the C API (libdlps.so), rank 1
# through the Python package (ctypes over libdlps), both checking the same round; and the package's import
# under -I (no site packages: it needs nothing but ctypes and numpy). Usage: dlps_clients_test.sh DLPS_SERVER
# C_CLIENT PYTHON_DIR
set -euo pipefail
server=$1 c_client=$2 python_dir=$3
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
"$server" --listen 127.0.0.1:0 --workers 2 >"$dir/server.log" 2>&1 &
for _ in $(seq 100); do grep -q "listening on" "$dir/server.log" && break; sleep 0.05; done
address=$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$dir/server.log")
[ -n "$address" ] || { echo "dlps-server did not start:"; cat "$dir/server.log"; exit 1; }
export DLPS_SERVERS=$address DLPS_NUM_WORKERS=2 DLPS_DEADLINE=20s
# A sanitized build's library needs the sanitizer runtimes loaded first: Debian's python3 is not built with them.
preload=()
library=$python_dir/dlps/libdlps.so.0
[ -e "$library" ] || { echo "no $library: build the dlps_python target"; exit 1; }
# ldd read whole first: `ldd | grep -q` under pipefail fails whenever grep stops reading before ldd is done.
libs=$(ldd "$library")
if grep -q libasan <<<"$libs"; then
  preload=(env LD_PRELOAD="$(awk '/libasan|libubsan/ {print $3}' <<<"$libs" | tr '\n' ' ')" ASAN_OPTIONS=detect_leaks=0)
fi
DLPS_RANK=1 PYTHONPATH=$python_dir timeout 60 "${preload[@]}" /usr/bin/python3 "$(dirname "$0")/dlps_python_client.py" >"$dir/python.log" 2>&1 &
python=$!
rc=0
DLPS_RANK=0 timeout 60 "$c_client" "$address" || rc=1
wait $python || { rc=1; }
cat "$dir/python.log"
exit $rc
