#!/usr/bin/python3
"""PROTOCOL.md held against a running farm: the texts it quotes are what control
answers, and what it says about limits, refusals and warnings is what happens.

  protocol.py anon BROKER_URL PROTOCOL_MD
      validation reasons (section 4.2), the payload limit, the quoted 400/404/409
      texts, an empty reserve_serials, and a holder that extends on every
      "reservation ending soon" (the farm runs with --warn-before 20 so a 2 s lease
      is shorter than the lead)
  protocol.py secure BROKER_URL PROTOCOL_MD CAFILE ALICE_PW BOB_PW
      a refused QoS 1 board command comes back as PUBACK 0x87; a refused QoS 0 one
      is silently dropped

Prints "ok - ..." / "not ok - ..." per check and "N passed, M failed".
Uses paho-mqtt (1.x or 2.x) and msgpack from Debian (python3-paho-mqtt, python3-msgpack).
"""
import os
import re
import sys
import threading
import time
import uuid
from urllib.parse import urlparse

import msgpack
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

PASS = FAIL = 0


def check(desc, cond, detail=""):
    global PASS, FAIL
    if cond:
        PASS += 1
        print("ok - " + desc)
    else:
        FAIL += 1
        print("not ok - " + desc + (" (" + detail + ")" if detail else ""))


class Client:
    """An MQTT 5 client with request/response, event capture and PUBACK reasons."""

    def __init__(self, url, name, user=None, password=None, cafile=None):
        u = urlparse(url)
        try:
            self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, client_id="doc-" + uuid.uuid4().hex[:8],
                                 protocol=mqtt.MQTTv5)
        except AttributeError:
            self.c = mqtt.Client(client_id="doc-" + uuid.uuid4().hex[:8], protocol=mqtt.MQTTv5)
        if user:
            self.c.username_pw_set(user, password)
        if u.scheme == "mqtts":
            self.c.tls_set(ca_certs=cafile)
        self.name = name
        self.cv = threading.Condition()
        self.msgs = []  # (time, topic, decoded payload or raw bytes, properties)
        self.acks = {}  # mid -> reason code
        self.c.on_message = self._on_message
        self.c.on_publish = self._on_publish
        self.c.on_connect = lambda *a: self._notify()
        self.c.connect(u.hostname, u.port or (8883 if u.scheme == "mqtts" else 1883), keepalive=30)
        self.c.loop_start()
        self.reply_topic = "icefarm/client/%s/reply" % name
        self.subscribe(self.reply_topic, "icefarm/client/%s/event" % name)

    def _notify(self):
        with self.cv:
            self.cv.notify_all()

    def _on_message(self, c, u, m):
        try:
            p = msgpack.unpackb(m.payload, raw=False, strict_map_key=False) if m.payload else None
        except Exception:  # noqa: BLE001
            p = m.payload
        with self.cv:
            self.msgs.append((time.time(), m.topic, p, m.properties))
            self.cv.notify_all()

    def _on_publish(self, c, u, mid, *rest):
        # paho 2.x with VERSION1 callbacks gives no reason code; 1.x neither for v5
        # unless the packet carried one: read it from the raw PUBACK below instead.
        with self.cv:
            self.acks.setdefault(mid, 0)
            self.cv.notify_all()

    def subscribe(self, *topics):
        with self.cv:
            for t in topics:
                self.c.subscribe(t, qos=1)
        time.sleep(0.3)

    def wait(self, pred, seconds):
        deadline = time.time() + seconds
        with self.cv:
            while True:
                for m in self.msgs:
                    if pred(m):
                        return m
                left = deadline - time.time()
                if left <= 0:
                    return None
                self.cv.wait(left)

    def request(self, verb, payload, seconds=10, client_prop=True):
        """Publishes raw bytes to icefarm/ctl/req/VERB; returns the decoded reply or None."""
        corr = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = corr
        if client_prop:
            props.UserProperty = ("icefarm-client", self.name)
        self.c.publish("icefarm/ctl/req/" + verb, payload, qos=0, properties=props)
        m = self.wait(lambda m: m[1] == self.reply_topic and getattr(m[3], "CorrelationData", None) == corr, seconds)
        return m[2] if m else None

    def req(self, verb, obj, **kw):
        return self.request(verb, msgpack.packb(obj, use_bin_type=True), **kw)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def doc_sections(md):
    return open(md, encoding="utf-8").read()


