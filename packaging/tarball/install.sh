#!/bin/sh
# Installs dlagent from this tarball on a systemd system that takes neither the .deb (Debian, Ubuntu) nor the
# .rpm (Amazon Linux 2023, RHEL 9): the same programs, which need glibc >= 2.34, systemd, libcurl.so.4,
# libssl.so.3 and libsystemd.so.0 and nothing else. As the packages do: the units are enabled and nothing is
# started (configure /etc/dlagent/agentd.toml, then systemctl start agentd); an existing agentd.toml is kept; a
# running agent is restarted when installing over it. Every file installed is listed in
# /var/lib/dlagent/installed-files, which --uninstall removes (with what the agent wrote; the operator's cluster
# key stays).
# Usage: ./install.sh [--root DIR] [--uninstall]    (--root: install into DIR, a system image; nothing runs there)
set -eu
root="" uninstall=0
while [ $# -gt 0 ]; do
  case $1 in
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --uninstall) uninstall=1; shift ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (--root DIR, --uninstall)" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
manifest=$root/var/lib/dlagent/installed-files
[ "$(id -u)" = 0 ] || { echo "install.sh: run it as root" >&2; exit 1; }
live=0
[ -z "$root" ] && [ -d /run/systemd/system ] && live=1
sysctl() { if [ -n "$root" ]; then systemctl --root="$root" "$@"; elif [ "$live" = 1 ]; then systemctl "$@"; fi; }

if [ "$uninstall" = 1 ]; then
  [ -f "$manifest" ] || { echo "install.sh: dlagent is not installed here (no $manifest)" >&2; exit 1; }
  if [ "$live" = 1 ]; then systemctl stop dlagent-ready.target dlagent-wait.service agentd.service >/dev/null 2>&1 || true; fi
  sysctl disable agentd.service dlagent-ready.target dlagent-wait.service >/dev/null 2>&1 || true
  while IFS= read -r f; do case $f in */) ;; *) rm -f "$root$f" ;; esac; done <"$manifest"
  while IFS= read -r f; do case $f in */) rmdir "$root$f" 2>/dev/null || true ;; esac; done <"$manifest"  # its own directories, deepest first
  rm -f "$manifest" "$root/etc/dlagent/cluster.env" "$root/etc/dlagent/hostfile" "$root/etc/dlagent/roster.json" \
    "$root/etc/dlagent/formation-vote" "$root/opt/deeplearning/workers"
  grep -qs '^# Written by dlagent' "$root/etc/profile.d/deeplearning.sh" && rm -f "$root/etc/profile.d/deeplearning.sh"
  if grep -qs '^# BEGIN dlagent managed block' "$root/etc/hosts"; then
    tmp=$(mktemp) && sed '/^# BEGIN dlagent managed block/,/^# END dlagent managed block/d' "$root/etc/hosts" >"$tmp" && cat "$tmp" >"$root/etc/hosts"
    rm -f "$tmp"
  fi
  rmdir "$root/etc/dlagent" "$root/opt/deeplearning" "$root/var/lib/dlagent" 2>/dev/null || true
  rm -rf "$root/run/dlagent"
  # The instance metadata guard (aws.imds_root_only): every user reaches metadata again.
  if [ "$live" = 1 ] && command -v nft >/dev/null 2>&1; then nft delete table inet dlagent_imds 2>/dev/null || true; fi
  sysctl daemon-reload >/dev/null 2>&1 || true
  echo "dlagent removed (a cluster key in /etc/dlagent stays)"
  exit 0
fi

# What this system must have.
missing=""
for lib in libc.so.6 libcurl.so.4 libssl.so.3 libcrypto.so.3 libsystemd.so.0 libz.so.1; do
  found=0
  for d in /lib64 /usr/lib64 /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu /lib /usr/lib; do
    [ -e "$root$d/$lib" ] && found=1 && break
  done
  [ "$found" = 1 ] || missing="$missing $lib"
done
[ -z "$missing" ] || { echo "install.sh: this system lacks$missing (install curl, OpenSSL 3 and systemd's libraries)" >&2; exit 1; }
[ -d "$root/etc/systemd/system" ] || { echo "install.sh: no systemd here ($root/etc/systemd/system is missing)" >&2; exit 1; }

