#!/usr/bin/env bash
# "Who may do what to a board" (proto/PROTOCOL.md section 2) through the
# documented HTTP API, in both farms, with curl:
#
#   table.sh BUILD_DIR        (or FARM_BIN=BUILD_DIR table.sh)
#
# Anonymous farm (icefarm-http --auth none): /reboot by the holder; /reboot and
# /delete of another client's board are 403; the documented /reboot with serials
# only acts for each board's holder and is logged; /delete of a free board (with
# or without a name) and of one's own board (which ends the lease).
# Secured farm (TLS, passwords, the ACL plugin; alice and bob are clients, oscar
# an operator): the holder or an operator may reboot, only an operator may
# delete (a deleted leased board's holder hears "reservation end"), an operator
# acts through icefarm-cli over MQTT as well, and nobody forges the operator role
# with a user property. POST /log (the old client's RemoteLogger) in both.
# Prints "ok - ..." per check and "N passed, M failed". Waits are polling loops
# with generous deadlines; nothing asserts that anything was fast.
set -euo pipefail

FARM_BIN=${1:-${FARM_BIN:-}}
: "${FARM_BIN:?usage: table.sh BUILD_DIR}"
FARM_BIN=$(cd "$FARM_BIN" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../../broker/embedded/farm.sh
source "$HERE/../../../broker/embedded/farm.sh"
RUN=$(mktemp -d "${TMPDIR:-/tmp}/icefarm-e2e-table.XXXXXX")
chmod 755 "$RUN" # the secured broker drops root before it reads its files under here
source "$HERE/../../lib/checks.sh" # ok, not_ok, check, wait_until, js, jtest, jpy
source "$HERE/../../lib/http.sh"   # http, expect, expect_error, available_is, start_http, stop_http
trap http_cleanup EXIT

leases() { # the leases as "serial=client" words, sorted
    local saved=("${AUTH[@]}")
    http GET /status
    AUTH=("${saved[@]}")
    jpy "$BODY" '" ".join(sorted(l["serial"] + "=" + l["client"] for l in j["leases"]))'
}
no_lease_on() { [[ " $(leases) " != *" $1="* ]]; }

farm_sanitized_broker "$RUN" # an ASan build's plugin needs the sanitizer runtimes in the broker

# reserve NAME: one pulsecount board for NAME; prints its serial.
reserve() {
    http POST /reserve "{\"amount\": 1, \"name\": \"$1\", \"kind\": \"pulsecount\", \"args\": {}}"
    [[ $CODE == 200 ]] && jpy "$BODY" 'j[0]["serial"]'
}

# ==== the anonymous farm ====
farm_start "$RUN/anon" 3 --sim-window-ms 50 --sim-flash-ms 50
if farm_wait_ready 3 60 && farm_start_http; then ok "anonymous farm with 3 boards and icefarm-http on $FARM_HTTP"; else
    not_ok "anonymous farm with 3 boards and icefarm-http"
    exit 1
fi
HTTP_PID=${FARM_PIDS[-1]}
URL=$FARM_HTTP
HLOG=$RUN/anon/http.log
check "3 boards available through the shim" wait_until 30 available_is 3
{ A1=$(reserve alice) && B1=$(reserve bob); } || true
check "alice and bob reserve one board each" test -n "$A1" -a -n "$B1"
http GET /devices
F1=$(jpy "$BODY" 'j[0]')

http POST /reboot "{\"name\": \"alice\", \"serials\": [\"$A1\"]}"
expect 200 "anonymous: the holder reboots her board" "j == ['$A1']"
http POST /reboot "{\"name\": \"bob\", \"serials\": [\"$A1\"]}"
expect_error 403 "anonymous: bob's /reboot of alice's board is 403" "another client"
http POST /reboot "{\"name\": \"alice\", \"serials\": [\"$F1\"]}"
expect_error 403 "anonymous: /reboot of a free board is 403" "not reserved"
http POST /reboot "{\"serials\": [\"$A1\"]}"
expect 200 "anonymous: the documented /reboot {serials} acts for the holder" "j == ['$A1']"
check "... and is logged with the holder" \
    grep -q "serial=$A1 client=alice reboot without a name from 127.0.0.1: acting for the holder" "$HLOG"
CODE=$(curl -s -o "$RUN/body" -w '%{http_code}' -X GET -H 'Content-Type: application/json' \
    --data-binary "{\"serials\": [\"$A1\", \"$B1\"]}" "$URL/reboot") || CODE=000
BODY=$(cat "$RUN/body")
expect 200 "anonymous: GET /reboot with a JSON body (the old client) for two holders' boards" \
    "sorted(j) == sorted(['$A1', '$B1'])"
check "control rebooted B1 for bob" wait_until 30 grep -q "serial=$B1 client=bob reboot requested" "$RUN/anon/ctl.log"
http POST /reboot "{\"serials\": [\"$F1\"]}"
expect_error 403 "anonymous: /reboot {serials} of a free board is 403" "not reserved"
http POST /reboot '{"serials": []}'
expect 200 "anonymous: /reboot of no serials is 200 []" "j == []"

http POST /delete "{\"name\": \"bob\", \"serials\": [\"$A1\"]}"
expect_error 403 "anonymous: bob's /delete of alice's board is 403" "another client"
http POST /delete "{\"serials\": [\"$A1\"]}"
expect_error 403 "anonymous: /delete {serials} of a held board is 403" "another client"
check "... and alice still holds it" bash -c "[[ ' $(leases) ' == *' $A1=alice '* ]]"
http POST /delete "{\"serials\": [\"$F1\"]}"
expect 200 "anonymous: /delete {serials} of a free board" "j == ['$F1']"
http POST /delete "{\"name\": \"alice\", \"serials\": [\"$A1\"]}"
expect 200 "anonymous: the holder deletes her own board" "j == ['$A1']"
check "... which ends her lease" wait_until 30 no_lease_on "$A1"
http POST /endall '{"name": "bob"}'
check "all 3 boards come back after the deletes and bob's /endall" wait_until 60 available_is 3

http POST /log '{"name": "alice", "logs": [[20, "hello from the old client"], [40, "an error line"], ["bad"], [30]]}'
expect 200 "anonymous: POST /log (RemoteLogger) logs the well-formed lines" "j == {'logged': 2, 'skipped': 2}"
check "... each as one log line with client= and the address" \
    grep -q 'remote log client=alice from 127.0.0.1: hello from the old client' "$HLOG"
check "... at the level it was sent with" grep -q 'ERROR remote log client=alice from 127.0.0.1: an error line' "$HLOG"
http GET '/log?json=%7B%22name%22%3A%22bob%22%2C%22logs%22%3A%5B%5B10%2C%22a%5Cnline%22%5D%5D%7D'
expect 200 "anonymous: GET /log?json= works too (control characters blanked)" "j == {'logged': 1, 'skipped': 0}"
check "... without splitting the log line" grep -q 'remote log client=bob from 127.0.0.1: a line' "$HLOG"
http POST /log '{"name": "alice"}'
expect_error 400 "anonymous: /log without logs is 400" '"logs"'
stop_http "anonymous farm"
farm_stop

# ==== the secured farm ====
FARM_SECURE=1 farm_start "$RUN/secure" 3 --sim-window-ms 50 --sim-flash-ms 50
if farm_wait_ready 3 60 && farm_start_http; then ok "secured farm with 3 boards and icefarm-http on $FARM_HTTP"; else
    not_ok "secured farm with 3 boards and icefarm-http"
    exit 1
fi
HTTP_PID=${FARM_PIDS[-1]}
URL=$FARM_HTTP
HLOG=$RUN/secure/http.log
declare -A PW=()
for u in "${FARM_USERS[@]}"; do PW[${u%% *}]=${u#* }; done
check "the secured farm has alice, bob and the operator oscar" test -n "${PW[alice]:-}" -a -n "${PW[bob]:-}" -a -n "${PW[oscar]:-}"
check "oscar's role is operator" grep -qx 'oscar operator' "$RUN/secure/etc/roles"
as() { AUTH=(-u "$1:${PW[$1]}"); }
as alice
check "3 boards available to alice" wait_until 30 available_is 3
A1=$(reserve alice) || true
as bob
B1=$(reserve bob) || true
check "alice and bob reserve one board each" test -n "$A1" -a -n "$B1"
http GET /devices
F1=$(jpy "$BODY" 'j[0]')

as alice
http POST /reboot "{\"serials\": [\"$A1\"]}"
expect 200 "secured: the holder reboots her board" "j == ['$A1']"
http POST /reboot "{\"serials\": [\"$B1\"]}"
expect_error 403 "secured: alice's /reboot of bob's board is 403" "another client"
as oscar
http POST /reboot "{\"serials\": [\"$B1\"]}"
expect 200 "secured: the operator reboots bob's board" "j == ['$B1']"
check "control logs the operator's reboot of a board held by bob" \
    wait_until 30 grep -q "serial=$B1 client=oscar operator reboot of a board held by bob" "$RUN/secure/ctl.log"

as alice
http POST /delete "{\"serials\": [\"$A1\"]}"
expect_error 403 "secured: the holder may not delete her board" "only an operator"
as bob
http POST /delete "{\"serials\": [\"$F1\"]}"
expect_error 403 "secured: a client may not delete a free board" "only an operator"
as oscar
http POST /delete "{\"serials\": [\"$F1\"]}"
expect 200 "secured: the operator deletes a free board" "j == ['$F1']"
http POST /delete "{\"serials\": [\"$B1\"]}"
expect 200 "secured: the operator deletes bob's board" "j == ['$B1']"
as alice
check "... which ends bob's lease" wait_until 30 no_lease_on "$B1"

# The operator over MQTT (icefarm-cli), not only through the shim.
cli_as() { # USER ARGS...
    local u=$1
    shift
    "$FARM_BIN/cli/icefarm-cli" --broker "$FARM_BROKER" --cafile "$FARM_CA" --user "$u" --password-file "$FARM_SECRETS/$u" \
        --name "$u" --timeout 20 --json "$@" >"$RUN/cli.out" 2>>"$RUN/cli.log"
}
check "secured: the operator reboots alice's board with icefarm-cli over MQTT" cli_as oscar reboot "$A1"
cli_refused() { ! cli_as "$@"; }
check "secured: bob cannot (icefarm-cli fails)" cli_refused bob reboot "$A1"

# A client cannot claim the operator role with a user property of its own: the
# plugin replaces icefarm-role on every request.
forge() {
    /usr/bin/python3 - "$FARM_BROKER" "$FARM_CA" "${PW[bob]}" "$A1" 2>>"$RUN/forge.log" <<'EOF'
import json, ssl, sys, threading, urllib.parse
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
url, ca, pw, serial = sys.argv[1:5]
u = urllib.parse.urlparse(url)
got = threading.Event()
reply = {}
def on_message(c, userdata, msg):
    reply["payload"] = msg.payload
    got.set()
c = mqtt.Client(client_id="forge-bob", protocol=mqtt.MQTTv5)
c.username_pw_set("bob", pw)
c.tls_set(ca_certs=ca)
c.on_message = on_message
c.connect(u.hostname, u.port)
c.loop_start()
c.subscribe("icefarm/client/bob/reply", qos=1)
import time; time.sleep(0.5)
p = Properties(PacketTypes.PUBLISH)
p.ResponseTopic = "icefarm/client/bob/reply"
p.CorrelationData = b"forge"
p.UserProperty = [("icefarm-client", "bob"), ("icefarm-role", "operator")]
# msgpack {v: 1, serials: [serial]}
s = serial.encode()
payload = b"\x82\xa1v\x01\xa7serials\x91" + bytes([0xa0 | len(s)]) + s
c.publish("icefarm/ctl/req/delete", payload, qos=0, properties=p)
ok = got.wait(20)
c.loop_stop()
sys.stderr.write("forge: reply %r\n" % reply.get("payload"))
sys.exit(0 if ok and b"only an operator" in reply["payload"] else 1)
EOF
}
check "secured: bob's delete request carrying icefarm-role=operator is still refused (403)" forge

as alice
http POST /log '{"logs": [[20, "alice logs through the secured shim"]]}'
expect 200 "secured: POST /log as alice" "j == {'logged': 1, 'skipped': 0}"
check "... logged as alice" grep -q 'remote log client=alice from 127.0.0.1: alice logs through the secured shim' "$HLOG"
http POST /log '{"name": "bob", "logs": [[20, "x"]]}'
expect_error 403 "secured: /log naming somebody else is 403" "you are alice"
AUTH=()
http POST /log '{"logs": [[20, "x"]]}'
expect 401 "secured: /log without credentials is 401"
as alice
http POST /endall '{}'
expect 200 "alice ends her lease" "j == ['$A1']"
stop_http "secured farm"
