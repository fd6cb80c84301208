#!/usr/bin/env bash
# A broker restart keeps leases and loses no result (issue 16 item 1, PROTOCOL.md
# 14.1): two holders stream evaluations over 4 boards each (and, in the anonymous
# farm, libicefarm's batch engine a third batch over 4 more); the broker is killed
# with SIGKILL and restarted 1 s later on the same port, twice. Persistence is
# off, so every retained message is gone: control republishes its leases and
# availability, the worker its birth and board states, the holders their
# presence; the worker comes back as the same process instance (a new epoch) and
# keeps every lease and queue. The holders (tests/e2e/restart/holders.c, a
# client written from PROTOCOL.md) ask `leases` after their own reconnect and
# resend what is still in flight; every evaluation must get exactly its right
# value, no lease may end or fail, and `leases` must still list all 8.
# FARM_SECURE=1 (broker_restart_secure.sh): the same in the secured farm, where
# the ACL plugin must relearn the leases from control's republished ones.
# Budget: under a minute per farm.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

BOARDS=8
[[ -z ${FARM_SECURE:-} ]] && BOARDS=12
EVALS=${EVALS:-300}
e2e_farm_start "$BOARDS" --sim-window-ms 20 --sim-flash-ms 50
PORT=${FARM_BROKER##*:}
PORT=${PORT%%/*}

NAMES=(hold-a hold-b)
AUTH=("" "")
if [[ -n ${FARM_SECURE:-} ]]; then
    NAMES=(alice bob)
    AUTH=("alice:${FARM_USERS[0]#* }:$FARM_CA" "bob:${FARM_USERS[1]#* }:$FARM_CA")
fi
HPIDS=()
for i in 0 1; do
    # shellcheck disable=SC2086 # an empty AUTH is no argument
    ICEFARM_LOG_LEVEL=warn "$FARM_BIN/tests/e2e/restart/restart_holders" "$FARM_BROKER" "${NAMES[i]}" 4 "$EVALS" 2 100 \
        "$RUN/progress.$i" ${AUTH[i]} >"$RUN/holders.$i.out" 2>"$RUN/holders.$i.log" &
    HPIDS+=($!)
    E2E_BG+=($!)
done

# libicefarm's batch engine (tests/e2e/soak, no faults) on the 4 other boards.
if [[ -z ${FARM_SECURE:-} ]]; then
    ICEFARM_LOG_LEVEL=info "$FARM_BIN/tests/e2e/soak/soak" "$FARM_BROKER" "${FARM_WORKER:-sim-worker}" 4 1500 0 \
        >"$RUN/batch.out" 2>"$RUN/batch.log" &
    BPID=$!
    E2E_BG+=($!)
fi

results() {
    local n=0 i v
    for i in 0 1; do
        v=$(cat "$RUN/progress.$i" 2>/dev/null || echo 0)
        n=$((n + ${v:-0}))
    done
    echo "$n"
}
at_least() { (($(results) >= $1)); }

restart_broker() {
    local broker n
    broker=$(e2e_pid_of broker)
    n=$(results)
    e2e_kill9 "$broker"
    ok "kill -9 the broker (pid $broker) with $n results in"
    sleep 1
    echo "---- e2e: broker restarted ----" >>"$RUN/mosquitto.log"
    mosquitto -c "$RUN/mosquitto.conf" >>"$RUN/mosquitto.log" 2>&1 &
    FARM_PIDS+=($!)
    E2E_ROLE[$!]=broker
    check "the broker is back on port $PORT" farm_wait_port "$PORT" 200
    check "results flow again after the restart" wait_until 60 at_least $((n + 60))
}

check "the holders stream results" wait_until 60 at_least 120
restart_broker
restart_broker

for i in 0 1; do
    RC=0
    wait "${HPIDS[i]}" || RC=$?
    relay <"$RUN/holders.$i.out"
    check "holder ${NAMES[i]} exits 0 (got $RC)" test "$RC" = 0
done
if [[ -n ${BPID:-} ]]; then
    RC=0
    wait "$BPID" || RC=$?
    # A resend is answered from the worker's cache, so the same result can cross
    # the wire twice by design: the caller still counts it once.
    while IFS= read -r line; do
        case $line in
        *"no worker reported the same evaluation twice"*) echo "# batch engine: ${line#* - }" ;;
        "ok - "*) ok "batch engine: ${line#ok - }" ;;
        "not ok - "*) not_ok "batch engine: ${line#not ok - }" ;;
        esac
    done <"$RUN/batch.out"
    check "libicefarm's batch engine resent what was in flight after reconnecting" \
        grep -q "resending what is in flight" "$RUN/batch.log"
fi
check "control ended no lease except at the holders' end_all" \
    bash -c "! grep 'reservation end (' '$RUN/ctl.log' | grep -v 'ended by the holder'"
check "control kept the worker as the same process (no restart seen)" bash -c "! grep -q 'worker=.* restarted' '$RUN/ctl.log'"
check "the worker came back as the same process at least twice" \
    bash -c "(( \$(grep -c 'back (same process)' '$RUN/ctl.log') >= 2 ))"
