#!/usr/bin/env bash
# The Debian package under real systemd: a minimal Debian system container (mmdebstrap, then systemd-nspawn
# --boot, systemd as PID 1) of the given release, in a network namespace of its own, with the project's IMDS
# emulator at the real metadata address. The container holds systemd, the package's dependencies (base
# packages only: none of the build's libraries, no gRPC, protobuf, spdlog, fmt or OpenBLAS), and the release's
# own python3 and numpy. apt installs the .deb; then: nothing started, `systemctl start agentd` active with its
# STATUS= text, the DLAGENT_* fields in `journalctl -u agentd`, dlagent-ready.target reached once the one-node
# cluster forms (node files written), `agentctl run -- true`, a dlps job whose worker is the release's python3
# with the packaged dlps package, `systemctl reload` keeps the process, a hung loop makes the watchdog restart
# the agent, an upgrade keeps the configuration and restarts the agent, `systemctl stop` is clean, and purge
# removes the package, its units and what the agent wrote (the operator's cluster key stays).
#
# The root file system is built once per release and cached (tests/system/rootfs.sh); each run boots an
# overlay of it, so nothing of a run stays there.
#
# Usage: systemd_container_test.sh DEB_DIR IMDS_EMULATOR [SUITE]   (SUITE: bookworm (default), trixie)
# Exit 77: skipped (not root, a tool or the package missing).
set -euo pipefail
deb_dir=$1 imds=$2 suite=${3:-bookworm}
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || skip "needs root (network namespace, container)"
for tool in mmdebstrap systemd-nspawn nsenter ip dpkg-deb flock; do
  command -v "$tool" >/dev/null || skip "needs $tool (apt-get install mmdebstrap systemd-container iproute2)"
done
deb=$(dlagent_package "$deb_dir" 'dlagent_*.deb')
[ -x "$imds" ] || skip "no IMDS emulator at $imds"


rootfs=$(dlagent_rootfs "$suite" "$deb") || die "no root file system for $suite"

work=$(mktemp -d /tmp/dlagent-systemd.XXXXXX)
ns=dlagent-sd-$$
echo "release: $suite: $(sed -n 's/^PRETTY_NAME=//p' "$rootfs/etc/os-release" | tr -d '"'), $(chroot "$rootfs" ldd --version 2>/dev/null | head -n 1 | sed 's/^ldd //')"
nspawn_pid="" imds_pid="" init=""
cleanup() {
  set +e
  if [ -n "$nspawn_pid" ]; then
    kill -TERM "$nspawn_pid" 2>/dev/null  # an orderly poweroff of the container
    for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$nspawn_pid" 2>/dev/null
    wait "$nspawn_pid" 2>/dev/null
  fi
  [ -z "$imds_pid" ] || { kill "$imds_pid" 2>/dev/null; wait "$imds_pid" 2>/dev/null; }
  ip netns del "$ns" 2>/dev/null
  mountpoint -q "$work/root" && umount -l "$work/root"
  rm -rf "$work"
}
trap cleanup EXIT

# The node's network: loopback, the metadata address and the node's private address, reaching nothing else.
node_ip=10.77.0.10
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" addr add 169.254.169.254/32 dev lo
ip -n "$ns" addr add "$node_ip/32" dev lo
cat >"$work/metadata.json" <<EOF
{"instance-id": "i-0systemd0test01", "instance-type": "p4d.24xlarge", "local-ipv4": "$node_ip",
 "mac": "0e:00:00:00:00:01", "availability-zone": "us-east-1a", "region": "us-east-1"}
EOF
ip netns exec "$ns" "$imds" --metadata "$work/metadata.json" --listen 169.254.169.254 --port 80 >"$work/imds.log" 2>&1 &
imds_pid=$!
for _ in $(seq 100); do grep -q listening "$work/imds.log" && break; sleep 0.05; done
grep -q listening "$work/imds.log" || die "the IMDS emulator did not start: $(cat "$work/imds.log")"

mkdir -p "$work/upper" "$work/ovl" "$work/root"
mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$work/upper,workdir=$work/ovl" "$work/root"
cp "$deb" "$work/root/var/tmp/"
debname=$(basename "$deb")
# The upgrade: the same package with a higher version.
dpkg-deb -R "$deb" "$work/repack"
version=$(dpkg-deb -f "$deb" Version)
sed -i "s/^Version: .*/Version: $version+systemdtest1/" "$work/repack/DEBIAN/control"
dpkg-deb --root-owner-group -b "$work/repack" "$work/root/var/tmp/upgrade.deb" >/dev/null