# Where this system keeps units, libraries and Python packages.
units=/usr/lib/systemd/system
[ -d "$root$units" ] || units=/lib/systemd/system
multiarch=""
for d in "$here"/files/usr/lib/*-linux-gnu; do multiarch=$(basename "$d"); done
libdir=/usr/lib
for d in "/usr/lib/$multiarch" /usr/lib64; do
  if [ -d "$root$d" ] && [ ! -L "$root$d" ]; then libdir=$d && break; fi
done
python_dir=/usr/lib/dlagent/python  # on no Python's path by default: see the note below
if [ -z "$root" ] && command -v python3 >/dev/null; then
  python_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
fi

mkdir -p "$root/var/lib/dlagent"
: >"$manifest.new"
put() {  # put SRC (under files/) DEST MODE
  mkdir -p "$(dirname "$root$2")"
  cp "$here/files/$1" "$root$2.dlagent-new" && chmod "$3" "$root$2.dlagent-new" && mv -f "$root$2.dlagent-new" "$root$2"
  echo "$2" >>"$manifest.new"
}
for p in agentctl dlps-server dlps-train; do put "usr/bin/$p" "/usr/bin/$p" 755; done
put usr/sbin/agentd /usr/sbin/agentd 755
for u in agentd.service dlagent-ready.target dlagent-wait.service; do put "lib/systemd/system/$u" "$units/$u" 644; done
put usr/lib/sysusers.d/dlagent.conf /usr/lib/sysusers.d/dlagent.conf 644
put usr/lib/tmpfiles.d/dlagent.conf /usr/lib/tmpfiles.d/dlagent.conf 644
put usr/include/dlps/c_api.h /usr/include/dlps/c_api.h 644
lib=""
for f in "$here/files/usr/lib/$multiarch"/libdlps.so.*.*; do lib=$multiarch/$(basename "$f"); done
put "usr/lib/$lib" "$libdir/$(basename "$lib")" 755
ln -sf "$(basename "$lib")" "$root$libdir/libdlps.so.0" && echo "$libdir/libdlps.so.0" >>"$manifest.new"
put usr/lib/python3/dist-packages/dlps/__init__.py "$python_dir/dlps/__init__.py" 644
put usr/lib/python3/dist-packages/dlps/ddp.py "$python_dir/dlps/ddp.py" 644
ln -sf "$libdir/$(basename "$lib")" "$root$python_dir/dlps/libdlps.so.0" && echo "$python_dir/dlps/libdlps.so.0" >>"$manifest.new"  # found beside it
for m in man1/agentctl.1.gz man1/dlps-server.1.gz man1/dlps-train.1.gz man8/agentd.8.gz; do put "usr/share/man/$m" "/usr/share/man/$m" 644; done
if [ -e "$root/etc/dlagent/agentd.toml" ]; then
  echo "keeping /etc/dlagent/agentd.toml"
else
  mkdir -p "$root/etc/dlagent" && cp "$here/files/etc/dlagent/agentd.toml" "$root/etc/dlagent/agentd.toml"
fi
# Its own directories, deepest first, for --uninstall (removed when empty).
printf '%s\n' "$python_dir/dlps/" /usr/include/dlps/ >>"$manifest.new"
[ "$python_dir" = /usr/lib/dlagent/python ] && printf '%s\n' /usr/lib/dlagent/python/ /usr/lib/dlagent/ >>"$manifest.new"
mv "$manifest.new" "$manifest"

if [ -n "$root" ]; then
  systemd-sysusers --root="$root" "$root/usr/lib/sysusers.d/dlagent.conf" >/dev/null 2>&1 || true
else
  systemd-sysusers /usr/lib/sysusers.d/dlagent.conf >/dev/null 2>&1 || getent group dlagent >/dev/null || groupadd -r dlagent
  systemd-tmpfiles --create /usr/lib/tmpfiles.d/dlagent.conf >/dev/null 2>&1 || true
  ldconfig
fi
sysctl daemon-reload >/dev/null 2>&1 || true
sysctl enable agentd.service dlagent-ready.target >/dev/null 2>&1
if [ "$live" = 1 ]; then systemctl try-restart agentd.service || true; fi
echo "dlagent installed: configure /etc/dlagent/agentd.toml, then systemctl start agentd"
case $python_dir in
  /usr/lib/dlagent/python) echo "the dlps Python package is in $python_dir: add it to PYTHONPATH for Python workers" ;;
esac
