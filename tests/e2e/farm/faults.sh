#!/usr/bin/env bash
# Faulty boards under load. While `evaluate` streams 20 bitstreams to 2 boards,
# the boards hang mid-transfer and lose transfers to the firmware watchdog
# (faults injected on icefarm/worker/<id>/sim). The evaluation must still return
# exactly one result per bitstream, each the right CRC pulse count or an explicit
# error (a few at most), with an exit status that says whether errors happened.
# Then a board that boots the wrong firmware after being reserved must end in a
# "failure" event or a broken state, never in a CLI that waits forever.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

e2e_farm_start 4 --sim-window-ms 200 --sim-flash-ms 50 --eval-timeout-ms 3000 --ready-timeout-ms 2000

# 20 jobs: the checked-in bitstreams 4 times over, under distinct names.
mkdir -p "$RUN/bits"
src=("$BITS"/*.bin)
files=()
for ((i = 0; i < 20; i++)); do
    f=$(printf '%s/bits/%02d_%s' "$RUN" "$i" "$(basename "${src[i % ${#src[@]}]}")")
    cp "${src[i % ${#src[@]}]}" "$f"
    files+=("$f")
done
"$PY" "$E2E_DIR/mqtt_tool.py" pulses "${files[@]}" >"$RUN/expected.txt"
expected=$("$PY" -c 'import json, sys
print(json.dumps({f: int(p) for f, p in (l.rsplit(" ", 1) for l in open(sys.argv[1]).read().splitlines())}))' "$RUN/expected.txt")
files_json=$("$PY" -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "${files[@]}")

EVAL_OUT=$RUN/evaluate.json
"$CLI_BIN" --broker "$FARM_BROKER" --timeout 20 --name faults --json evaluate --boards 2 --result-timeout 20 \
    "${files[@]}" >"$EVAL_OUT" 2>"$RUN/evaluate.log" </dev/null &
EVAL_PID=$!
E2E_BG+=("$EVAL_PID")

# The boards evaluate holds, once it has them.
held_two() { status_has "len([l for l in j['leases'] if l['client'] == 'faults']) == 2"; }
if wait_until 60 held_two; then
    ok "evaluate reserved 2 boards"
    HELD=$(jpy "$OUT" "' '.join(sorted(l['serial'] for l in j['leases'] if l['client'] == 'faults'))")
    read -r B0 B1 <<<"$HELD"
    # Faults bite in the pulse-count firmware's transfers: arm them once it runs.
    both_reserved() { status_has "all(b['state'] == 'reserved' for b in j['boards'] if b['serial'] in ['$B0', '$B1'])"; }
    wait_until 30 both_reserved || echo "# the boards were not both 'reserved' yet; injecting anyway"
    check "inject 'hang' on $B0" sim_fault "$B0" hang
    check "inject 'watchdog' on $B1" sim_fault "$B1" watchdog
    sleep 1
    check "inject 'watchdog' on $B0" sim_fault "$B0" watchdog
    check "inject 'hang' on $B1" sim_fault "$B1" hang
else
    not_ok "evaluate reserved 2 boards"
fi

# evaluate must come back by itself: 3 s eval timeouts, 2 s watchdogs, reboots.
evaluate_done() { ! kill -0 "$EVAL_PID" 2>/dev/null; }
if wait_until 180 evaluate_done; then
    ok "evaluate returned by itself"
else
    not_ok "evaluate returned by itself (still running after 180 s; interrupting it)"
    kill -INT "$EVAL_PID" 2>/dev/null || true
    wait_until 30 evaluate_done || kill -KILL "$EVAL_PID" 2>/dev/null || true
fi
EVAL_RC=0
wait "$EVAL_PID" || EVAL_RC=$?
RESULTS=$(cat "$EVAL_OUT")
echo "# evaluate exit status $EVAL_RC"
check "evaluate printed one JSON document with exactly 20 results" jtest "$RESULTS" "len(j['results']) == 20"
check "one result per file, in order (nothing missing, nothing twice)" jtest "$RESULTS" \
    "[r['file'] for r in j['results']] == $files_json"
check "every result is the right pulse count or an explicit error" jtest "$RESULTS" \
    "all(('error' in r and r['error']) if 'pulses' not in r else r['pulses'] == ${expected}[r['file']] for r in j['results'])"
check "its summary agrees with the results" jtest "$RESULTS" \
    "j['summary']['failed'] == sum(not r['ok'] for r in j['results']) and j['summary']['total'] == 20"
N_ERR=$(jpy "$RESULTS" "sum('error' in r for r in j['results'])" 2>/dev/null || echo 20)
echo "# $N_ERR of 20 results are errors"
check "at most 3 results are errors (got $N_ERR)" test "$N_ERR" -le 3
if ((N_ERR == 0)); then
    check "exit status 0 without errors (got $EVAL_RC)" test "$EVAL_RC" = 0
else
    check "exit status 1 with errors (got $EVAL_RC)" test "$EVAL_RC" = 1
fi
for fault in hang watchdog; do
    if grep -q "sim fault $fault x1: armed" "$RUN/wrk.log"; then
        echo "# worker armed '$fault' $(grep -c "sim fault $fault x1: armed" "$RUN/wrk.log") time(s)"
    fi
done
# Informational: whether the faults bit depends on how far evaluate had got.
echo "# the worker rebooted evaluate's boards $(grep -c 'client=faults rebooting' "$RUN/wrk.log" || true) time(s) during the run"
check "the worker armed both kinds of fault" \
    bash -c "grep -q 'sim fault hang x1: armed' '$RUN/wrk.log' && grep -q 'sim fault watchdog x1: armed' '$RUN/wrk.log'"
check "evaluate gave its boards back" wait_until 30 status_has "not [l for l in j['leases'] if l['client'] == 'faults']"
check "all 4 boards become available again (hung boards are recovered)" wait_until 90 available_is 4

# ---- wrong firmware after a reservation ----
cli e2e-observer devices
W=$(jpy "$OUT" "sorted(j['serials'])[0]")
EV=$RUN/wrongfw-events.jsonl
check "a watcher follows $W's events and state and client wfw's events" \
    e2e_watch "$EV" "icefarm/$W/event" "icefarm/$W/state" "icefarm/client/wfw/event"
# Four flashes in a row boot unknown firmware: the first try and every reboot
# the worker gives it, so the board must be given up on.
check "inject 'wrong_fw' x4 on the unreserved board $W" sim_fault "$W" wrong_fw 4
check "the worker armed it" wait_until 30 grep -q "serial=$W sim fault wrong_fw x4: armed" "$RUN/wrk.log"
cli wfw reserve "$W"
check "reserve $W exits 0 (got $RC)" test "$RC" = 0
one=${files[0]}
RC=0
timeout 150 "$CLI_BIN" --broker "$FARM_BROKER" --timeout 20 --name wfw --json evaluate --serials "$W" \
    --result-timeout 10 "$one" >"$RUN/wrongfw-eval.json" 2>"$RUN/wrongfw-eval.log" </dev/null || RC=$?
check "evaluate on the wrong-firmware board returns by itself (exit 0 or 1, got $RC)" bash -c "[[ $RC == 0 || $RC == 1 ]]"
WRES=$(cat "$RUN/wrongfw-eval.json")
check "its result is the right pulse count, or an error with exit status 1" jtest "$WRES" \
    "len(j['results']) == 1 and (j['results'][0].get('pulses') == ${expected}['$one'] and $RC == 0 or 'error' in j['results'][0] and $RC == 1)"
failed_or_broken() {
    "$PY" -c 'import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
ok = any(isinstance(m["payload"], dict) and (m["payload"].get("event") == "failure" or m["payload"].get("state") == "broken")
         for m in ev)
sys.exit(0 if ok else 1)' "$EV"
}
check "the holder saw a 'failure' event or the board went 'broken'" wait_until 30 failed_or_broken
cli wfw end-all
check "the holder can end what is left (got $RC)" test "$RC" = 0
check "status shows no leases at the end" status_has "j['leases'] == []"
check "all 4 boards become available again" wait_until 90 available_is 4
