#!/usr/bin/env bash
# icefarm-cli serial: a usbip board's console through the userspace USB/IP client
# (no root, no kernel module), on a farm with simulated boards:
#   - a board not reserved with kind usbip is refused with how to reserve one;
#   - stdin/stdout: the firmware's greeting comes out, over TCP and through the
#     broker tunnel;
#   - usbip tunnel: the Linux usbip tool imports through the local endpoint and
#     the broker (its error is the missing vhci_hcd: the import went through);
#   - the python example (cli/examples/python/pulse_count_usbip.py) runs the
#     pulse-count protocol through `serial --pty` with pyserial: pulses equal the
#     simulated board's documented value;
#   - picocom in tmux on the pty: the greeting when it opens (DTR follows the
#     opener), a keystroke reaches the firmware (its watchdog answers);
#   - picocom opening the pty at 1200 baud is the touch: the board reboots into
#     BOOTSEL (the session says so: no CDC), the pty stays; after the worker-side
#     `icefarm-cli flash` the board is back and pyserial runs the protocol again
#     on the same pty;
#   - Ctrl-C ends the console and removes its link.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"
EXAMPLE=$E2E_ROOT/cli/examples/python/pulse_count_usbip.py

command -v tmux >/dev/null || { echo "skip: tmux is not installed"; exit 77; }
command -v picocom >/dev/null || { echo "skip: picocom is not installed (apt install picocom)"; exit 77; }
/usr/bin/python3 -c 'import serial' 2>/dev/null || { echo "skip: pyserial is not installed (apt install python3-serial)"; exit 77; }

port=$(farm_free_port)
e2e_farm_start 2 --sim-window-ms 100 --sim-flash-ms 50 --kinds pulsecount,usbip \
    --usbip-listen "127.0.0.1:$port" --usbip-host 127.0.0.1
e2e_watch "$RUN/events.jsonl" 'icefarm/+/event'

CLIX=("$CLI_BIN" --broker "$FARM_BROKER" --timeout 20 --name alice)

# ---- refused: not kind usbip ----
cli alice reserve --amount 1 --kind pulsecount
other=$(serials_of "$OUT")
"${CLIX[@]}" serial "$other" </dev/null >"$RUN/refused.out" 2>"$RUN/refused.err" && rc=0 || rc=$?
check "serial on a pulsecount board fails (rc $rc)" test "$rc" = 1
check "and says how to reserve one with kind usbip" grep -q "reserve --kind usbip" "$RUN/refused.err"
cli alice end "$other"
# ---- refused: a serial no worker reports (a typo): at once, 404 ----
"${CLIX[@]}" serial NOSUCHSERIAL </dev/null >"$RUN/unknown.out" 2>"$RUN/unknown.err" && rc=0 || rc=$?
check "serial on an unknown serial fails (rc $rc)" test "$rc" = 1
check "and says it is unknown" grep -q "unknown serial NOSUCHSERIAL (404" "$RUN/unknown.err"

cli alice reserve --amount 1 --kind usbip --args '{"image": "pulsecount"}' --duration 600
check "reserve --kind usbip exits 0 (got $RC)" test "$RC" = 0
serial=$(serials_of "$OUT")
check "usbip exported" wait_until 60 e2e_wait_event "$RUN/events.jsonl" 0 "usbip exported" "$serial"

# ---- stdin/stdout, started after the export: the announce brings the token ----
timeout -s INT 8 "${CLIX[@]}" serial "$serial" </dev/null >"$RUN/stdio.out" 2>"$RUN/stdio.err" || true
check "stdin/stdout: the firmware's greeting comes out" grep -q "Waiting for bitstream transfer" "$RUN/stdio.out"
timeout -s INT 8 "${CLIX[@]}" serial "$serial" </dev/null >"$RUN/stdio2.out" 2>>"$RUN/stdio.err" || true
check "and again for the next console (the first one dropped DTR when it ended)" \
    grep -q "Waiting for bitstream transfer" "$RUN/stdio2.out"
printf x | timeout -s INT 8 "${CLIX[@]}" serial "$serial" --tunnel >"$RUN/tunnel.out" 2>"$RUN/tunnel.err" || true
check "through the broker tunnel (--tunnel): a byte in, the firmware's answer out" \
    grep -q "Watchdog timeout, 1 bytes received" "$RUN/tunnel.out"
check "the worker served it as a tunnel session" grep -q "tunnel" "$RUN/wrk.log"

