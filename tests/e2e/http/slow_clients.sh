#!/usr/bin/env bash
# icefarm-http survives slow clients (issue 16 item 5): slow_clients.py against
# the shim of an embedded farm, on loopback; bounded (about 40 s), stops by itself.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"
e2e_farm_start 2 --sim-flash-ms 50
if farm_start_http; then
    E2E_ROLE[${FARM_PIDS[${#FARM_PIDS[@]} - 1]}]=http
    ok "icefarm-http listens on $FARM_HTTP"
else
    not_ok "icefarm-http listens"
    exit 1
fi
HP=${FARM_HTTP##*:}
relay < <(timeout 120 python3 "$(dirname "${BASH_SOURCE[0]}")/slow_clients.py" 127.0.0.1 "$HP" /available ||
    echo "not ok - slow_clients.py exited with status $?") # a crash or a hang is a failure, not silence
check "icefarm-http is still running" kill -0 "${FARM_PIDS[${#FARM_PIDS[@]} - 1]}"
