# Sourced by the Python client tests (dlps_clients_test.sh, dlps_ddp_test.sh), with $server (dlps-server) and
# $python_dir (the build's python directory) set: a temporary $dir removed at exit with every background job,
# a dlps-server for 2 workers on 127.0.0.1 ($address, exported as DLPS_SERVERS with DLPS_NUM_WORKERS=2), and
# $preload, the command prefix that loads the sanitizer runtimes first when libdlps is a sanitized build
# (Debian's python3 is not built with them).
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
"$server" --listen 127.0.0.1:0 --workers 2 >"$dir/server.log" 2>&1 &
for _ in $(seq 100); do grep -q "listening on" "$dir/server.log" && break; sleep 0.05; done
address=$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$dir/server.log")
[ -n "$address" ] || { echo "dlps-server did not start:"; cat "$dir/server.log"; exit 1; }
export DLPS_SERVERS=$address DLPS_NUM_WORKERS=2
preload=()
library=$python_dir/dlps/libdlps.so.0
[ -e "$library" ] || { echo "no $library: build the dlps_python target"; exit 1; }
# ldd read whole first: `ldd | grep -q` under pipefail fails whenever grep stops reading before ldd is done.
libs=$(ldd "$library")
if grep -q libasan <<<"$libs"; then
  preload=(env LD_PRELOAD="$(awk '/libasan|libubsan/ {print $3}' <<<"$libs" | tr '\n' ' ')" ASAN_OPTIONS=detect_leaks=0)
fi
