#!/usr/bin/env python3
"""Slow clients against icefarm-http (issue 16 item 5), bounded: stops by itself.

    slow_clients.py HOST PORT PROBE_PATH

From 127.0.0.1, 300 connections each trickle a request head, one header line
every 2 s (the attack that starved the shim: a line every 14 s on 1,100
connections kept them past the idle timeout, and 0 of 11 probes were answered).
Meanwhile 11 probes from 127.0.0.2 (another address) must all be answered.
Checks: at most the per-address limit of the trickling connections stay open,
every probe is answered within 5 s, and once the trickle stops the server
closes every idle connection within its idle timeout (plus slack). Prints
"ok - ..." / "not ok - ..." and "N passed, M failed"; exit 0 only if all pass.
"""
import select
import socket
import sys
import time

HOST, PORT, PATH = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ATTACKERS, PER_IP_LIMIT, IDLE_TIMEOUT_S = 300, 64, 10
results = []


def check(cond, what):
    results.append(bool(cond))
    print("%s - %s" % ("ok" if cond else "not ok", what), flush=True)


def alive(s):
    """True while the server has not closed (or reset) the connection."""
    try:
        r, _, _ = select.select([s], [], [], 0)
        if not r:
            return True
        return s.recv(4096, socket.MSG_PEEK) != b""
    except OSError:
        return False


def probe(src):
    t0 = time.monotonic()
    try:
        s = socket.create_connection((HOST, PORT), timeout=5, source_address=(src, 0))
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % PATH).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.") else "none"
        return status, time.monotonic() - t0
    except OSError as e:
        return "error: %s" % e, time.monotonic() - t0


socks, refused = [], 0
for i in range(ATTACKERS):
    try:
        s = socket.create_connection((HOST, PORT), timeout=2, source_address=("127.0.0.1", 0))
        s.sendall(b"GET " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    except OSError:
        refused += 1
deadline = time.monotonic() + 12
probes, n = [], 0
while time.monotonic() < deadline:
    for s in socks:
        if alive(s):
            try:
                s.sendall(b"X-Trickle-%d: y\r\n" % n)
            except OSError:
                pass
    n += 1
    if len(probes) < 11:
        probes.append(probe("127.0.0.2"))
    time.sleep(1 if len(probes) < 11 else 2)
open_now = sum(alive(s) for s in socks)
check(open_now <= PER_IP_LIMIT,
      "of %d trickling connections from one address, at most %d stay open (%d do; %d refused at connect)"
      % (ATTACKERS, PER_IP_LIMIT, open_now, refused))
answered = [p for p in probes if p[0] == "200"]
check(len(answered) == len(probes) == 11,
      "all 11 probes from another address answered 200 meanwhile (%s)" % [p[0] for p in probes])
check(all(p[1] < 5 for p in probes), "each within 5 s (slowest %.2f s)" % max(p[1] for p in probes))
# Stop trickling: the server closes the idle connections by itself.
t0 = time.monotonic()
while time.monotonic() - t0 < IDLE_TIMEOUT_S + 10 and any(alive(s) for s in socks):
    time.sleep(0.5)
left = sum(alive(s) for s in socks)
check(left == 0, "once the trickle stops, the server closes every idle connection (%d left after %.0f s)"
      % (left, time.monotonic() - t0))
status, took = probe("127.0.0.1")
check(status == "200", "and the attacking address is served again (%s)" % status)
for s in socks:
    s.close()
print("%d passed, %d failed" % (sum(results), len(results) - sum(results)))
sys.exit(0 if all(results) else 1)
