#!/usr/bin/env bash
# icefarm-cli evaluate while its boards' worker goes away, as a lab engineer sees it:
# control keeps the lease through the worker's grace and tells the holder, and the
# CLI says so at once (it said nothing for the whole grace); when the worker comes
# back the run goes on to the right counts; when it does not, the board's line says
# why (it said only "board X: failure").
#   FARM_BIN=BUILD_DIR worker_away.sh
set -euo pipefail
FARM_BIN=${FARM_BIN:?set FARM_BIN to the build directory}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
# shellcheck source=../../../broker/embedded/farm.sh
source "$ROOT/broker/embedded/farm.sh"
# shellcheck source=../../lib/checks.sh
source "$ROOT/tests/lib/checks.sh" # ok, not_ok, check, wait_until
RUN=$(mktemp -d)
WRK=""
cleanup() {
    ((FAIL == 0)) || tail -n 20 "$RUN"/*.log 2>/dev/null || true
    [[ -z $WRK ]] || kill -CONT "$WRK" 2>/dev/null || true
    farm_stop
    rm -rf "$RUN"
}
trap cleanup EXIT
# A short grace; the worker keep-alive is the default 5 s: a stopped worker's connection is
# declared dead by the broker within 7.5 s.
FARM_CTL_ARGS="--worker-grace 15" farm_start "$RUN" 1 --sim-flash-ms 20 --sim-window-ms 200
farm_wait_ready 1 60 || { tail -n 20 "$RUN"/*.log; exit 1; }
WRK=${FARM_PIDS[2]}
cli=("$FARM_BIN/cli/icefarm-cli" --broker "$FARM_BROKER" --name away-test)
files=()
for _ in $(seq 1 8); do files+=("$ROOT"/tests/bitstreams/*.bin); done
n=${#files[@]}

# 1. The worker freezes (SIGSTOP) and comes back within the grace.
"${cli[@]}" evaluate --json --boards 1 "${files[@]}" >"$RUN/out1.json" 2>"$RUN/err1.txt" &
pid=$!
has_lease() { "${cli[@]}" --json status 2>/dev/null | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["leases"] else 1)'; }
wait_until 30 has_lease || true
sleep 1
kill -STOP "$WRK"
said_away() { grep -q "its worker lost its connection" "$1"; }
check "a frozen worker: evaluate says the worker lost its connection" wait_until 20 said_away "$RUN/err1.txt"
# status shows it, its columns in line ("RECONNECTING" once pushed KINDS aside).
"${cli[@]}" status >"$RUN/status.txt" 2>&1 || true
aligned() {
    python3 - "$1" <<'PY'
import sys
lines = open(sys.argv[1]).read().splitlines()
head = next(l for l in lines if l.startswith("ID ") and "KINDS" in l)
row = next(l for l in lines if "RECONNECTING" in l or "HUNG" in l)
sys.exit(0 if row[head.index("KINDS"):].startswith("pulsecount") else 1)
PY
}
check "  ... status shows the worker's state with KINDS in its column" aligned "$RUN/status.txt"
kill -CONT "$WRK"
said_back() { grep -q "its worker is back" "$1"; }
check "  ... and, when it is back, that it evaluates on" wait_until 20 said_back "$RUN/err1.txt"
rc=0
wait "$pid" || rc=$?
check "  ... the run completes (rc=$rc)" test "$rc" = 0
right() {
    python3 - "$1" "$n" <<'PY'
import json, sys, zlib
r = json.load(open(sys.argv[1]))["results"]
good = sum(1 for x in r if x.get("pulses") == zlib.crc32(open(x["file"], "rb").read()) % 100000)
sys.exit(0 if good == int(sys.argv[2]) == len(r) else 1)
PY
}
check "  ... with the right count for each of the $n bitstreams" right "$RUN/out1.json"
sed 's/^/# err1: /' "$RUN/err1.txt"
farm_wait_ready 1 60 || { tail -n 20 "$RUN"/*.log; exit 1; }

# 2. The worker dies (kill -9) and does not come back within the grace.
"${cli[@]}" evaluate --json --boards 1 "${files[@]}" >"$RUN/out2.json" 2>"$RUN/err2.txt" &
pid=$!
wait_until 30 has_lease || true
sleep 1
kill -KILL "$WRK"
check "a dead worker: evaluate says the worker lost its connection" wait_until 10 said_away "$RUN/err2.txt"
rc=0
wait_until 45 bash -c "! kill -0 $pid 2>/dev/null" || true
wait "$pid" || rc=$?
check "  ... after the grace it ends with status 1 ($rc)" test "$rc" = 1
check "  ... saying, in control's words, the worker did not come back within the grace" \
    grep -Eq "worker did not come back within [0-9]+ s: the lease ended" "$RUN/err2.txt"
check "  ... and never a bare 'failure'" bash -c "! grep -q ': failure$' '$RUN/err2.txt'"
check "  ... its summary counts the bitstreams that never reached a board as such" jtest "$(cat "$RUN/out2.json")" \
    "j['summary']['failed'] > 0 and j['summary']['never_reached_a_board'] == j['summary']['failed'] == len([r for r in j['results'] if not r['ok'] and r['serial'] == '' and r['error'] == 'no working board left'])"
sed 's/^/# err2: /' "$RUN/err2.txt"

echo "$PASS passed, $FAIL failed"
((FAIL == 0))
