#!/usr/bin/env bash
# The tarball (scripts/package-tarball) installed with its install.sh --root into a copy of a minimal Debian 12
# without the build's libraries (tests/system/rootfs.sh): the programs, units, library and Python package in
# place, the units enabled and nothing else, the group made; the programs and the Python package run there; a
# second install keeps an edited agentd.toml; --uninstall removes every file it installed and what the agent
# wrote, and keeps the operator's cluster key; a system without libcurl is refused, naming it.
# Usage: tarball_test.sh PACKAGE_DIR
# Exit 77: skipped (not root, a tool or the packages missing).
set -euo pipefail
dir=$1
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || skip "needs root (chroot)"
for tool in mmdebstrap systemctl systemd-sysusers; do command -v "$tool" >/dev/null || skip "needs $tool"; done
deb=$(dlagent_package "$dir" 'dlagent_*.deb')
tarball=$(dlagent_package "$dir" 'dlagent-*.tar.gz')
work=$(mktemp -d /tmp/dlagent-tarball.XXXXXX)
trap 'mountpoint -q "$work/root/proc" && umount "$work/root/proc"; rm -rf "$work"' EXIT
rootfs=$(dlagent_rootfs bookworm "$deb") || { echo "FAIL: no root file system"; exit 1; }
cp -a "$rootfs" "$work/root"
tar -xzf "$tarball" -C "$work"
installer=$(ls "$work"/dlagent-*/install.sh)
r=$work/root

"$installer" --root "$r" >"$work/install.log" 2>&1 && ok "install.sh --root: $(tail -n 1 "$work/install.log")" ||
  { cat "$work/install.log"; echo "FAIL: install.sh"; exit 1; }
missing=""
for f in /usr/sbin/agentd /usr/bin/agentctl /usr/bin/dlps-server /usr/bin/dlps-train /usr/lib/systemd/system/agentd.service \
  /usr/lib/sysusers.d/dlagent.conf /usr/lib/x86_64-linux-gnu/libdlps.so.0 /usr/lib/dlagent/python/dlps/__init__.py /etc/dlagent/agentd.toml; do
  [ -e "$r$f" ] || missing="$missing $f"
done
[ -z "$missing" ] && ok "programs, units, library, Python package and configuration in place" || fail "not installed:$missing"
[ -L "$r/etc/systemd/system/multi-user.target.wants/agentd.service" ] && ok "agentd.service enabled" || fail "agentd.service not enabled"
[ -e "$r/etc/systemd/system/multi-user.target.wants/dlagent-wait.service" ] && fail "dlagent-wait.service enabled" || ok "dlagent-wait.service not enabled"
grep -q '^dlagent:' "$r/etc/group" && ok "the dlagent group exists" || fail "no dlagent group"

mount -t proc proc "$r/proc"
for prog in agentd agentctl dlps-server dlps-train; do
  out=$(chroot "$r" "$prog" --help 2>&1 | head -n 1) && ok "$prog runs: ${out:0:50}" || fail "$prog: $out"
done
out=$(chroot "$r" env PYTHONPATH=/usr/lib/dlagent/python python3 -c 'import dlps
try:
    dlps.Client(servers=["127.0.0.1:1"], connect_timeout=0.2)
except dlps.Error as e:
    print("dlps from the tarball: " + e.code)' 2>&1) && [ "$out" = "dlps from the tarball: unavailable" ] && ok "$out" ||
  fail "the Python package: $out"
umount "$r/proc"

# Over an installed one: the edited configuration stays.
echo '# edited' >>"$r/etc/dlagent/agentd.toml"
"$installer" --root "$r" >"$work/install2.log" 2>&1 && grep -q '^# edited' "$r/etc/dlagent/agentd.toml" &&
  ok "a second install keeps the edited agentd.toml" || fail "a second install: $(tail -n 3 "$work/install2.log")"

# Uninstall: its files and what the agent wrote go; the cluster key stays.
echo key >"$r/etc/dlagent/cluster.key"
echo '{}' >"$r/etc/dlagent/roster.json"
"$installer" --root "$r" --uninstall >"$work/uninstall.log" 2>&1 || fail "--uninstall: $(cat "$work/uninstall.log")"
left=$(cd "$r" && ls -d usr/sbin/agentd usr/bin/agentctl usr/lib/systemd/system/agentd.service usr/lib/x86_64-linux-gnu/libdlps.so* \
  usr/include/dlps usr/lib/dlagent etc/dlagent/roster.json etc/systemd/system/multi-user.target.wants/agentd.service var/lib/dlagent 2>/dev/null || true)
[ -z "$left" ] && ok "--uninstall removed every file it installed" || fail "--uninstall left: $left"
[ -e "$r/etc/dlagent/cluster.key" ] && ok "--uninstall kept the cluster key" || fail "--uninstall removed the cluster key"

# A system without libcurl is refused, naming it.
rm -f "$r"/usr/lib/x86_64-linux-gnu/libcurl.so.4*
"$installer" --root "$r" >"$work/refused.log" 2>&1 && fail "installed without libcurl" ||
  { grep -q 'lacks libcurl.so.4' "$work/refused.log" && ok "without libcurl: $(cat "$work/refused.log")" || fail "refusal: $(cat "$work/refused.log")"; }

finish
