#!/usr/bin/python3
"""An old iCEFARM client against icefarm-http's socket.io face.

The classes below are written the way iCEFARM's Python client library is
(evolvablehardware/iCEFARM, icefarm/client/lib): an EventServer with one
python-socketio Client for "control" and one per "worker" URL (auth client_id,
wait_timeout=10, the `event` handler parsing the JSON envelope), a BaseAPI that
GETs control's endpoints with a JSON body through requests, a BaseClient that
reserves, connects a worker socket per ip/serverport and waits for
`initialized`, reboots with /reboot {serials} and stops with endAll, and a
BatchClient that emits one msgpack `request` per evaluation to the worker
socket and collects `results` by batch_id. Only the test's own waits are
bounded (the original waits for `initialized` forever).

  oldclient.py session URL NAME BITS...      reserve, evaluate, extend, reboot, end
  oldclient.py varmax URL NAME BITS...       kind variance, with and without the waveform
  oldclient.py wait URL NAME HOG_NAME N      a reserve that waits for boards freed later
  oldclient.py refuse URL NAME SERIAL        a request for somebody else's board
  oldclient.py raw URL                       Engine.IO details with plain requests

Prints "ok - ..." / "not ok - ..." per check; exits 1 if any check failed.
Debian's python3-socketio, python3-requests and python3-msgpack (/usr/bin/python3).
"""
import base64
import json
import logging
import os
import sys
import threading
import time
import urllib.parse
import uuid
import zlib

import msgpack
import requests
import socketio

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib"))
from checks import check, failures  # noqa: E402

WAIT = 60.0


logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                    format="%(asctime)s %(name)s %(levelname)s %(message)s")
LOG = logging.getLogger("oldclient")


class Event:
    def __init__(self, serial, event, contents):
        self.serial, self.event, self.contents = serial, event, contents


class EventServer:
    """One socket.io client for control, one per worker URL; every socket's
    `event` messages go to the handlers."""

    def __init__(self, client_id, handlers):
        self.client_id = client_id
        self.handlers = handlers
        self.lock = threading.Lock()
        self.workers = {}
        self.control = None
        self.received = []  # (socket url, envelope) for the test

    def handle(self, ev):
        for h in self.handlers:
            h(ev)

    def _socket(self, url):
        sio = socketio.Client()

        @sio.event
        def event(data):
            msg = json.loads(data)
            self.received.append((url, msg))
            serial, contents = msg.get("serial"), msg.get("contents")
            if not serial or not isinstance(contents, list):
                LOG.error("bad event contents %r", msg)
                return
            for item in contents:
                if "event" not in item:
                    LOG.error("bad event contents %r", msg)
                    return
                item["serial"] = serial
                self.handle(Event(serial, item["event"], item))

        sio.connect(url, auth={"client_id": self.client_id}, wait_timeout=10)
        return sio

    def connectControl(self, url):
        self.control = self._socket(url)

    def connectWorker(self, url):
        if not self.control:
            raise Exception("Control socket not connected")
        with self.lock:
            if url not in self.workers:
                self.workers[url] = self._socket(url)

    def sendWorker(self, url, event, data):
        with self.lock:
            sio = self.workers.get(url)
            if not sio:
                return False
            sio.emit(event, msgpack.packb(data, use_bin_type=True))
            return True

    def disconnectWorker(self, url):
        with self.lock:
            sio = self.workers.pop(url, None)
        if sio:
            sio.disconnect()

    def exit(self):
        for url in list(self.workers):
            self.disconnectWorker(url)


class BaseAPI:
    def __init__(self, url, name):
        self.url, self.name = url, name
        self.info = {}  # serial -> worker url
        self.lock = threading.Lock()

    def request(self, endpoint, body):
        try:
            res = requests.get(f"{self.url}/{endpoint}", json=body, timeout=20)
            if res.status_code != 200:
                LOG.error("GET /%s: %s %s", endpoint, res.status_code, res.text)
                return False
            return res.json()
        except Exception as e:  # as the original: False on any failure
            LOG.error("GET /%s: %s", endpoint, e)
            return False

    def reserve(self, amount, kind, args):
        data = self.request("reserve", {"amount": amount, "name": self.name, "kind": kind, "args": args})
        if data is False:
            return False
        out = []
        for row in data:
            with self.lock:
                self.info[row["serial"]] = f"http://{row['ip']}:{row['serverport']}"
            out.append(row["serial"])
        return out

    def available(self):
        data = self.request("available", {})
        return data["amount"] if data else False

    def extend(self, serials):
        return self.request("extend", {"name": self.name, "serials": serials})

    def extendAll(self):
        return self.request("extendall", {"name": self.name})

    def end(self, serials):
        data = self.request("end", {"name": self.name, "serials": list(serials)})
        for s in data or []:
            self.removeSerial(s)
        return data

    def endAll(self):
        data = self.request("endall", {"name": self.name})
        for s in data or []:
            self.removeSerial(s)
        return data

    def reboot(self, serials):
        return self.request("reboot", {"serials": serials})  # serials only, as documented

    def removeSerial(self, serial):
        with self.lock:
            return self.info.pop(serial, None)

    def getSerials(self):
        with self.lock:
            return list(self.info)