def pattern(example):
    """A regex for a text PROTOCOL.md quotes: N, M, S, K and X stand for values, ... for anything."""
    out = ""
    for tok in re.split(r"(\.\.\.|\b[NMSKX]\b|<[^>]*>|\[[^\]]*\])", example):
        if tok == "...":
            out += ".*"
        elif tok.startswith("<"):  # <what goes here>
            out += ".+?"
        elif tok.startswith("["):  # [an optional part]
            out += "(?:" + re.escape(tok[1:-1]) + ")?"
        elif tok in ("N", "M", "X"):
            out += r"\d+"
        elif tok in ("S", "K"):
            out += r"\S+"
        else:
            out += re.escape(tok)
    return out


def validation_table(doc):
    """Section 4.2's rows: rule -> list of quoted example reasons."""
    sec = doc[doc.index("### 4.2 Validation"):doc.index("### 4.3")]
    rows = {}
    for line in sec.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and "`" in cells[1]:
            rows[cells[0]] = re.findall(r"`([^`]+)`", cells[1])
    return rows


def quoted(doc, code, start):
    """The text PROTOCOL.md quotes as `CODE "text"` that starts with START (or None)."""
    for m in re.finditer(r'`%d "(.*?)"`' % code, doc):
        text = m.group(1).replace('\\"', '"')
        if text.startswith(start):
            return text
    return None


def matches(reply, code, examples):
    if not isinstance(reply, dict):
        return False, "no reply"
    err = reply.get("error", "")
    ok = reply.get("code") == code and any(re.match(pattern(e), err) for e in examples)
    return ok, "got %s %r, PROTOCOL.md says %d %s" % (reply.get("code"), err, code, examples)


