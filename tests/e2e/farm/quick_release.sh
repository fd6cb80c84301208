#!/usr/bin/env bash
# Ending a reservation at once, while the worker is still flashing the kind's
# firmware (state "preparing", the board re-enumerating), must give the board back
# to the pool: it goes back to the default firmware and becomes available. (A
# board released mid-flash used to finish the reservation flash and sit in
# "reserved" with no holder, lost to the farm until the worker restarted.)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

e2e_farm_start 4 --sim-window-ms 50 --sim-flash-ms 50

ROUNDS=5
for ((round = 1; round <= ROUNDS; round++)); do
    cli quick reserve --amount 4
    check "round $round: reserve --amount 4 exits 0 (got $RC)" test "$RC" = 0
    cli quick end-all
    check "round $round: end-all right away returns 4 serials" \
        bash -c "[[ $RC == 0 ]] && [[ \$(grep -c . <<<\"\$1\") == 4 ]]" _ "$(serials_of "$OUT")"
    if wait_until 60 available_is 4; then
        ok "round $round: all 4 boards become available again"
    else
        not_ok "round $round: all 4 boards become available again"
        cli e2e-observer status
        echo "# status: $OUT"
        break
    fi
done
check "status shows no leases" status_has "j['leases'] == []"
check "no board is left reserved, preparing or broken" status_has \
    "all(b['state'] == 'ready' and b['available'] for b in j['boards'])"