class BaseClient(BaseAPI):
    def __init__(self, url, name):
        super().__init__(url, name)
        self.cond = threading.Condition()
        self.awaiting = set()
        self.initialized = []
        self.ended = []
        self.amount = None
        self.errors = []
        self.results = {}  # batch_id -> [(serial, id, value)]
        self.server = EventServer(name, [self.on_event])
        self.server.connectControl(url)

    def on_event(self, ev):
        with self.cond:
            if ev.event == "initialized":
                self.initialized.append(ev.serial)
                self.awaiting.discard(ev.serial)
            elif ev.event in ("reservation end", "failure"):
                self.ended.append((ev.event, ev.serial))
                url = self.removeSerial(ev.serial)
                if url and url not in self.info.values():
                    threading.Thread(target=self.server.disconnectWorker, args=(url,)).start()
            elif ev.event == "devices_available":
                self.amount = ev.contents["amount"]
            elif ev.event == "results":
                for eid, value in ev.contents["results"]:
                    self.results.setdefault(ev.contents["batch_id"], []).append((ev.serial, eid, value))
            elif ev.event == "error":
                self.errors.append((ev.serial, ev.contents.get("reason")))
            self.cond.notify_all()

    def wait(self, pred, timeout=WAIT):
        with self.cond:
            return self.cond.wait_for(pred, timeout)

    def reserve(self, amount, kind, args, wait_for_available=False):
        have = self.available()
        if have is False:
            raise Exception("Failed to reach control server when checking device availability")
        if have < amount:
            if not wait_for_available:
                raise Exception("Not enough devices available")
            if not self.wait(lambda: self.amount is not None and self.amount >= amount):
                raise Exception("no devices_available event with enough boards")
        serials = super().reserve(amount, kind, args)
        if not serials:
            return serials
        with self.cond:
            self.awaiting = set(serials) - set(self.initialized)
        for s in serials:
            self.server.connectWorker(self.info[s])
        if not self.wait(lambda: not self.awaiting):
            raise Exception(f"no initialized for {self.awaiting}")
        return serials

    def reboot(self, serials, timeout=WAIT):
        with self.cond:
            self.initialized = []
            self.awaiting = set(serials)
        if super().reboot(serials) is False:
            return serials
        self.wait(lambda: not self.awaiting, timeout)
        return sorted(self.awaiting)

    def requestBatchWorker(self, serials, event, data):
        failed = []
        by_url = {}
        for s in serials:
            by_url.setdefault(self.info.get(s), []).append(s)
        for url, group in by_url.items():
            if not url or not self.server.sendWorker(url, "request", {"serial": group, "event": event, "contents": data}):
                failed.extend(group)
        return failed

    def stop(self):
        self.server.exit()
        return self.endAll()


class BatchClient(BaseClient):
    def evaluate(self, bitstreams, serials):
        """One request per evaluation (one file), as BatchClient sends them;
        returns {(serial, eval_id): value}."""
        batch_id = str(uuid.uuid4())
        want = {}
        for data in bitstreams:
            eid = str(uuid.uuid4())
            for s in serials:
                want[(s, eid)] = data
            self.requestBatchWorker(serials, "evaluate", {"files": {eid: data}, "batch_id": batch_id})
        self.wait(lambda: len(self.results.get(batch_id, [])) >= len(want))
        return want, {(s, e): v for s, e, v in self.results.get(batch_id, [])}


def expected(data):
    return str(zlib.crc32(data) % 100000)  # the simulated board's pulse count (PROTOCOL.md 11.2)


def expected_samples(data):
    """The simulated board's 500 ADC samples (PROTOCOL.md 11.2)."""
    x = zlib.crc32(data) or 0x9E3779B9
    out = []
    for _ in range(500):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out.append(x >> 20)
    return out


def varmax_fitness(samples):
    """BitstreamEvolution's VarMaxFitnessFunction, as the original worker computes it."""
    n = len(samples)
    return 0.0 if n < 2 else sum(abs(samples[i + 1] - samples[i]) for i in range(n - 1)) / n


