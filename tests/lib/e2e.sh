# shellcheck shell=bash
# Shared by the end-to-end tests (sourced after `set -euo pipefail`).
#
# Every test runs the embedded farm of broker/embedded/farm.sh (the same one `./icefarm demo`
# runs) in a private mktemp -d directory, prints one "ok - ..." / "not ok - ..."
# line per check and a final "N passed, M failed", and on any failure prints the
# farm's logs. At exit it stops the daemons itself, newest first, and checks that
# icefarm-ctl and icefarm-wrk exit 0 on SIGTERM: under ASan/UBSan a leak or a
# sanitizer report makes that status non-zero.
#
# Nothing here asserts that anything was fast: waits are polling loops with
# generous deadlines, so a slow, noisy or sanitized machine only makes them slower.
#
# Environment: FARM_BIN (required) the build directory; E2E_PYTHON a python3 with
# paho-mqtt and msgpack (default: the first of /usr/bin/python3, python3 that has
# them); E2E_KEEP=1 keeps the run directory.

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_ROOT=$(cd "$E2E_DIR/../.." && pwd)
: "${FARM_BIN:?set FARM_BIN to the build directory}"
FARM_BIN=$(cd "$FARM_BIN" && pwd)
# shellcheck source=broker/embedded/farm.sh
source "$E2E_DIR/../../broker/embedded/farm.sh"

CLI_BIN=$FARM_BIN/cli/icefarm-cli
# shellcheck disable=SC2034 # used by the test scripts
BITS=$E2E_ROOT/tests/bitstreams
E2E_BG=()              # helper processes (watchers, background CLIs) killed at exit
declare -A E2E_ROLE=() # pid -> broker | ctl | wrk
declare -A E2E_KILLED=()
E2E_WRK_BOARDS=0
E2E_WRK_ARGS=()
E2E_ERR=""

RUN=$(mktemp -d "${TMPDIR:-/tmp}/icefarm-e2e.XXXXXX")

PY=""
for cand in ${E2E_PYTHON:-} /usr/bin/python3 python3; do
    if "$cand" -c 'import paho.mqtt.client, msgpack' 2>/dev/null; then
        PY=$cand
        break
    fi
done

source "$(dirname "${BASH_SOURCE[0]}")/checks.sh" # ok, not_ok, check, wait_until, js, jtest, jpy
JSON_LOG=$RUN/cli.log                              # jtest's complaints beside the CLI calls they judge

# cli NAME ARGS...: icefarm-cli --json as client NAME. Sets OUT (stdout) and RC;
# never fails itself. Every call and its result go to $RUN/cli.log. CLI_TIMEOUT
# (seconds, default 20) is its --timeout: polls of a restarting daemon use less.
cli() {
    local name=$1
    shift
    printf '+ [%s] icefarm-cli --name %q %s\n' "$(date +%T.%N)" "$name" "$*" >>"$RUN/cli.log"
    RC=0
    OUT=$("$CLI_BIN" --broker "$FARM_BROKER" --timeout "${CLI_TIMEOUT:-20}" --name "$name" --json "$@" 2>>"$RUN/cli.log") || RC=$?
    printf '  rc=%s out=%s\n' "$RC" "$OUT" >>"$RUN/cli.log"
}

# cli_run SECONDS ARGS...: icefarm-cli ARGS (human or --json, as ARGS say) under
# `timeout SECONDS`, so a hang is a failure with a bound; stdin closed. Sets RC, OUT
# (stdout), ERR (stderr) and TOOK (ms); never fails itself; logged to $RUN/cli.log.
cli_run() {
    local bound=$1 t0
    shift
    t0=$(date +%s%N)
    RC=0
    timeout "$bound" "$CLI_BIN" "$@" >"$RUN/run.out" 2>"$RUN/run.err" </dev/null || RC=$?
    TOOK=$((($(date +%s%N) - t0) / 1000000))
    OUT=$(cat "$RUN/run.out")
    ERR=$(cat "$RUN/run.err")
    printf '+ [%s] icefarm-cli %s\n  rc=%s took=%sms\n  out=%s\n  err=%s\n' "$(date +%T.%N)" "$*" "$RC" "$TOOK" "$OUT" \
        "$ERR" >>"$RUN/cli.log"
}

