#!/usr/bin/env bash
# Checks the bootstrap `sam build` made: an ELF executable for the template's
# architecture, no glibc symbol newer than 2.34 (Amazon Linux 2023, the
# provided.al2023 runtime), stripped. Prints its size. Fails loudly otherwise.
set -euo pipefail
bootstrap=${1:?usage: check-artifact.sh BOOTSTRAP ARCH}
arch=${2:?usage: check-artifact.sh BOOTSTRAP ARCH}
[ -x "$bootstrap" ] || { echo "check-artifact: $bootstrap is missing or not executable" >&2; exit 1; }
info=$(file -b "$bootstrap")
case "$arch" in
    x86_64) want="x86-64" ;;
    arm64) want="ARM aarch64" ;;
    *) echo "check-artifact: unknown architecture $arch" >&2; exit 1 ;;
esac
[[ "$info" == ELF\ 64-bit*executable* ]] || { echo "check-artifact: not an ELF executable: $info" >&2; exit 1; }
[[ "$info" == *"$want"* ]] || { echo "check-artifact: built for the wrong CPU ($info), wanted $want" >&2; exit 1; }
[[ "$info" == *", stripped"* ]] || { echo "check-artifact: not stripped: $info" >&2; exit 1; }
newest=$(objdump -T "$bootstrap" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
if [ -n "$newest" ] && [ "$(printf '%s\n2.34\n' "$newest" | sort -V | tail -1)" != "2.34" ]; then
    echo "check-artifact: needs glibc $newest; Amazon Linux 2023 has 2.34" >&2
    exit 1
fi
size=$(stat -c %s "$bootstrap")
echo "check-artifact: $bootstrap — $arch ELF, stripped, newest glibc symbol ${newest:-none} (≤ 2.34), $(awk "BEGIN {printf \"%.1f\", $size/1048576}") MiB"
