#!/usr/bin/env bash
# The .rpm (scripts/package-rpm) against the .deb it is made from: its payload is the .deb's files, byte for
# byte, at the RPM systems' paths; its requirements (rpm -qpR) name only base libraries by soname (glibc
# <= 2.34) and base packages; its scriptlets (rpm -qp --scripts) do what the .deb's maintainer scripts do
# (enable, start nothing, restart after an upgrade, stop and clean on erase); and its programs and its Python
# package run from its payload in a minimal Debian 12 with none of the build's libraries (tests/system/rootfs.sh),
# which stands in for Amazon Linux 2023 (no RPM system can be reached from here).
# Usage: rpm_test.sh PACKAGE_DIR
# Exit 77: skipped (not root, a tool or the packages missing).
set -euo pipefail
dir=$1
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || skip "needs root (chroot)"
for tool in rpm rpm2cpio cpio dpkg-deb mmdebstrap; do
  command -v "$tool" >/dev/null || skip "needs $tool (apt-get install rpm cpio mmdebstrap)"
done
deb=$(dlagent_package "$dir" 'dlagent_*.deb')
rpm=$(dlagent_package "$dir" 'dlagent-*.rpm')
work=$(mktemp -d /tmp/dlagent-rpm.XXXXXX)
trap 'mountpoint -q "$work/root/proc" && umount "$work/root/proc"; rm -rf "$work"' EXIT

# The payload: every file of the .deb (but Debian's changelog), at the mapped path, with the same bytes.
mkdir -p "$work/deb" "$work/rpm"
dpkg-deb -x "$deb" "$work/deb"
(cd "$work/rpm" && rpm2cpio "$rpm" | cpio -idm --quiet)
map() {
  sed -e 's#^\./lib/systemd/system/#./usr/lib/systemd/system/#' -e 's#^\./usr/lib/x86_64-linux-gnu/#./usr/lib64/#' \
    -e 's#^\./usr/lib/python3/dist-packages/#./usr/lib/python3.9/site-packages/#'
}
(cd "$work/deb" && find . \( -type f -o -type l \) ! -name changelog.Debian.gz) | map | sort >"$work/deb.list"
(cd "$work/rpm" && find . \( -type f -o -type l \) | sort) >"$work/rpm.list"
if diff -u "$work/deb.list" "$work/rpm.list" >"$work/list.diff"; then
  ok "the payload holds the .deb's $(wc -l <"$work/deb.list") files at the RPM paths"
else
  fail "the payloads differ: $(cat "$work/list.diff")"
fi
differ=0
while read -r f; do
  src=$(sed -e 's#^\./usr/lib/systemd/system/#./lib/systemd/system/#' -e 's#^\./usr/lib64/#./usr/lib/x86_64-linux-gnu/#' \
    -e 's#^\./usr/lib/python3\.9/site-packages/#./usr/lib/python3/dist-packages/#' <<<"$f")
  [ -L "$work/rpm/$f" ] && continue
  cmp -s "$work/deb/$src" "$work/rpm/$f" || { fail "$f differs from the .deb's $src"; differ=1; }
done <"$work/rpm.list"
[ "$differ" = 0 ] && ok "every file has the .deb's bytes (the same binaries)"
[ "$(stat -c %a "$work/rpm/etc/dlagent/agentd.toml")" = 644 ] && rpm -qpc "$rpm" | grep -qx /etc/dlagent/agentd.toml &&
  rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpm" | grep -q '^/etc/dlagent/agentd.toml cn$' &&
  ok "agentd.toml is %config(noreplace)" || fail "agentd.toml is not %config(noreplace): $(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpm" | grep etc)"

