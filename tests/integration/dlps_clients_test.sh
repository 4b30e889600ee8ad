#!/bin/bash
# One job, two languages: a dlps-server for 2 workers, rank 0 through the C API (libdlps.so), rank 1
# through the Python package (ctypes over libdlps), both checking the same round; and the package's import
# under -I (no site packages: it needs nothing but ctypes and numpy). Usage: dlps_clients_test.sh DLPS_SERVER
# C_CLIENT PYTHON_DIR
set -euo pipefail
server=$1 c_client=$2 python_dir=$3
# shellcheck source=dlps_two_workers.sh
. "$(dirname "$0")/dlps_two_workers.sh"
export DLPS_DEADLINE=20s
DLPS_RANK=1 PYTHONPATH=$python_dir timeout 60 "${preload[@]}" /usr/bin/python3 "$(dirname "$0")/dlps_python_client.py" >"$dir/python.log" 2>&1 &
python=$!
rc=0
DLPS_RANK=0 timeout 60 "$c_client" "$address" || rc=1
wait $python || { rc=1; }
cat "$dir/python.log"
exit $rc
