#!/usr/bin/python3
"""The broker tunnel in the secured farm (TLS, passwords, the ACL plugin): only the
lease holder gets through (PROTOCOL.md 19.3).

  tunnel_secure.py BROKER_URL CAFILE SECRETS_DIR CLI
Prints "ok - ..." / "not ok - ..." per check; exit status 1 if any failed.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import usbip_client as uc  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

URL, CA, SECRETS, CLI = sys.argv[1:5]
host, port = URL.split("://", 1)[1].rsplit(":", 1)
FAILED = []


def check(ok, what):
    print(("ok - " if ok else "not ok - ") + what, flush=True)
    if not ok:
        FAILED.append(what)


def as_user(user):
    os.environ.update(TUNNEL_USER=user, TUNNEL_PASSWORD_FILE=os.path.join(SECRETS, user), TUNNEL_CAFILE=CA)


def cli(user, *args):
    cmd = [CLI, "--broker", URL, "--cafile", CA, "--user", user, "--password-file", os.path.join(SECRETS, user),
           "--json"] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


# alice hears her boards' events (the busid comes only there).
events, got = [], threading.Event()
w = mqtt.Client(client_id="tunnel-test-watch", protocol=mqtt.MQTTv5)
w.username_pw_set("alice", open(os.path.join(SECRETS, "alice")).read().strip())
w.tls_set(ca_certs=CA)
w.on_connect = lambda c, u, f, rc, p=None: c.subscribe("icefarm/+/event", qos=1)
w.on_subscribe = lambda c, u, mid, rcs, p=None: got.set()
w.on_message = lambda c, u, m: events.append(m.payload)
w.connect(host, int(port))
w.loop_start()
check(got.wait(10), "alice subscribes to her boards' events")

r = cli("alice", "reserve", "--amount", "1", "--kind", "usbip")
serial = ""
try:
    serial = json.loads(r.stdout)["serials"][0]
    serial = serial["serial"] if isinstance(serial, dict) else serial
except (ValueError, KeyError, IndexError):
    pass
check(r.returncode == 0 and serial, "alice reserves a board of kind usbip (%s)" % (serial or r.stdout + r.stderr))


def busid():
    import msgpack
    for p in events:
        try:
            e = msgpack.unpackb(p, raw=False)
        except Exception:
            continue
        if isinstance(e, dict) and e.get("event") == "usbip exported" and e.get("serial") == serial:
            return e.get("busid")
    return None


deadline = time.time() + 60
while not busid() and time.time() < deadline:
    time.sleep(0.1)
token = busid()
check(bool(token), "alice hears 'usbip exported' with the token")

# alice's console through the tunnel dies without a word (kill -9, a laptop lid):
# the broker publishes its Will, the empty c2s, and the worker ends the session,
# so her board's import is free again (the ACL once refused that Will, and the
# board answered "Device busy" to its holder until the lease ended).
con = subprocess.Popen([CLI, "--broker", URL, "--cafile", CA, "--user", "alice", "--password-file",
                        os.path.join(SECRETS, "alice"), "serial", serial, "--tunnel"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
up = ""
deadline = time.time() + 30
while time.time() < deadline:
    line = con.stderr.readline()
    if not line or " up: " in line:
        up = line
        break
check(" up: " in up, "alice's 'icefarm-cli serial --tunnel' comes up: %s" % up.strip())
con.kill()
con.wait()

as_user("alice")
deadline = time.time() + 5  # the Will goes out at once; the worker ends the session on it
while True:
    s = uc.connect(URL, serial)
    r = uc.do_import(s, token)
    if r.get("status") != 2 or time.time() >= deadline:  # 2: ST_DEV_BUSY
        break
    s.close()
    time.sleep(0.2)
check(r.get("status") == 0 and r.get("vid") == "2e8a", "alice imports her board through the tunnel over TLS: %s" % r)
uc.submit(s, 1, r.get("devid", 0), 1, 0, bytes([0x80, 6, 0, 1, 0, 0, 18, 0]), length=18)
_, _, st, actual, desc = uc.ret(s, True)
check(st == 0 and actual == 18 and desc[8:10] == b"\x8a\x2e", "GET_DESCRIPTOR goes through for her")

as_user("bob")
b = uc.connect(URL, serial)
b.settimeout(3)
try:
    b.sendall(uc.struct.pack(">HHI", 0x0111, 0x8003, 0) + token.encode().ljust(32, b"\0"))
    reply = b.recv(8)
except socket.timeout:
    reply = None
check(reply is None, "bob, who does not hold the board, gets nothing through its tunnel even with the token")

# The lease ends: the worker ends her session at once (the shell checks its log:
# the empty s2c that says so is not hers to read any more, as the lease is gone),
# and the tunnel is closed to her.
r = cli("alice", "end", serial)
check(r.returncode == 0, "alice ends the lease")
s.settimeout(3)
try:
    s.sendall(uc.struct.pack(">HHI", 0x0111, 0x8003, 0) + token.encode().ljust(32, b"\0"))
    reply = s.recv(8)
except socket.timeout:
    reply = None
check(not reply, "after the end nothing comes back through her tunnel")


def last_detached():
    import msgpack
    mine = []
    for p in events:
        try:
            e = msgpack.unpackb(p, raw=False)
        except Exception:
            continue
        if isinstance(e, dict) and e.get("serial") == serial:
            mine.append(e)
    names = [e.get("event") for e in mine]
    if "released" not in names:
        return None
    rel = names.index("released")
    return mine[rel - 1] if rel else None, mine[rel].get("lease")


# Her lease's events drain to her after its end (the ACL's drain): the export's
# last `usbip detached` reaches her, tagged with the lease, before `released`.
deadline = time.time() + 10
while not last_detached() and time.time() < deadline:
    time.sleep(0.1)
got = last_detached()
check(got is not None and got[0] is not None and got[0].get("event") == "usbip detached"
      and got[0].get("reason") == "the lease ended" and got[0].get("lease") == got[1] and got[1],
      "after the end she still hears 'usbip detached' (the lease ended), tagged with her lease, then 'released' (%r)"
      % (got,))
print("%d failed" % len(FAILED))
sys.exit(1 if FAILED else 0)
