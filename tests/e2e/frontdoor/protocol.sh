#!/usr/bin/env bash
# proto/PROTOCOL.md held against the real farm (protocol.py anon): the validation
# reasons and replies it quotes, its payload limit, an empty reserve_serials, and
# a holder that extends on every "reservation ending soon" of a lease shorter than
# the warning lead (warned halfway, never in a loop).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"
FARM_CTL_ARGS="--warn-before 20"
e2e_farm_start 3 --sim-window-ms 50 --sim-flash-ms 50
rc=0
"$PY" "$E2E_DIR/../e2e/frontdoor/protocol.py" anon "$FARM_BROKER" "$E2E_ROOT/proto/PROTOCOL.md" >"$RUN/protocol.out" 2>&1 || rc=$?
grep -E '^(ok|not ok) - ' "$RUN/protocol.out" || true
PASS=$((PASS + $(grep -c '^ok - ' "$RUN/protocol.out" || true)))
FAIL=$((FAIL + $(grep -c '^not ok - ' "$RUN/protocol.out" || true)))
check "protocol.py ran to its end (rc=$rc)" grep -qE '^[0-9]+ passed, [0-9]+ failed$' "$RUN/protocol.out"
