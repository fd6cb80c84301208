#!/usr/bin/python3
"""A raw USB/IP client for the end-to-end tests (standard library only).

  usbip_client.py import HOST PORT BUSID
      Imports BUSID and prints the reply as JSON: {"status": N} or the device
      record {"status": 0, "busid", "vid", "pid", "devid", "speed"}.
  usbip_client.py touch HOST PORT BUSID
      Imports, reads the device descriptor, then sends SET_LINE_CODING 1200 8N1
      (the 1200-baud touch) on interface 0 and waits for the server to close the
      connection once the board re-enumerates. Prints JSON with what happened.
  usbip_client.py hold HOST PORT BUSID SECONDS
      Imports and keeps the connection open until the server closes it (prints
      {"closed_after": s}) or SECONDS pass ({"closed_after": null}).
  usbip_client.py session HOST PORT BUSID SECONDS
      A scripted session for the metrics test, on the default firmware's CDC:
      GET_DESCRIPTOR(device), SET_LINE_CODING 115200 8N1, a 100-byte bulk OUT on
      0x02, a bulk IN on 0x82 (nothing to read without DTR: it stays pending)
      unlinked, then an UNLINK of the already completed GET_DESCRIPTOR. Prints
      one JSON line (the URBs submitted, the bytes the RET_SUBMITs reported per
      direction, the two RET_UNLINK statuses), then keeps the connection open
      for SECONDS or until the server closes it.
  usbip_client.py picoboot HOST PORT BUSID UF2
      On a board in BOOTSEL, flashes UF2 the way picotool does, with PICOBOOT
      URBs (the command block on bulk OUT 0x03, the data phase, the empty packet
      in the other direction; GET_CMD_STATUS and INTERFACE_RESET on endpoint 0):
      first a misaligned FLASH_ERASE (it must stall, GET_CMD_STATUS naming
      BAD_ALIGNMENT), then EXCLUSIVE_ACCESS, EXIT_XIP, FLASH_ERASE, every 256-byte
      page, READ back and compare, REBOOT2 (normal, 100 ms), and waits for the
      server to close the import when the board re-enumerates. Prints JSON.

HOST may instead be a broker URL (mqtt://H:P or mqtts://H:P) and PORT a board's
serial: the same bytes then travel through the broker tunnel (PROTOCOL.md 19.3)
on icefarm/SERIAL/usbip/SESSION/c2s|s2c, logged in as $TUNNEL_USER with the
password in $TUNNEL_PASSWORD_FILE and $TUNNEL_CAFILE for TLS (all optional).
"""
import json
import os
import random
import socket
import string
import struct
import sys
import threading
import time


