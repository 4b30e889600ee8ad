# shellcheck shell=bash
# Sourced by the system tests (tests/system/*_test.sh): their checks' helpers, the packages under test, and the
# cached root file systems.

failures=0
ok() { echo "ok: $*"; }
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
die() {
  echo "FAIL: $*"
  exit 1
}
# Exit 77 (ctest: skipped), saying why (on stderr: it is also called inside $(...)).
skip() {
  echo "[  SKIPPED ] $1" >&2
  exit 77
}
# The end of a test: its verdict, and its exit status.
finish() {
  if [ "$failures" -gt 0 ]; then
    echo "$failures checks failed"
    exit 1
  fi
  echo "all checks passed"
}
# dlagent_package DIR GLOB: the absolute path of the newest package DIR/GLOB, or a skip saying to build it.
dlagent_package() {
  local p
  # shellcheck disable=SC2086 # $2 is a glob
  p=$(ls -t "$1"/$2 2>/dev/null | head -n 1 || true)
  [ -n "$p" ] || skip "no $2 in $1: run scripts/package first"
  realpath "$p"
}

# dlagent_rootfs SUITE DEB prints the path of a minimal Debian root file system of
# release SUITE (bookworm, trixie) holding systemd, dbus, python3, numpy and DEB's dependencies (base packages
# only). Built once per release and package set with mmdebstrap and cached under
# /var/cache/dlagent/test-rootfs/KEY (under a lock: ctest runs tests side by side), renamed into place whole.
# Of a dependency's alternatives, Debian 12 has the first (libcurl4), Debian 13 the last (libcurl4t64).
dlagent_rootfs() {
  local suite=$1 deb=$2 pick='s/|[^,]*//g' depends includes cache_root=/var/cache/dlagent/test-rootfs key rootfs
  [ "$suite" = bookworm ] || pick='s/[^,]*|//g'
  depends=$(dpkg-deb -f "$deb" Depends | sed -e 's/([^)]*)//g' -e 's/ //g' -e "$pick" -e 's/\$[^,]*//g' -e 's/,,*/,/g' -e 's/,$//')
  includes="systemd,systemd-sysv,dbus,python3,python3-numpy,$depends"
  mkdir -p "$cache_root"
  key=$(echo "$suite minbase $includes" | sha256sum | cut -c1-16)
  rootfs=$cache_root/$key
  (
    flock 9
    if [ ! -d "$rootfs" ]; then
      echo "building the $suite root file system (once): $includes" >&2
      rm -rf "$rootfs.tmp"
      mmdebstrap --quiet --variant=minbase --include="$includes" "$suite" "$rootfs.tmp" >"$cache_root/$key.log" 2>&1 ||
        { tail -n 20 "$cache_root/$key.log" >&2; echo "mmdebstrap failed (log: $cache_root/$key.log)" >&2; exit 1; }
      mv "$rootfs.tmp" "$rootfs"
    fi
  ) 9>"$cache_root/.lock" || return 1
  echo "$rootfs"
}
