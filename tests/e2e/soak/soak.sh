#!/usr/bin/env bash
# Evaluations across 16 simulated boards with injected faults (issue 4), at every
# size: 100, 1,000 and 10,000 evaluations (or the one size given as $2), the
# faults spread over each run by progress so that all of them land (issue 16).
set -euo pipefail
FARM_BIN=${FARM_BIN:?set FARM_BIN to the build directory}
EVALS=${2:-10000}
source "$(dirname "$0")/../../../broker/embedded/farm.sh"
RUN=$(mktemp -d)
trap 'farm_stop; rm -rf "$RUN"' EXIT
FARM_WORKER=soak-worker farm_start "$RUN" 16 --sim-flash-ms 20 --sim-window-ms 5 --eval-timeout-ms 3000
farm_wait_ready 16 120
SIZES=(100 1000 10000)
[[ -n ${2:-} ]] && SIZES=("$EVALS")
rc=0
for n in "${SIZES[@]}"; do
    faults=$((n / 250 < 4 ? 4 : n / 250))
    echo "# soak: $n evaluations, $faults faults"
    ICEFARM_LOG_LEVEL=warn "$FARM_BIN/tests/e2e/soak/soak" "$FARM_BROKER" soak-worker 16 "$n" "$faults" || rc=1
done
exit $rc