# Requirements: base libraries by soname, glibc <= 2.34, and base packages; python is not required.
bad=$(rpm -qpR "$rpm" | grep -vE '^(/bin/sh|config\(dlagent\) = .*|rpmlib\(.*|rtld\(GNU_HASH\)|systemd|procps-ng|nftables|(libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libcurl\.so\.4|libssl\.so\.3|libcrypto\.so\.3|libsystemd\.so\.0|libz\.so\.1|ld-linux-x86-64\.so\.2)\(.*\)\(64bit\))$' || true)
newest=$(rpm -qpR "$rpm" | sed -n 's/^libc\.so\.6(GLIBC_\([0-9.]*\))(64bit)$/\1/p' | sort -V | tail -n 1)
[ -z "$bad" ] && ok "requirements: base libraries and packages only ($(rpm -qpR "$rpm" | wc -l) lines)" || fail "requirements beyond the base system: $bad"
[ "$(printf '%s\n2.34\n' "$newest" | sort -V | tail -n 1)" = 2.34 ] && ok "glibc $newest at most" || fail "needs glibc $newest"
rpm -qp --recommends "$rpm" | grep -qx python3 && ok "python3 is recommended" || fail "python3 is not recommended"

# Scriptlets: as the .deb's (debian/rules, dlagent.postinst, .prerm, .postrm).
scripts=$(rpm -qp --scripts "$rpm")
section() { awk -v s="$1" '/scriptlet \(using/ { on = index($0, s) == 1 } on' <<<"$scripts"; }
section postinstall | grep -q 'systemctl enable agentd.service dlagent-ready.target' && ok "install enables agentd and dlagent-ready.target" ||
  fail "install does not enable the agent"
grep -q 'systemctl start\|systemctl restart\|enable --now' <<<"$scripts" && fail "a scriptlet starts the agent" || ok "no scriptlet starts the agent"
section postinstall | grep -q 'systemd-sysusers /usr/lib/sysusers.d/dlagent.conf' && ok "install makes the dlagent group" || fail "no sysusers in postinstall"
section postuninstall | grep -q 'try-restart agentd.service' && ok "an upgrade restarts a running agent" || fail "no try-restart after an upgrade"
section preuninstall | grep -q 'systemctl stop dlagent-ready.target dlagent-wait.service agentd.service' && ok "erase stops the agent" ||
  fail "erase does not stop the agent"
for f in /etc/dlagent/cluster.env /etc/dlagent/roster.json /opt/deeplearning/workers '/etc/profile.d/deeplearning.sh' 'dlagent managed block'; do
  section postuninstall | grep -qF "$f" || fail "erase does not clean $f"
done
section postuninstall | grep -qF 'cluster.key' && fail "erase touches the operator's cluster key" || ok "erase cleans what the agent wrote, not the cluster key"

# The programs and the Python package run from the payload in a minimal system without the build's libraries.
rootfs=$(dlagent_rootfs bookworm "$deb") || { fail "no root file system"; exit 1; }
mkdir -p "$work/root"
cp -a "$rootfs/." "$work/root/"
mkdir -p "$work/root/opt/rpm-usr"
cp -a "$work/rpm/usr/." "$work/root/opt/rpm-usr/"
mount -t proc proc "$work/root/proc"
in_root() { chroot "$work/root" env PATH=/opt/rpm-usr/bin:/opt/rpm-usr/sbin:/usr/bin:/bin "$@"; }
for prog in agentd agentctl dlps-server dlps-train; do
  out=$(in_root "$prog" --help 2>&1 | head -n 1) && ok "$prog --help from the .rpm's payload: ${out:0:60}" || fail "$prog from the payload: $out"
done
out=$(in_root env PYTHONPATH=/opt/rpm-usr/lib/python3.9/site-packages DLPS_LIBRARY=/opt/rpm-usr/lib64/libdlps.so.0 python3 -c \
  'import dlps, sys
try:
    dlps.Client(servers=["127.0.0.1:1"], connect_timeout=0.2)
except dlps.Error as e:
    print("dlps from the payload: python %d.%d: %s" % (sys.version_info[0], sys.version_info[1], e.code))' 2>&1) &&
  [[ "$out" == *": unavailable" ]] && ok "$out" || fail "the Python package from the payload: $out"

finish
