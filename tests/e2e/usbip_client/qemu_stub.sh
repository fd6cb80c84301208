#!/usr/bin/env bash
# THE REAL LINUX KERNEL'S USB/IP SERVER as the peer of libicefarm's USB/IP client
# (heavy; budget 300 s, about 25 s with the kernel cached): a QEMU guest (TCG)
# boots Debian's own kernel (the shared QEMU USB lab, tests/lib/qemu_usb.sh), makes
# a CDC ACM gadget with dummy_hcd + g_serial (use_acm=1), echoes its tty
# (/dev/ttyGS0), and exports it with usbip-host and usbipd (usbip.md 4.6). On the
# host, stub_client lists it, imports it, configures it with the value its
# descriptors give (2), sets line coding and DTR, echoes data through the gadget,
# and drives the stub's UNLINK (pending: -ECONNRESET; completed: RET_UNLINK 0,
# which this stub sends only after its next completion). The guest's dmesg must
# show no usbip errors. Skips (77) only when QEMU cannot run here at all.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/e2e.sh"
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/qemu_usb.sh"
qemu_usb_setup
CLIENT=$FARM_BIN/tests/e2e/usbip_client/stub_client
[[ -x $CLIENT ]] || { not_ok "stub_client is built ($CLIENT)"; exit 1; }

hport=$(farm_free_port) # the host's end of the guest's usbipd (hostfwd)
dport=$(farm_free_port) # the host says "done" by listening here
ir=$RUN/initramfs
qemu_usb_initramfs "$ir" usb/common/usb-common usb/core/usbcore usb/usbip/usbip-core usb/usbip/usbip-host \
    usb/gadget/udc/udc-core usb/gadget/udc/dummy_hcd ../fs/configfs/configfs usb/gadget/libcomposite \
    usb/gadget/function/u_serial usb/gadget/function/usb_f_acm usb/gadget/legacy/g_serial \
    net/ethernet/intel/e1000/e1000
cat >"$ir/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
. /lib/guest.sh
guest_up usb-common usbcore usbip-core usbip-host udc-core dummy_hcd configfs libcomposite u_serial usb_f_acm e1000
insmod /mods/g_serial.ko use_acm=1 n_ports=1 || echo "INSMOD-FAILED g_serial"
i=0
while [ ! -e /dev/ttyGS0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -e /dev/ttyGS0 ] && echo "GADGET ok" || echo "GADGET missing"
usbipd -D
i=0
busid=""
while [ -z "$busid" ] && [ $i -lt 50 ]; do
    busid=$(usbip list -l 2>/dev/null | sed -n 's/.*busid \([^ ]*\) (0525:a4a7).*/\1/p' | head -n1)
    [ -n "$busid" ] || sleep 0.2
    i=$((i + 1))
done
echo "BUSID=$busid"
usbip bind -b "$busid" && echo "BOUND ok"
# The echo starts only now: the bind deconfigures the gadget, and g_serial's
# disconnect hangs up every open ttyGS0 (a cat opened before it reads EOF and is
# gone). g_serial queues its bulk-OUT requests only while the tty is open, so the
# tty is held open from here, and opened again after any later hangup (the stub
# resets the device when a client goes). The greeting, written while nobody is
# connected, waits in the port's buffer and goes out on the client's
# SET_CONFIGURATION; then everything that comes in goes back out.
(
    while :; do
        { stty raw -echo; echo gadget-hello; cat; } <>/dev/ttyGS0 >&0 2>/dev/null
        echo "ECHO-REOPEN"
        sleep 0.2
    done
) &
echo "GUEST-READY"
# until the host says it is done (it listens on its loopback, 10.0.2.2 from here)
i=0
while ! nc 10.0.2.2 "$doneport" </dev/null >/dev/null 2>&1 && [ $i -lt 1200 ]; do sleep 0.2; i=$((i + 1)); done
guest_done
INIT
chmod +x "$ir/init"
ok "initramfs: busybox, usbip and usbipd, 12 modules"

t0=$(date +%s)
qemu_usb_start "$ir" "$RUN/guest.log" "icefarm.doneport=$dport" \
    -nic "user,model=e1000,hostfwd=tcp:127.0.0.1:$hport-:3240"
g=$RUN/guest.log
check "the guest is ready (gadget up, exported)" qemu_usb_wait "$g" GUEST-READY 150
check "g_serial made /dev/ttyGS0" grep -q "GADGET ok" "$g"
check "usbip bind took the gadget" grep -q "BOUND ok" "$g"
busid=$(sed -n 's/^BUSID=\(.*\)\r*$/\1/p' "$g" | tr -d '\r' | head -n1)
echo "# the gadget's busid in the guest: ${busid:-?}"

"$CLIENT" 127.0.0.1 "$hport" >"$RUN/client.out" 2>"$RUN/client.err" && rc=0 || rc=$?
sed 's/^/  /' "$RUN/client.out"
check "libicefarm's client against the kernel's stub: all its checks (rc $rc)" test "$rc" = 0

# tell the guest we are done; it prints its dmesg and powers off
"$PY" -c 'import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4); s.settimeout(60)
try:
    c, _ = s.accept(); c.close()
except OSError:
    pass' "$dport" &
E2E_BG+=($!)
check "the guest finished" qemu_usb_wait "$g" GUEST-DONE 90
wait "$QEMU_PID" || true
echo "# guest ran for $(($(date +%s) - t0)) s; its console is $g"
sed -n '/DMESG-BEGIN/,/DMESG-END/p' "$g" >"$RUN/dmesg.txt"
grep -iE "usbip|dummy_hcd|g_serial" "$RUN/dmesg.txt" | sed 's/^/# dmesg: /' | head -n 20
check "the stub took the import (dmesg)" grep -qiE "usbip-host.*(stub up|recv)|usbip_host|stub_probe|usbip-host" "$RUN/dmesg.txt"
check "the guest's dmesg shows no usbip error (invalid epnum, recv invalid request, unlink errors)" bash -c \
    "! grep -iE 'invalid epnum|recv invalid request|unlink.*fail|stub_rx.*error|usbip.*error' '$RUN/dmesg.txt'"
if ((FAIL)); then
    echo "---- client.err"
    tail -n 30 "$RUN/client.err"
    echo "---- guest (last 60 lines)"
    tail -n 60 "$g"
fi
