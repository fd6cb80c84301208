#!/usr/bin/env bash
# A waiting reserve dies with its requester (issue 16 item 4, PROTOCOL.md 5.1):
# with every board held, `icefarm-cli reserve --wait` waits at control; then the
# waiter is interrupted with Ctrl-C (SIGINT: the CLI sends `cancel`), killed with
# SIGKILL (its connection ends: the Will clears its presence), or frozen until
# the broker's keep-alive cuts it off (SIGSTOP). In each case control drops the
# wait, and when the boards come free nobody is granted them: they are all
# available, no lease names the waiter. A waiter left alone is granted (the
# control experiment). FARM_SECURE=1 (waiter_gone_secure.sh): in the secured farm,
# where the broker's ACL plugin clears the presence whatever the client does.
# Budget: about 40 s per farm.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

e2e_farm_start 2 --sim-window-ms 50 --sim-flash-ms 50
HOLDER=holder
WAITER=waiter
HAUTH=() WAUTH=()
if [[ -n ${FARM_SECURE:-} ]]; then
    HOLDER=bob WAITER=alice
    HAUTH=(--user bob --password "${FARM_USERS[1]#* }" --cafile "$FARM_CA")
    WAUTH=(--user alice --password "${FARM_USERS[0]#* }" --cafile "$FARM_CA")
fi
as_holder() { RC=0; OUT=$("$CLI_BIN" --broker "$FARM_BROKER" "${HAUTH[@]}" --name "$HOLDER" --json "$@" 2>>"$RUN/cli.log") || RC=$?; }
observer() { RC=0; OUT=$("$CLI_BIN" --broker "$FARM_BROKER" "${WAUTH[@]}" --name "$WAITER" --json "$@" 2>>"$RUN/cli.log") || RC=$?; }
no_lease_of_waiter() { observer status && jtest "$OUT" "not any(l['client'] == '$WAITER' for l in j['leases'])"; }
waiting_count() { grep -c "client=$WAITER conn=.* waiting up to" "$RUN/ctl.log" || true; }
available_is() { observer available && jtest "$OUT" "j.get('amount') == $1"; }

# waiter_case HOW: start a waiting reserve in the background, end it HOW, then
# free the boards and check that the waiter got nothing.
waiter_case() {
    local how=$1 before pid rc=0
    as_holder reserve --amount 2
    check "[$how] the holder holds both boards (got $RC)" test "$RC" = 0
    before=$(waiting_count)
    "$CLI_BIN" --broker "$FARM_BROKER" "${WAUTH[@]}" --name "$WAITER" --json --timeout 5 reserve --amount 1 --wait 120 \
        >>"$RUN/waiter.out" 2>>"$RUN/waiter.log" &
    pid=$!
    E2E_BG+=("$pid")
    check "[$how] the waiter waits at control" \
        wait_until 20 bash -c "(( \$(grep -c 'client=$WAITER conn=.* waiting up to' '$RUN/ctl.log') > $before ))"
    case $how in
    ctrl-c)
        kill -INT "$pid"
        wait "$pid" || rc=$?
        check "[$how] Ctrl-C ends the CLI (status $rc)" test "$rc" != 0
        check "[$how] control drops the wait: cancelled by its requester" \
            wait_until 20 grep -q "client=$WAITER conn=.*cancelled by its requester" "$RUN/ctl.log"
        ;;
    kill)
        kill -KILL "$pid"
        wait "$pid" 2>/dev/null || true
        check "[$how] control drops the wait: its connection ended" \
            wait_until 20 bash -c "(( \$(grep -c 'client=$WAITER conn=.*connection ended' '$RUN/ctl.log') >= 1 ))"
        ;;
    stop)
        local n
        n=$(grep -c "client=$WAITER conn=.*connection ended" "$RUN/ctl.log" || true)
        kill -STOP "$pid"
        check "[$how] control drops the wait once the broker cut the frozen waiter off (keep-alive)" \
            wait_until 40 bash -c "(( \$(grep -c 'client=$WAITER conn=.*connection ended' '$RUN/ctl.log') > $n ))"
        kill -KILL "$pid"
        kill -CONT "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        ;;
    esac
    as_holder end-all
    check "[$how] the holder ends both leases (got $RC)" test "$RC" = 0
    check "[$how] both boards become available" wait_until 30 available_is 2
    sleep 1
    check "[$how] ... and stay free: no lease names the waiter" no_lease_of_waiter
    check "[$how] still 2 available a second later" available_is 2
}

waiter_case ctrl-c
waiter_case kill
waiter_case stop

# The HTTP shim: a caller of a waiting /reserve that hangs up has its wait
# cancelled by the shim (anonymous farm: the caller names itself).
if [[ -z ${FARM_SECURE:-} ]]; then
    if farm_start_http; then
        ok "[http] icefarm-http listens on $FARM_HTTP"
    else
        not_ok "[http] icefarm-http listens"
    fi
    as_holder reserve --amount 2
    check "[http] the holder holds both boards (got $RC)" test "$RC" = 0
    before=$(waiting_count)
    curl -s -m 120 -X POST "$FARM_HTTP/reserve" -H 'Content-Type: application/json' \
        -d "{\"amount\": 1, \"kind\": \"pulsecount\", \"name\": \"$WAITER\", \"wait_ms\": 60000}" \
        >"$RUN/http-waiter.out" 2>&1 &
    PID=$!
    E2E_BG+=("$PID")
    check "[http] the caller's reserve waits at control" \
        wait_until 20 bash -c "(( \$(grep -c 'client=$WAITER conn=.* waiting up to' '$RUN/ctl.log') > $before ))"
    kill -KILL "$PID"
    wait "$PID" 2>/dev/null || true
    check "[http] the shim notices the caller hung up and cancels the wait" \
        wait_until 20 grep -q "client=$WAITER the caller of a waiting reserve went away" "$RUN/http.log"
    check "[http] control drops the wait: cancelled by its requester" \
        wait_until 20 bash -c "(( \$(grep -c 'client=$WAITER conn=.*cancelled by its requester' '$RUN/ctl.log') >= 2 ))"
    as_holder end-all
    check "[http] both boards become available" wait_until 30 available_is 2
    sleep 1
    check "[http] ... and stay free: no lease names the waiter" no_lease_of_waiter
fi

# The control experiment: a waiter that stays is served when a board frees up.
as_holder reserve --amount 2
check "[stays] the holder holds both boards (got $RC)" test "$RC" = 0
"$CLI_BIN" --broker "$FARM_BROKER" "${WAUTH[@]}" --name "$WAITER" --json --timeout 5 reserve --amount 1 --wait 60 \
    >"$RUN/stays.out" 2>>"$RUN/waiter.log" &
PID=$!
E2E_BG+=("$PID")
wait_until 20 bash -c "grep -q 'client=$WAITER conn=.* waiting up to 60000' '$RUN/ctl.log'" || true
as_holder end-all
RC=0
wait "$PID" || RC=$?
check "[stays] the waiter is granted a board when they come free (got $RC)" test "$RC" = 0
observer status
check "[stays] its lease is listed" jtest "$OUT" "sum(l['client'] == '$WAITER' for l in j['leases']) == 1"
observer end-all
