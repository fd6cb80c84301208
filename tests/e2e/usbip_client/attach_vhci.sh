#!/usr/bin/env bash
# icefarm-cli usbip attach against a fake vhci_hcd: the sysfs root is injectable
# ($ICEFARM_SYSFS), and a small "kernel" here plays vhci_hcd's part on files: it
# takes "PORT SOCKFD DEVID SPEED" from attach, marks the port used in status with
# a local busid, and makes the device's tty in bus/usb/devices; detach frees it.
# The real icefarm-wrk exports simulated boards; the CLI imports them itself
# (the socket it hands over is a real, imported USB/IP connection).
#   - a missing vhci_hcd and missing rights are one-line errors that say what to
#     run (modprobe, the Debian packages, root);
#   - attach SERIAL: the board is attached at full speed with its devid, its tty
#     is printed, --json lines for scripts, `usbip port`'s record is written;
#   - the board re-enumerates (unplugged and back): the CLI detaches the stale
#     port and attaches again, within a second of the `usbip exported` event;
#   - Ctrl-C detaches; leases it did not take stay; --amount reserves kind usbip
#     itself and ends those leases on Ctrl-C.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"

port=$(farm_free_port)
e2e_farm_start 2 --sim-window-ms 100 --sim-flash-ms 50 --kinds pulsecount,usbip \
    --usbip-listen "127.0.0.1:$port" --usbip-host 127.0.0.1
e2e_watch "$RUN/events.jsonl" 'icefarm/+/event'
CLIX=("$CLI_BIN" --broker "$FARM_BROKER" --timeout 20 --name alice)

# ---- the fake vhci_hcd ----
SYS=$RUN/sys
VHCI=$SYS/devices/platform/vhci_hcd.0
mkdir -p "$VHCI" "$SYS/bus/usb/devices"
echo 8 >"$VHCI/nports"
: >"$VHCI/attach"
: >"$VHCI/detach"
write_status() { # the port states from $VHCI/ports (one "PORT STA DEVID BUSID" per line)
    {
        echo "hub port sta spd dev      sockfd local_busid"
        while read -r p sta devid busid; do
            hub=hs
            ((p >= 4)) && hub=ss
            printf '%s  %04d %03d %03d %08x %06d %s\n' "$hub" "$p" "$sta" "$([[ $sta == 6 ]] && echo 2 || echo 0)" \
                "$devid" 0 "$busid"
        done <"$VHCI/ports"
    } >"$VHCI/status.new"
    mv "$VHCI/status.new" "$VHCI/status"
}
for p in 0 1 2 3 4 5 6 7; do echo "$p 4 0 0-0"; done >"$VHCI/ports"
write_status
fake_kernel() {
    while true; do
        if [[ -s $VHCI/attach ]]; then
            read -r p fd devid speed <"$VHCI/attach" || true
            : >"$VHCI/attach"
            echo "attach $p $fd $devid $speed" >>"$RUN/kernel.log"
            busid="3-$((p + 1))"
            awk -v p="$p" -v d="$devid" -v b="$busid" '$1 == p {$2 = 6; $3 = d; $4 = b} {print}' "$VHCI/ports" \
                >"$VHCI/ports.new" && mv "$VHCI/ports.new" "$VHCI/ports"
            mkdir -p "$SYS/bus/usb/devices/$busid/$busid:1.0/tty/ttyACM$p"
            write_status
        fi
        if [[ -s $VHCI/detach ]]; then
            read -r p <"$VHCI/detach" || true
            : >"$VHCI/detach"
            echo "detach $p" >>"$RUN/kernel.log"
            rm -rf "$SYS/bus/usb/devices/3-$((p + 1))"
            awk -v p="$p" '$1 == p {$2 = 4; $3 = 0; $4 = "0-0"} {print}' "$VHCI/ports" >"$VHCI/ports.new" &&
                mv "$VHCI/ports.new" "$VHCI/ports"
            write_status
        fi
        sleep 0.02
    done
}
fake_kernel &
E2E_BG+=($!)
: >"$RUN/kernel.log"

# ---- the one-line errors ----
ICEFARM_SYSFS=$RUN/nosys "${CLIX[@]}" usbip attach ABC >/dev/null 2>"$RUN/novhci.err" && rc=0 || rc=$?
check "no vhci_hcd: exit 1 (got $rc)" test "$rc" = 1
check "no vhci_hcd: one line naming the modprobe and the packages" bash -c \
    "[[ \$(wc -l <'$RUN/novhci.err') == 1 ]] && grep -q 'modprobe vhci-hcd' '$RUN/novhci.err' && grep -q 'linux-image' '$RUN/novhci.err' && grep -q 'package usbip' '$RUN/novhci.err'"
chmod -R a+rX "$RUN"
chmod 644 "$VHCI/attach"
setpriv --reuid=65534 --regid=65534 --clear-groups env ICEFARM_SYSFS="$SYS" "${CLIX[@]}" usbip attach ABC \
    >/dev/null 2>"$RUN/norights.err" && rc=0 || rc=$?
