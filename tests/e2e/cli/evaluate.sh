#!/usr/bin/env bash
# icefarm-cli evaluate as it streams: --ndjson gives one line per result as it
# is measured (not all at the end) and a summary line; --json is one document
# (the envelope, every result with its reason, a summary); Ctrl-C exits 130 with
# an honest count; boards and kinds are checked first and refused at once.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

# Slow boards (0.4 s per count) so that a run of several bitstreams takes seconds.
e2e_farm_start 2 --sim-window-ms 400 --sim-flash-ms 50
mapfile -t ALL < <(find "$BITS" -name '*.bin' | sort)
"$PY" "$E2E_DIR/mqtt_tool.py" pulses "${ALL[@]}" >"$RUN/expected.txt"
expected=$("$PY" -c 'import json, sys; print(json.dumps(dict(l.rsplit(" ", 1) for l in open(sys.argv[1]).read().splitlines())))' "$RUN/expected.txt")
files=("${ALL[@]}" "${ALL[@]}") # 10 bitstreams

# stamp FILE: copies stdin to FILE, each line prefixed with the ms it was read at.
stamp() { "$PY" -u -c 'import sys, time
out = open(sys.argv[1], "w", buffering=1)
for line in sys.stdin:
    out.write("%d %s" % (time.time() * 1000, line))' "$1"; }

# ---- --ndjson streams ----
RC=0
timeout 120 "$CLI_BIN" --broker "$FARM_BROKER" --timeout 20 --name nd evaluate --ndjson --boards 1 "${files[@]}" \
    2>"$RUN/nd.err" </dev/null | stamp "$RUN/nd.txt" || RC=$?
check "evaluate --ndjson of 10 bitstreams on 1 board exits 0 (rc $RC)" test "$RC" = 0
check "11 lines: one per result, then the summary" test "$(wc -l <"$RUN/nd.txt")" = 11
check "each result line is a JSON object with its file, board and the right count" "$PY" - "$RUN/nd.txt" "$expected" <<'PY'
import json, sys
lines = [json.loads(l.split(" ", 1)[1]) for l in open(sys.argv[1])]
want = json.loads(sys.argv[2])
res = lines[:-1]
sys.exit(0 if len(res) == 10 and all(r["ok"] and r["serial"] and r["pulses"] == int(want[r["file"]]) for r in res)
         and sorted(r["index"] for r in res) == list(range(10)) else 1)
PY
check "the last line is the summary: 10 done, 0 failed" "$PY" - "$RUN/nd.txt" <<'PY'
import json, sys
s = json.loads(open(sys.argv[1]).read().splitlines()[-1].split(" ", 1)[1])["summary"]
sys.exit(0 if s["total"] == 10 and s["done"] == 10 and s["failed"] == 0 and not s["interrupted"] else 1)
PY
check "the first result came out seconds before the last (streamed, not batched at the end)" "$PY" - "$RUN/nd.txt" <<'PY'
import sys
t = [int(l.split(" ", 1)[0]) for l in open(sys.argv[1])]
sys.exit(0 if t[-2] - t[0] >= 2000 else 1)
PY

# ---- --json: one document, reasons included ----
# The board's firmware loses the first bitstream's transfer to its watchdog on
# every try (a sim fault), so that one fails with the worker's reason.
wait_until 60 available_is 2 || true
cli js reserve --amount 1
J=$(serials_of "$OUT")
wait_until 30 status_has "any(b['serial'] == '$J' and b['state'] == 'reserved' for b in j['boards'])" || true
sim_fault "$J" watchdog 3
wait_until 10 grep -q "serial=$J sim fault watchdog x3: armed" "$RUN/wrk.log" || true
cli js evaluate --serials "$J" --window 1 "${ALL[0]}" "${ALL[1]}"
check "evaluate --json with a result that fails exits 1 (rc $RC)" test "$RC" = 1
check "one document: the envelope, both results in file order, a summary" jtest "$OUT" \
    "j['ok'] is False and j['exit'] == 1 and [r['file'] for r in j['results']] == ['${ALL[0]}', '${ALL[1]}'] and j['summary']['failed'] == 1 and j['summary']['done'] == 2"
check "the failed one carries the worker's reason, the other its count" jtest "$OUT" \
    "not j['results'][0]['ok'] and 'atchdog' in j['results'][0]['error'] and j['results'][1]['pulses'] == int(${expected}['${ALL[1]}'])"
cli js end-all

# ---- Ctrl-C: exit 130 and an honest count ----
wait_until 60 available_is 2 || true
timeout 120 "$CLI_BIN" --broker "$FARM_BROKER" --timeout 20 --name cc evaluate --ndjson --boards 1 "${files[@]}" \
    >"$RUN/cc.out" 2>"$RUN/cc.err" </dev/null &
CC=$!
E2E_BG+=("$CC")
wait_until 60 grep -q '"pulses"' "$RUN/cc.out" || true
kill -INT "$CC"
sleep 0.2
kill -INT "$CC" 2>/dev/null || true # an impatient second Ctrl-C changes nothing
t0=$SECONDS
RC=0
wait "$CC" || RC=$?
check "Ctrl-C (SIGINT, twice) mid-run exits 130 (rc $RC) within 10 s" test "$RC" = 130 -a $((SECONDS - t0)) -le 10
check "... its summary says interrupted, and done + not evaluated = 10" "$PY" - "$RUN/cc.out" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
s = lines[-1]["summary"]
done = [l for l in lines[:-1] if l.get("ok")]
sys.exit(0 if s["interrupted"] and s["done"] + s["not_evaluated"] == 10 and s["not_evaluated"] > 0
         and s["done"] == len(done) else 1)
PY
check "... and stderr says how many were and were not evaluated" grep -q "interrupted: [0-9]* of 10 evaluated .*not evaluated" "$RUN/cc.err"
check "... and the boards it reserved are given back" wait_until 30 status_has "not [l for l in j['leases'] if l['client'] == 'cc']"

# ---- refused at once: unknown board, someone else's, a free one, a bad kind ----
cli owner reserve --amount 1
OWNED=$(serials_of "$OUT")
refused() { # refused DESCRIPTION PATTERN ARGS...
    local desc=$1 pat=$2 t0 rc=0
    shift 2
    t0=$SECONDS
    timeout 30 "$CLI_BIN" --broker "$FARM_BROKER" --timeout 20 --name other evaluate "$@" >"$RUN/x.out" 2>"$RUN/x.err" \
        </dev/null || rc=$?
    check "$desc: exit 1 (rc $rc) at once ($((SECONDS - t0)) s)" test "$rc" = 1 -a $((SECONDS - t0)) -le 5
    check "$desc: says \"$pat\"" grep -q -- "$pat" "$RUN/x.err"
}
refused "an unknown serial" "unknown serial NOSUCH (404" --serials NOSUCH "${ALL[0]}"
refused "someone else's board" "serial $OWNED is reserved by another client (403: owner holds it, you are other)" \
    --serials "$OWNED" "${ALL[0]}"
wait_until 60 available_is 1 || true
cli e2e-observer devices
FREE=$(jpy "$OUT" "j['serials'][0]")
refused "a board nobody reserved" "serial $FREE is not reserved by you (403)" --serials "$FREE" "${ALL[0]}"
refused "--kind bogus" 'unknown kind "bogus"; the farm offers: pulsecount, variance' --kind bogus "${ALL[0]}"
