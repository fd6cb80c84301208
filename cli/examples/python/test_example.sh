#!/usr/bin/env bash
# End-to-end test of the Python example client against a real embedded farm
# (broker + icefarm-ctl + a simulated worker with 4 boards).
#
#   FARM_BIN=BUILD_DIR cli/examples/python/test_example.sh
#
# Every printed pulse count must equal zlib.crc32(file) % 100000, the simulated
# boards' pulse function (proto/PROTOCOL.md section 11.2). Needs python3-paho-mqtt
# and python3-msgpack; skips (exit 77) if no Python has them.
set -euo pipefail

BUILD=${FARM_BIN:?set FARM_BIN to the build directory}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
FARM_BIN=$(cd "$BUILD" && pwd)

# The client needs Debian's paho/msgpack, which a pyenv or venv python3 on PATH may lack.
PY=
for cand in "${PYTHON:-}" python3 /usr/bin/python3; do
    if [[ -n $cand ]] && "$cand" -c 'import paho.mqtt.client, msgpack' 2>/dev/null; then
        PY=$cand
        break
    fi
done
if [[ -z $PY ]]; then
    echo "SKIP: no python3 with paho-mqtt and msgpack (apt-get install python3-paho-mqtt python3-msgpack)"
    exit 77
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/icefarm-pyexample.XXXXXX")
source "$ROOT/broker/embedded/farm.sh"
cleanup() {
    farm_stop
    rm -rf "$WORK"
}
trap cleanup EXIT

farm_start "$WORK/farm" 4 --sim-window-ms 50 --sim-flash-ms 50
farm_wait_ready 4 60

FILES=("$ROOT"/tests/bitstreams/*.bin)
OUT=$WORK/out.txt
JSON=$WORK/out.json
if ! "$PY" "$HERE/icefarm_client.py" --broker "$FARM_BROKER" --name py-example "${FILES[@]}" >"$OUT"; then
    echo "FAIL: the client exited non-zero; its output:"
    cat "$OUT"
    echo "(farm logs were in $WORK/farm)"
    tail -n 20 "$WORK/farm/ctl.log" "$WORK/farm/wrk.log" || true
    exit 1
fi
# The same once more with --json: the boards were released and must be ready again.
farm_wait_ready 4 60
"$PY" "$HERE/icefarm_client.py" --broker "$FARM_BROKER" --name py-example --json --per-message 1 \
    "${FILES[@]}" >"$JSON"

"$PY" - "$OUT" "$JSON" "${FILES[@]}" <<'EOF'
import json, sys, zlib

out, js, files = sys.argv[1], sys.argv[2], sys.argv[3:]
expected = {}
for f in files:
    with open(f, "rb") as fh:
        expected[f] = zlib.crc32(fh.read()) % 100000

passed = failed = 0
def check(what, ok):
    global passed, failed
    print("%s %s" % ("ok  " if ok else "FAIL", what))
    if ok:
        passed += 1
    else:
        failed += 1

# Plain output: one "file serial pulses" line per file, in order.
lines = [l.split() for l in open(out) if l.strip()]
check("one line per file (%d lines, %d files)" % (len(lines), len(files)), len(lines) == len(files))
seen = set()
for parts in lines:
    if len(parts) != 3 or parts[0] not in expected:
        check("well-formed line %r" % " ".join(parts), False)
        continue
    f, serial, pulses = parts
    seen.add(f)
    check("%s on %s: %s == crc32 %% 100000 (%d)" % (f, serial, pulses, expected[f]),
          pulses.isdigit() and int(pulses) == expected[f])
check("every file reported exactly once", seen == set(files) and len(lines) == len(files))
check("files spread over several boards", len({p[1] for p in lines if len(p) == 3}) > 1)

# JSON output: a list of {file, serial, pulses}.
rows = json.load(open(js))
check("JSON has one object per file", isinstance(rows, list) and len(rows) == len(files))
for r in rows if isinstance(rows, list) else []:
    check("JSON %s pulses %r == %d" % (r.get("file"), r.get("pulses"), expected.get(r.get("file"), -1)),
          "error" not in r and r.get("pulses") == expected.get(r.get("file")))

print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
EOF
