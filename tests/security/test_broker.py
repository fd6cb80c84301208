#!/usr/bin/python3
"""A real Mosquitto with the icefarm_acl plugin, configured from
broker/secure/secure.conf.in with users made by add-user.sh and certificates by
make-certs.sh, driven by paho-mqtt clients playing control, workers, clients and
a dashboard.

  test_broker.py --plugin build/broker/plugin/icefarm_acl.so --broker-dir broker [--asan]

"Not delivered" is never judged by waiting: after the publish that must not
arrive has been acknowledged by the broker, a barrier message is sent to the
same receiver on a topic it may read; once the barrier arrives, anything
published before it would have arrived too. Deadlines (10 s) only bound waits
for things that must happen. Prints "ok - ..." per check and "N passed, M
failed"; exits 1 on any failure.
"""
import argparse
import itertools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

try:
    import msgpack
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError as e:  # pragma: no cover
    print(f"not ok - python3-paho-mqtt and python3-msgpack are needed ({e})")
    print("0 passed, 1 failed")
    sys.exit(1)

DEADLINE = 10.0
PASSED = 0
FAILED = 0


def check(cond, what):
    global PASSED, FAILED
    if cond:
        PASSED += 1
        print(f"ok - {what}", flush=True)
    else:
        FAILED += 1
        print(f"not ok - {what}", flush=True)
    return cond


def wait_until(pred, timeout=DEADLINE):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pack(d):
    return msgpack.packb({"v": 1, **d}, use_bin_type=True)


_ids = itertools.count()


class Client:
    """One paho MQTT 5 connection with its received messages recorded."""

    def __init__(self, user=None, password=None, client_id=None, port=None, tls_ca=None, ws=False,
                 will=None):
        self.user = user
        self.msgs = []
        self.connack = None
        self.subacks = {}
        self.error = None
        cid = client_id or f"t-{user or 'anon'}-{os.getpid()}-{next(_ids)}"
        self.cid = cid
        self.c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv5,
                             transport="websockets" if ws else "tcp", reconnect_on_failure=False)
        if user is not None:
            self.c.username_pw_set(user, password)
        if tls_ca:
            self.c.tls_set(ca_certs=tls_ca, cert_reqs=ssl.CERT_REQUIRED)
        if will:
            topic, payload, qos, retain = will[:4]
            self.c.will_set(topic, payload, qos, retain, properties=will[4] if len(will) > 4 else None)
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect
        self.gone = False
        self.port = port

    def _on_disconnect(self, c, u, rc, props=None):
        self.gone = True

    def _on_connect(self, c, u, flags, rc, props=None):
        self.connack = rc.value if hasattr(rc, "value") else int(rc)

    def _on_subscribe(self, c, u, mid, rcs, props=None):
        self.subacks[mid] = [r.value if hasattr(r, "value") else int(r) for r in rcs]

    def _on_message(self, c, u, m):
        props = {}
        up = getattr(m.properties, "UserProperty", None) if m.properties else None
        props["user"] = list(up) if up else []
        self.msgs.append((m.topic, bytes(m.payload), m.retain, props))

    def connect(self):
        """Returns the CONNACK reason code (0 = accepted), or -1 if the
        connection itself failed (e.g. TLS verification)."""
        try:
            self.c.connect("127.0.0.1", self.port, keepalive=30)
        except (OSError, ssl.SSLError) as e:
            self.error = e
            return -1
        self.c.loop_start()
        if not wait_until(lambda: self.connack is not None):
            self.close()
            return -1
        if self.connack != 0:
            self.close()
        return self.connack

    def drop(self):
        """Ends the connection without DISCONNECT, so the broker sends the Will."""
        try:
            self.c.socket().shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        wait_until(lambda: self.gone)
        self.c.loop_stop()

    def close(self):
        try:
            self.c.disconnect()
        except Exception:
            pass
        self.c.loop_stop()

    def sub(self, filt):
        """Subscribes at QoS 1; returns the SUBACK reason code (< 128: granted)."""
        rc, mid = self.c.subscribe(filt, qos=1)
        if rc != mqtt.MQTT_ERR_SUCCESS or not wait_until(lambda: mid in self.subacks):
            return -1
        return self.subacks[mid][0]

    def pub(self, topic, payload=b"", retain=False, props=None):
        """Publishes at QoS 1 and waits for the broker's PUBACK (which comes
        whether or not the ACL let the message through)."""
        info = self.c.publish(topic, payload, qos=1, retain=retain, properties=props)
        info.wait_for_publish(DEADLINE)
        return info.is_published()

    def got(self, topic, payload=None):
        return [m for m in list(self.msgs) if m[0] == topic and (payload is None or m[1] == payload)]

    def wait_for(self, topic, payload=None):
        return wait_until(lambda: self.got(topic, payload))