# CAP_NET_ADMIN, as root has on a real node: agentd installs its instance metadata guard (nftables) with it;
# nspawn grants it only with --private-network.
systemd-nspawn --quiet -D "$work/root" --register=no --keep-unit --boot --network-namespace-path="/run/netns/$ns" --capability=CAP_NET_ADMIN \
  >"$work/nspawn.log" 2>&1 &
nspawn_pid=$!
# The container's PID 1: nspawn's child once it has become systemd (before that it is nspawn's own process, and
# systemctl there says "offline").
init=""
for _ in $(seq 300); do
  init=$(pgrep -P "$nspawn_pid" | head -n 1 || true)
  [ -n "$init" ] && [ "$(cat "/proc/$init/comm" 2>/dev/null)" = systemd ] && break
  init=""
  sleep 0.1
done
[ -n "$init" ] || die "the container did not start systemd: $(cat "$work/nspawn.log")"
ct() { nsenter -t "$init" -m -u -i -n -p -- "$@"; }
state=""  # the system bus comes up a moment after PID 1
for _ in $(seq 300); do
  state=$(ct timeout 60 systemctl is-system-running --wait 2>/dev/null || true)
  case $state in "" | offline | initializing | starting) sleep 0.1 ;; *) break ;; esac
done
[ "$state" = running ] || [ "$state" = degraded ] || die "the container's systemd is '$state'"
ok "systemd $(ct systemctl --version | head -n 1 | cut -d' ' -f2) is PID 1 in the container ($state)"
prop() { ct systemctl show -p "$2" --value "$1"; }
journal() { ct journalctl -u agentd --no-pager "$@"; }
# grep -q on a pipe would end journalctl early, and pipefail would call that a failure: read it all first.
in_journal() { local text; text=$(journal); grep -qi -- "$1" <<<"$text"; }

# Install: starts nothing, enables the agent for the next boot, makes the group.
ct env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "/var/tmp/$debname" >"$work/install.log" 2>&1 ||
  { tail -n 20 "$work/install.log"; die "apt-get install of $debname failed"; }
ok "apt-get install $debname"
build_libs=$(ct dpkg-query -W -f '${Package}\n' | grep -E '^lib(grpc|protobuf|spdlog|fmt|openblas|absl|re2|cares|stdc\+\+-[0-9]+-dev)' || true)
[ -z "$build_libs" ] && ok "none of the build's libraries is installed (gRPC, protobuf, spdlog, fmt, OpenBLAS, abseil)" ||
  fail "the container has build libraries, so it proves nothing about their absence: $build_libs"
[ "$(ct systemctl is-active agentd || true)" = inactive ] && ok "installing started nothing" || fail "agentd runs after installation"
[ "$(ct systemctl is-enabled agentd || true)" = enabled ] && ok "agentd is enabled for boot" || fail "agentd is not enabled"
ct getent group dlagent >/dev/null && ok "the dlagent group exists" || fail "no dlagent group"
[ "$(ct stat -c '%a %U %G' /run/dlagent 2>&1)" = "750 root dlagent" ] && ok "/run/dlagent is 0750 root:dlagent (tmpfiles.d)" ||
  fail "/run/dlagent: $(ct stat -c '%a %U %G' /run/dlagent 2>&1)"
for page in man8/agentd.8 man1/agentctl.1 man1/dlps-server.1 man1/dlps-train.1; do
  [ -s "$work/root/usr/share/man/$page.gz" ] || fail "no manual page $page"
done

# Configure a one-node cluster, as user-data would.
openssl rand -hex 32 >"$work/root/etc/dlagent/cluster.key"
chmod 600 "$work/root/etc/dlagent/cluster.key"
cat >"$work/root/etc/dlagent/agentd.toml" <<'EOF'
[cluster]
name = "systemd-test"
expected_nodes = 1
join_deadline = "1m"
[gossip]
key_file = "/etc/dlagent/cluster.key"
[jobs]
tasks_max = 64
EOF
# The agent's own task limit, low, as a node's would be under load: a job must not be able to use it up.
mkdir -p "$work/root/etc/systemd/system/agentd.service.d"
printf '[Service]\nTasksMax=300\n' >"$work/root/etc/systemd/system/agentd.service.d/tasks.conf"
ct systemctl daemon-reload

# Start: Type=notify returns once READY=1 came; STATUS= is the agent's own text.
ct timeout 60 systemctl start agentd || { journal | tail -n 20; die "systemctl start agentd failed"; }
[ "$(ct systemctl is-active agentd)" = active ] && ok "systemctl start agentd: active" || fail "agentd is not active"
status_text=$(prop agentd StatusText)
[ -n "$status_text" ] && ok "STATUS= text: $status_text" || fail "no STATUS= text"

