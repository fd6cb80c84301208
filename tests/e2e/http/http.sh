#!/usr/bin/env bash
# icefarm-http end to end: the embedded farm (broker/embedded/farm.sh, 4 simulated boards)
# plus icefarm-http on a free port, exercised with curl through real HTTP.
#
#   FARM_BIN=BUILD_DIR http.sh
#
# Every endpoint in the three request styles (GET + JSON body, GET/POST with
# ?json=, POST + JSON body), the error statuses (400 malformed/wrong types/missing
# fields, 403, 404, 405, 409, 413, 503), names with quotes and backslashes,
# /extend returning every serial, the SSE stream and the status page. Prints
# "ok - ..." per check and "N passed, M failed". Waits are polling loops with
# generous deadlines; nothing asserts that anything was fast.
set -euo pipefail


: "${FARM_BIN:?set FARM_BIN to the build directory}"
FARM_BIN=$(cd "$FARM_BIN" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../../broker/embedded/farm.sh
source "$HERE/../../../broker/embedded/farm.sh"

RUN=$(mktemp -d "${TMPDIR:-/tmp}/icefarm-e2e-http.XXXXXX")
source "$HERE/../../lib/checks.sh" # ok, not_ok, check, wait_until, js, jtest, jpy
source "$HERE/../../lib/http.sh"   # http, expect, expect_error, available_is, sse_has, start_http, stop_http
trap http_cleanup EXIT

# ---- the farm and the shim ----
farm_start "$RUN" 4 --sim-window-ms 50 --sim-flash-ms 50
if farm_wait_ready 4 60; then ok "the farm is up with 4 simulated boards"; else
    not_ok "the farm is up with 4 simulated boards"
    exit 1
fi
if start_http "$RUN/http.log" --timeout-ms 2000; then ok "icefarm-http listens on $URL"; else
    not_ok "icefarm-http listens on $URL"
    exit 1
fi
check "icefarm-http logs its address" wait_until 30 grep -q "listening on $URL" "$RUN/http.log"
RC=0
"$FARM_BIN/ctl/http/icefarm-http" --help >"$RUN/help.out" 2>&1 || RC=$?
check "--help exits 0 and lists --listen" bash -c "[[ $RC == 0 ]] && grep -q -- --listen '$RUN/help.out'"

check "/available reaches 4 through the shim" wait_until 30 available_is 4

# ---- read-only endpoints in every style ----
for style in bare get query post postq; do
    http $style /available '{}'
    expect 200 "/available ($style) is {\"amount\": 4}" "j == {'amount': 4}"
done
http bare /devices
expect 200 "/devices lists 4 serials" "isinstance(j, list) and len(j) == 4 and all(isinstance(s, str) for s in j)"
SERIALS=$BODY
http query /devices '{"kind": "pulsecount"}'
expect 200 "/devices with a kind filter (?json=)" "sorted(j) == sorted($SERIALS)"
http post /available '{"kind": "no-such-kind"}'
expect 200 "/available for an unknown kind is 0" "j == {'amount': 0}"
http bare /status
expect 200 "/status has workers, boards and leases" \
    "len(j['workers']) == 1 and j['workers'][0]['online'] and len(j['boards']) == 4 and j['leases'] == []"
http post /status '{}'
expect 200 "/status (POST)" "'boards' in j"

# ---- reserve in three styles; names with quotes and backslashes ----
NA='ali"ce\back\\slash'
NB="bob's \"quoted\" name"
NC='carol'
http get /reserve "$(js '{"amount": 2, "name": a[0], "kind": "pulsecount", "args": {}}' "$NA")"
expect 200 "/reserve 2 (GET + JSON body) for a name with quotes and backslashes" \
    "len(j) == 2 and all(set(r) == {'serial','ip','serverport','worker','until'} and isinstance(r['serverport'], int) and r['ip'] and r['worker'] == 'sim-worker' and r['until'] > 0 for r in j)"
A_SERIALS=$(jpy "$BODY" '[r["serial"] for r in j]')
A1=$(jpy "$BODY" 'j[0]["serial"]')
A2=$(jpy "$BODY" 'j[1]["serial"]')
check "/reserve names this shim (its socket.io face, from the Host header) as ip/serverport" jtest "$BODY" \
    "all(r['ip'] == '127.0.0.1' and r['serverport'] == $HTTP_PORT for r in j)"
http query /reserve "$(js '{"amount": 1, "name": a[0], "kind": "pulsecount", "args": {"flush_interval_seconds": 10}}' "$NB")"
expect 200 "/reserve 1 (GET ?json=) for another quoted name" "len(j) == 1"
B1=$(jpy "$BODY" 'j[0]["serial"]')
http post /reserve "$(js '{"amount": 1, "name": a[0], "kind": "pulsecount", "args": {}}' "$NC")"
expect 200 "/reserve 1 (POST + JSON body)" "len(j) == 1"
C1=$(jpy "$BODY" 'j[0]["serial"]')
http post /reserve '{"amount": 1, "name": "dave", "kind": "pulsecount", "args": {}}'
expect_error 409 "/reserve with no board left is 409 with an error" "not enough"
http bare /available
expect 200 "/available is 0 with every board reserved" "j == {'amount': 0}"
http bare /status
expect 200 "/status lists the 4 leases with their holders" \
    "sorted(l['client'] for l in j['leases']) == sorted([$(js 'a[0]' "$NA"), $(js 'a[0]' "$NA"), $(js 'a[0]' "$NB"), 'carol'])"

# ---- extend: every serial comes back (the old API returned only the first) ----
http post /extend "$(js '{"name": a[0], "serials": json.loads(a[1])}' "$NA" "$A_SERIALS")"
expect 200 "/extend returns ALL extended serials" "sorted(j) == sorted($A_SERIALS)"
http query /extend "$(js '{"name": a[0], "serials": json.loads(a[1]), "duration_s": 600}' "$NA" "$A_SERIALS")"
expect 200 "/extend (?json=) with duration_s" "sorted(j) == sorted($A_SERIALS)"
http get /extendall "$(js '{"name": a[0]}' "$NA")"
expect 200 "/extendall returns every serial of the client" "sorted(j) == sorted($A_SERIALS)"
http post /extend "$(js '{"name": a[0], "serials": [a[1]]}' "$NC" "$A1")"
expect 200 "/extend of another client's board extends nothing" "j == []"

# ---- reboot / delete: ownership and unknown serials ----
http post /reboot "$(js '{"name": a[0], "serials": [a[1]]}' "$NB" "$A1")"
expect_error 403 "/reboot of another client's board is 403" "another client"
http post /delete "$(js '{"name": a[0], "serials": [a[1]]}' "$NB" "$A1")"
expect_error 403 "/delete of another client's board is 403" "another client"
http post /reboot "$(js '{"name": a[0], "serials": ["NO-SUCH-SERIAL"]}' "$NA")"
expect_error 404 "/reboot of an unknown serial is 404" "NO-SUCH-SERIAL"
http post /reserveserials "$(js '{"name": a[0], "serials": ["NO-SUCH-SERIAL"], "kind": "pulsecount", "args": {}}' "$NA")"
expect_error 404 "/reserveserials of an unknown serial is 404" "NO-SUCH-SERIAL"
http post /reserveserials "$(js '{"name": a[0], "serials": [a[1]], "kind": "pulsecount", "args": {}}' "$NA" "$C1")"
expect_error 409 "/reserveserials of a reserved board is 409" "$C1"
http query /reboot "$(js '{"name": a[0], "serials": [a[1]]}' "$NA" "$A1")"
expect 200 "/reboot of one's own board (?json=) lists it" "j == [$(js 'a[0]' "$A1")]"

# ---- SSE: board events and reservation end for the quoted name ----
SSE_OUT=$RUN/sse.out
curl -sN --max-time 240 "$URL/events?name=$(urlenc "$NA")" >"$SSE_OUT" 2>>"$RUN/curl.log" &
SSE_PID=$!
BG+=("$SSE_PID")
check "GET /events opens a text/event-stream" wait_until 30 grep -q '^: icefarm events' "$SSE_OUT"
check "the event stream is logged as opened" wait_until 30 grep -q 'event stream opened' "$RUN/http.log"
# A board event of a held board: the reboot above makes the board initialize again.
http post /reboot "$(js '{"name": a[0], "serials": [a[1]]}' "$NA" "$A2")"
expect 200 "/reboot (POST) of one's own board" "j == [$(js 'a[0]' "$A2")]"
check "the stream carries the held board's \"initialized\" event" wait_until 60 sse_has initialized "$A2"
http get /end "$(js '{"name": a[0], "serials": [a[1]]}' "$NA" "$A1")"
expect 200 "/end (GET + JSON body) ends one board" "j == [$(js 'a[0]' "$A1")]"
check "curl -N /events receives \"reservation end\" after /end" wait_until 60 sse_has "reservation end" "$A1"
kill "$SSE_PID" 2>/dev/null || true
wait "$SSE_PID" 2>/dev/null || true
check "a closed event stream is cleaned up" wait_until 60 grep -q 'event stream closed' "$RUN/http.log"

http query /endall "$(js '{"name": a[0]}' "$NA")"
expect 200 "/endall (?json=) ends the rest" "j == [$(js 'a[0]' "$A2")]"
http post /end "$(js '{"name": a[0], "serials": [a[1]]}' "$NB" "$B1")"
expect 200 "/end (POST)" "j == [$(js 'a[0]' "$B1")]"
http postq /endall "$(js '{"name": a[0]}' "$NC")"
expect 200 "/endall (POST ?json=)" "j == [$(js 'a[0]' "$C1")]"
http post /endall '{"name": "nobody"}'
expect 200 "/endall with nothing reserved is an empty list" "j == []"
check "all 4 boards come back" wait_until 60 available_is 4
CODE=$(curl -s -o "$RUN/body" -w '%{http_code}' -H 'Host: farm.example:8443' -X POST \
    --data-binary "$(js '{"amount": 1, "name": "hosty", "kind": "pulsecount", "args": {}}')" "$URL/reserve") || CODE=000
BODY=$(cat "$RUN/body")
expect 200 "/reserve with Host: farm.example:8443 hands out that host and port" \
    "j[0]['ip'] == 'farm.example' and j[0]['serverport'] == 8443"
http post /endall '{"name": "hosty"}'
expect 200 "(hosty ends its board)" "len(j) == 1"
check "all 4 boards come back after hosty" wait_until 60 available_is 4

http postq /reserveserials "$(js '{"name": a[0], "serials": [a[1], a[2]], "kind": "pulsecount", "args": {}}' "$NB" "$A1" "$B1")"
expect 200 "/reserveserials (POST ?json=) reserves exactly those boards" \
    "sorted(r['serial'] for r in j) == sorted([$(js 'a[0]' "$A1"), $(js 'a[0]' "$B1")]) and all('ip' in r and 'serverport' in r for r in j)"
http get /endall "$(js '{"name": a[0]}' "$NB")"
expect 200 "/endall after /reserveserials" "sorted(j) == sorted([$(js 'a[0]' "$A1"), $(js 'a[0]' "$B1")])"

# ---- bad input: 400 with a message naming the problem, never 500 ----
http post /reserve '{"amount": 2,'
expect_error 400 "malformed JSON body is 400" "malformed JSON"
http query /reserve '{"amount": '
expect_error 400 "malformed ?json= is 400" "malformed JSON"
http post /reserve '[1, 2]'
expect_error 400 "a JSON array instead of an object is 400" "JSON object"
http post /reserve '{"amount": "2", "name": "x", "kind": "pulsecount", "args": {}}'
expect_error 400 "amount \"2\" (a string) is 400" "amount"
http post /reserve '{"amount": true, "name": "x", "kind": "pulsecount", "args": {}}'
expect_error 400 "amount true is 400 (true is not an integer here)" "amount"
http post /reserve '{"amount": 1.5, "name": "x", "kind": "pulsecount", "args": {}}'
expect_error 400 "amount 1.5 is 400" "amount"
http post /reserve '{"amount": 0, "name": "x", "kind": "pulsecount", "args": {}}'
expect_error 400 "amount 0 is 400" "amount"
http post /reserve '{"name": "x", "kind": "pulsecount", "args": {}}'
expect_error 400 "missing amount is 400 naming the field" '"amount"'
http post /reserve '{"amount": 1, "kind": "pulsecount", "args": {}}'
expect_error 400 "missing name is 400 naming the field" '"name"'
http post /reserve '{"amount": 1, "name": null, "kind": "pulsecount", "args": {}}'
expect_error 400 "name null is 400 (the old API gave 500)" '"name"'
http post /reserve '{"amount": 1, "name": "x", "args": {}}'
expect_error 400 "missing kind is 400 naming the field" '"kind"'
http post /reserve '{"amount": 1, "name": "x", "kind": "pulsecount", "args": [1]}'
expect_error 400 "args that is not an object is 400" '"args"'
http post /reserve '{"amount": 1, "name": "a/b", "kind": "pulsecount", "args": {}}'
expect_error 400 "a name with '/' is 400" '"name"'
http post /end '{"name": "x", "serials": "ABC"}'
expect_error 400 "serials that is not a list is 400" '"serials"'
http post /end '{"name": "x", "serials": [1, 2]}'
expect_error 400 "serials with a number in it is 400" "serials[0]"
http post /end '{"name": "x"}'
expect_error 400 "/end without serials is 400 naming the field" '"serials"'
http post /extendall '{}'
expect_error 400 "/extendall without name is 400" '"name"'
http post /reboot '{"serials": ["X"]}'
expect_error 404 "/reboot without a name (the documented form) reaches control: unknown serial is 404" 'unknown serial X'
http post /reboot '{"serials": "X"}'
expect_error 400 "/reboot with serials that is not a list is 400" '"serials"'
http post /delete '{"name": "x"}'
expect_error 400 "/delete without serials is 400" '"serials"'
http post /reserve '{"amount": 1, "amount": 2, "name": "x", "kind": "pulsecount"}'
expect_error 400 "duplicate keys are 400" "malformed JSON"
RC=0
CODE=$(curl -s -o "$RUN/body" -w '%{http_code}' -X POST --data-binary '{"name": "x"}' \
    "$URL/endall?json=$(urlenc '{"name": "x"}')") || CODE=000
BODY=$(cat "$RUN/body")
expect_error 400 "arguments both in ?json= and in the body are 400" "not both"
python3 -c 'import json; print(json.dumps({"name": "x", "pad": "y" * 70000}))' >"$RUN/big.json"
CODE=$(curl -s -o "$RUN/body" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data-binary "@$RUN/big.json" "$URL/endall") || CODE=000
BODY=$(cat "$RUN/body")
expect_error 413 "a body over 64 KiB is 413" "larger than"
CODE=$(curl -s -o "$RUN/body" -w '%{http_code}' -X POST -H 'Transfer-Encoding: chunked' \
    -H 'Content-Type: application/json' --data-binary "@$RUN/big.json" "$URL/endall") || CODE=000
BODY=$(cat "$RUN/body")
expect_error 413 "a chunked body over 64 KiB is 413" "larger than"
http bare '/events'
expect_error 400 "/events without a name is 400" "name"
http bare "/events?name=a%2Fb"
expect_error 400 "/events with an invalid name is 400" "name"

# ---- methods and paths ----
http PUT /reserve '{}'
expect_error 405 "PUT /reserve is 405" "method not allowed"
check "405 carries an Allow header" bash -c \
    "curl -s -D - -o /dev/null -X DELETE '$URL/end' | tr -d '\r' | grep -qi '^Allow: GET, POST$'"
http POST / '{}'
expect_error 405 "POST / is 405 (the page is read-only)" "method not allowed"
http bare /nope
expect_error 404 "an unknown path is 404" "/nope"
http bare /reserve/extra
expect_error 404 "a path under an endpoint is 404" "unknown path"

# ---- the dashboard (its bundle: ctl/http/dashboard; without npm, a page that says how to build it) ----
CODE=$(curl -s -D "$RUN/page.hdr" -o "$RUN/page.html" -w '%{http_code}' "$URL/") || CODE=000
check "GET / is 200 text/html" bash -c "[[ $CODE == 200 ]] && grep -qi '^Content-Type: text/html' '$RUN/page.hdr'"
check "the page has no external assets" bash -c "! grep -Eq '(src|href)=\"(https?:)?//' '$RUN/page.html'"
check "the page has no state-changing links (no end/reboot/delete URLs)" bash -c \
    "! grep -Eq 'action=|\\?json=|href=\"[^\"]*/(end|reboot|delete|reserve)' '$RUN/page.html'"
check "the page forbids other origins' scripts and framing (Content-Security-Policy)" \
    grep -qi "^Content-Security-Policy: default-src 'self'.*frame-ancestors 'none'" "$RUN/page.hdr"
if [[ -s $FARM_BIN/ctl/http/dashboard/dashboard.js ]]; then
    check "/ is the bundled dashboard" grep -q 'src="dashboard.js"' "$RUN/page.html"
    check "/dashboard.js is served as JavaScript" bash -c \
        "curl -sf -D - -o /dev/null '$URL/dashboard.js' | tr -d '\r' | grep -qi '^Content-Type: text/javascript'"
    check "/THIRD-PARTY-NOTICES.txt is served with the bundle" bash -c \
        "curl -sf '$URL/THIRD-PARTY-NOTICES.txt' | grep -q '^mqtt '"
else
    check "without a bundle / says how to build it" grep -q "target icefarm-dashboard" "$RUN/page.html"
fi
check "/config.json tells the page the broker's websocket URL (none without --ws-url) and that the farm is anonymous" \
    bash -c "curl -sf '$URL/config.json' | grep -Fq '{\"broker\":null,\"secured\":false,'"
for bad in /../CMakeCache.txt /%2e%2e/CMakeCache.txt /.hidden.js /nope.js /index.php; do
    check "GET $bad is 404 (only the bundle's own files are served)" bash -c \
        "[[ \$(curl -s --path-as-is -o /dev/null -w '%{http_code}' '$URL$bad') == 404 ]]"
done

# ---- delete: one's own free board is fine ----
http post /delete "$(js '{"name": a[0], "serials": [a[1]]}' "$NC" "$C1")"
expect 200 "/delete of a free board lists it" "j == [$(js 'a[0]' "$C1")]"

# ---- the request log ----
check "one log line per request: method, path, client, status, duration" \
    grep -Eq 'POST /reserve client=carol status=200 [0-9.]+ ms' "$RUN/http.log"
check "quoted names are escaped in the log" grep -Fq 'client="ali\"ce\\back' "$RUN/http.log"

# ---- control unreachable: 503 ----
CTL_PID=${FARM_PIDS[1]}
kill -TERM "$CTL_PID"
wait "$CTL_PID" 2>/dev/null || true
http bare /available
expect_error 503 "/available with icefarm-ctl stopped is 503" "control"
http post /reserve '{"amount": 1, "name": "x", "kind": "pulsecount", "args": {}}'
expect_error 503 "/reserve with icefarm-ctl stopped is 503" "control"
http post /reserve '{"amount": "x", "name": "x", "kind": "pulsecount"}'
expect_error 400 "bad input is still 400 without control" "amount"
# names, serials and kinds by the shared rules (proto/base names.h), C1 controls included
http post /reserve '{"amount": 1, "name": "x", "kind": "pulse\u0085count", "args": {}}'
expect_error 400 "a kind with a C1 control character is 400 from the shim itself (control's rule)" '"kind"'
http post /reserve '{"amount": 1, "name": "a\u0085b", "kind": "pulsecount", "args": {}}'
expect_error 400 "a name with a C1 control character is 400 (the shared name rule)" '"name"'
http post /end '{"name": "x", "serials": ["A\u0085B"]}'
expect_error 400 "a serial with a C1 control character is 400 (the shared serial rule)" "serials[0]"