def session(url, name, files):
    bits = [open(f, "rb").read() for f in files]
    c = BatchClient(url, name)
    check(c.server.control.connected, f"{name}: the control socket connects (socket.io CONNECT with auth.client_id)")
    n = c.available()
    check(isinstance(n, int) and n >= 2, f"{name}: /available through requests ({n})")
    t0 = time.monotonic()
    serials = c.reserve(2, "pulsecount", {"flush_interval_seconds": 10, "flush_at_bitstreams_remaining": 25})
    check(len(serials) == 2, f"{name}: reserve(2) returns once both boards said initialized ({time.monotonic() - t0:.1f} s)")
    host = urllib.parse.urlparse(url)
    urls = set(c.info.values())
    check(len(urls) == 1 and urllib.parse.urlparse(urls.pop()).port == host.port,
          f"{name}: /reserve's ip/serverport name this shim ({sorted(set(c.info.values()))[0].split('@')[-1]})")
    check(len(c.server.workers) == 1 and all(w.connected for w in c.server.workers.values()),
          f"{name}: the worker socket connects to that address")
    want, got = c.evaluate(bits, serials)
    check(len(got) == len(want) and all(got.get(k) == expected(v) for k, v in want.items()),
          f"{name}: {len(bits)} bitstreams on 2 boards give {len(want)} results, each the board's count as a decimal string")
    ext = c.extend(serials)
    check(sorted(ext or []) == sorted(serials), f"{name}: extend(serials) returns both")
    check(sorted(c.extendAll() or []) == sorted(serials), f"{name}: extendAll() returns both")
    left = c.reboot(serials)
    check(left == [], f"{name}: reboot(serials) (/reboot with serials only) and both say initialized again")
    want, got = c.evaluate(bits[:1], serials)
    check(len(got) == 2 and all(got.get(k) == expected(v) for k, v in want.items()),
          f"{name}: evaluating after the reboot works")
    ended = c.stop()
    check(sorted(ended or []) == sorted(serials), f"{name}: stop() ends the session (endAll)")
    check(c.wait(lambda: len([1 for e, _ in c.ended if e == "reservation end"]) >= 2),
          f"{name}: \"reservation end\" arrives for both boards")
    check(c.getSerials() == [], f"{name}: no serials left")
    c.server.control.disconnect()


def varmax(url, name, files):
    """The original VarMaxClient's flow: kind "variance", with and without
    reserve(send_waveform=True); the values come as the original worker sent
    them: a float, or [fitness, [samples]]."""
    bits = [open(f, "rb").read() for f in files]
    for waveform in (False, True):
        c = BatchClient(url, name)
        serials = c.reserve(1, "variance", {"send_waveform": waveform, "flush_interval_seconds": 10,
                                            "flush_at_bitstreams_remaining": 25})
        what = "with" if waveform else "without"
        check(len(serials) == 1, f"{name}: reserve(1, variance, send_waveform={waveform}) returns once initialized")
        want, got = c.evaluate(bits, serials)
        ok = len(got) == len(want) > 0
        for k, data in want.items():
            v, samples = got.get(k), expected_samples(data)
            if waveform:
                ok = ok and isinstance(v, list) and len(v) == 2 and v[1] == samples and \
                    abs(v[0] - varmax_fitness(samples)) < 1e-9
            else:
                ok = ok and isinstance(v, float) and abs(v - varmax_fitness(samples)) < 1e-9
        check(ok, f"{name}: {len(bits)} variance results {what} the waveform, each the VarMax fitness of the "
                  f"board's samples ({sorted(got.values(), key=str)[0] if not waveform and got else '...'})")
        check(sorted(c.stop() or []) == sorted(serials), f"{name}: stop() ends it")
        c.server.control.disconnect()


def wait_reserve(url, name, hog, n):
    c = BaseClient(url, name)
    out = {}

    def run():
        try:
            out["serials"] = c.reserve(n, "pulsecount", {"flush_interval_seconds": 10,
                                                         "flush_at_bitstreams_remaining": 25},
                                       wait_for_available=True)
        except Exception as e:
            out["error"] = str(e)
        out["t"] = time.monotonic()

    t = threading.Thread(target=run)
    t.start()
    time.sleep(3)
    check("serials" not in out and "error" not in out, f"{name}: reserve(wait_for_available=True) waits while {hog} holds every board")
    t_free = time.monotonic()
    ended = requests.get(f"{url}/endall", json={"name": hog}, timeout=20).json()
    check(len(ended) >= n, f"{hog} ends its {len(ended)} boards")
    t.join(WAIT + 10)
    check(len(out.get("serials") or []) == n and out["t"] >= t_free,
          f"{name}: the waiting reserve returns {n} boards after they are freed ({out})")
    check(c.amount is not None and c.amount >= n, f"{name}: it heard devices_available (amount {c.amount})")
    check(sorted(c.stop() or []) == sorted(out.get("serials") or []), f"{name}: stop() ends them")
    c.server.control.disconnect()