class Farm:
    """The broker under test and the identities of the test."""

    USERS = [("ctl", "control"), ("alice", "client"), ("bob", "client"), ("w1", "worker"),
             ("w2", "worker"), ("w3", "worker"), ("dash", "dashboard"), ("gw", "gateway"),
             ("oscar", "operator")]

    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="icefarm-sec-")
        os.chmod(self.tmp, 0o755)  # the broker runs as `mosquitto` once started as root
        self.etc = os.path.join(self.tmp, "etc")
        self.certs = os.path.join(self.tmp, "certs")
        self.other_ca = os.path.join(self.tmp, "other-ca")
        self.secure = os.path.join(args.broker_dir, "secure")
        self.log = os.path.join(self.tmp, "mosquitto.log")
        self.proc = None
        self.plain = free_port()
        self.mqtts = free_port()
        self.wss = free_port()
        self.pw = {u: f"pw-{u}-{os.getpid()}" for u, _ in self.USERS}

    def add_user(self, user, role, password):
        r = subprocess.run([os.path.join(self.secure, "add-user.sh"), self.etc, user, role, "--password-stdin"],
                           input=password + "\n", text=True, capture_output=True)
        return r.returncode == 0

    def delete_user(self, user):
        r = subprocess.run([os.path.join(self.secure, "add-user.sh"), "--delete", self.etc, user],
                           capture_output=True, text=True)
        return r.returncode == 0

    def setup(self):
        for d in (self.certs, self.other_ca):
            r = subprocess.run([os.path.join(self.secure, "make-certs.sh"), d], capture_output=True, text=True)
            if r.returncode:
                sys.stderr.write(r.stderr)
                return False
        ok = all(self.add_user(u, role, self.pw[u]) for u, role in self.USERS)
        # A user with a password but no role.
        self.pw["norole"] = "pw-norole"
        r = subprocess.run(["mosquitto_passwd", "-b", os.path.join(self.etc, "passwd"), "norole", "pw-norole"],
                           capture_output=True)
        ok = ok and r.returncode == 0
        with open(os.path.join(self.secure, "secure.conf.in")) as f:
            conf = f.read()
        for k, v in {"@HOST@": "127.0.0.1", "@MQTTS_PORT@": str(self.mqtts), "@WSS_PORT@": str(self.wss),
                     "@CERTS@": self.certs, "@ETC@": self.etc, "@PLUGIN@": self.args.plugin}.items():
            conf = conf.replace(k, v)
        # The test's own plain listener: same users and plugin (per_listener_settings false).
        conf += f"\nlistener {self.plain} 127.0.0.1\nprotocol mqtt\n"
        if os.environ.get("ICEFARM_BROKER_DEBUG"):
            conf += "log_type all\n"
        else:
            conf += "log_type information\n"
        self.conf = os.path.join(self.tmp, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        return ok

    def start(self):
        env = dict(os.environ)
        if self.args.asan:
            libs = []
            for lib in ("libasan.so", "libubsan.so"):
                p = subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
                if os.path.isabs(p) and os.path.exists(p):
                    libs.append(os.path.realpath(p))
            env["LD_PRELOAD"] = ":".join(libs)
            # Leaks are checked too (full stacks through the uninstrumented broker);
            # lsan.supp lists the broker's own leftovers at exit.
            env["ASAN_OPTIONS"] = os.environ.get("ICEFARM_BROKER_ASAN_OPTIONS",
                                                 "detect_leaks=1:fast_unwind_on_malloc=0:abort_on_error=0")
            env["LSAN_OPTIONS"] = "suppressions=" + os.path.join(os.path.dirname(os.path.abspath(__file__)), "lsan.supp")
            env["UBSAN_OPTIONS"] = "print_stacktrace=1"
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([os.environ.get("ICEFARM_MOSQUITTO", "/usr/sbin/mosquitto"), "-c", self.conf],
                                     stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        logf.close()

        def up():
            if self.proc.poll() is not None:
                return True
            try:
                socket.create_connection(("127.0.0.1", self.plain), timeout=0.2).close()
                return True
            except OSError:
                return False

        return wait_until(up, 30) and self.proc.poll() is None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def client(self, user, client_id=None, password=None, **kw):
        kw.setdefault("port", self.plain)
        return Client(user, self.pw.get(user, "") if password is None else password, client_id, **kw)


def connected(farm, user, client_id=None, **kw):
    c = farm.client(user, client_id, **kw)
    rc = c.connect()
    if rc != 0:
        raise RuntimeError(f"{user} could not connect (rc {rc}, {c.error}); log: {farm.log}")
    return c


def run(farm):
    # ---- authentication ----
    anon = Client(None, None, port=farm.plain)
    check(anon.connect() != 0, "anonymous connection refused")
    check(farm.client("alice", password="wrong").connect() not in (0,), "wrong password refused")
    check(farm.client("norole").connect() not in (0,), "a user with a password but no role refused")
    check(farm.client("alice", client_id="wrk-w1").connect() not in (0,),
          "a client cannot connect with a worker's client id (no takeover)")
    check(farm.client("w1", client_id="w1-other").connect() not in (0,),
          "a worker must use its own client id wrk-<id>")

    ctl = connected(farm, "ctl", "icefarm-ctl")
    w1 = connected(farm, "w1", "wrk-w1")
    w2 = connected(farm, "w2", "wrk-w2")
    alice = connected(farm, "alice")
    bob = connected(farm, "bob")
    dash = connected(farm, "dash")
    gw = connected(farm, "gw")
    oscar = connected(farm, "oscar")
    check(True, "control, two workers, two clients, a dashboard, a gateway and an operator log in")
    bl = connected(farm, "bob", "bob-laptop")
    bl.sub("icefarm/client/bob/#")
    check(farm.client("alice", client_id="bob-laptop").connect() != 0,
          "a client cannot take over another user's live connection by its client id")
    check(bl.sub("icefarm/client/bob/event") < 128 and not bl.gone, "... which stays connected")
    bl.close()
    # Before its first subscribe or publish too (issue 16): the id is bound at login.
    quiet = connected(farm, "bob", "bob-quiet")
    check(farm.client("alice", client_id="bob-quiet").connect() != 0,
          "a client cannot take over another user's connection in the window before its first subscribe")
    check(quiet.sub("icefarm/client/bob/event") < 128 and not quiet.gone, "... which stays connected")
    quiet.close()
    spare = farm.client("alice", client_id="spare-id")
    check(farm.client("bob", password="wrong", client_id="spare-id").connect() not in (0,) and spare.connect() == 0,
          "a refused login does not keep its client id from others")
    spare.close()

    for f in ("icefarm/ctl/req/+", "icefarm/+/event", "icefarm/+/state", "icefarm/farm/#", "icefarm/+/cmd",
              "icefarm/worker/+/state", "icefarm/lease/+"):
        ctl.sub(f)
    n = itertools.count()

    def ctl_barrier():
        p = pack({"barrier": next(n)})
        ctl.pub("icefarm/farm/barrier", p)
        return ctl.wait_for("icefarm/farm/barrier", p)

    def worker_barrier(w, wid):
        p = pack({"barrier": next(n)})
        ctl.pub(f"icefarm/worker/{wid}/cmd", p)
        return w.wait_for(f"icefarm/worker/{wid}/cmd", p)

    def client_barrier(c, name):
        p = pack({"barrier": next(n)})
        ctl.pub(f"icefarm/client/{name}/event", p)
        return c.wait_for(f"icefarm/client/{name}/event", p)

    # ---- identity on requests ----
    def request(c, verb, client_prop, response_topic):
        p = Properties(PacketTypes.PUBLISH)
        ups = [("x-trace", "t1")]
        if client_prop is not None:
            ups.append(("icefarm-client", client_prop))
        p.UserProperty = ups
        if response_topic:
            p.ResponseTopic = response_topic
        p.CorrelationData = b"c1"
        payload = pack({"n": next(n)})
        c.pub(f"icefarm/ctl/req/{verb}", payload, props=p)
        return payload

    p_bob = request(bob, "reserve", "alice", "icefarm/client/bob/reply")
    ok = ctl.wait_for("icefarm/ctl/req/reserve", p_bob)
    ids = [v for k, v in ctl.got("icefarm/ctl/req/reserve", p_bob)[0][3]["user"] if k == "icefarm-client"] if ok else []
    check(ids == ["bob"], f"bob's reserve claiming icefarm-client=alice reaches control as icefarm-client=bob ({ids})")
    others = [kv for kv in ctl.got("icefarm/ctl/req/reserve", p_bob)[0][3]["user"] if kv[0] != "icefarm-client"] if ok else []
    check(others == [("x-trace", "t1"), ("icefarm-role", "client"), ("icefarm-conn", bob.cid)],
          f"other user properties of a request are kept, icefarm-role says bob's role, icefarm-conn his "
          f"connection ({others})")

    def props_of(c, topic, payload):
        """The user properties of a request, icefarm-conn checked (the sender's
        client id, PROTOCOL.md 5.1) and left out."""
        got = c.got(topic, payload)
        if not got:
            return None
        props = got[0][3]["user"]
        conns = [v for k, v in props if k == "icefarm-conn"]
        return [kv for kv in props if kv[0] != "icefarm-conn"] if len(conns) == 1 else props

    def role_request(c, verb, user_props, response_topic):
        p = Properties(PacketTypes.PUBLISH)
        p.UserProperty = user_props
        p.ResponseTopic = response_topic
        payload = pack({"n": next(n)})
        c.pub(f"icefarm/ctl/req/{verb}", payload, props=p)
        return payload

    p_forge = role_request(bob, "delete", [("icefarm-role", "operator"), ("icefarm-client", "bob")],
                           "icefarm/client/bob/reply")
    ok = ctl.wait_for("icefarm/ctl/req/delete", p_forge)
    check(ok and props_of(ctl, "icefarm/ctl/req/delete", p_forge) == [("icefarm-client", "bob"), ("icefarm-role", "client")],
          f"a client's forged icefarm-role=operator is replaced by its real role "
          f"({props_of(ctl, 'icefarm/ctl/req/delete', p_forge)})")
    p_op = role_request(oscar, "delete", [], "icefarm/client/oscar/reply")
    ok = ctl.wait_for("icefarm/ctl/req/delete", p_op)
    check(ok and props_of(ctl, "icefarm/ctl/req/delete", p_op) == [("icefarm-client", "oscar"), ("icefarm-role", "operator")],
          "an operator's request carries icefarm-role=operator")
    p_gw_op = role_request(gw, "reboot", [("icefarm-client", "oscar")], "icefarm/client/gw/reply")
    ok = ctl.wait_for("icefarm/ctl/req/reboot", p_gw_op)
    check(ok and props_of(ctl, "icefarm/ctl/req/reboot", p_gw_op) == [("icefarm-client", "oscar"), ("icefarm-role", "operator")],
          "a gateway may act for an operator, whose role goes along")
    p_none = request(alice, "status", None, "icefarm/client/alice/reply")
    ok = ctl.wait_for("icefarm/ctl/req/status", p_none)
    ids = [v for k, v in ctl.got("icefarm/ctl/req/status", p_none)[0][3]["user"] if k == "icefarm-client"] if ok else []
    check(ids == ["alice"], "a request without icefarm-client gets the authenticated user")
    p_gw = request(gw, "reserve", "alice", "icefarm/client/gw/reply")
    ok = ctl.wait_for("icefarm/ctl/req/reserve", p_gw)
    ids = [v for k, v in ctl.got("icefarm/ctl/req/reserve", p_gw)[0][3]["user"] if k == "icefarm-client"] if ok else []
    check(ids == ["alice"], "a gateway's request keeps the client it names")
    p_gw_ctl = request(gw, "end_all", "ctl", "icefarm/client/gw/reply")
    p_gw_nobody = request(gw, "end_all", "carol", "icefarm/client/gw/reply")
    ctl_barrier()
    check(not ctl.got("icefarm/ctl/req/end_all", p_gw_ctl) and not ctl.got("icefarm/ctl/req/end_all", p_gw_nobody),
          "a gateway cannot act for a user who is not a client (control, or nobody)")
    p_bad = request(bob, "status", None, "icefarm/lease/S1")
    p_bad2 = request(bob, "status", None, "icefarm/client/alice/reply")
    ctl_barrier()
    check(not ctl.got("icefarm/ctl/req/status", p_bad) and not ctl.got("icefarm/ctl/req/status", p_bad2),
          "a request whose response topic is not the sender's own is refused")
    dash.pub("icefarm/ctl/req/status", pack({}))
    w1.pub("icefarm/ctl/req/status", pack({}))
    ctl_barrier()
    check(len(ctl.got("icefarm/ctl/req/status")) == 1, "dashboards and workers cannot send requests")

    # ---- workers and board ownership ----
    w1.sub("icefarm/worker/w1/cmd")
    w2.sub("icefarm/worker/w2/cmd")
    birth1 = pack({"worker": "w1", "state": "online", "epoch": 1, "kinds": ["pulse_count"],
                   "boards": [{"serial": "S1", "state": "ready"}, {"serial": "S2", "state": "ready"}]})
    birth2 = pack({"worker": "w2", "state": "online", "epoch": 1, "kinds": ["pulse_count"],
                   "boards": [{"serial": "S3", "state": "ready"}]})
    w1.pub("icefarm/worker/w1/state", birth1, retain=True)
    w2.pub("icefarm/worker/w2/state", birth2, retain=True)

    def state(serial, worker, st="ready"):
        return pack({"serial": serial, "worker": worker, "epoch": 1, "state": st, "kind": "", "reason": ""})

    w1.pub("icefarm/S1/state", state("S1", "w1"), retain=True)
    check(ctl.wait_for("icefarm/S1/state", state("S1", "w1")), "a worker publishes the state of its board")
    check(w1.sub("icefarm/S1/cmd") < 128 and w1.sub("icefarm/S2/cmd") < 128, "a worker subscribes to its boards' commands")
    check(w2.sub("icefarm/S1/cmd") >= 128, "another worker cannot subscribe to them")
    ev_w2 = pack({"event": "results", "serial": "S1", "fake": True})
    w2.pub("icefarm/S1/event", ev_w2)
    w2.pub("icefarm/S1/state", state("S1", "w2"), retain=True)
    w2.pub("icefarm/S2/state", state("S2", "w2", "broken"), retain=True)
    w1.pub("icefarm/S2/state", state("S2", "w2"), retain=True)  # w1 lying about the worker
    w2.pub("icefarm/worker/w1/state", birth2, retain=True)
    ctl_barrier()
    check(not ctl.got("icefarm/S1/event", ev_w2), "a worker cannot publish events for another worker's board")
    check(not ctl.got("icefarm/S1/state", state("S1", "w2")) and not ctl.got("icefarm/S2/state"),
          "a worker cannot publish the state of another worker's board, nor name another worker")
    check(not ctl.got("icefarm/worker/w1/state", birth2), "a worker cannot publish another worker's birth")
    w2.pub("icefarm/S3/state", state("S3", "w2"), retain=True)
    check(ctl.wait_for("icefarm/S3/state", state("S3", "w2")), "... but publishes its own board's state")
    w1.pub("icefarm/worker/w1/cmd", pack({"op": "release"}))
    w1.pub("icefarm/lease/S1", pack({"serial": "S1", "client": "w1"}), retain=True)
    alice.pub("icefarm/farm/available", pack({"amount": 99}), retain=True)
    bob.pub("icefarm/ctl/state", pack({"state": "offline"}), retain=True)
    ctl_barrier()
    check(not ctl.got("icefarm/farm/available", pack({"amount": 99})),
          "only control publishes icefarm/farm/#")
    check(not ctl.got("icefarm/lease/S1"), "only control publishes icefarm/lease/#")
    check(not [m for m in ctl.msgs if m[0] == "icefarm/ctl/state"], "only control publishes icefarm/ctl/state")

    # ---- client topics ----
    check(alice.sub("icefarm/client/alice/#") < 128, "a client subscribes to its own client topics")
    check(bob.sub("icefarm/client/alice/#") >= 128 and bob.sub("icefarm/client/alice/event") >= 128,
          "a client cannot subscribe to another client's topics")
    check(bob.sub("icefarm/client/+/event") < 128 and bob.sub("icefarm/client/bob/event") < 128,
          "a wildcard over client topics is accepted (reads are then checked per message)")
    gw.sub("icefarm/client/+/event")
    ev_a = pack({"event": "reservation ending soon", "serial": "S1"})
    ctl.pub("icefarm/client/alice/event", ev_a)
    check(alice.wait_for("icefarm/client/alice/event", ev_a), "a client receives its own events")
    check(gw.wait_for("icefarm/client/alice/event", ev_a), "the gateway receives every client's events (for SSE)")
    client_barrier(bob, "bob")
    check(not bob.got("icefarm/client/alice/event") and not bob.got("icefarm/client/alice/event", ev_a),
          "another client does not receive them, even through a wildcard")
    fake = pack({"event": "fake"})
    bob.pub("icefarm/client/alice/event", fake)
    w2.pub("icefarm/client/alice/event", fake)
    client_barrier(alice, "alice")
    check(not alice.got("icefarm/client/alice/event", fake), "only control publishes client events")

    # retained messages are checked when they are delivered on subscribe
    ev_r = pack({"event": "retained-for-alice"})
    ctl.pub("icefarm/client/alice/event", ev_r, retain=True)
    bob.sub("icefarm/client/#")
    client_barrier(bob, "bob")
    check(not bob.got("icefarm/client/alice/event", ev_r), "a retained message is not delivered to a reader without the right")
    a2 = connected(farm, "alice")
    a2.sub("icefarm/client/+/event")
    check(a2.wait_for("icefarm/client/alice/event", ev_r), "... and is to one with it")
    a2.close()
    ctl.pub("icefarm/client/alice/event", b"", retain=True)

    # ---- Wills: Mosquitto checks them only when it publishes them, and a Will
    # skips the plugin's identity rewrite, so clients may leave none ----
    wp = Properties(PacketTypes.WILLMESSAGE)
    wp.UserProperty = [("icefarm-client", "bob")]
    wp.ResponseTopic = "icefarm/client/alice/reply"
    will_req = pack({"will": "end_all"})
    a3 = farm.client("alice", will=("icefarm/ctl/req/end_all", will_req, 1, False, wp))
    a3.connect()
    a3.drop()
    check(wait_until(lambda: 'denied alice publish on "icefarm/ctl/req/end_all"' in farm.log_text()),
          "the broker refuses alice's Will on icefarm/ctl/req/end_all")
    ctl_barrier()
    check(not ctl.got("icefarm/ctl/req/end_all"),
          "a Will cannot smuggle a request in someone else's name past the identity rewrite")
    death = pack({"worker": "w3", "state": "offline", "epoch": 1, "kinds": [], "boards": []})
    w3 = farm.client("w3", client_id="wrk-w3", will=("icefarm/worker/w3/state", death, 1, True))
    w3.connect()
    w3.drop()
    check(ctl.wait_for("icefarm/worker/w3/state", death), "a worker's Will (its death notice) is delivered")

    # ---- leases ----
    for c in (alice, bob):
        c.sub("icefarm/+/state")
        c.sub("icefarm/lease/+")
    check(bob.sub("icefarm/S1/event") < 128 and alice.sub("icefarm/S1/event") < 128,
          "without a lease, subscribing to a board's events is allowed, as icefarm/+/event is: each event is "
          "judged when delivered (a holder re-subscribing before control republished its lease keeps it)")
    bob.sub("icefarm/+/event")
    gw.sub("icefarm/+/event")
    dash.sub("#")
    cmd0 = pack({"op": "evaluate", "batch": "before-lease"})
    alice.pub("icefarm/S1/cmd", cmd0)
    worker_barrier(w1, "w1")
    check(not w1.got("icefarm/S1/cmd", cmd0), "without a lease, a client's command does not reach the board")

    lease = pack({"serial": "S1", "client": "alice", "kind": "pulse_count", "worker": "w1", "lease": 1,
                  "until": int(time.time() * 1000) + 600000})
    ctl.pub("icefarm/lease/S1", lease, retain=True)
    check(alice.wait_for("icefarm/lease/S1", lease), "control publishes a retained lease for alice (public)")
    check(alice.sub("icefarm/S1/event") < 128, "with the lease, alice subscribes to S1's events")
    check(bob.sub("icefarm/S1/event") < 128, "bob may too (and receives nothing, below)")
    cmd1 = pack({"op": "evaluate", "batch": "b1"})
    forged = Properties(PacketTypes.PUBLISH)
    forged.UserProperty = [("icefarm-client", "bob")]
    alice.pub("icefarm/S1/cmd", cmd1, props=forged)
    check(w1.wait_for("icefarm/S1/cmd", cmd1), "the holder's command reaches the board's worker")
    check(props_of(w1, "icefarm/S1/cmd", cmd1) == [("icefarm-client", "alice")],
          "... carrying icefarm-client=alice, whatever name she put on it")

    def gw_cmd(name, serial="S1"):
        p = Properties(PacketTypes.PUBLISH)
        if name is not None:
            p.UserProperty = [("icefarm-client", name)]
        payload = pack({"op": "evaluate", "batch": f"gw-{name}-{serial}-{next(n)}"})
        gw.pub(f"icefarm/{serial}/cmd", payload, props=p)
        return payload

    g_alice = gw_cmd("alice")
    check(w1.wait_for("icefarm/S1/cmd", g_alice) and props_of(w1, "icefarm/S1/cmd", g_alice) == [("icefarm-client", "alice")],
          "a gateway's command naming the board's holder reaches the worker (socket.io face)")
    g_bob, g_none, g_s2 = gw_cmd("bob"), gw_cmd(None), gw_cmd("alice", "S2")
    worker_barrier(w1, "w1")
    check(not w1.got("icefarm/S1/cmd", g_bob) and not w1.got("icefarm/S1/cmd", g_none)
          and not w1.got("icefarm/S2/cmd", g_s2),
          "a gateway's command naming anybody else, nobody, or for an unleased board is refused")
    alice.pub("icefarm/S1/cmd", cmd1, retain=True)
    worker_barrier(w1, "w1")
    check(len(w1.got("icefarm/S1/cmd", cmd1)) == 1, "a retained command is refused even from the holder")
    cmd_bob = pack({"op": "evaluate", "batch": "bob"})
    bob.pub("icefarm/S1/cmd", cmd_bob)
    worker_barrier(w1, "w1")
    check(not w1.got("icefarm/S1/cmd", cmd_bob), "client B cannot publish to A's board cmd")
    ev1 = pack({"event": "results", "serial": "S1", "batch": "b1", "n": 1})
    w1.pub("icefarm/S1/event", ev1)
    check(alice.wait_for("icefarm/S1/event", ev1), "the holder receives the board's events")
    check(gw.wait_for("icefarm/S1/event", ev1), "the gateway receives a leased board's events")
    st1 = state("S1", "w1", "reserved")
    w1.pub("icefarm/S1/state", st1, retain=True)
    check(bob.wait_for("icefarm/S1/state", st1) and not bob.got("icefarm/S1/event"),
          "client B does not receive A's board events (through icefarm/+/event)")
    check(dash.wait_for("icefarm/S1/state", st1) and dash.got("icefarm/lease/S1", lease),
          "the dashboard sees board states and leases")
    check(not dash.got("icefarm/S1/event") and not dash.got("icefarm/S1/cmd")
          and not dash.got("icefarm/client/alice/event") and not dash.got("icefarm/ctl/req/reserve"),
          "the dashboard sees no board events or commands, client topics or requests")
    dash.pub("icefarm/S1/cmd", pack({"op": "evaluate", "batch": "dash"}))
    dash.pub("icefarm/farm/available", pack({"amount": 7}))
    worker_barrier(w1, "w1")
    ctl_barrier()
    check(not w1.got("icefarm/S1/cmd", pack({"op": "evaluate", "batch": "dash"}))
          and not ctl.got("icefarm/farm/available", pack({"amount": 7})), "the dashboard publishes nothing")

    # ---- revocation ----
    ctl.pub("icefarm/lease/S1", b"", retain=True)
    cmd2 = pack({"op": "evaluate", "batch": "after-end"})
    alice.pub("icefarm/S1/cmd", cmd2)
    ev2 = pack({"event": "results", "serial": "S1", "batch": "late"})
    w1.pub("icefarm/S1/event", ev2)
    st2 = state("S1", "w1", "ready")
    w1.pub("icefarm/S1/state", st2, retain=True)
    worker_barrier(w1, "w1")
    check(not w1.got("icefarm/S1/cmd", cmd2), "after control clears the lease, A's next command is refused at once")
    check(alice.wait_for("icefarm/S1/state", st2) and not alice.got("icefarm/S1/event", ev2),
          "... and A's subscription no longer delivers the board's events")
    # The same by polling, as a client would see it: every new command is refused.
    refused = True
    end = time.monotonic() + 1.0
    k = 0
    while time.monotonic() < end:
        p = pack({"op": "evaluate", "batch": f"poll{k}"})
        alice.pub("icefarm/S1/cmd", p)
        k += 1
    worker_barrier(w1, "w1")
    refused = not any(m[0] == "icefarm/S1/cmd" and b"poll" in m[1] for m in w1.msgs)
    check(refused, f"polling for a second: none of alice's {k} commands after the end got through")

    # lease back, then garbage from control: fail closed
    ctl.pub("icefarm/lease/S1", lease, retain=True)
    cmd3 = pack({"op": "evaluate", "batch": "b3"})
    alice.pub("icefarm/S1/cmd", cmd3)
    check(w1.wait_for("icefarm/S1/cmd", cmd3), "a new lease opens the board again")
    ctl.pub("icefarm/lease/S1", b"\xde\xad\xbe\xef", retain=True)
    cmd4 = pack({"op": "evaluate", "batch": "b4"})
    alice.pub("icefarm/S1/cmd", cmd4)
    worker_barrier(w1, "w1")
    check(not w1.got("icefarm/S1/cmd", cmd4), "a garbage lease from control closes the board (fail closed)")

    # ---- garbage ----
    garbage = [b"", b"\xc1", b"\xdf\xff\xff\xff\xff", b"\x91" * 5000, b"\x81\xa1v\x01", os.urandom(3000),
               pack({"serial": "S1", "client": 5, "until": -1}), pack({"serial": "S1", "client": "a/b", "until": 1}),
               msgpack.packb({"v": 1, "serial": "S1", "client": "alice", "until": 1, "serial2": [[[[[[[[[[1]]]]]]]]]]})]
    for g in garbage:
        ctl.pub("icefarm/lease/S1", g, retain=True)
        ctl.pub("icefarm/lease/S2", g, retain=True)
        w1.pub("icefarm/worker/w1/state", g, retain=True)
        w1.pub("icefarm/S1/state", g, retain=True)
        alice.pub("icefarm/lease/S1", g, retain=True)
        alice.pub("icefarm/ctl/req/reserve", g)
    topics = ["icefarm", "icefarm/", "icefarm//", "icefarm/S1", "icefarm/S1/cmd/x", "icefarm/lease",
              "icefarm/lease/", "icefarm/lease/S1/x", "icefarm/worker/w1", "icefarm/client//event",
              "icefarm/ctl/req/", "icefarm/ctl/req/a/b", "$SYS/x", "$share/x", "/icefarm/S1/cmd",
              "a/" * 2000 + "b", "icefarm/" + "x" * 60000 + "/cmd", "icefarm/\u00e9\u4e2d/cmd",
              "icefarm/worker/" + "w" * 300 + "/state", "icefarm/S1/" + "c" * 100]
    # Throwaway connections: the broker may drop a client for a malformed topic.
    for t in topics:
        for u in ("alice", "ctl", "dash"):
            g = farm.client(u)
            if g.connect() == 0:
                info = g.c.publish(t, os.urandom(16), qos=1)
                rc, mid = g.c.subscribe(t, qos=1)
                wait_until(lambda: g.gone or (info.is_published() and mid in g.subacks))
                g.close()
    check(farm.alive(), f"the broker survives {len(garbage)} garbage payloads on lease, birth, state and request "
                        f"topics and {len(topics)} garbage topics")
    check(w1.connack == 0 and ctl_barrier(), "the connections are still served")
    ctl.pub("icefarm/lease/S1", lease, retain=True)
    w1.pub("icefarm/worker/w1/state", birth1, retain=True)
    cmd5 = pack({"op": "evaluate", "batch": "b5"})
    alice.pub("icefarm/S1/cmd", cmd5)
    bob.pub("icefarm/S1/cmd", cmd5 + b"")
    check(w1.wait_for("icefarm/S1/cmd", cmd5), "afterwards the plugin still grants the holder ...")
    bob_cmd = pack({"op": "evaluate", "batch": "b5-bob"})
    bob.pub("icefarm/S1/cmd", bob_cmd)
    worker_barrier(w1, "w1")
    check(not w1.got("icefarm/S1/cmd", bob_cmd), "... and still refuses others")
    fresh = farm.client("bob")
    check(fresh.connect() == 0, "new connections are still accepted")
    fresh.close()

    # ---- a worker's boards can move once it is gone ----
    w2.pub("icefarm/S2/state", state("S2", "w2"), retain=True)
    ctl_barrier()
    check(not ctl.got("icefarm/S2/state", state("S2", "w2")), "while w1 is connected, w2 cannot take S2")
    w1.close()
    moved = wait_until(lambda: (w2.pub("icefarm/S2/state", state("S2", "w2"), retain=True)
                                and ctl_barrier() and bool(ctl.got("icefarm/S2/state", state("S2", "w2")))))
    check(moved, "once w1's connection is gone, w2 may claim S2 (a board moved to another host)")

    # ---- TLS ----
    t = Client("alice", farm.pw["alice"], port=farm.mqtts, tls_ca=os.path.join(farm.certs, "ca.crt"))
    rc = t.connect()
    check(rc == 0, "TLS with the lab CA works")
    if rc == 0:
        check(t.sub("icefarm/client/alice/#") < 128, "TLS: the same rules apply")
        t.close()
    t = Client("alice", farm.pw["alice"], port=farm.mqtts, tls_ca=os.path.join(farm.other_ca, "ca.crt"))
    check(t.connect() != 0 and isinstance(t.error, (ssl.SSLError, OSError)), f"TLS with another CA fails ({t.error})")
    t = Client("alice", "wrong", port=farm.mqtts, tls_ca=os.path.join(farm.certs, "ca.crt"))
    check(t.connect() not in (0,), "TLS does not replace the password")
    t = Client("dash", farm.pw["dash"], port=farm.wss, tls_ca=os.path.join(farm.certs, "ca.crt"), ws=True)
    rc = t.connect()
    check(rc == 0, "secure websockets with the lab CA work (browser dashboards)")
    if rc == 0:
        t.close()
    t = Client("dash", farm.pw["dash"], port=farm.wss, tls_ca=os.path.join(farm.other_ca, "ca.crt"), ws=True)
    check(t.connect() != 0, "secure websockets with another CA fail")
    raw = socket.create_connection(("127.0.0.1", farm.mqtts))
    raw.sendall(b"\x10\x10\x00\x04MQTT\x05\x02\x00\x1e\x00\x00\x03abc")
    raw.settimeout(5)
    try:
        data = raw.recv(100)
    except OSError:
        data = b""
    raw.close()
    check(not data.startswith(b"\x20"), "plain MQTT on the TLS port gets no CONNACK")

    # ---- adding and removing users (add-user.sh + SIGHUP) ----
    check(farm.add_user("carol", "client", "pw-carol"), "add-user.sh adds carol")
    farm.proc.send_signal(signal.SIGHUP)
    check(wait_until(lambda: farm.client("carol", password="pw-carol").connect() == 0),
          "after SIGHUP carol logs in")
    carol = farm.client("carol", password="pw-carol")
    carol.connect()
    check(farm.delete_user("carol"), "add-user.sh --delete removes carol")
    farm.proc.send_signal(signal.SIGHUP)
    check(wait_until(lambda: farm.client("carol", password="pw-carol").connect() not in (0,)),
          "after SIGHUP carol is refused")
    check(wait_until(lambda: carol.gone), "... and her open connection is closed")
    carol.close()

    for c in (ctl, w2, alice, bob, dash, gw):
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plugin", required=True)
    ap.add_argument("--broker-dir", required=True)
    ap.add_argument("--asan", action="store_true", help="preload the sanitizer runtimes into mosquitto")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    args.plugin = os.path.abspath(args.plugin)
    if not shutil.which(os.environ.get("ICEFARM_MOSQUITTO", "/usr/sbin/mosquitto")):
        check(False, "mosquitto is installed")
        print(f"{PASSED} passed, {FAILED} failed")
        return 1
    farm = Farm(args)
    try:
        if not check(farm.setup(), "make-certs.sh and add-user.sh set up a lab"):
            raise RuntimeError("setup failed")
        if not check(farm.start(), "mosquitto starts with secure.conf.in and the plugin"):
            raise RuntimeError("broker did not start")
        run(farm)
        check(farm.alive(), "the broker is still running at the end")
    except Exception as e:  # a crash of the test is a failure, not an error
        check(False, f"test raised {type(e).__name__}: {e}")
    finally:
        farm.stop()
        log = farm.log_text()
        bad = [l for l in log.splitlines() if "AddressSanitizer" in l or "runtime error:" in l
               or "LeakSanitizer" in l]
        check(not bad, "no sanitizer reports in the broker log" + (f": {bad[:3]}" if bad else ""))
        if FAILED:
            sys.stderr.write(f"--- broker log ({farm.log}) ---\n{log[-20000:]}\n")
        if not args.keep and not FAILED:
            shutil.rmtree(farm.tmp, ignore_errors=True)
    print(f"{PASSED} passed, {FAILED} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
