#!/bin/bash
# bench/ps_netns_bench.py in small: 2 workers, 4 MB, one timed step over 1 Gbit/s links, the DDP rows and
# dlps-train --verify. Every placement runs and every dlps step sums right (the ranks check each), no step beats
# its link's bound by more than the token bucket's burst (so the links were shaped), --verify is exact in every
# placement, and the table and the plot are written. Needs root (network namespaces, tc), Debian's python3-torch
# and python3-matplotlib.
set -euo pipefail
src=$1 build=$2
[ "$(id -u)" = 0 ] || { echo "[  SKIPPED ] needs root: network namespaces and tc"; exit 77; }
/usr/bin/python3 -c "import torch, matplotlib" 2>/dev/null ||
  { echo "[  SKIPPED ] needs python3-torch and python3-matplotlib (scripts/deps.sh)"; exit 77; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
/usr/bin/python3 "$src/bench/ps_netns_bench.py" --build "$build" --netns psbt --rate 1gbit --workers 2 --sizes 4 --steps 1 \
  --ddp-workers 2 --ddp-mb 4 --out "$out"
/usr/bin/python3 - "$out" <<'CHECK'
import json
import sys

r = json.load(open(sys.argv[1] + "/results.json"))
labels = [row["placement"] for row in r["rows"]]
assert labels == ["tcp", "gloo", "dlps shard/node", "dlps 2 servers", "dlps 1 servers"], labels
assert [row["placement"] for row in r["ddp"]] == ["ddp gloo", "ddp dlps shard/node", "ddp dlps 2 servers"], r["ddp"]
for row in r["rows"] + r["ddp"]:
    # 512 KiB of burst is 0.13 of 4 MB: a step well under its bound means the links were not limited
    assert 0.8 * row["bound_s"] <= row["step_s"] < 60, row
for row in r["rows"]:
    if row["placement"].startswith("dlps"):
        assert row["tcp_same_s"] and row["server_faults"] is not None, row
assert [v["difference"] for v in r["verify"]] == [0, 0, 0], r["verify"]
print("ps_netns_bench: ok")
CHECK
test -s "$out/steps.png"
grep -q "| 2 | 4 | dlps 2 servers |" "$out/table.md"