# ---- usbip tunnel: a local endpoint through the broker for the kernel's own tools ----
USBIP=$(command -v usbip || echo /usr/sbin/usbip)
if [[ -x $USBIP ]]; then
    "${CLIX[@]}" --json usbip tunnel "$serial" --listen 127.0.0.1:0 >"$RUN/tunnel.jsonl" 2>"$RUN/tunnelcmd.err" &
    tunnel_pid=$!
    E2E_BG+=("$tunnel_pid")
    check "usbip tunnel prints the attach command" wait_until 20 grep -q '"event":"tunnel"' "$RUN/tunnel.jsonl"
    tport=$(jpy "$(head -n1 "$RUN/tunnel.jsonl")" 'j["port"]')
    tbusid=$(jpy "$(head -n1 "$RUN/tunnel.jsonl")" 'j["busid"]')
    "$USBIP" --tcp-port "$tport" attach -r 127.0.0.1 -b "$tbusid" >"$RUN/tattach.out" 2>&1 || true
    check "usbip attach through the tunnel gets through the import (fails only at vhci)" grep -q "vhci" "$RUN/tattach.out"
    check "and sees the busid it asked for" bash -c "! grep -q 'recv different busid\|recv op_import_reply' '$RUN/tattach.out'"
    "$USBIP" --tcp-port "$tport" list -r 127.0.0.1 >"$RUN/tlist.out" 2>&1 || true
    check "usbip list through the tunnel leaks no device" bash -c "! grep -q '$tbusid\|1209\|2e8a' '$RUN/tlist.out'"
    kill -INT "$tunnel_pid"
    rc=0
    wait "$tunnel_pid" || rc=$?
    check "Ctrl-C ends usbip tunnel with status 0 (got $rc)" test "$rc" = 0
else
    echo "# the usbip tools are not installed: usbip tunnel not exercised"
fi

# ---- the python example: pyserial on serial --pty ----
bits=$BITS/clk_1khz.bin
ICEFARM_CLI=$RUN/no-such-icefarm-cli timeout 60 /usr/bin/python3 "$EXAMPLE" --broker "$FARM_BROKER" --name alice \
    --serial "$serial" "$bits" >"$RUN/example.out" 2>"$RUN/example.err" && rc=0 || rc=$?
check "pulse_count_usbip.py with no icefarm-cli to run: exit 1 (rc $rc)" test "$rc" = 1
check "and says so in one line, no Python traceback" \
    bash -c "grep -q 'cannot run .*no-such-icefarm-cli.*ICEFARM_CLI' '$RUN/example.err' && ! grep -q Traceback '$RUN/example.err'"
want=$("$PY" "$E2E_DIR/mqtt_tool.py" pulses "$bits" | awk '{print $2}')
ICEFARM_CLI=$CLI_BIN timeout 120 /usr/bin/python3 "$EXAMPLE" --broker "$FARM_BROKER" --name alice --serial "$serial" \
    "$bits" "$bits" >"$RUN/example.out" 2>"$RUN/example.err" && rc=0 || rc=$?
check "pulse_count_usbip.py exits 0 (rc $rc)" test "$rc" = 0
check "pulses through the pty equal the sim's value twice ($want)" \
    test "$(grep -c "clk_1khz.bin pulses $want\$" "$RUN/example.out")" = 2

# ---- a long-lived console for the terminal program ----
"${CLIX[@]}" --json serial "$serial" --pty --link "$RUN/tty" >"$RUN/serial.jsonl" 2>"$RUN/serial.err" &
console=$!
E2E_BG+=("$console")
check "serial --pty makes its link" wait_until 20 test -L "$RUN/tty"
check "and says up" wait_until 20 grep -q '"event":"up"' "$RUN/serial.jsonl"

# ---- a second console on the board while the first holds its import ----
"${CLIX[@]}" serial "$serial" </dev/null >"$RUN/second.out" 2>"$RUN/second.err" && rc=0 || rc=$?
check "a second serial on the same board fails cleanly (rc $rc: 1, not a crash)" test "$rc" = 1
check "and says the board is in use by another USB/IP client" grep -q "already in use by another USB/IP client" \
    "$RUN/second.err"

session=icefarm-e2e-serial-$$
tmux new-session -d -s "$session" -x 160 -y 40 "picocom -q -b 115200 $RUN/tty"
pane() { tmux capture-pane -p -t "$session" -S -200 2>/dev/null; }
check "picocom shows the firmware's greeting when it opens the pty" \
    wait_until 20 bash -c "$(declare -f pane); session=$session; pane | grep -q 'Waiting for bitstream transfer'"