check "no rights to attach: exit 1 (got $rc)" test "$rc" = 1
check "no rights: one line saying root is needed" bash -c \
    "[[ \$(wc -l <'$RUN/norights.err') == 1 ]] && grep -q 'needs root' '$RUN/norights.err'"

# ---- attach SERIAL, following a re-enumeration ----
cli alice reserve --amount 1 --kind usbip --args '{"image": "pulsecount"}'
serial=$(serials_of "$OUT")
check "usbip exported" wait_until 60 e2e_wait_event "$RUN/events.jsonl" 0 "usbip exported" "$serial"
ICEFARM_SYSFS=$SYS ICEFARM_VHCI_RUN=$RUN/run "${CLIX[@]}" --json usbip attach "$serial" >"$RUN/attach.jsonl" \
    2>"$RUN/attach.err" &
att=$!
E2E_BG+=("$att")
check "attached (the announce brought the export)" wait_until 20 grep -q '"event":"attached"' "$RUN/attach.jsonl"
check "vhci_hcd got port 0, a devid and full speed" grep -qE '^attach 0 [0-9]+ [0-9]+ 2$' "$RUN/kernel.log"
check "the tty is printed" wait_until 20 grep -q '"path":"/dev/ttyACM0"' "$RUN/attach.jsonl"
check "usbip port's record names host, port and busid" grep -qE "^127\.0\.0\.1 $port [A-Za-z0-9]{16,31}$" \
    "$RUN/run/port0"

sim_fault "$serial" disconnect
check "the board went away (usbip detached)" wait_until 30 e2e_wait_event "$RUN/events.jsonl" 0 "usbip detached" "$serial"
check "attached again after the re-enumeration" \
    wait_until 30 bash -c "(( \$(grep -c '\"event\":\"attached\"' '$RUN/attach.jsonl') >= 2 ))"
check "the stale port was detached first" grep -q '^detach 0$' "$RUN/kernel.log"
ms=$(grep '"event":"attached"' "$RUN/attach.jsonl" | tail -n1 | sed -n 's/.*(\([0-9]*\) ms after the export event).*/\1/p')
check "re-attached within a second of the event (${ms:-?} ms)" bash -c "[[ -n '$ms' ]] && (( $ms < 1000 ))"
check "and the tty is printed again" \
    wait_until 20 bash -c "(( \$(grep -c '\"event\":\"tty\"' '$RUN/attach.jsonl') >= 2 ))"

kill -INT "$att"
rc=0
wait "$att" || rc=$?
check "Ctrl-C: exit 0 (got $rc)" test "$rc" = 0
check "Ctrl-C detached the port" wait_until 5 bash -c "(( \$(grep -c '^detach' '$RUN/kernel.log') >= 2 ))"
check "and left the lease it did not take" bash -c "'$CLI_BIN' --broker '$FARM_BROKER' --name alice --json status | grep -q '$serial'"
cli alice end "$serial"

# ---- the lease ended elsewhere: attach detaches, says why, and exits ----
cli alice reserve --amount 1 --kind usbip --args '{"image": "pulsecount"}'
serial=$(serials_of "$OUT")
ICEFARM_SYSFS=$SYS ICEFARM_VHCI_RUN=$RUN/run "${CLIX[@]}" --json usbip attach "$serial" >"$RUN/ended.jsonl" \
    2>"$RUN/ended.err" &
att=$!
E2E_BG+=("$att")
check "attached a second lease" wait_until 20 grep -q '"event":"attached"' "$RUN/ended.jsonl"
cli alice end "$serial"
rc=0
wait_until 20 bash -c "! kill -0 $att 2>/dev/null" || true
wait "$att" || rc=$?
check "an 'end' from another shell: attach exits by itself, status 1 (got $rc)" test "$rc" = 1
check "  ... having said why, in control's words" grep -q 'the lease ended: ended by the holder' "$RUN/ended.jsonl"
check "  ... and detached the port" wait_until 5 bash -c "(( \$(grep -c '^detach' '$RUN/kernel.log') >= 3 ))"

# ---- --amount: it reserves, and ends what it reserved ----
ICEFARM_SYSFS=$SYS ICEFARM_VHCI_RUN=$RUN/run "${CLIX[@]}" --json usbip attach --amount 1 >"$RUN/amount.jsonl" \
    2>"$RUN/amount.err" &
att=$!
E2E_BG+=("$att")
check "--amount 1 reserves a board of kind usbip" wait_until 30 grep -q '"event":"reserved"' "$RUN/amount.jsonl"
check "and attaches it" wait_until 30 grep -q '"event":"attached"' "$RUN/amount.jsonl"
kill -INT "$att"
rc=0
wait "$att" || rc=$?
check "Ctrl-C: exit 0 (got $rc)" test "$rc" = 0
check "Ctrl-C ended the lease it took" grep -q 'ended 1 lease' "$RUN/amount.jsonl"
cli alice status
check "no lease of alice is left" bash -c "! grep -q '\"client\":\"alice\"' <<<'$OUT'"

if ((FAIL)); then
    for f in attach.jsonl attach.err ended.jsonl ended.err amount.jsonl amount.err kernel.log novhci.err norights.err; do
        echo "---- $f"
        tail -n 30 "$RUN/$f" 2>/dev/null || true
    done
fi
