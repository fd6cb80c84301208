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


def main(argv):
    op, host, port, busid = argv[1:5]
    s = connect(host, port)
    r = do_import(s, busid)
    if op == "import" or r["status"]:
        print(json.dumps(r))
        return 0
    devid = r["devid"]
    if op == "session":
        session(s, devid, r)
        print(json.dumps(r), flush=True)
        op = "hold"
    if op == "hold":
        s.settimeout(float(argv[5]))
        t0 = time.time()
        try:
            closed = s.recv(1) == b""
        except socket.timeout:
            closed = False
        r["closed_after"] = round(time.time() - t0, 3) if closed else None
        print(json.dumps(r))
        return 0
    # touch: GET_DESCRIPTOR(device), then SET_LINE_CODING 1200 on interface 0
    submit(s, 1, devid, 1, 0, bytes([0x80, 6, 0, 1, 0, 0, 18, 0]), length=18)
    _, _, st, actual, desc = ret(s, True)
    r["get_descriptor"] = {"status": st, "length": actual, "vid": "%04x" % struct.unpack("<H", desc[8:10])[0]}
    submit(s, 2, devid, 0, 0, bytes([0x21, 0x20, 0, 0, 0, 0, 7, 0]), bytes([0xb0, 0x04, 0, 0, 0, 0, 8]))
    _, seq, st, actual, _ = ret(s, False)
    r["line_coding"] = {"seq": seq, "status": st, "actual": actual}
    s.settimeout(10)
    t0 = time.time()
    try:
        r["closed"] = s.recv(1) == b""
    except (socket.timeout, ConnectionResetError):
        r["closed"] = False
    r["closed_after"] = round(time.time() - t0, 3)
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
