#!/usr/bin/env bash
# proto/PROTOCOL.md's refusals in the secured farm (protocol.py secure): a board
# command from someone not holding the board is refused with PUBACK 0x87 at QoS 1,
# and dropped without a word at QoS 0.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"
export FARM_SECURE=1
e2e_farm_start 2 --sim-window-ms 50 --sim-flash-ms 50
alice=${FARM_USERS[0]#* } bob=${FARM_USERS[1]#* }
rc=0
"$PY" "$E2E_DIR/../e2e/frontdoor/protocol.py" secure "$FARM_BROKER" "$E2E_ROOT/proto/PROTOCOL.md" "$FARM_CA" \
    "$alice" "$bob" >"$RUN/protocol.out" 2>&1 || rc=$?
grep -E '^(ok|not ok) - ' "$RUN/protocol.out" || true
PASS=$((PASS + $(grep -c '^ok - ' "$RUN/protocol.out" || true)))
FAIL=$((FAIL + $(grep -c '^not ok - ' "$RUN/protocol.out" || true)))
check "protocol.py ran to its end (rc=$rc)" grep -qE '^[0-9]+ passed, [0-9]+ failed$' "$RUN/protocol.out"
