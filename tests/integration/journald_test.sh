#!/usr/bin/env bash
# Starts systemd-journald standalone in a private mount namespace, runs agentd in journal mode beside it,
# and reads the agent's structured fields back with journalctl -o json.
# Usage: journald_test.sh AGENTD AGENTCTL. Exit 77: skipped (needs root, unshare and systemd-journald).
set -euo pipefail
agentd=$1 agentctl=$2
journald=/lib/systemd/systemd-journald
[ "$(id -u)" = 0 ] || { echo "[  SKIPPED ] needs root"; exit 77; }
command -v unshare >/dev/null && [ -x "$journald" ] && command -v journalctl >/dev/null || {
  echo "[  SKIPPED ] needs unshare, $journald and journalctl"; exit 77; }

work=$(mktemp -d /tmp/dlagent-journald.XXXXXX)
made_run_systemd=
[ -d /run/systemd ] || { mkdir /run/systemd; made_run_systemd=1; }
cleanup() {
  rm -rf "$work"
  [ -z "$made_run_systemd" ] || rmdir /run/systemd 2>/dev/null || true
}
trap cleanup EXIT

cat >"$work/agentd.toml" <<TOML
[agent]
socket = "$work/agentd.sock"
[cluster]
name = "journal-test"
[metrics]
port = 0
TOML

# Everything below runs in a mount namespace of its own: the journal socket and files live on tmpfs there.
unshare --mount --propagation private bash -euo pipefail -c '
  work=$1 agentd=$2 agentctl=$3 journald=$4
  mount -t tmpfs tmpfs /run/systemd
  mkdir -p /run/log && mount -t tmpfs tmpfs /run/log
  mkdir -p /run/systemd/journal
  "$journald" >"$work/journald.out" 2>&1 &
  jpid=$!
  for i in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
  [ -S /run/systemd/journal/socket ] || { echo "journald did not start:"; cat "$work/journald.out"; exit 1; }

  INVOCATION_ID=0123456789abcdef0123456789abcdef "$agentd" --config "$work/agentd.toml" >"$work/agentd.out" 2>&1 &
  apid=$!
  for i in $(seq 100); do "$agentctl" --socket "$work/agentd.sock" status >/dev/null 2>&1 && break; sleep 0.05; done
  "$agentctl" --socket "$work/agentd.sock" status
  kill -TERM $apid; wait $apid
  # journald flushes what it received before it reads more; give it a moment, then read.
  sleep 0.3
  journalctl -D /run/log/journal -o json --no-pager SYSLOG_IDENTIFIER=agentd >"$work/journal.json"
  kill $jpid; wait $jpid || true
' _ "$work" "$agentd" "$agentctl" "$journald"

fail=0
expect() {
  if grep -q -- "$1" "$work/journal.json"; then echo "ok: $2"; else echo "FAIL: $2 (no $1)"; fail=1; fi
}
expect '"DLAGENT_PHASE":"serving"' "records carry the phase field"
expect '"MESSAGE":"phase serving: serving agentctl on' "the phase change is logged"
expect '"PRIORITY":"6"' "info records have priority 6"
expect '"MESSAGE":"received SIGTERM, stopping"' "the stop is logged"
if [ -s "$work/agentd.out" ]; then echo "FAIL: agentd wrote to stderr in journal mode:"; cat "$work/agentd.out"; fail=1; fi
[ $fail = 0 ] || { echo "--- journal:"; cat "$work/journal.json"; }
exit $fail
