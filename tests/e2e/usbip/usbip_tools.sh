#!/usr/bin/env bash
# Kind usbip against the Linux userspace tools (Debian's usbip) and a raw client:
# a reserved board is exported under a per-lease token that only its event topic
# tells; `usbip list -r` shows no leased device; `usbip attach -r HOST -b TOKEN`
# gets through the import (its error is the missing vhci driver: the sign of a
# correct OP_REP_IMPORT on a host without vhci_hcd); a wrong token gets "Device
# not found"; the board's state says exported and never carries the token; a
# 1200-baud touch over USB/IP re-enumerates the board and the export follows it
# (usbip detached, usbip exported again with the same busid, now 2e8a:000f);
# unbind ends the import; the export ends with the lease.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

USBIP=$(command -v usbip || echo /usr/sbin/usbip)
[[ -x $USBIP ]] || { echo "skip: the usbip tools are not installed (apt install usbip)"; exit 77; }

port=$(farm_free_port)
e2e_farm_start 2 --sim-window-ms 50 --sim-flash-ms 50 --kinds pulsecount,usbip \
    --usbip-listen "127.0.0.1:$port" --usbip-host 127.0.0.1

e2e_watch "$RUN/events.jsonl" 'icefarm/+/event' 'icefarm/+/state'

# event_field SERIAL EVENT N FIELD: FIELD of the N-th (0-based) EVENT of SERIAL.
event_field() {
    "$PY" -c 'import json, sys
evs = [json.loads(l)["payload"] for l in open(sys.argv[1]) if l.strip()]
evs = [p for p in evs if isinstance(p, dict) and p.get("event") == sys.argv[3] and p.get("serial") == sys.argv[2]]
print(evs[int(sys.argv[4])][sys.argv[5]])' "$RUN/events.jsonl" "$1" "$2" "$3" "$4" 2>/dev/null
}
count_events() {
    "$PY" -c 'import json, sys
evs = [json.loads(l)["payload"] for l in open(sys.argv[1]) if l.strip()]
print(sum(1 for p in evs if isinstance(p, dict) and p.get("event") == sys.argv[3] and p.get("serial") == sys.argv[2]))' \
        "$RUN/events.jsonl" "$1" "$2"
}

cli alice reserve --amount 1 --kind usbip
check "reserve --kind usbip exits 0 (got $RC)" test "$RC" = 0
serial=$(serials_of "$OUT")
check "one board granted" test -n "$serial"
check "the worker says 'usbip exported'" \
    wait_until 60 "$PY" "$E2E_DIR/mqtt_tool.py" wait "$RUN/events.jsonl" 0 "usbip exported" "$serial"
busid=$(event_field "$serial" "usbip exported" 0 busid)
host=$(event_field "$serial" "usbip exported" 0 host)
eport=$(event_field "$serial" "usbip exported" 0 port)
check "usbip exported names a 16..31-character [A-Za-z0-9] busid" bash -c "[[ '$busid' =~ ^[A-Za-z0-9]{16,31}$ ]]"
check "usbip exported names the advertised host and port ($host:$eport)" test "$host:$eport" = "127.0.0.1:$port"
check "the board state says exported" grep -q "\"exported\": true" "$RUN/events.jsonl"
check "no state message ever carries the token" bash -c "! grep '/state' '$RUN/events.jsonl' | grep -q '$busid'"

"$USBIP" --tcp-port "$port" list -r 127.0.0.1 >"$RUN/list.out" 2>&1 || true
check "usbip list -r runs against the server" grep -qi "127.0.0.1\|no exportable devices" "$RUN/list.out"
check "usbip list -r leaks no leased device" bash -c "! grep -q '$busid\|2e8a\|1209' '$RUN/list.out'"

# The worker's USB/IP option, as its --help and man page show it: apart from its text.
"$FARM_BIN/wrk/icefarm-wrk" --help >"$RUN/wrkhelp.out" 2>&1 || true
check "icefarm-wrk --help: '--usbip-listen [HOST][:PORT]' is not glued to its description" \
    grep -qE -- '--usbip-listen \[HOST\]\[:PORT\]( |$)' "$RUN/wrkhelp.out"
if [[ -f $FARM_BIN/ctl/packaging/icefarm-wrk.1 ]] && command -v man >/dev/null; then
    MANWIDTH=200 man -l "$FARM_BIN/ctl/packaging/icefarm-wrk.1" >"$RUN/wrkman.out" 2>/dev/null || true
    check "and so does its man page" grep -qE -- '--usbip-listen \[HOST\]\[:PORT\]( |$)' "$RUN/wrkman.out"
fi

# What icefarm-cli's help and man page offer for kind usbip.
check "icefarm-cli reserve --help names kind usbip" bash -c "'$CLI_BIN' reserve --help | grep -- '--kind' | grep -q usbip"
check "icefarm-cli --help: the usbip command names attach, tunnel and list" \
    bash -c "'$CLI_BIN' --help | grep -E '^  usbip ' | grep 'attach' | grep 'tunnel' | grep -q 'list'"