class Tunnel:
    """A socket-like USB/IP stream over MQTT: sendall publishes QoS 1 on c2s,
    recv reads what came on s2c; an empty s2c message is the end of the stream."""

    def __init__(self, url, serial):
        import paho.mqtt.client as mqtt
        scheme, rest = url.split("://", 1)
        host, port = rest.rsplit(":", 1)
        self.session = "".join(random.choice(string.ascii_letters + string.digits) for _ in range(16))
        base = "icefarm/%s/usbip/%s/" % (serial, self.session)
        self.c2s, self.s2c = base + "c2s", base + "s2c"
        self.buf, self.eof, self.timeout = b"", False, 10.0
        self.cv = threading.Condition()
        self.c = mqtt.Client(client_id="tun-" + self.session, protocol=mqtt.MQTTv5)
        if os.environ.get("TUNNEL_USER"):
            pw = open(os.environ["TUNNEL_PASSWORD_FILE"]).read().strip()
            self.c.username_pw_set(os.environ["TUNNEL_USER"], pw)
        if scheme == "mqtts":
            self.c.tls_set(ca_certs=os.environ.get("TUNNEL_CAFILE"))
        self.c.will_set(self.c2s, b"", qos=1)  # the session ends if this connection dies
        subscribed = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe(self.s2c, qos=1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p=None: subscribed.set()
        self.c.on_message = self._on_message
        self.c.connect(host, int(port))
        self.c.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("no SUBACK from the broker within 10 s")

    def _on_message(self, c, u, msg):
        with self.cv:
            if msg.payload:
                self.buf += msg.payload
            else:
                self.eof = True
            self.cv.notify_all()

    def settimeout(self, t):
        self.timeout = t

    def setsockopt(self, *a):
        pass

    def sendall(self, data):
        self.c.publish(self.c2s, data, qos=1).wait_for_publish(10)

    def close(self):
        """Ends the session (an empty c2s) and the connection."""
        self.c.publish(self.c2s, b"", qos=1).wait_for_publish(5)
        self.c.disconnect()
        self.c.loop_stop()

    def recv(self, n):
        deadline = time.time() + (self.timeout if self.timeout is not None else 1e9)
        with self.cv:
            while not self.buf and not self.eof:
                left = deadline - time.time()
                if left <= 0:
                    raise socket.timeout("no bytes from the tunnel")
                self.cv.wait(left)
            out, self.buf = self.buf[:n], self.buf[n:]
            return out


def connect(host, port):
    if "://" in host:
        return Tunnel(host, port)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def do_import(s, busid):
    s.sendall(struct.pack(">HHI", 0x0111, 0x8003, 0) + busid.encode().ljust(32, b"\0"))
    ver, code, status = struct.unpack(">HHI", recv_exact(s, 8))
    if status:
        return {"status": status}
    dev = recv_exact(s, 312)
    busnum, devnum, speed = struct.unpack(">III", dev[288:300])
    vid, pid = struct.unpack(">HH", dev[300:304])
    return {"status": 0, "busid": dev[256:288].rstrip(b"\0").decode(), "vid": "%04x" % vid,
            "pid": "%04x" % pid, "devid": busnum << 16 | devnum, "speed": speed}


def submit(s, seq, devid, direction, ep, setup, data=b"", length=None):
    length = len(data) if length is None else length
    hdr = struct.pack(">IIIII", 1, seq, devid, direction, ep)
    hdr += struct.pack(">IiiiI", 0x200 if direction else 0, length, 0, 0, 0) + setup
    s.sendall(hdr + data)


def ret(s, is_in):
    h = recv_exact(s, 48)
    cmd, seq, _, _, _, status, actual = struct.unpack(">IIIIIii", h[:28])
    data = recv_exact(s, actual) if cmd == 3 and is_in and actual > 0 else b""
    return cmd, seq, status, actual, data


def unlink(s, seq, devid, target):
    s.sendall(struct.pack(">IIIII", 2, seq, devid, 0, 0) + struct.pack(">I", target) + bytes(24))


def session(s, devid, r):
    moved = {"in": 0, "out": 0}
    submit(s, 1, devid, 1, 0, bytes([0x80, 6, 0, 1, 0, 0, 18, 0]), length=18)
    _, seq1, st1, actual, _ = ret(s, True)
    moved["in"] += actual
    submit(s, 2, devid, 0, 0, bytes([0x21, 0x20, 0, 0, 0, 0, 7, 0]), bytes([0x00, 0xc2, 0x01, 0, 0, 0, 8]))
    _, seq2, st2, actual, _ = ret(s, False)
    moved["out"] += actual
    submit(s, 3, devid, 0, 2, bytes(8), b"x" * 100)
    _, seq3, st3, actual, _ = ret(s, False)
    moved["out"] += actual
    submit(s, 4, devid, 1, 2, bytes(8), length=64)
    unlink(s, 5, devid, 4)
    cmd5, seq5, st5, _, _ = ret(s, True)
    unlink(s, 6, devid, 1)
    cmd6, seq6, st6, _, _ = ret(s, False)
    r.update({"urbs": 4, "bytes": moved, "statuses": [st1, st2, st3],
              "unlink_pending": {"cmd": cmd5, "seq": seq5, "status": st5},
              "unlink_completed": {"cmd": cmd6, "seq": seq6, "status": st6}})


PICOBOOT_MAGIC = 0x431FD10B


def uf2_image(path):
    """(base, bytes) of a UF2's flash blocks (the RP2350-E10 block and others
    outside the first 16 MiB of flash are skipped), which must be contiguous."""
    data = open(path, "rb").read()
    blocks = []
    for off in range(0, len(data), 512):
        m0, m1, flags, addr, size = struct.unpack("<5I", data[off:off + 20])
        if m0 != 0x0A324655 or m1 != 0x9E5D5157 or flags & 1 or not 0x10000000 <= addr < 0x10FFFF00:
            continue
        blocks.append((addr, data[off + 32:off + 32 + size]))
    blocks.sort()
    base, img = blocks[0][0], b""
    for addr, payload in blocks:
        if addr != base + len(img):
            raise ValueError("UF2 blocks are not contiguous at 0x%08x" % addr)
        img += payload
    return base, img


def picoboot(s, devid, uf2, r):
    seq = [100]
    tok = [0]

    def urb(direction, ep, setup=bytes(8), data=b"", length=None):
        seq[0] += 1
        submit(s, seq[0], devid, direction, ep, setup, data, length)
        _, rseq, st, actual, got = ret(s, direction == 1)
        if rseq != seq[0]:
            raise RuntimeError("RET_SUBMIT for seqnum %d, expected %d" % (rseq, seq[0]))
        return st, actual, got

    def cmd(cid, args=b"", xfer=0, data=b""):
        tok[0] += 1
        blk = struct.pack("<IIBBHI", PICOBOOT_MAGIC, tok[0], cid, len(args), 0, xfer) + args.ljust(16, b"\0")
        st, _, _ = urb(0, 3, data=blk)
        got = b""
        if st == 0 and xfer:
            if cid & 0x80:
                st, _, got = urb(1, 4, length=xfer)
            else:
                st, _, _ = urb(0, 3, data=data)
        if st == 0:
            st, _, _ = urb(0, 3, data=b"\0") if cid & 0x80 else urb(1, 4, length=64)
        return st, got

    def cmd_status():
        st, n, got = urb(1, 0, bytes([0xC1, 0x42, 0, 0, 1, 0, 16, 0]), length=16)
        token, code = struct.unpack("<II", got[:8])
        return {"status": st, "token": token, "code": code, "cmd": got[8]}

    base, img = uf2_image(uf2)
    end = (len(img) + 255) // 256 * 256
    img_padded = img + b"\xff" * (end - len(img))
    st, _ = cmd(0x03, struct.pack("<II", base + 256, 4096))
    r["bad_erase"] = {"status": st, "cmd_status": cmd_status()}
    r["bad_erase"]["token"] = tok[0]
    r["if_reset"] = urb(0, 0, bytes([0x41, 0x41, 0, 0, 1, 0, 0, 0]))[0]
    steps = {}
    steps["exclusive"] = cmd(0x01, b"\x01")[0]
    steps["exit_xip"] = cmd(0x06)[0]
    steps["erase"] = cmd(0x03, struct.pack("<II", base, (end + 4095) // 4096 * 4096))[0]
    steps["write"] = max(abs(cmd(0x05, struct.pack("<II", base + o, 256), 256, img_padded[o:o + 256])[0])
                         for o in range(0, end, 256))
    back = b""
    for o in range(0, len(img), 4096):
        n = min(4096, len(img) - o)
        st, got = cmd(0x84, struct.pack("<II", base + o, n), n)
        if st:
            steps["read"] = st
            break
        back += got
    r["verified"] = back == img
    steps["reboot2"] = cmd(0x0A, struct.pack("<IIII", 0, 100, 0, 0))[0]
    r["steps"] = steps
    r["bytes"] = len(img)
    r["closed"], r["closed_after"] = wait_closed(s, 10)


def wait_closed(s, timeout):
    """Whether the server closes the connection within timeout s, and after how long."""
    s.settimeout(timeout)
    t0 = time.time()
    try:
        closed = s.recv(1) == b""
    except (socket.timeout, ConnectionResetError):
        closed = False
    return closed, round(time.time() - t0, 3)


def main(argv):
    op, host, port, busid = argv[1:5]
    s = connect(host, port)
    r = do_import(s, busid)
    if op == "import" or r["status"]:
        print(json.dumps(r))
        return 0
    devid = r["devid"]
    if op == "picoboot":
        picoboot(s, devid, argv[5], r)
        print(json.dumps(r))
        return 0
    if op == "session":
        session(s, devid, r)
        print(json.dumps(r), flush=True)
        op = "hold"
    if op == "hold":
        closed, after = wait_closed(s, float(argv[5]))
        r["closed_after"] = after if closed else None
        print(json.dumps(r))
        return 0
    # touch: GET_DESCRIPTOR(device), then SET_LINE_CODING 1200 on interface 0
    submit(s, 1, devid, 1, 0, bytes([0x80, 6, 0, 1, 0, 0, 18, 0]), length=18)
    _, _, st, actual, desc = ret(s, True)
    r["get_descriptor"] = {"status": st, "length": actual, "vid": "%04x" % struct.unpack("<H", desc[8:10])[0]}
    submit(s, 2, devid, 0, 0, bytes([0x21, 0x20, 0, 0, 0, 0, 7, 0]), bytes([0xb0, 0x04, 0, 0, 0, 0, 8]))
    _, seq, st, actual, _ = ret(s, False)
    r["line_coding"] = {"seq": seq, "status": st, "actual": actual}
    r["closed"], r["closed_after"] = wait_closed(s, 10)
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
