#!/usr/bin/env bash
# Kind usbip, the board flashed by its holder over USB/IP as picotool would: a
# reserved simulated board (default firmware, 2e8a:0009) is touched into BOOTSEL
# through the import (1200-baud SET_LINE_CODING), the export follows it
# (2e8a:000f, same token), and a raw client (usbip_client.py picoboot) flashes the
# pulse-count firmware with PICOBOOT URBs: a misaligned erase stalls with
# BAD_ALIGNMENT in GET_CMD_STATUS, then erase, 256-byte pages, read back and
# compare, REBOOT2. The board re-enumerates as the pico-ice firmware (1209:b1c0),
# the export follows it again with the same token, the worker leaves it alone
# while it is exported, and at the lease's end it goes back to the farm.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

port=$(farm_free_port)
e2e_farm_start 1 --sim-window-ms 50 --sim-flash-ms 50 --kinds pulsecount,usbip \
    --usbip-listen "127.0.0.1:$port" --usbip-host 127.0.0.1

e2e_watch "$RUN/events.jsonl" 'icefarm/+/event'

# exported N: the busid of the N-th (0-based) 'usbip exported' of $serial.
exported() {
    "$PY" -c 'import json, sys
evs = [json.loads(l)["payload"] for l in open(sys.argv[1]) if l.strip()]
evs = [p for p in evs if isinstance(p, dict) and p.get("event") == "usbip exported" and p.get("serial") == sys.argv[2]]
print(evs[int(sys.argv[3])]["busid"])' "$RUN/events.jsonl" "$serial" "$1" 2>/dev/null
}
exported_n() { [[ -n $(exported "$1") ]]; }
client() { "$PY" "$HERE/usbip_client.py" "$1" 127.0.0.1 "$port" "$busid" "${@:2}"; }

cli alice reserve --amount 1 --kind usbip
serial=$(serials_of "$OUT")
check "reserve --kind usbip grants a board" test -n "$serial"
check "the worker says 'usbip exported'" \
    wait_until 60 "$PY" "$E2E_DIR/mqtt_tool.py" wait "$RUN/events.jsonl" 0 "usbip exported" "$serial"
busid=$(exported 0)
check "the export is the default firmware (2e8a:0009)" jtest "$(client import)" "j['status'] == 0 and j['pid'] == '0009'"

r=$(client touch)
check "the 1200-baud touch through the import completes and the import closes" \
    jtest "$r" "j['line_coding']['status'] == 0 and j['closed']"
check "the export follows the board into BOOTSEL" wait_until 30 exported_n 1
check "with the same token" test "$(exported 1)" = "$busid"
check "the token imports the BOOTSEL device (2e8a:000f)" jtest "$(client import)" "j['status'] == 0 and j['pid'] == '000f'"

"$FARM_BIN/wrk/icefarm-sim-firmware" pulsecount "$RUN/pulsecount.uf2"
r=$(client picoboot "$RUN/pulsecount.uf2")
echo "# picoboot: $r"
check "a misaligned FLASH_ERASE stalls (-EPIPE)" jtest "$r" "j['bad_erase']['status'] == -32"
check "GET_CMD_STATUS names BAD_ALIGNMENT (5) for that command's token" \
    jtest "$r" "j['bad_erase']['cmd_status'] == {'status': 0, 'token': j['bad_erase']['token'], 'code': 5, 'cmd': 3}"
check "INTERFACE_RESET clears the stall" jtest "$r" "j['if_reset'] == 0"
check "EXCLUSIVE_ACCESS, EXIT_XIP, erase, every page, REBOOT2 complete" \
    jtest "$r" "j['steps'] == {'exclusive': 0, 'exit_xip': 0, 'erase': 0, 'write': 0, 'reboot2': 0}"
check "what READ gives back is the image written" jtest "$r" "j['verified'] and j['bytes'] > 0"
check "the server closes the import when the board reboots" jtest "$r" "j['closed']"
check "the export follows the board out of BOOTSEL" wait_until 30 exported_n 2
check "with the same token" test "$(exported 2)" = "$busid"
check "the token imports what was flashed: the pico-ice firmware (1209:b1c0)" \
    jtest "$(client import)" "j['status'] == 0 and j['vid'] == '1209' and j['pid'] == 'b1c0'"
sleep 2
check "the worker leaves it alone while exported (still 1209:b1c0 two seconds later)" \
    jtest "$(client import)" "j['status'] == 0 and j['pid'] == 'b1c0'"

cli alice end "$serial"
check "end exits 0" test "$RC" = 0
check "the board goes back to the farm" wait_until 60 available_is 1