def anon(url, md):
    doc = doc_sections(md)
    c = Client(url, "doccheck")
    rows = validation_table(doc)

    def row(key):
        for rule, ex in rows.items():
            if key in rule:
                return ex
        check("PROTOCOL.md 4.2 has a row about %r" % key, False)
        return ["<absent>"]

    limit = int(re.search(r"larger than \*\*\d+ MiB\*\* \(([\d,]+) bytes\)", doc).group(1).replace(",", ""))
    dup = b"\x83\xa1v\x01\xa4kind\xa1a\xa4kind\xa1b"
    small = msgpack.packb({"v": 1, "pad": b""}, use_bin_type=True)  # bin8 header: 2 bytes; bin32's: 5
    big = msgpack.packb({"v": 1, "pad": b"\0" * (limit + 1 - (len(small) - 2 + 5))}, use_bin_type=True)
    assert len(big) == limit + 1, len(big)
    cases = [
        ("empty payload", "available", b""),
        ("larger than", "available", big),
        ("not well-formed msgpack", "available", b"\x81\xa1v\xc1"),
        ("claims more entries", "available", b"\xdf\x00\x00\xff\xff\xa1v"),
        ("nested deeper", "available",
         msgpack.packb({"v": 1, "a": [[[[[[[[1]]]]]]]]})),
        ("trailing bytes", "available", msgpack.packb({"v": 1}) + b"\x00"),
        ("root is not a map", "available", msgpack.packb([1])),
        ("map key that is not a string", "available", msgpack.packb({0: 1, "v": 1})),
        ("duplicate key", "available", dup),
        ("`v` missing", "available", msgpack.packb({"amount": 1})),
        ("`v` missing", "available", msgpack.packb({"v": 2})),
        ("required field missing", "reserve", msgpack.packb({"v": 1, "kind": "pulsecount"})),
        ("wrong msgpack type", "reserve", msgpack.packb({"v": 1, "amount": 1.5, "kind": "pulsecount"})),
        ("integer outside its range", "reserve", msgpack.packb({"v": 1, "amount": 0, "kind": "pulsecount"})),
        ("string too long", "reserve", msgpack.packb({"v": 1, "amount": 1, "kind": "k" * 40})),
    ]
    for key, verb, payload in cases:
        ok, why = matches(c.request(verb, payload), 400, row(key))
        check("4.2 %s: control answers 400 with the reason PROTOCOL.md quotes" % key, ok, why)
    check("4.2 the payload limit PROTOCOL.md states is %d bytes (IFM_MAX_PAYLOAD = 12 MiB)" % limit,
          limit == 12 * 1024 * 1024)

    # Quoted replies of sections 2, 6.3 and 6.4.
    text = "request carries no valid icefarm-client user property"
    ok, why = matches(c.req("available", {"v": 1}, client_prop=False), 400, [text])
    check("section 2: a request without icefarm-client gets 400 %r" % text, ok and text in doc, why)
    t = quoted(doc, 409, "not enough boards")
    ok, why = matches(c.req("reserve", {"v": 1, "amount": 4096, "kind": "pulsecount"}), 409, [t or "<absent>"])
    check("6.3 not enough boards: 409 as quoted", ok, why)
    serials = c.req("devices", {"v": 1}) or {}
    serials = serials.get("serials", [])
    check("devices lists the farm's boards", len(serials) >= 2, repr(serials))
    s0 = serials[0] if serials else "X"
    t = quoted(doc, 400, 'field "serials" must name')
    ok, why = matches(c.req("reserve_serials", {"v": 1, "serials": [], "kind": "pulsecount"}), 400, [t or "<absent>"])
    check("6.4 an empty reserve_serials: 400 as quoted", ok, why)
    t = quoted(doc, 400, "serial S is listed twice")
    ok, why = matches(c.req("reserve_serials", {"v": 1, "serials": [s0, s0], "kind": "pulsecount"}), 400,
                      [t or "<absent>"])
    check("6.4 a serial listed twice: 400 as quoted", ok, why)
    t = quoted(doc, 404, "unknown serial S")
    ok, why = matches(c.req("reserve_serials", {"v": 1, "serials": ["NOSUCHBOARD"], "kind": "pulsecount"}), 404,
                      [t or "<absent>"])
    check("6.4 an unknown serial: 404 as quoted", ok, why)

    t = quoted(doc, 409, "serial S is not available for kind K")
    held = c.req("reserve_serials", {"v": 1, "serials": [s0], "kind": "pulsecount", "duration_s": 30}) or {}
    ok, why = matches(c.req("reserve_serials", {"v": 1, "serials": [s0], "kind": "pulsecount"}), 409,
                      [t or "<absent>"])
    check("6.4 a board already reserved: 409 as quoted", held.get("code") == 200 and ok, why)
    c.req("end", {"v": 1, "serials": [s0]})

    # Section 9/13: a holder that extends on every warning, with a 2 s lease and a
    # 20 s lead (the farm runs --warn-before 20): warned halfway, never in a loop.
    r = c.req("reserve", {"v": 1, "amount": 1, "kind": "pulsecount", "duration_s": 2}) or {}
    got = r.get("serials") or []
    check("a 2 s lease is granted", r.get("code") == 200 and len(got) == 1, repr(r))
    if got:
        serial = got[0]["serial"] if isinstance(got[0], dict) else got[0]
        start = time.time()
        seen = 0
        warn_times = []
        extends = 0
        while time.time() - start < 8:
            m = c.wait(lambda m: m[1].endswith("/event") and isinstance(m[2], dict)
                       and m[2].get("event") == "reservation ending soon" and m[0] > (warn_times[-1] if warn_times
                                                                                      else 0), 3)
            if not m:
                break
            warn_times.append(m[0])
            seen += 1
            rr = c.req("extend", {"v": 1, "serials": [serial], "duration_s": 2}) or {}
            extends += rr.get("code") == 200
            if seen > 50:
                break
        gaps = [b - a for a, b in zip(warn_times, warn_times[1:])]
        check("extending a 2 s lease on every warning for 8 s: warned about every 1 s, not in a loop "
              "(%d warnings, gaps %s)" % (seen, ["%.2f" % g for g in gaps[:8]]),
              4 <= seen <= 10 and all(g >= 0.7 for g in gaps), "")
        check("  ... the lease was never lost (%d extends answered 200)" % extends, extends == seen)
        ended = c.wait(lambda m: m[0] >= start and isinstance(m[2], dict) and m[2].get("event") == "reservation end"
                       and m[2].get("serial") == serial, 0)
        check("  ... and no 'reservation end' came", ended is None)
        c.req("end", {"v": 1, "serials": [serial]})
    c.close()


