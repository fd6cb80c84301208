#!/usr/bin/env bash
# A whole client session: evaluate every checked-in bitstream on 2 of 4 simulated
# boards; each result must be the sim's CRC-derived pulse count of exactly that
# file (so every byte arrived, and results are not swapped), and nothing stays
# reserved afterwards. The human output path must work too.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

e2e_farm_start 4 --sim-window-ms 50 --sim-flash-ms 50

files=("$BITS"/*.bin)
"$PY" "$E2E_DIR/mqtt_tool.py" pulses "${files[@]}" >"$RUN/expected.txt"
expected=$("$PY" -c 'import json, sys
print(json.dumps(dict(l.rsplit(" ", 1) for l in open(sys.argv[1]).read().splitlines())))' "$RUN/expected.txt")

cli session evaluate --boards 2 "${files[@]}"
check "evaluate --json --boards 2 of ${#files[@]} bitstreams exits 0 (got $RC)" test "$RC" = 0
files_json=$("$PY" -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "${files[@]}")
check "one result per file, in order" jtest "$OUT" "[r['file'] for r in j['results']] == $files_json"
check "every result's pulses are crc32(file) % 100000" jtest "$OUT" \
    "all(r.get('pulses') == int(${expected}[r['file']]) for r in j['results'])"
check "no result carries an error" jtest "$OUT" "j['ok'] and not any('error' in r for r in j['results'])"
check "the results came from at most 2 boards" jtest "$OUT" \
    "len({r['serial'] for r in j['results']}) <= 2 and all(r['serial'] for r in j['results'])"

# Ending is a request/reply that evaluate waits for: no lease may survive it.
cli session status
check "status --json after evaluate exits 0" test "$RC" = 0
check "status shows no leases after evaluate" jtest "$OUT" "j['leases'] == []"
check "status shows 1 online worker with 4 boards" jtest "$OUT" \
    "len(j['workers']) == 1 and j['workers'][0]['online'] and len(j['boards']) == 4"

# The human output: a table and a summary line.
wait_until 30 available_is 4 || true
RC=0
"$CLI_BIN" --broker "$FARM_BROKER" --timeout 20 --name session evaluate --boards 2 "${files[@]}" \
    >"$RUN/human.out" 2>>"$RUN/cli.log" || RC=$?
check "evaluate (human output) exits 0 (got $RC)" test "$RC" = 0
check "human output lists every file with its pulses" "$PY" -c 'import sys
out = open(sys.argv[1]).read()
for line in open(sys.argv[2]).read().splitlines():
    f, p = line.rsplit(" ", 1)
    if not any(l.startswith(f) and l.endswith(" %s pulses" % p) for l in out.splitlines()):
        sys.exit("missing: %s %s" % (f, p))' "$RUN/human.out" "$RUN/expected.txt"
check "human output ends with the summary (0 failed)" \
    grep -q "^${#files[@]} of ${#files[@]} bitstream(s) evaluated on 2 board(s) in .* s: ${#files[@]} ok, 0 failed$" "$RUN/human.out"

RC=0
"$CLI_BIN" --broker "$FARM_BROKER" --timeout 20 --name session status >"$RUN/status.out" 2>>"$RUN/cli.log" || RC=$?
check "status (human output) exits 0 and shows the worker" \
    bash -c "[[ $RC == 0 ]] && grep -q '^sim-worker .*online' '$RUN/status.out'"
RC=0
"$CLI_BIN" --broker "$FARM_BROKER" --timeout 20 --name session available >"$RUN/available.out" 2>>"$RUN/cli.log" || RC=$?
check "available (human output) exits 0" bash -c "[[ $RC == 0 ]] && grep -q 'board(s) available' '$RUN/available.out'"
cli session status
check "still no leases after the human run" jtest "$OUT" "j['leases'] == []"
check "all 4 boards become available again" wait_until 60 available_is 4