# status_has EXPR: `status --json` (as j) satisfies EXPR. For wait_until.
status_has() {
    local name=e2e-observer
    cli "$name" status
    [[ $RC == 0 ]] && jtest "$OUT" "$1"
}

# available_is N: `available --json` reports exactly N boards.
available_is() {
    cli e2e-observer available
    [[ $RC == 0 ]] && jtest "$OUT" "j.get('amount') == $1"
}

# serials_of JSON: the serials of a reserve/extend/end reply, one per line.
serials_of() {
    jpy "$1" '"\n".join(sorted(s if isinstance(s, str) else s["serial"] for s in j.get("serials", [])))'
}

# e2e_farm_launch BOARDS [icefarm-wrk options...]: the embedded farm, not waited for.
e2e_farm_launch() {
    E2E_WRK_BOARDS=$1
    shift
    E2E_WRK_ARGS=("$@")
    farm_start "$RUN" "$E2E_WRK_BOARDS" "$@"
    E2E_ROLE[${FARM_PIDS[0]}]=broker
    E2E_ROLE[${FARM_PIDS[1]}]=ctl
    E2E_ROLE[${FARM_PIDS[2]}]=wrk
}

# e2e_farm_start BOARDS [icefarm-wrk options...]: the embedded farm, ready.
e2e_farm_start() {
    e2e_farm_launch "$@"
    if farm_wait_ready "$E2E_WRK_BOARDS" 60; then
        ok "the farm is up with $E2E_WRK_BOARDS simulated boards"
    else
        not_ok "the farm is up with $E2E_WRK_BOARDS simulated boards"
        exit 1
    fi
}