def secure(url, md, cafile, alice_pw, bob_pw):
    doc = doc_sections(md)
    check("PROTOCOL.md says a refused QoS 1 publish comes back as PUBACK 0x87", "PUBACK with reason 0x87" in doc)
    check("PROTOCOL.md says a refused QoS 0 publish gets no reply", "**no reply**" in doc)
    alice = Client(url, "alice", "alice", alice_pw, cafile)
    bob = Client(url, "bob", "bob", bob_pw, cafile)
    r = alice.req("reserve", {"v": 1, "amount": 1, "kind": "pulsecount", "duration_s": 60}) or {}
    got = r.get("serials") or []
    check("alice reserves a board", r.get("code") == 200 and len(got) == 1, repr(r))
    if not got:
        return
    serial = got[0]["serial"] if isinstance(got[0], dict) else got[0]
    alice.subscribe("icefarm/%s/event" % serial)
    ready = alice.wait(lambda m: isinstance(m[2], dict) and m[2].get("event") == "initialized", 30)
    check("alice's board is initialized", ready is not None)
    cmd = msgpack.packb({"v": 1, "op": "evaluate", "batch_id": "b", "files": {"x": b"\0" * 16}}, use_bin_type=True)
    # PUBACK reason codes: paho hands them to on_publish only in 2.x's VERSION2 API, so
    # read the reason from libmosquitto's own client instead: mosquitto_pub -q 1 says it.
    host = urlparse(url)
    import subprocess
    p = subprocess.run(["mosquitto_pub", "-h", host.hostname, "-p", str(host.port), "--cafile", cafile, "-u", "bob",
                        "-P", bob_pw, "-V", "mqttv5", "-q", "1", "-t", "icefarm/%s/cmd" % serial, "-s"],
                       input=cmd, capture_output=True, timeout=20)
    out = (p.stdout + p.stderr).decode(errors="replace")
    check("bob's QoS 1 command to alice's board is refused with PUBACK 0x87 (%s)" % out.strip(),
          "not authorized" in out.lower() or "135" in out, out)
    # QoS 0: no acknowledgement; nothing reaches bob, nor the board (alice, its
    # holder, would see the worker's answer to any command on its event topic).
    bob_before, alice_before = len(bob.msgs), len(alice.msgs)
    info = bob.c.publish("icefarm/%s/cmd" % serial, cmd, qos=0)
    info.wait_for_publish(5)
    time.sleep(3)
    check("bob's QoS 0 command is dropped without a word: nothing for bob for 3 s", len(bob.msgs) == bob_before,
          repr(bob.msgs[bob_before:]))
    check("  ... and the board never got it (no event for its holder)", len(alice.msgs) == alice_before,
          repr(alice.msgs[alice_before:]))
    alice.req("end", {"v": 1, "serials": [serial]})
    alice.close()
    bob.close()


def main():
    mode = sys.argv[1]
    if mode == "anon":
        anon(sys.argv[2], sys.argv[3])
    else:
        secure(*sys.argv[2:7])
    print("%d passed, %d failed" % (PASS, FAIL))
    sys.exit(1 if FAIL else 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
