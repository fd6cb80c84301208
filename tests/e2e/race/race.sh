#!/usr/bin/env bash
# Thousands of contended reservations against a real farm: no board granted twice.
set -euo pipefail
FARM_BIN=${FARM_BIN:?set FARM_BIN to the build directory}
source "$(dirname "$0")/../../../broker/embedded/farm.sh"
RUN=$(mktemp -d)
trap 'farm_stop; rm -rf "$RUN"' EXIT
farm_start "$RUN" 32 --sim-flash-ms 5 --sim-window-ms 20
farm_wait_ready 32 120
ICEFARM_LOG_LEVEL=warn "$FARM_BIN/tests/e2e/race/race" "$FARM_BROKER" 24 3000