def refuse(url, name, serial):
    c = BaseClient(url, name)
    c.info[serial] = url
    c.server.connectWorker(url)
    c.requestBatchWorker([serial], "evaluate", {"files": {"x": b"\0" * 10}, "batch_id": "b"})
    check(c.wait(lambda: any(s == serial for s, _ in c.errors)),
          f"{name}: a request for a board it does not hold gets an error event ({c.errors})")
    c.server.exit()
    c.server.control.disconnect()


def is_availability(packet):
    """A devices_available event: the farm pushes one to every client whenever
    the count changes (boards returning from an earlier session), at any time."""
    return packet.startswith('42["event"') and "devices_available" in packet


def poll(s, timeout):
    """The packets of one polling GET, availability events left out."""
    return [p for p in requests.get(s, timeout=timeout).text.split("\x1e") if p and not is_availability(p)]


def raw(url):
    """Engine.IO details the python client does not show: plain HTTP."""
    base = url + "/socket.io/?EIO=4&transport=polling"
    h = requests.get(base, timeout=10)
    op = json.loads(h.text[1:]) if h.text.startswith("0") else {}
    check(h.status_code == 200 and op.get("upgrades") == [] and op.get("pingInterval", 0) > 0,
          f"raw: the handshake offers no upgrades ({h.text})")
    sid = op.get("sid", "")
    s = base + "&sid=" + sid
    requests.post(s, data='40{"client_id":"raw-client"}', timeout=10)
    r = requests.get(s, timeout=10)
    check(r.text.startswith('40{"sid":'), f"raw: CONNECT is answered with the socket's sid ({r.text})")
    t0, got = time.monotonic(), []
    while not got and time.monotonic() - t0 < op["pingInterval"] / 1000 + 5:
        got = poll(s, op["pingInterval"] / 1000 + 10)
    dt = time.monotonic() - t0
    check(got == ["2"] and dt <= op["pingInterval"] / 1000 + 2,
          f"raw: a held GET is answered by a PING within pingInterval ({dt:.1f} s: {got!r})")
    requests.post(s, data="3", timeout=10)
    # 20 acks queued at once come back 16 + 4
    body = "\x1e".join(f'42{i}["hello"]' for i in range(20))
    check(requests.post(s, data=body, timeout=10).text == "ok", "raw: 20 packets in one POST, split on 0x1e")
    sizes, acks = [], []
    while len(acks) < 20 and len(sizes) < 5:
        packets = requests.get(s, timeout=10).text.split("\x1e")
        sizes.append(len(packets))
        acks += [p for p in packets if not is_availability(p)]
    check(sizes[0] == 16 and max(sizes) <= 16 and acks == [f"43{i}[]" for i in range(20)],
          f"raw: at most 16 packets per response, in order ({sizes})")
    # a binary event split across two POSTs: reassembled (an error event comes back:
    # raw-client holds no board)
    req = msgpack.packb({"serial": "NOSUCHBOARD", "event": "evaluate",
                         "contents": {"files": {"a": b"x"}, "batch_id": "b"}}, use_bin_type=True)
    requests.post(s, data='451-["request",{"_placeholder":true,"num":0}]', timeout=10)
    requests.post(s, data="b" + base64.b64encode(req).decode(), timeout=10)
    got = []
    while not got:
        got = poll(s, 10)
    ok = False
    if got[0].startswith("42"):
        name, arg = json.loads(got[0][2:])
        env = json.loads(arg)
        ok = name == "event" and env["serial"] == "NOSUCHBOARD" and env["contents"][0]["event"] == "error"
    check(ok, f"raw: a binary event across two POSTs is reassembled and answered ({got[0][:160]})")
    bad = requests.post(s, data="4" + "5x-[]", timeout=10)
    check(bad.status_code == 400 and "attachments" in bad.text,
          f"raw: a malformed packet is refused with a reason ({bad.status_code} {bad.text.strip()})")
    gone = requests.get(s, timeout=10)
    check(gone.status_code == 400 and "Session ID unknown" in gone.text, "raw: ... and ends that session")
    check(requests.get(url + "/available", timeout=10).status_code == 200, "raw: the shim is still serving")
    ws = requests.get(url + "/socket.io/?EIO=4&transport=websocket", timeout=10)
    check(ws.status_code == 400, "raw: the websocket transport is refused (polling only)")


def main():
    what = sys.argv[1]
    try:
        if what == "session":
            session(sys.argv[2], sys.argv[3], sys.argv[4:])
        elif what == "varmax":
            varmax(sys.argv[2], sys.argv[3], sys.argv[4:])
        elif what == "wait":
            wait_reserve(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        elif what == "refuse":
            refuse(sys.argv[2], sys.argv[3], sys.argv[4])
        elif what == "raw":
            raw(sys.argv[2])
    except Exception as e:
        check(False, f"{what}: {type(e).__name__}: {e}")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if failures() else 0)  # python-socketio's threads must not keep a failed run alive


if __name__ == "__main__":
    main()
