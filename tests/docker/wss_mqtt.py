"""Logs in to an MQTT-over-WebSockets URL the way the dashboard's MQTT client does:
TLS checked against a CA file and the URL's host name, the WebSocket upgrade with
subprotocol "mqtt", an MQTT 3.1.1 CONNECT in a masked binary frame, and the CONNACK.
Standard library only (tests/docker/engine.sh: is /config.json's broker the stack's
wss listener?).

    wss_mqtt.py URL CAFILE USER       the password in $MQTT_PASSWORD

Prints one line saying what it got; exit 0 when the broker accepted the login.
"""

import base64
import hashlib
import os
import socket
import ssl
import struct
import sys
import urllib.parse

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455


def fail(what):
    print("wss_mqtt: " + what)
    sys.exit(1)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            fail("the server closed the connection after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def mqtt_string(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def connect_packet(user, password):
    body = mqtt_string("MQTT") + bytes([4, 0xC2]) + struct.pack(">H", 30)  # 3.1.1, user+password+clean
    body += mqtt_string("wss-check-%d" % os.getpid()) + mqtt_string(user) + mqtt_string(password)
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


def ws_frame(payload):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x82]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        sys.exit(2)
    url, cafile, user = sys.argv[1:4]
    password = os.environ.get("MQTT_PASSWORD", "")
    u = urllib.parse.urlsplit(url)
    if u.scheme != "wss" or not u.hostname or not u.port:
        fail("%s is not wss://HOST:PORT" % url)
    ctx = ssl.create_default_context(cafile=cafile)  # checks the chain and the host name
    try:
        raw = socket.create_connection((u.hostname, u.port), timeout=10)
        sock = ctx.wrap_socket(raw, server_hostname=u.hostname)
    except (OSError, ssl.SSLError) as e:
        fail("TLS to %s:%d with %s: %s" % (u.hostname, u.port, cafile, e))
    sock.settimeout(10)
    key = base64.b64encode(os.urandom(16)).decode()
    path = u.path or "/"
    sock.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
                  % (path, u.hostname, u.port, key)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        c = sock.recv(1)
        if not c or len(head) > 8192:
            fail("no WebSocket upgrade answer: %r" % head[:200])
        head += c
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 101"):
        fail("the upgrade was answered %r" % lines[0])
    hdr = {ln.split(":", 1)[0].strip().lower(): ln.split(":", 1)[1].strip() for ln in lines[1:] if ":" in ln}
    want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    if hdr.get("sec-websocket-accept") != want:
        fail("Sec-WebSocket-Accept %r, not %r" % (hdr.get("sec-websocket-accept"), want))
    sock.sendall(ws_frame(connect_packet(user, password)))
    b0, b1 = recv_exact(sock, 2)
    n = b1 & 0x7F
    if b0 & 0x0F != 2 or b1 & 0x80 or n >= 126:
        fail("an unexpected WebSocket frame: %02x %02x" % (b0, b1))
    pkt = recv_exact(sock, n)
    if len(pkt) != 4 or pkt[0] != 0x20:
        fail("not a CONNACK: %s" % pkt.hex())
    if pkt[3] != 0:
        fail("CONNACK refuses the login (return code %d)" % pkt[3])
    sock.sendall(ws_frame(bytes([0xE0, 0])))  # DISCONNECT
    sock.close()
    print("wss_mqtt: %s accepted %s's login over TLS (CA %s)" % (url, user, cafile))


if __name__ == "__main__":
    main()
