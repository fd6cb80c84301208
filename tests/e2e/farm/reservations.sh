#!/usr/bin/env bash
# Reservations between clients: all-or-nothing grants, exit codes, extend, end,
# explicit serials, odd client names, holder-only board operations, waiting for
# boards, and a status that agrees with all of it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

e2e_farm_start 4 --sim-window-ms 50 --sim-flash-ms 50

# status_consistent: every lease's board is not available, every available board
# is ready and unleased, and no serial is leased twice.
status_consistent() {
    status_has "len({l['serial'] for l in j['leases']}) == len(j['leases'])
        and all(not b['available'] for b in j['boards'] if b['serial'] in {l['serial'] for l in j['leases']})
        and all(b['state'] == 'ready' for b in j['boards'] if b['available'])"
}

# A holds 2 of the 4 boards.
cli A reserve --amount 2
check "A reserve --amount 2 exits 0 (got $RC)" test "$RC" = 0
A_SERIALS=$(serials_of "$OUT")
check "A got 2 distinct serials" test "$(sort -u <<<"$A_SERIALS" | grep -c .)" = 2
S1=$(sed -n 1p <<<"$A_SERIALS")
S2=$(sed -n 2p <<<"$A_SERIALS")
check "status shows both leases held by A" status_has \
    "sorted(l['serial'] for l in j['leases'] if l['client'] == 'A') == sorted(['$S1', '$S2'])"
check "status is consistent with A's leases" status_consistent

# B cannot have 3: all or nothing, exit code 4, and nothing half-granted.
cli B reserve --amount 3
check "B reserve --amount 3 exits 4 (not enough boards; got $RC)" test "$RC" = 4
check "the refusal is reported as JSON" jtest "$OUT" "j['ok'] is False and j['exit'] == 4"
check "B holds nothing after the refused request" status_has "not [l for l in j['leases'] if l['client'] == 'B']"
cli B available
check "B available shows 2" jtest "$OUT" "j['amount'] == 2"
cli B devices
check "B devices lists 2 serials, none of A's" jtest "$OUT" \
    "len(j['serials']) == 2 and not {'$S1', '$S2'} & set(j['serials'])"

# Extend without serials extends all of A's.
cli A extend
check "A extend (all) exits 0 (got $RC)" test "$RC" = 0
check "A extend returns both of A's serials" test "$(serials_of "$OUT")" = "$A_SERIALS"
cli B extend
check "B extend (all) returns nothing: B holds nothing" bash -c "[[ $RC == 0 ]] && [[ -z \$1 ]]" _ "$(serials_of "$OUT")"

# A ends one board.
cli A end "$S1"
check "A end S1 exits 0 (got $RC)" test "$RC" = 0
check "A end S1 returns exactly S1" test "$(serials_of "$OUT")" = "$S1"
check "status: A holds only S2" status_has "[l['serial'] for l in j['leases'] if l['client'] == 'A'] == ['$S2']"

# B may not end A's board.
cli B end "$S2"
check "B end of A's board releases nothing" bash -c "[[ -z \$1 ]]" _ "$(serials_of "$OUT")"
check "status: A still holds S2" status_has "[l['serial'] for l in j['leases'] if l['client'] == 'A'] == ['$S2']"

# S1 goes back on the default firmware, then A reserves it by serial.
board_available() { cli e2e-observer devices && jtest "$OUT" "'$1' in j['serials']"; }
check "S1 becomes available again after its end" wait_until 60 board_available "$S1"
cli A reserve "$S1"
check "A reserve S1 (explicit serial) exits 0 (got $RC)" test "$RC" = 0
check "A reserve S1 returns exactly S1" test "$(serials_of "$OUT")" = "$S1"
cli A reserve NO-SUCH-BOARD-0000
check "reserve of an unknown serial exits 1 (got $RC)" test "$RC" = 1
check "the refusal says 404" jtest "$OUT" "'404' in j['error']"
cli B reserve "$S2"
check "B reserve of A's board S2 is refused with exit 4 (got $RC)" test "$RC" = 4

# A client name with quotes and backslashes is just a name.
WEIRD='we"ird\name'
cli "$WEIRD" reserve --amount 1
check "client 'we\"ird\\name' can reserve (got $RC)" test "$RC" = 0
W1=$(serials_of "$OUT")
check "status shows its lease under exactly that name" status_has \
    "[l['client'] for l in j['leases'] if l['serial'] == '$W1'] == ['we\"ird\\\\name']"
cli "$WEIRD" end-all
check "client 'we\"ird\\name' end-all returns its serial" bash -c "[[ $RC == 0 ]] && [[ \$1 == \$2 ]]" _ "$(serials_of "$OUT")" "$W1"
check "status: no lease left for that name" status_has "not [l for l in j['leases'] if l['serial'] == '$W1']"

# Board operations are for the holder only.
cli B reboot "$S2"
check "B reboot of A's board is refused with exit 1 (got $RC)" test "$RC" = 1
check "the reboot refusal says 403" jtest "$OUT" "'403' in j['error']"
cli A reboot "$S2"
check "A reboot of its own board exits 0 (got $RC)" test "$RC" = 0
check "status is consistent" status_consistent

# B waits for 3 boards while A holds 2 of 4; A's end-all lets it through.
wait_until 60 available_is 2 || true
B_OUT=$RUN/b-wait.json
"$CLI_BIN" --broker "$FARM_BROKER" --timeout 20 --name B --json reserve --amount 3 --wait 40 \
    >"$B_OUT" 2>>"$RUN/cli.log" </dev/null &
B_PID=$!
E2E_BG+=("$B_PID")
# B cannot succeed while A holds its boards; give its request time to queue.
sleep 2
check "B reserve --amount 3 --wait is still waiting while A holds 2 of 4 boards" kill -0 "$B_PID"
check "B holds nothing while it waits" status_has "not [l for l in j['leases'] if l['client'] == 'B']"
cli A end-all
check "A end-all returns both of A's boards" test "$(serials_of "$OUT")" = "$(sort <<<"$S1"$'\n'"$S2")"
B_RC=0
wait "$B_PID" || B_RC=$?
check "B reserve --wait succeeds once A's boards are back (got $B_RC)" test "$B_RC" = 0
B_JSON=$(cat "$B_OUT")
check "B got 3 serials, at least one of them A's old board" jtest "$B_JSON" \
    "len(j['serials']) == 3 and {'$S1', '$S2'} & {s['serial'] for s in j['serials']}"
B_LIST=$(jpy "$B_JSON" "sorted(s['serial'] for s in j.get('serials', []))")
check "status: B holds exactly its 3 boards" status_has \
    "sorted(l['serial'] for l in j['leases'] if l['client'] == 'B') == $B_LIST"
check "status is consistent with B's leases" status_consistent

# end-all cleans everything up.
cli B end-all
check "B end-all exits 0 and returns 3 serials" bash -c "[[ $RC == 0 ]] && [[ \$(grep -c . <<<\"\$1\") == 3 ]]" _ "$(serials_of "$OUT")"
cli A end-all
check "A end-all with nothing left returns nothing" bash -c "[[ $RC == 0 ]] && [[ -z \$1 ]]" _ "$(serials_of "$OUT")"
check "status shows no leases" status_has "j['leases'] == []"
check "all 4 boards become available again" wait_until 60 available_is 4
check "status is consistent at the end" status_consistent
