#!/usr/bin/env bash
# scripts/check-elf on the three packages (scripts/package): every shipped program and library needs only the
# shared libraries every supported system has, and glibc <= 2.34; and the check can fail: the development
# build's agentd (dynamic: libspdlog, libstdc++ with GLIBCXX_3.4.30) is refused, naming them.
# Usage: elf_test.sh PACKAGE_DIR SOURCE_DIR DEV_AGENTD
# Exit 77: skipped (the packages missing).
set -euo pipefail
dir=$1 source=$2 dev_agentd=$3
source "$(dirname "$0")/lib.sh"
for glob in 'dlagent_*.deb' 'dlagent-*.rpm' 'dlagent-*.tar.gz'; do
  package=$(dlagent_package "$dir" "$glob")
  if out=$("$source/scripts/check-elf" "$package" 2>&1); then
    ok "$(basename "$package"): $(tail -n 1 <<<"$out" | cut -c1-60)..."
  else
    fail "$(basename "$package") is not portable: $out"
  fi
done
if out=$("$source/scripts/check-elf" "$dev_agentd" 2>&1); then
  fail "the check passed the dynamic development build's agentd: $out"
elif grep -q 'needs libstdc++.so.6' <<<"$out" && grep -q 'GLIBCXX_' <<<"$out"; then
  ok "the dynamic development build's agentd is refused: $(grep -c '^FAIL' <<<"$out") problems named"
else
  fail "the refusal does not name libstdc++ and its GLIBCXX version: $out"
fi
finish