# The ready target: reached once the cluster has formed and the node is prepared.
if ct timeout 60 systemctl start dlagent-ready.target; then
  [ "$(ct systemctl is-active dlagent-ready.target)" = active ] && ok "dlagent-ready.target reached" || fail "dlagent-ready.target not active"
else
  fail "dlagent-ready.target failed: $(ct systemctl status --no-pager dlagent-wait 2>&1 | tail -n 3)"
fi
[[ "$(ct agentctl status)" =~ phase:\ *ready ]] && ok "agentctl status: ready" || fail "agentctl status: $(ct agentctl status 2>&1 | head -n 3)"
grep -qx deeplearning-worker1 "$work/root/opt/deeplearning/workers" && ok "workers file written" || fail "no workers file"
ct grep -q 'BEGIN dlagent managed block' /etc/hosts && ok "/etc/hosts has the managed block" || fail "no managed block in /etc/hosts"
grep -Eq "DEEPLEARNING_WORKERS_COUNT='?1" "$work/root/etc/profile.d/deeplearning.sh" && ok "profile.d environment written" || fail "no profile.d environment"

# The instance metadata guard (aws.imds_root_only, on by default): agentd reached metadata (it formed), root
# still does, and any other user is refused at once.
imds_probe='import urllib.request as u
try:
    u.urlopen(u.Request("http://169.254.169.254/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}), timeout=5)
    print("reached")
except OSError as e:
    print("refused:", e)'
ct nft list table inet dlagent_imds >/dev/null 2>&1 && ok "agentd installed the nftables table inet dlagent_imds" || fail "no table inet dlagent_imds: $(journal | grep -i imds | tail -n 2)"
as_root=$(ct python3 -c "$imds_probe" 2>&1)
as_nobody=$(ct setpriv --reuid=65534 --regid=65534 --clear-groups python3 -c "$imds_probe" 2>&1)
[ "$as_root" = reached ] && [[ "$as_nobody" == *"No route to host"* ]] && ok "instance metadata: root reaches it, nobody is refused ($as_nobody)" ||
  fail "instance metadata: root: $as_root; nobody: $as_nobody"

# Jobs: a plain one, then a dlps job whose worker is this release's own python3 and numpy, with the packaged
# Python package (ctypes over libdlps) against the agent's shard.
ct timeout 120 agentctl run -- true >"$work/run-true.log" 2>&1 && ok "agentctl run -- true" || fail "agentctl run -- true: $(tail -n 5 "$work/run-true.log")"
cat >"$work/root/var/tmp/dlps_job.py" <<'EOF'
import sys

import numpy as np

import dlps

c = dlps.Client()
w = np.arange(4, dtype=np.float32)
c.init(1, w, optimizer="sgd", lr=0.5)
out = np.zeros(4, np.float32)
c.wait(c.pushpull(1, np.full(4, 2.0, np.float32), out))
assert (out == w - 1.0).all(), out
c.barrier()
c.close()
print("dlps job: python %d.%d, numpy %s: ok" % (sys.version_info[0], sys.version_info[1], np.__version__))
EOF
if ct timeout 120 agentctl run --launcher dlps -- python3 /var/tmp/dlps_job.py >"$work/run-dlps.log" 2>&1 && grep -q 'dlps job: .*: ok' "$work/run-dlps.log"; then
  ok "$(grep -o 'dlps job: .*: ok' "$work/run-dlps.log" | head -n 1)"
else
  fail "the dlps job with the release's python3: $(tail -n 8 "$work/run-dlps.log")"
fi

# Scopes: a rank runs in a systemd scope of its own (jobs.tasks_max = 64), bound to agentd's unit. A job that
# forks 400 processes, more than agentd's own TasksMax of 300, is stopped by its scope's limit alone: agentd
# still serves `agentctl jobs` and `kill`, and the kill reaches every process, one that left the rank's
# process group (setsid) too. Where the container has no pids controller of its own (a host with cgroup v1
# controllers: nspawn mounts them read-only), systemd counts no tasks: the limit is then checked as set.
cat >"$work/root/var/tmp/forks.py" <<'EOF'
import subprocess, time
subprocess.Popen(["setsid", "sleep", "1001"])
n = 0
try:
    for _ in range(400):
        subprocess.Popen(["sleep", "1001"])
        n += 1
    print("forked %d" % n, flush=True)
except OSError as e:
    print("forked %d, then: %s" % (n, e), flush=True)
time.sleep(1000)
EOF
job=$(ct timeout 60 agentctl run --detach -- python3 /var/tmp/forks.py 2>"$work/run-forks.log") || fail "agentctl run --detach: $(cat "$work/run-forks.log")"
for _ in $(seq 300); do ct agentctl logs "$job" 2>/dev/null | grep -q forked && break; sleep 0.1; done
forked=$(ct agentctl logs "$job" 2>&1 | grep forked || true)
scope=$(ct systemctl list-units --plain --no-legend "dlagent-$job-rank0-*.scope" | awk '{print $1}' | head -n 1)
if [ -n "$scope" ]; then
  rank_pid=$(ct pgrep -f /var/tmp/forks.py | head -n 1)
  [ "$(prop "$scope" TasksMax)" = 64 ] && [ "$(prop "$scope" BindsTo)" = agentd.service ] && ct grep -q "/$scope\$" "/proc/$rank_pid/cgroup" &&
    ok "rank 0 (pid $rank_pid) runs in $scope: TasksMax 64, bound to agentd.service" ||
    fail "$scope: TasksMax $(prop "$scope" TasksMax), BindsTo $(prop "$scope" BindsTo), rank's cgroup $(ct cat "/proc/$rank_pid/cgroup" | tail -n 1)"
  tasks=$(prop "$scope" TasksCurrent)
  if [ "$tasks" = "[not set]" ]; then
    ok "no pids controller in this container: the scope's limit is set but not counted here (${forked:-no output})"
  else
    [ "$tasks" -le 64 ] && [[ "$forked" == *"Resource temporarily unavailable"* ]] &&
      ok "a rank forking 400 processes is stopped by its own limit ($tasks tasks): $forked" ||
      fail "the rank's forks were not limited: $tasks tasks, ${forked:-no output}"
  fi
else
  fail "no scope for rank 0 of $job: $(ct systemctl list-units --plain --no-legend 'dlagent-*' 2>&1 | head -n 3)"
fi
ct timeout 30 agentctl jobs >"$work/jobs.log" 2>&1 && grep -q "$job" "$work/jobs.log" && ok "agentctl jobs answers while the job holds its limit" ||
  fail "agentctl jobs while the job holds its limit: $(tail -n 3 "$work/jobs.log")"
ct timeout 30 agentctl kill "$job" >"$work/kill.log" 2>&1 && ok "agentctl kill: $(head -n 1 "$work/kill.log")" || fail "agentctl kill: $(cat "$work/kill.log")"
for _ in $(seq 300); do ct pgrep -f 'sleep 1001' >/dev/null || break; sleep 0.1; done
ct pgrep -f 'sleep 1001' >/dev/null && fail "the kill left $(ct pgrep -cf 'sleep 1001') processes of the job" ||
  ok "the kill reached every process of the rank, the setsid one too"
for _ in $(seq 100); do [ -z "$(ct systemctl list-units --plain --no-legend "dlagent-$job-*")" ] && break; sleep 0.1; done
[ -z "$(ct systemctl list-units --plain --no-legend "dlagent-$job-*")" ] && ok "the rank's scope is gone with its processes" ||
  fail "scopes left after the job: $(ct systemctl list-units --plain --no-legend "dlagent-$job-*")"

# The journal carries the agent's fields.
fields=$(journal -o json | grep -o '"DLAGENT_[A-Z_]*"' | sort -u | tr -d '"' | tr '\n' ' ')
for f in DLAGENT_PHASE DLAGENT_GENERATION; do
  [[ " $fields" == *" $f "* ]] && ok "journalctl -u agentd shows $f" || fail "journalctl -u agentd lacks $f (fields: $fields)"
done

# Reload: the same process reads its configuration again.
pid=$(prop agentd MainPID)
ct systemctl reload agentd || fail "systemctl reload agentd: $(journal | tail -n 3)"
for _ in $(seq 50); do in_journal 'configuration reloaded' && break; sleep 0.1; done
[ "$(prop agentd MainPID)" = "$pid" ] && in_journal 'configuration reloaded' && ok "systemctl reload: same process, configuration reloaded" ||
  fail "reload: pid $pid -> $(prop agentd MainPID), journal: $(journal | tail -n 2)"

# The watchdog: a loop that hangs (the test hook) withholds WATCHDOG=1; systemd restarts the agent.
restarts=$(prop agentd NRestarts)
mkdir -p "$work/root/etc/systemd/system/agentd.service.d"
printf '[Service]\nEnvironment=DLAGENT_TEST_HANG=ps\nWatchdogSec=4s\n' >"$work/root/etc/systemd/system/agentd.service.d/hang.conf"
ct systemctl daemon-reload
ct timeout 60 systemctl restart agentd
for _ in $(seq 300); do [ "$(prop agentd NRestarts)" -gt "$restarts" ] && break; sleep 0.1; done
if [ "$(prop agentd NRestarts)" -gt "$restarts" ] && in_journal 'watchdog timeout'; then
  ok "a hung dlps loop: watchdog timeout, agentd restarted by systemd"
else
  fail "no watchdog restart (NRestarts $(prop agentd NRestarts)): $(journal | tail -n 5)"
fi
rm "$work/root/etc/systemd/system/agentd.service.d/hang.conf"
ct systemctl daemon-reload
ct timeout 60 systemctl restart agentd
ct timeout 60 agentctl wait --quiet --timeout 50s && ok "restarted without the hang: ready again" || fail "not ready after the restart"

# Upgrade: the configuration stays, the running agent is restarted.
pid=$(prop agentd MainPID)
ct env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /var/tmp/upgrade.deb >"$work/upgrade.log" 2>&1 ||
  { tail -n 20 "$work/upgrade.log"; die "the upgrade failed"; }
[ "$(ct dpkg-query -W -f '${Version}' dlagent)" = "$version+systemdtest1" ] && ok "upgraded to $version+systemdtest1" || fail "the version did not change"
grep -q 'name = "systemd-test"' "$work/root/etc/dlagent/agentd.toml" && ok "the upgrade kept /etc/dlagent/agentd.toml" || fail "the upgrade replaced the configuration"
new_pid=$(prop agentd MainPID)
[ "$(ct systemctl is-active agentd)" = active ] && [ "$new_pid" != "$pid" ] && [ "$new_pid" != 0 ] && ok "the upgrade restarted agentd ($pid -> $new_pid)" ||
  fail "agentd after the upgrade: $(ct systemctl is-active agentd), pid $pid -> $new_pid: $(journal | tail -n 8; tail -n 5 "$work/upgrade.log")"
ct timeout 60 agentctl wait --quiet --timeout 50s && ok "ready after the upgrade" || fail "not ready after the upgrade"

# Stop: clean, nothing left in the unit.
ct timeout 60 systemctl stop agentd
[ "$(ct systemctl is-active agentd || true)" = inactive ] && [ "$(prop agentd Result)" = success ] && [ "$(prop agentd MainPID)" = 0 ] &&
  ok "systemctl stop agentd: inactive, result success" || fail "stop: $(ct systemctl is-active agentd), result $(prop agentd Result)"
for _ in $(seq 50); do in_journal 'Stopped agentd.service' && break; sleep 0.1; done
in_journal 'Stopped agentd.service' && ok "the journal shows a clean stop" || fail "no clean stop in the journal: $(journal | tail -n 3)"

# Removal stops a running agent (purge removes, then purges).
ct timeout 60 systemctl start agentd || fail "agentd did not start again"

# Purge: the package, its units and what the agent wrote are gone.
ct env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q dlagent >"$work/purge.log" 2>&1 || { tail -n 20 "$work/purge.log"; die "apt-get purge failed"; }
[ ! -e "$work/root/usr/sbin/agentd" ] && ok "purge removed agentd" || fail "agentd still installed"
for f in /etc/dlagent/agentd.toml /etc/dlagent/roster.json /etc/dlagent/cluster.env /etc/profile.d/deeplearning.sh /opt/deeplearning/workers; do
  ct test ! -e "$f" && ok "purge removed $f" || fail "purge left $f"
done
ct grep -q 'dlagent managed block' /etc/hosts && fail "purge left the managed block in /etc/hosts" || ok "purge removed the managed block of /etc/hosts"
ct test -e /etc/dlagent/cluster.key && ok "purge left the operator's cluster key" || fail "purge removed the operator's cluster key"
ct systemctl cat agentd >/dev/null 2>&1 && fail "agentd.service still known" || ok "purge removed the units"
[ "$(ct systemctl is-active agentd || true)" = inactive ] && ok "removal stopped the agent" || fail "agentd still runs after removal"
ct test ! -e /run/dlagent && ok "purge removed /run/dlagent" || fail "/run/dlagent left"
ct nft list table inet dlagent_imds >/dev/null 2>&1 && fail "purge left the instance metadata guard" || ok "purge removed the instance metadata guard"
[ "$(ct setpriv --reuid=65534 --regid=65534 --clear-groups python3 -c "$imds_probe" 2>&1)" = reached ] && ok "after purge, every user reaches instance metadata" ||
  fail "after purge nobody still cannot reach instance metadata"

finish
