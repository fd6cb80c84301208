#!/usr/bin/env bash
# The C example, built against the library, run against a real farm.
set -euo pipefail
FARM_BIN=${FARM_BIN:?set FARM_BIN to the build directory}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
source "$ROOT/broker/embedded/farm.sh"
RUN=$(mktemp -d)
trap 'farm_stop; rm -rf "$RUN"' EXIT
farm_start "$RUN" 2 --sim-flash-ms 20 --sim-window-ms 50
farm_wait_ready 2 60
out=$(ICEFARM_LOG_LEVEL=warn ICEFARM_BROKER=$FARM_BROKER "$FARM_BIN/cli/example-evaluate" \
    "$ROOT"/tests/bitstreams/clk_1khz.bin "$ROOT"/tests/bitstreams/clk_2khz.bin)
echo "$out"
pass=0 fail=0
for f in clk_1khz clk_2khz; do
    want=$(python3 -c "import zlib,sys; print(zlib.crc32(open(sys.argv[1],'rb').read()) % 100000)" "$ROOT/tests/bitstreams/$f.bin")
    if grep -q "$f.bin $want\$" <<<"$out"; then echo "ok - $f pulses $want"; pass=$((pass+1)); else echo "not ok - $f (want $want)"; fail=$((fail+1)); fi
done
echo "$pass passed, $fail failed"
((fail == 0))
