#!/usr/bin/env bash
set -euo pipefail
FARM_BIN=${FARM_BIN:?set FARM_BIN to the build directory}
source "$(dirname "$0")/../../../broker/embedded/farm.sh"
RUN=$(mktemp -d)
trap 'farm_stop; rm -rf "$RUN"' EXIT
farm_start "$RUN" 2 --sim-flash-ms 20 --sim-window-ms 50
farm_wait_ready 2 60
ICEFARM_LOG_LEVEL=warn "$FARM_BIN/tests/e2e/variance/variance" "$FARM_BROKER"