# Pids of the current daemons of a role, newest last.
e2e_pid_of() {
    local i pid found=""
    for ((i = 0; i < ${#FARM_PIDS[@]}; i++)); do
        pid=${FARM_PIDS[i]}
        [[ ${E2E_ROLE[$pid]:-} == "$1" && -z ${E2E_KILLED[$pid]:-} ]] && found=$pid
    done
    echo "$found"
}

# e2e_kill9 PID: SIGKILL and reap; its exit status is not checked at the end.
e2e_kill9() {
    E2E_KILLED[$1]=1
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# e2e_stop PID: SIGTERM, wait (30 s, then SIGKILL); returns its exit status.
# Its status is not checked again at the end.
e2e_stop() {
    local t rc=0
    E2E_KILLED[$1]=1
    kill -TERM "$1" 2>/dev/null || true
    for ((t = 0; t < 600; t++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || rc=$?
    return $rc
}

# Restarts with the command lines farm_start uses; logs are appended.
e2e_start_ctl() {
    echo "---- e2e: icefarm-ctl restarted ----" >>"$RUN/ctl.log"
    # shellcheck disable=SC2086 # FARM_CTL_ARGS is split like farm_start splits it
    "$FARM_BIN/ctl/icefarm-ctl" --broker "$FARM_BROKER" ${FARM_CTL_AUTH[@]+"${FARM_CTL_AUTH[@]}"} --data "$RUN/ctl-data" \
        ${FARM_CTL_ARGS:-} >>"$RUN/ctl.log" 2>&1 &
    FARM_PIDS+=($!)
    E2E_ROLE[$!]=ctl
}

e2e_start_wrk() {
    echo "---- e2e: icefarm-wrk restarted ----" >>"$RUN/wrk.log"
    "$FARM_BIN/wrk/icefarm-wrk" --broker "$FARM_BROKER" ${FARM_WRK_AUTH[@]+"${FARM_WRK_AUTH[@]}"} --name "${FARM_WORKER:-sim-worker}" \
        --sim "$E2E_WRK_BOARDS" "${E2E_WRK_ARGS[@]}" >>"$RUN/wrk.log" 2>&1 &
    FARM_PIDS+=($!)
    E2E_ROLE[$!]=wrk
}

# e2e_watch OUT TOPIC...: a raw MQTT subscriber writing JSON lines to OUT; returns
# once the broker has acknowledged the subscriptions.
e2e_watch() {
    local out=$1
    shift
    "$PY" "$E2E_DIR/mqtt_tool.py" watch "$FARM_BROKER" "$out" "$@" </dev/null >>"$RUN/watch.log" 2>&1 &
    E2E_BG+=($!)
    wait_until 30 test -e "$out.ready"
}

# e2e_wait_event OUT SECONDS EVENT [SERIAL]
e2e_wait_event() {
    "$PY" "$E2E_DIR/mqtt_tool.py" wait "$@"
}

# wrong_token TOKEN: the token with its last character changed, so never the
# token itself (a plain "${t%?}X" is the token again when it ends in X).
wrong_token() {
    local t=$1 c=X
    [[ ${t: -1} != X ]] || c=Y
    printf '%s%s\n' "${t%?}" "$c"
}

# sim_fault SERIAL FAULT [COUNT]: arms a fault through icefarm/worker/<id>/sim.
sim_fault() {
    local worker=${FARM_WORKER:-sim-worker}
    printf '+ [%s] sim fault %s %s x%s\n' "$(date +%T.%N)" "$1" "$2" "${3:-1}" >>"$RUN/cli.log"
    "$PY" "$E2E_DIR/mqtt_tool.py" pub "$FARM_BROKER" "icefarm/worker/$worker/sim" \
        "{\"v\": 1, \"serial\": \"$1\", \"fault\": \"$2\", \"count\": ${3:-1}}"
}

# Stops the daemons newest first and checks ctl's and wrk's exit status.
e2e_stop_daemons() {
    local i pid role rc t
    for ((i = ${#FARM_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${FARM_PIDS[i]}
        role=${E2E_ROLE[$pid]:-daemon}
        [[ -z ${E2E_KILLED[$pid]:-} ]] || continue
        rc=0
        kill -CONT "$pid" 2>/dev/null || true # a test may have frozen it
        if ! kill -TERM "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null || rc=$?
            [[ $role == broker ]] || not_ok "$role (pid $pid) was still running at the end (it exited by itself, status $rc)"
            continue
        fi
        # ASan builds take a while to write their report; give them 30 s.
        for ((t = 0; t < 600; t++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || rc=$?
        case $role in
        ctl | wrk)
            if ((rc == 0)); then
                ok "$role (pid $pid) exits 0 on SIGTERM"
            else
                not_ok "$role (pid $pid) exits 0 on SIGTERM (status $rc: a crash, a hang or a sanitizer report; see $role.log)"
            fi
            ;;
        esac
    done
    FARM_PIDS=()
}

e2e_exit() {
    local rc=$?
    set +e
    local p
    for p in "${E2E_BG[@]}"; do
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if ((rc != 0)); then
        not_ok "the test script stopped early with status $rc${E2E_ERR:+ ($E2E_ERR)}"
    fi
    e2e_stop_daemons
    farm_stop
    echo "$PASS passed, $FAIL failed"
    if ((FAIL > 0)); then
        local f
        for f in "$RUN"/*.log; do
            [[ -e $f ]] || continue
            echo "======== ${f##*/} (last 400 lines) ========"
            tail -n 400 "$f"
        done
        echo "(run directory: $RUN)"
        exit 1
    fi
    [[ -n ${E2E_KEEP:-} ]] || rm -rf "$RUN"
    exit 0
}

set -E
trap 'E2E_ERR="line $LINENO: $BASH_COMMAND"' ERR
trap e2e_exit EXIT

if [[ -z $PY ]]; then
    not_ok "a python3 with paho-mqtt and msgpack (apt install python3-paho-mqtt python3-msgpack, or set E2E_PYTHON)"
    exit 1
fi
