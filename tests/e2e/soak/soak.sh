#!/usr/bin/env bash
# 10,000 evaluations across 16 simulated boards with injected faults (issue 4).
set -euo pipefail
FARM_BIN=${FARM_BIN:?set FARM_BIN to the build directory}
EVALS=${2:-10000}
source "$(dirname "$0")/../../../broker/embedded/farm.sh"
RUN=$(mktemp -d)
trap 'farm_stop; rm -rf "$RUN"' EXIT
FARM_WORKER=soak-worker farm_start "$RUN" 16 --sim-flash-ms 20 --sim-window-ms 5 --eval-timeout-ms 3000
farm_wait_ready 16 120
ICEFARM_LOG_LEVEL=warn "$FARM_BIN/tests/e2e/soak/soak" "$FARM_BROKER" soak-worker 16 "$EVALS" 40