tmux send-keys -t "$session" x
check "a keystroke in picocom reaches the firmware (its watchdog answers)" \
    wait_until 20 bash -c "$(declare -f pane); session=$session; pane | grep -q 'Watchdog timeout, 1 bytes received'"
tmux send-keys -t "$session" C-a C-x
wait_until 10 bash -c "! tmux has-session -t $session 2>/dev/null" || tmux kill-session -t "$session"
check "the console noticed picocom closing the pty (DTR down)" wait_until 10 grep -q '"event":"closed"' "$RUN/serial.jsonl"

# ---- the 1200-baud touch, from picocom ----
n_exported=$(grep -c '"usbip exported"' "$RUN/events.jsonl" || true)
tmux new-session -d -s "$session" -x 160 -y 40 "picocom -q -b 1200 $RUN/tty"
check "the console relays 1200 baud (the touch)" wait_until 20 grep -q '"event":"touch"' "$RUN/serial.jsonl"
check "the board went away (usbip detached)" wait_until 30 e2e_wait_event "$RUN/events.jsonl" 0 "usbip detached" "$serial"
check "and was exported again" wait_until 30 bash -c "(( \$(grep -c '\"usbip exported\"' '$RUN/events.jsonl') > $n_exported ))"
check "the console says BOOTSEL has no CDC function" wait_until 30 grep -q '2e8a:000f has no CDC ACM function' "$RUN/serial.jsonl"
check "the pty is still there" test -e "$RUN/tty"
n_closed=$(grep -c '"event":"closed"' "$RUN/serial.jsonl" || true)
tmux send-keys -t "$session" C-a C-x
wait_until 10 bash -c "! tmux has-session -t $session 2>/dev/null" || tmux kill-session -t "$session"
check "picocom let go of the pty" wait_until 10 bash -c "(( \$(grep -c '\"event\":\"closed\"' '$RUN/serial.jsonl') > $n_closed ))"

# ---- back with the worker-side flash; the same pty works again ----
"$FARM_BIN/wrk/icefarm-sim-firmware" pulsecount "$RUN/pulsecount.uf2"
cli alice flash "$RUN/pulsecount.uf2" "$serial"
check "icefarm-cli flash (worker side) exits 0 (got $RC)" test "$RC" = 0
check "the console is up again after the reflash" \
    wait_until 60 bash -c "(( \$(grep -c '\"event\":\"up\"' '$RUN/serial.jsonl') >= 2 ))"
got=$(timeout 60 /usr/bin/python3 -c '
import sys, serial
sys.path.insert(0, sys.argv[1])
import pulse_count_usbip as p
with serial.Serial(sys.argv[2], 115200, timeout=0.2) as port:
    print(p.evaluate(p.Lines(port), open(sys.argv[3], "rb").read()))' "$(dirname "$EXAMPLE")" "$RUN/tty" "$bits" 2>>"$RUN/example.err" || true)
check "pyserial on the same pty after the re-enumeration: pulses $got = $want" test "$got" = "$want"

kill -INT "$console"
rc=0
wait "$console" || rc=$?
check "Ctrl-C ends the console with status 0 (got $rc)" test "$rc" = 0
check "and removes its link" test ! -e "$RUN/tty"

# ---- the worker dies under an open console: said once, not twice a second ----
"${CLIX[@]}" serial "$serial" --pty --link "$RUN/tty2" >/dev/null 2>"$RUN/dead.err" &
console=$!
E2E_BG+=("$console")
check "a new console comes up" wait_until 20 grep -q " up: " "$RUN/dead.err"
e2e_kill9 "$(e2e_pid_of wrk)"
check "the console says the board is gone and that it keeps trying" \
    wait_until 10 grep -q "gone: .*trying again until it is back or the lease ends" "$RUN/dead.err"
sleep 5
n=$(grep -c "gone: \|connecting: " "$RUN/dead.err" || true)
check "5 s of retries against the dead worker: said at most 4 times, not twice a second (said $n)" test "$n" -le 4
kill -INT "$console"
wait "$console" || true
cli alice end "$serial"

if ((FAIL)); then
    for f in serial.jsonl serial.err stdio.err tunnel.err example.out example.err dead.err; do
        echo "---- $f"
        tail -n 30 "$RUN/$f" 2>/dev/null || true
    done
fi
