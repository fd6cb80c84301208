# shellcheck shell=bash
# shellcheck disable=SC2034 # FD_RC, BITS: read by the test scripts
# Shared by the front-door tests (sourced after `set -euo pipefail`): they run
# ./icefarm from the checkout exactly as README.md gives it, each run in a session
# of its own so that "nothing is left behind" is one question: is any process of
# that session still alive?
#
#   FARM_BIN (the environment, as for every e2e test): the build directory.
#   ICEFARM_BUILD_DIR=FARM_BIN points ./icefarm at this build (nothing is built elsewhere),
#   ICEFARM_ENV_FILE keeps `./icefarm env` off the user's own running farm, and
#   TMPDIR puts the farm's run directory under this test's directory.
#
# Every wait is a polling loop with a deadline that says what it waits for.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
BUILD=$(cd "${FARM_BIN:?set FARM_BIN to the build directory}" && pwd)
# shellcheck source=../../lib/checks.sh
source "$ROOT/tests/lib/checks.sh" # ok, not_ok, check, wait_until

RUN=$(mktemp -d "${TMPDIR:-/tmp}/icefarm-frontdoor.XXXXXX")
chmod 755 "$RUN" # the secured farm's broker drops root and must reach its files below
export ICEFARM_BUILD_DIR=$BUILD ICEFARM_ENV_FILE=$RUN/farm.env TMPDIR=$RUN
BITS=$ROOT/tests/bitstreams
FD_SIDS=() # sessions started here: killed at exit if a test left them alive

# fd_cleanup: kills what a failed test left running, shows the output, removes $RUN.
fd_cleanup() {
    local sid
    for sid in "${FD_SIDS[@]}"; do pkill -KILL -s "$sid" 2>/dev/null || true; done
    if ((FAIL)); then
        for f in "$RUN"/*.out "$RUN"/icefarm.*/*.log; do
            [[ -e $f ]] || continue
            echo "---- $f"
            tail -n 40 "$f"
        done
    fi
    rm -rf "$RUN"
}
trap fd_cleanup EXIT

# fd_start OUT ARGS...: `./icefarm ARGS...` from the checkout in a new session, with
# SIGINT at its default (a background job of a script starts with it ignored, and
# then bash could not trap it). Sets FD_PID (= the session id) and FD_OUT.
fd_start() {
    FD_OUT=$1
    shift
    (cd "$ROOT" && exec setsid env --default-signal=INT,QUIT ./icefarm "$@") >"$FD_OUT" 2>&1 &
    FD_PID=$!
    FD_SIDS+=("$FD_PID")
}

# fd_wait_line SECONDS REGEX: waits until FD_OUT has a line matching REGEX; fails
# early if the command exited.
fd_wait_line() {
    local deadline=$((SECONDS + $1))
    while ((SECONDS < deadline)); do
        grep -qE "$2" "$FD_OUT" && return 0
        kill -0 "$FD_PID" 2>/dev/null || { grep -qE "$2" "$FD_OUT"; return; }
        sleep 0.2
    done
    echo "# waited ${1}s for /$2/ in $(basename "$FD_OUT")"
    return 1
}

# fd_field NAME: the value of the first "NAME: value" line of FD_OUT.
fd_field() { sed -n "s/^$1: //p" "$FD_OUT" | head -n 1; }

# fd_wait_exit SECONDS: waits for FD_PID to exit; sets FD_RC (or fails).
fd_wait_exit() {
    local deadline=$((SECONDS + $1))
    while kill -0 "$FD_PID" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            echo "# ./icefarm (pid $FD_PID) still runs after ${1}s"
            return 1
        fi
        sleep 0.2
    done
    FD_RC=0 # read by the test scripts
    wait "$FD_PID" || FD_RC=$?
}

# session_empty SID: no process of session SID is alive (waits up to 10 s for
# processes that are on their way out).
session_empty() {
    local sid=$1 left
    wait_until 10 bash -c "! pgrep -s $sid >/dev/null" && return 0
    left=$(pgrep -s "$sid" -a || true)
    echo "# left behind in session $sid:"
    printf '#   %s\n' "$left"
    return 1
}

# port_closed URL: nothing listens on URL's port any more.
port_closed() {
    local hostport=${1#*://} port
    port=${hostport##*:}
    port=${port%%/*}
    ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# counts_right JSON FILE...: an `evaluate --json` array has one result per FILE, each
# the simulated board's count for that file (CRC-32 of its bytes mod 100000).
counts_right() {
    python3 - "$@" <<'PY'
import json, sys, zlib
rows = json.loads(sys.argv[1])
if isinstance(rows, dict):  # an envelope around the results
    rows = rows.get("results", [])
want = {f: zlib.crc32(open(f, "rb").read()) % 100000 for f in sys.argv[2:]}
got = {r.get("file"): r.get("pulses") for r in rows}
if got != want:
    print("# expected", want, "got", got)
    sys.exit(1)
PY
}

# amount_is JSON N: an /available or `available --json` answer reports N boards.
amount_is() { python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1]).get("amount") == int(sys.argv[2]) else 1)' "$1" "$2" 2>/dev/null; }
