#!/usr/bin/env bash
# icefarm-dhs end to end: the embedded farm (4 simulated boards) and the fake DCSS of
# fake_dcss.py driving icefarm-dhs through test_dhs.py: handshake in both protocols,
# the registration burst, every operation, abort during a flash and a count, DCSS
# restarting on the same port, a second DHS of the same name, garbage from DCSS,
# the broker going away and coming back, and the fetch paths over a local HTTP server.
#
#   FARM_BIN=BUILD_DIR dhs.sh
#
# Time budget: about 90 s on 2 cores (ctest's TIMEOUT is 400 s); the waits inside
# are polling loops with their own deadlines.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

if [[ ! -x $FARM_BIN/ctl/dhs/icefarm-dhs ]]; then
    echo "skip: $FARM_BIN/ctl/dhs/icefarm-dhs is not built"
    exit 77
fi
e2e_farm_start 4

BROKER_PID=${FARM_PIDS[0]}
E2E_KILLED[$BROKER_PID]=1 # the test stops it itself and starts another one
status=0
relay < <("$PY" "$E2E_DIR/../e2e/dhs/test_dhs.py" "$FARM_BIN" "$FARM_BROKER" "$RUN" "$BROKER_PID" "$BITS" 2>>"$RUN/test.log" || echo "not ok - test_dhs.py ended with status $?")
if [[ -e $RUN/broker2.pid ]]; then
    kill "$(cat "$RUN/broker2.pid")" 2>/dev/null || true
fi
exit $status
