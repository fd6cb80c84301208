#!/usr/bin/env bash
# Kind usbip through the broker tunnel (PROTOCOL.md 19.3), anonymous farm: the
# same USB/IP bytes as on TCP, carried on icefarm/<serial>/usbip/<session>/c2s|s2c.
# A raw client (usbip_client.py with a broker URL) imports the board by its token,
# forwards GET_DESCRIPTOR and the 1200-baud touch; the session ends (an empty s2c)
# when the board re-enumerates, the export follows with the same token, and an
# open session ends within a second of the lease's end. The secured farm's
# holder-only rule is tunnel_secure.py's.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

e2e_farm_start 1 --sim-window-ms 50 --sim-flash-ms 50 --kinds pulsecount,usbip \
    --usbip-listen "127.0.0.1:$(farm_free_port)" --usbip-host 127.0.0.1

e2e_watch "$RUN/events.jsonl" 'icefarm/+/event'
busid_of() { # SERIAL N: the busid of the N-th 'usbip exported' of SERIAL
    "$PY" -c 'import json, sys
evs = [json.loads(l)["payload"] for l in open(sys.argv[1]) if l.strip()]
evs = [p for p in evs if isinstance(p, dict) and p.get("event") == "usbip exported" and p.get("serial") == sys.argv[2]]
print(evs[int(sys.argv[3])]["busid"])' "$RUN/events.jsonl" "$1" "$2" 2>/dev/null
}
tunnel() { "$PY" "$HERE/usbip_client.py" "$1" "$FARM_BROKER" "$serial" "${@:2}"; }

cli alice reserve --amount 1 --kind usbip
serial=$(serials_of "$OUT")
check "reserve --kind usbip grants a board" test -n "$serial"
check "the worker says 'usbip exported'" \
    wait_until 60 "$PY" "$E2E_DIR/mqtt_tool.py" wait "$RUN/events.jsonl" 0 "usbip exported" "$serial"
busid=$(busid_of "$serial" 0)

r=$(tunnel import "$busid")
check "an import through the tunnel answers the device (2e8a:0009)" \
    jtest "$r" "j['status'] == 0 and j['vid'] == '2e8a' and j['pid'] == '0009' and j['busid'] == '$busid'"
check "the worker logs the tunnel session" grep -q "usbip tunnel session .* opened" "$FARM_DIR/wrk.log"
r=$(tunnel import "$(wrong_token "$busid")")
check "a wrong token through the tunnel gets ST_NODEV" jtest "$r" "j['status'] == 4"

r=$(tunnel touch "$busid")
echo "# touch through the tunnel: $r"
check "GET_DESCRIPTOR through the tunnel answers 18 bytes of 2e8a" \
    jtest "$r" "j['get_descriptor'] == {'status': 0, 'length': 18, 'vid': '2e8a'}"
check "the 1200-baud SET_LINE_CODING completes" jtest "$r" "j['line_coding']['status'] == 0"
check "the session ends (an empty s2c) when the board re-enumerates" jtest "$r" "j['closed']"
exported_twice() { [[ -n $(busid_of "$serial" 1) ]]; }
check "the export follows the board" wait_until 30 exported_twice
check "with the same token" test "$(busid_of "$serial" 1)" = "$busid"
r=$(tunnel import "$busid")
check "the same token imports the BOOTSEL device through the tunnel" jtest "$r" "j['status'] == 0 and j['pid'] == '000f'"

tunnel hold "$busid" 20 >"$RUN/hold.out" &
holder=$!
opened() { [[ $(grep -c "usbip tunnel session .* opened" "$FARM_DIR/wrk.log") -ge 5 ]]; }
wait_until 15 opened
cli alice end "$serial"
check "end exits 0" test "$RC" = 0
wait "$holder" || true
check "an open tunnel session ends within a second of the lease's end" \
    jtest "$(cat "$RUN/hold.out")" "j['closed_after'] is not None and j['closed_after'] < 1.0"
r=$(tunnel import "$busid")
check "the old token is unknown afterwards (ST_NODEV)" jtest "$r" "j['status'] == 4"
# The export's events are tagged with the lease like every board event (PROTOCOL.md
# 19.2), and the last one says the lease ended, before the lease's `released`.
lease_tags() {
    "$PY" - "$RUN/events.jsonl" "$serial" <<'PY'
import json, sys
evs = [json.loads(l)["payload"] for l in open(sys.argv[1]) if l.strip()]
evs = [p for p in evs if isinstance(p, dict) and p.get("serial") == sys.argv[2]]
names = [p["event"] for p in evs]
if "released" not in names:
    sys.exit(1)
rel = names.index("released")
lease = evs[rel]["lease"]
usb = [p for p in evs[:rel] if p["event"].startswith("usbip ")]
ok = (len(usb) >= 3 and all(p.get("lease") == lease for p in usb)
      and usb[-1]["event"] == "usbip detached" and usb[-1]["reason"] == "the lease ended"
      and usb[-1]["busid"] == usb[0]["busid"] and not any(n.startswith("usbip ") for n in names[rel:]))
sys.exit(0 if ok else "events: %r" % evs)
PY
}
check "the export's events carry the lease; the last, 'usbip detached: the lease ended', comes before 'released'" \
    wait_until 10 lease_tags
