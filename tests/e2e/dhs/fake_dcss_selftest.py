"""Checks the fake DCSS itself with hand-made DHS bytes (no icefarm code): the
handshake and its deadline, the registration burst in both protocols, the header
shapes, operation bookkeeping, the checks it makes on DHS messages, the duplicate
name, and a restart on the same port. Prints ok/not ok lines and a summary."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_dcss as fd  # noqa: E402

PASS = FAIL = 0


def check(cond, what):
    global PASS, FAIL
    if cond:
        PASS += 1
        print("ok - " + what)
    else:
        FAIL += 1
        print("not ok - " + what)


def recv_exact(s, n, timeout=5):
    s.settimeout(timeout)
    buf = b""
    while len(buf) < n:
        c = s.recv(n - len(buf))
        if not c:
            return buf
        buf += c
    return buf


def read_v2(s):
    hdr = recv_exact(s, 26)
    t, b = int(hdr[:13]), int(hdr[13:])
    return recv_exact(s, t + b)[:t].rstrip(b"\0").decode()


def v2(text):
    raw = text.encode() + b"\0"
    return ("%12d %12d " % (len(raw), 0)).encode() + raw


def dhs_connect(port, name, pad=b"\0"):
    s = socket.create_connection(("127.0.0.1", port))
    first = recv_exact(s, 200)
    s.sendall(("htos_client_is_hardware " + name).encode().ljust(200, pad))
    return s, first


DEVICES = [
    fd.Device("farm_list", fd.OPERATION, "boardfarm"),
    fd.Device("farm_status", fd.STRING, "boardfarm", contents="{}"),
    fd.Device("i0", fd.ION_CHAMBER, "boardfarm", extra=["c1", "0", "t1", "clock"]),
    fd.Device("phi", fd.REAL_MOTOR, "other"),
]


def main():
    d = fd.FakeDCSS({"boardfarm": fd.DhsEntry(2), "onedhs": fd.DhsEntry(1)}, DEVICES, duplicate_delay=0.3)
    port = d.start()

    # handshake + registration (protocol 2), space padded answer (Tcl style)
    s, first = dhs_connect(port, "boardfarm", pad=b" ")
    check(len(first) == 200 and first.startswith(b"stoc_send_client_type\0"), "stoc_send_client_type in 200 bytes")
    check(d.wait_online("boardfarm", 5), "space-padded handshake accepted")
    regs = [read_v2(s) for _ in range(3)]
    check(regs == ["stoh_register_operation farm_list farm_list\n", "stoh_register_string farm_status farm_status\n",
                   "stoh_register_ion_chamber i0 c1 0 t1 clock\n"], "registration burst with its newlines: %r" % regs)

    # an operation: update + one completion, as scripts see it
    h = d.start_operation("farm_list", "", client=7)
    check(h == "7.1", "handles are <client>.<n>")
    check(read_v2(s) == "stoh_start_operation farm_list 7.1", "start_operation sent")
    s.sendall(v2("htos_operation_update farm_list 7.1 board SIM1 ready") + v2("htos_operation_completed farm_list 7.1 normal 1"))
    c = d.wait_completion(h, 5)
    check(c == ("normal", ["1"]), "completion recorded: %r" % (c,))
    check(d.updates(h) == [["board", "SIM1", "ready"]], "update recorded")
    check(not d.violations, "no violations so far: %r" % d.violations)

    # the checks: a second completion, blanked characters, unbalanced braces, binary
    s.sendall(v2("htos_operation_completed farm_list 7.1 normal 2"))
    s.sendall(v2('htos_log note boardfarm {say "hi"}'))
    s.sendall(v2("htos_log note boardfarm {open"))
    raw = b"htos_note x\0"
    s.sendall(("%12d %12d " % (len(raw), 3)).encode() + raw + b"abc")
    s.sendall(v2("htos_set_string_completed farm_status normal {b1 free} {b2 busy}"))
    s.sendall(v2("htos_bogus 1 2"))
    d.wait(lambda: len(d.received) >= 8, 5)
    v = " | ".join(d.violations)
    check("second completion" in v, "a second completion is a violation")
    check("blanks" in v, "blanked characters are a violation")
    check("unbalanced" in v, "unbalanced braces are a violation")
    check("binary part" in v, "a binary part is a violation")
    check(d.strings.get("farm_status") == "{b1 free} {b2 busy}", "string stored by the fixed-offset rule")
    check(d.wait(lambda: any(e == "unrecognized command" for _, e, _ in d.log), 5), "unknown message logged")
    check(d.wait_online("boardfarm", 1), "connection kept after an unknown message")

    # duplicate name: closed after the (shortened) 3 s
    t0 = time.monotonic()
    s2, _ = dhs_connect(port, "boardfarm")
    s2.settimeout(5)
    check(s2.recv(10) == b"", "duplicate name closed")
    check(time.monotonic() - t0 >= 0.3, "duplicate closed only after its delay")
    s2.close()

    # unknown name: closed at once; silence: closed after 1 s
    s3, _ = dhs_connect(port, "nobody")
    s3.settimeout(5)
    check(s3.recv(10) == b"", "unknown name closed")
    s3.close()
    s4 = socket.create_connection(("127.0.0.1", port))
    recv_exact(s4, 200)
    t0 = time.monotonic()
    s4.sendall(b"htos_client_is_hardware boardfarm")  # a v2-sized answer: too short
    s4.settimeout(5)
    check(s4.recv(10) == b"", "short handshake answer closed")
    dt = time.monotonic() - t0
    check(0.9 <= dt < 3, "after the 1 s deadline (%.2f s)" % dt)
    s4.close()

    # drop: outstanding handles are failed by the scripting engine
    h2 = d.start_operation("farm_list", "", client=7)
    read_v2(s)
    s.close()
    check(d.wait_offline("boardfarm", 5), "disconnect noticed")
    check(d.handles[h2]["dead"] == "no_hw_host_boardfarm", "outstanding handle marked no_hw_host_boardfarm")

    # restart on the same port, protocol 1 peer, other header shapes
    d.stop()
    d.violations.clear()
    d.port = port
    d.header_shape = "mx"
    d.start()
    check(d.port == port, "restarted on the same port")
    s = socket.create_connection(("127.0.0.1", port))
    recv_exact(s, 200)
    s.sendall(b"htos_client_type_is_hardware onedhs dcsProtocol_2.0".ljust(200, b"\0"))
    check(d.wait_online("onedhs", 5), "Tcl spelling accepted (only word 2 is read)")
    d.devices.append(fd.Device("op1", fd.OPERATION, "onedhs"))
    h = d.start_operation("op1", "{a b} c", client=2)
    blk = recv_exact(s, 200)
    check(blk.split(b"\0")[0] == b"stoh_start_operation op1 2.1 {a b} c", "protocol-1 block out")
    s.sendall(b"htos_operation_completed op1 2.1 normal".ljust(200, b"\0"))
    check(d.wait_completion(h, 5) == ("normal", []), "protocol-1 completion")
    check(not d.violations, "no violations: %r" % d.violations)
    s.close()
    d.stop()

    check(fd.header(46, 0, "dcss") == b"          46            0 ", "dcss header golden")
    check(fd.header(46, 0, "cpp") == b"          46            0\0", "C++ header golden")
    check(fd.header(46, 0, "mx") == b"          46            0\0", "MX header golden")
    check(fd.header(45, 0, "java") == b"45 0".ljust(26, b"\0"), "Java header golden")
    check(fd.dcss_filter('a [b] "c"; PRIVATE123') == "a  b   c   PRIVATEXXX", "DCSS filter and PRIVATE mask")
    print("%d passed, %d failed" % (PASS, FAIL))
    return 1 if FAIL else 0


if __name__ == "__main__":
    sys.exit(main())
