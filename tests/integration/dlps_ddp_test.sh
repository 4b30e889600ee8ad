#!/bin/bash
# dlps.ddp's edges (dlps_ddp_errors.py) on a dlps-server for 2 workers and 2 ranks of Debian's python3-torch,
# gloo over 127.0.0.1. Usage: dlps_ddp_test.sh DLPS_SERVER PYTHON_DIR
set -euo pipefail
server=$1 python_dir=$2
# shellcheck source=dlps_two_workers.sh
. "$(dirname "$0")/dlps_two_workers.sh"
# torch's store: a free port, found by binding port 0.
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export DLPS_DEADLINE=30s MASTER_ADDR=127.0.0.1 MASTER_PORT=$port WORLD_SIZE=2 PYTHONPATH=$python_dir
script=$(dirname "$0")/dlps_ddp_errors.py
DLPS_RANK=1 RANK=1 timeout 120 "${preload[@]}" /usr/bin/python3 "$script" >"$dir/rank1.log" 2>&1 &
rank1=$!
rc=0
DLPS_RANK=0 RANK=0 timeout 120 "${preload[@]}" /usr/bin/python3 "$script" || rc=1
wait $rank1 || rc=1
sed 's/^/rank 1: /' "$dir/rank1.log"
exit $rc
