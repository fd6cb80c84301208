#!/usr/bin/env bash
# `./icefarm demo` as README.md gives it, from the checkout: it exits 0, prints a
# count per bitstream (each the simulated board's count for that file's bytes),
# and leaves no process and no run directory behind.
#   FARM_BIN=BUILD_DIR demo.sh
set -euo pipefail
# shellcheck source=frontdoor.sh
source "$(dirname "$0")/frontdoor.sh"

fd_start "$RUN/demo.out" demo
if fd_wait_exit 600; then
    ok "./icefarm demo finishes (rc=$FD_RC)"
else
    not_ok "./icefarm demo finishes"
fi
check "  ... with status 0" test "${FD_RC:-}" = 0
check "  ... no process of it is left" session_empty "$FD_PID"
check "  ... its run directory is gone" bash -c "! ls -d '$RUN'/icefarm.* >/dev/null 2>&1"

# Its bitstreams, as the script names them, and the rows the CLI printed.
mapfile -t files < <(grep -o 'tests/bitstreams/[a-z0-9_]*\.bin' "$ROOT/icefarm" | sort -u)
check "the demo evaluates bitstreams (${#files[@]})" test "${#files[@]}" -ge 2
for f in "${files[@]}"; do
    want=$(python3 -c 'import sys, zlib; print(zlib.crc32(open(sys.argv[1], "rb").read()) % 100000)' "$ROOT/$f")
    check "it prints $f's count ($want pulses)" grep -qE "$f.* $want pulses" "$FD_OUT"
done
check "it reports no failure" grep -qE "^([0-9]+ of )?${#files[@]} bitstream.*[^0-9]0 failed" "$FD_OUT"

echo "$PASS passed, $FAIL failed"
((FAIL == 0))
