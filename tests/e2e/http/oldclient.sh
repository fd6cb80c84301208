#!/usr/bin/env bash
# Old iCEFARM client scripts, unmodified in kind, against icefarm-http's
# socket.io face (ctl/http/README.md): tests/e2e/http/oldclient.py is a client
# built the way iCEFARM's EventServer/BaseClient/BatchClient are, on Debian's
# python3-socketio and python3-requests.
#
#   FARM_BIN=BUILD_DIR oldclient.sh
#
# Anonymous farm: a full session (reserve, evaluate, extend, reboot, end), the
# VarMaxClient's kind variance with and without the waveform, a
# reserve(wait_for_available=True) that waits for boards freed later, a request
# for somebody else's board, and the Engine.IO details with plain HTTP (no
# upgrades, PINGs, 16 packets per response, binary events across POSTs, a
# malformed packet refused). Secured farm: the same session with credentials in
# the URL (http://alice:PW@host:port; the worker address carries a token),
# bob's socket cannot command alice's board, and the gateway's commands for a
# board its caller does not hold are refused. Prints "ok - ..." per check and
# "N passed, M failed"; every wait is bounded (60 s) by the client itself.
set -euo pipefail

FARM_BIN=${1:-${FARM_BIN:-}}
: "${FARM_BIN:?usage: FARM_BIN=BUILD_DIR oldclient.sh}"
FARM_BIN=$(cd "$FARM_BIN" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../../broker/embedded/farm.sh
source "$HERE/../../../broker/embedded/farm.sh"
PY=/usr/bin/python3 # Debian's python3-socketio and python3-requests live there
RUN=$(mktemp -d "${TMPDIR:-/tmp}/icefarm-e2e-oldclient.XXXXXX")
chmod 755 "$RUN"
source "$HERE/../../lib/checks.sh" # ok, not_ok, check, wait_until
source "$HERE/../../lib/http.sh"   # start_http, stop_http, http_cleanup
BITS=("$HERE/../../bitstreams/clk_2khz.bin" "$HERE/../../bitstreams/clk_8khz.bin" "$HERE/../../bitstreams/clk_32khz.bin")

# py ARGS...: oldclient.py; its ok/not ok lines count here.
py() {
    relay < <(timeout 300 "$PY" "$HERE/oldclient.py" "$@" 2>>"$RUN/oldclient.log" || echo "not ok - oldclient.py $1 exited with status $?")
}

trap http_cleanup EXIT
if ! "$PY" -c 'import socketio, requests, msgpack' 2>/dev/null; then
    echo "skip: /usr/bin/python3 lacks python3-socketio, python3-requests or python3-msgpack"
    exit 77
fi
farm_sanitized_broker "$RUN"

# ==== the anonymous farm ====
farm_start "$RUN/anon" 4 --sim-window-ms 50 --sim-flash-ms 50
if farm_wait_ready 4 60 && start_http "$RUN/anon/http.log" --ping-interval-ms 3000; then ok "anonymous farm with 4 boards and icefarm-http on $URL"; else
    not_ok "anonymous farm with 4 boards and icefarm-http"
    exit 1
fi
py session "$URL" old-alice "${BITS[@]}"
py varmax "$URL" old-vera "${BITS[@]:0:2}"
check "the shim logs the client's two sockets" grep -q 'client=old-alice socket.io socket 2 connected' "$RUN/anon/http.log"
curl -s -X POST -d '{"amount": 4, "name": "hog", "kind": "pulsecount", "args": {}, "wait_ms": 30000}' "$URL/reserve" \
    >"$RUN/hog.json"
check "hog takes all 4 boards" python3 -c 'import json,sys; sys.exit(0 if len(json.load(open(sys.argv[1]))) == 4 else 1)' "$RUN/hog.json"
py wait "$URL" old-bob hog 2
curl -s -X POST -d '{"amount": 1, "name": "carol", "kind": "pulsecount", "args": {}}' "$URL/reserve" >"$RUN/carol.json"
C1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["serial"])' "$RUN/carol.json")
py refuse "$URL" old-mallory "$C1"
check "the refusal is logged with the serial and the client" \
    grep -q "serial=$C1 client=old-mallory socket.io evaluate refused: serial $C1 is not reserved by you" "$RUN/anon/http.log"
py raw "$URL"
check "the malformed packet's reason is logged" grep -q 'malformed payload: binary packet' "$RUN/anon/http.log"
stop_http "anonymous farm"
farm_stop

# ==== the secured farm: credentials in the URL ====
FARM_SECURE=1 farm_start "$RUN/secure" 4 --sim-window-ms 50 --sim-flash-ms 50
if farm_wait_ready 4 60 && start_http "$RUN/secure/http.log" --ping-interval-ms 3000 "${FARM_HTTP_AUTH[@]}"; then
    ok "secured farm with 4 boards and icefarm-http (--auth broker) on $URL"
else
    not_ok "secured farm with 4 boards and icefarm-http"
    exit 1
fi
declare -A PW=()
for u in "${FARM_USERS[@]}"; do PW[${u%% *}]=${u#* }; done
AURL=http://alice:${PW[alice]}@${URL#http://}
BURL=http://bob:${PW[bob]}@${URL#http://}
py session "$AURL" alice "${BITS[@]}"
check "alice's worker socket logged in with the token of her /reserve reply" \
    grep -q 'client=alice new token for the socket.io worker address' "$RUN/secure/http.log"
check "no password reaches the shim's log" bash -c "! grep -Fq -e '${PW[alice]}' -e '${PW[bob]}' '$RUN/secure/http.log'"
curl -s -u "alice:${PW[alice]}" -X POST -d '{"amount": 1, "kind": "pulsecount", "args": {}}' "$URL/reserve" >"$RUN/a.json"
A1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["serial"])' "$RUN/a.json")
py refuse "$BURL" bob "$A1"
CODE=$(curl -s -o "$RUN/body" -w '%{http_code}' "$URL/socket.io/?EIO=4&transport=polling") || CODE=000
check "secured: a handshake without credentials is 401" test "$CODE" = 401
check "secured: a wrong client_id for the login is refused" "$PY" - "$BURL" <<'PYEOF'
import sys, socketio
c = socketio.Client()
try:
    c.connect(sys.argv[1], auth={"client_id": "alice"}, wait_timeout=10)
    sys.exit(1)
except socketio.exceptions.ConnectionError:
    sys.exit(0)
PYEOF
check "... with the reason in the log" grep -q 'CONNECT refused: you are bob; auth.client_id must be your user name' \
    "$RUN/secure/http.log"
curl -s -u "alice:${PW[alice]}" -X POST "$URL/endall" >/dev/null
stop_http "secured farm"