# icefarm-cli usbip list, as a user types it: the server, then the wrong places.
"$CLI_BIN" usbip list "127.0.0.1:$port" >"$RUN/clilist.out" 2>&1 && rc=0 || rc=$?
check "icefarm-cli usbip list HOST:PORT exits 0 (rc $rc) and says no device" grep -q "exports no device" "$RUN/clilist.out"
check "its --json is {ok, devices: []}" bash -c "[[ \$('$CLI_BIN' usbip list --json 127.0.0.1:$port) == '{\"ok\":true,\"devices\":[]}' ]]"
dead=$(farm_free_port)
"$CLI_BIN" usbip list "127.0.0.1:$dead" >"$RUN/clilist.out" 2>&1 && rc=0 || rc=$?
check "usbip list on a port nobody listens on: exit 3 (rc $rc)" test "$rc" = 3
check "and says the connection was refused, not that a server closed it" \
    bash -c "grep -q 'cannot connect: Connection refused' '$RUN/clilist.out' && ! grep -q 'closed the connection' '$RUN/clilist.out'"
"$CLI_BIN" usbip list nosuchhost.invalid >"$RUN/clilist.out" 2>&1 && rc=0 || rc=$?
check "usbip list on an unknown host: exit 3 (rc $rc)" test "$rc" = 3
check "and says the host is unknown" grep -q "unknown host" "$RUN/clilist.out"

"$USBIP" --tcp-port "$port" attach -r 127.0.0.1 -b "$busid" >"$RUN/attach.out" 2>&1 || true
check "usbip attach -b TOKEN gets through the import (fails only at vhci)" grep -q "vhci" "$RUN/attach.out"
check "usbip attach sees the busid it asked for" bash -c "! grep -q 'recv different busid\|recv op_import_reply' '$RUN/attach.out'"
"$USBIP" --tcp-port "$port" attach -r 127.0.0.1 -b "$(wrong_token "$busid")" >"$RUN/wrong.out" 2>&1 || true
check "a wrong token gets 'Device not found'" grep -q "Device not found" "$RUN/wrong.out"

# imported_more N: the worker logged more than N imports.
imported_more() { [[ $(grep -c 'imported by' "$FARM_DIR/wrk.log") -gt $1 ]]; }

# The raw client: an import that stays, unbind, the touch that re-enumerates.
imports=$(grep -c 'imported by' "$FARM_DIR/wrk.log")
"$PY" "$HERE/usbip_client.py" hold 127.0.0.1 "$port" "$busid" 20 >"$RUN/hold.out" &
holder=$!
wait_until 10 imported_more "$imports"
r=$("$PY" "$HERE/usbip_client.py" import 127.0.0.1 "$port" "$busid")
check "a second import while attached is busy (ST_DEV_BUSY)" jtest "$r" "j['status'] == 2"
"$PY" "$E2E_DIR/mqtt_tool.py" pub "$FARM_BROKER" "icefarm/$serial/cmd" '{"v": 1, "op": "unbind"}' alice
wait "$holder" || true
check "unbind ends the import" jtest "$(cat "$RUN/hold.out")" "j['status'] == 0 and j['closed_after'] is not None"

r=$("$PY" "$HERE/usbip_client.py" touch 127.0.0.1 "$port" "$busid")
echo "# touch: $r"
check "forwarded GET_DESCRIPTOR answers the default firmware's 18 bytes" \
    jtest "$r" "j['get_descriptor'] == {'status': 0, 'length': 18, 'vid': '2e8a'}"
check "the 1200-baud SET_LINE_CODING completes" jtest "$r" "j['line_coding']['status'] == 0 and j['line_coding']['seq'] == 2"
check "the server closes the import when the board re-enumerates" jtest "$r" "j['closed']"
check "usbip detached follows" wait_until 30 "$PY" "$E2E_DIR/mqtt_tool.py" wait "$RUN/events.jsonl" 0 "usbip detached" "$serial"
exported_twice() { [[ $(count_events "$serial" "usbip exported") -ge 2 ]]; }
check "usbip exported again" wait_until 30 exported_twice
check "with the same busid" test "$(event_field "$serial" "usbip exported" 1 busid)" = "$busid"
r=$("$PY" "$HERE/usbip_client.py" import 127.0.0.1 "$port" "$busid")
check "the same token now imports the BOOTSEL device 2e8a:000f" jtest "$r" "j['status'] == 0 and j['pid'] == '000f'"

# The lease ends: within a second the token is dead.
imports=$(grep -c 'imported by' "$FARM_DIR/wrk.log")
"$PY" "$HERE/usbip_client.py" hold 127.0.0.1 "$port" "$busid" 20 >"$RUN/hold2.out" &
holder=$!
wait_until 10 imported_more "$imports"
cli alice end "$serial"
check "end exits 0" test "$RC" = 0
wait "$holder" || true
check "the open import closes within a second of the end" jtest "$(cat "$RUN/hold2.out")" \
    "j['closed_after'] is not None and j['closed_after'] < 1.0"
r=$("$PY" "$HERE/usbip_client.py" import 127.0.0.1 "$port" "$busid")
check "the old token is unknown afterwards (ST_NODEV)" jtest "$r" "j['status'] == 4"
check "the board goes back to the farm" wait_until 60 available_is 2
