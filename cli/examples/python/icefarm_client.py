#!/usr/bin/python3
"""A small icefarm client (wire protocol v1, see proto/PROTOCOL.md).

Reserves boards, evaluates bitstream files on them and prints one result per file:

    icefarm_client.py [--broker URL] [--boards N] [--json] FILE.bin...

It needs only Debian's python3-paho-mqtt (1.6) and python3-msgpack. It is written
from proto/PROTOCOL.md alone; the section numbers in comments point there.
"""

import argparse
import getpass
import json
import os
import socket
import sys
import time
import uuid

try:
    import msgpack
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError as exc:  # pragma: no cover - depends on the host
    # A pyenv/venv python3 first on PATH does not see Debian's packages: retry once
    # with the system interpreter before giving up.
    SYSTEM_PY = "/usr/bin/python3"
    if (not os.environ.get("ICEFARM_PY_REEXEC") and os.path.exists(SYSTEM_PY)
            and os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PY)):
        os.environ["ICEFARM_PY_REEXEC"] = "1"
        os.execv(SYSTEM_PY, [SYSTEM_PY] + sys.argv)
    sys.exit("icefarm_client: %s\n(install python3-paho-mqtt and python3-msgpack: "
             "apt-get install python3-paho-mqtt python3-msgpack)" % exc)

PROTO_VERSION = 1          # section 16
BITSTREAM_SIZE = 104090    # section 15.1
MAX_FILES_PER_MESSAGE = 64  # 8 MiB payload limit allows 80 (section 4.3); stay below
REQUEST_TIMEOUT_S = 10.0
PROG = "icefarm_client"


class FarmError(Exception):
    """Anything that stops the run; the message is shown to the user."""


def warn(msg):
    print("%s: %s" % (PROG, msg), file=sys.stderr, flush=True)


def parse_broker(url):
    """mqtt://HOST:PORT, mqtts://HOST:PORT, HOST:PORT or HOST (section 1)."""
    tls = False
    if url.startswith("mqtt://"):
        url = url[len("mqtt://"):]
    elif url.startswith("mqtts://"):
        url, tls = url[len("mqtts://"):], True
    elif "://" in url:
        raise FarmError("unsupported broker URL %r (want mqtt://HOST:PORT)" % url)
    url = url.rstrip("/")
    host, sep, port = url.rpartition(":")
    if not sep:
        host, port = url, ""
    try:
        port = int(port) if port else (8883 if tls else 1883)
    except ValueError:
        raise FarmError("bad port in broker URL %r" % url) from None
    if not 0 < port < 65536:
        raise FarmError("bad port in broker URL %r" % url)
    return host or "127.0.0.1", port, tls


def valid_name(name, limit):
    """A topic level: 1..limit bytes, no / + # NUL, no leading $ (section 3)."""
    raw = name.encode("utf-8")
    return (0 < len(raw) <= limit and not name.startswith("$")
            and not any(c in name for c in "/+#\0"))


class Farm:
    """One MQTT 5 connection and the request/response convention (section 5).

    Single-threaded: nothing happens unless pump() (or a wait) runs the paho loop."""

    def __init__(self, broker, name):
        self.host, self.port, tls = parse_broker(broker)
        self.name = name
        self.reply_topic = "icefarm/client/%s/reply" % name
        self.client_id = "icefarm-py-" + uuid.uuid4().hex[:16]
        self.client = mqtt.Client(client_id=self.client_id, protocol=mqtt.MQTTv5)
        # Presence (section 5.1): retained while we are connected, cleared by our
        # Will, so a reserve waiting for boards dies with this connection.
        self.presence_topic = "icefarm/client/%s/presence/%s" % (name, self.client_id)
        self.client.will_set(self.presence_topic, b"", qos=1, retain=True)
        user = os.environ.get("ICEFARM_USER")
        if user:
            self.client.username_pw_set(user, os.environ.get("ICEFARM_PASSWORD"))
        if tls:
            self.client.tls_set(ca_certs=os.environ.get("ICEFARM_CAFILE") or None)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.connack = None
        self.lost = None
        self.subacks = {}
        self.acked = set()
        self.replies = {}
        self.handlers = {}

    # -- paho callbacks (run inside pump) --
    def _on_connect(self, client, userdata, flags, rc, properties=None):
        self.connack = rc

    def _on_disconnect(self, client, userdata, rc, properties=None):
        self.lost = "disconnected by the broker (%s)" % rc

    def _on_subscribe(self, client, userdata, mid, rcs, properties=None):
        self.subacks[mid] = rcs

    def _on_publish(self, client, userdata, mid):
        self.acked.add(mid)

    def _on_message(self, client, userdata, msg):
        if not msg.payload:
            data = None  # a cleared retained message (section 4.1)
        else:
            try:
                data = msgpack.unpackb(msg.payload, raw=False)
            except Exception as exc:  # any msgpack error: drop it, as icefarm does
                warn("ignoring undecodable message on %s: %s" % (msg.topic, exc))
                return
            if not isinstance(data, dict) or data.get("v") != PROTO_VERSION:
                warn("ignoring message on %s: not a protocol v%d map" % (msg.topic, PROTO_VERSION))
                return
        if msg.topic == self.reply_topic:
            corr = getattr(msg.properties, "CorrelationData", None)
            if corr is not None:
                self.replies[bytes(corr)] = data
            return
        handler = self.handlers.get(msg.topic)
        if handler:
            handler(msg.topic, data)

    # -- plumbing --
    def pump(self, timeout=0.05):
        rc = self.client.loop(timeout)
        if self.lost or rc != mqtt.MQTT_ERR_SUCCESS:
            raise FarmError("lost the broker connection: %s" % (self.lost or mqtt.error_string(rc)))

    def wait(self, cond, timeout, what):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() >= deadline:
                raise FarmError("timed out after %.0f s waiting for %s" % (timeout, what))
            self.pump()

    def connect(self):
        try:
            self.client.connect(self.host, self.port, keepalive=30, clean_start=True)
        except OSError as exc:
            raise FarmError("cannot reach the broker at %s:%d: %s (is the farm up? "
                            "use --broker or ICEFARM_BROKER)" % (self.host, self.port, exc)) from None
        # Nagle off: a QoS 1 round trip costs ~88 ms with it, ~0.13 ms without (section 1).
        sock = self.client.socket()
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.wait(lambda: self.connack is not None, REQUEST_TIMEOUT_S, "the broker's CONNACK")
        if self.connack.value != 0:
            raise FarmError("the broker refused the connection: %s" % self.connack)
        self.client.publish(self.presence_topic, msgpack.packb({"v": PROTO_VERSION, "state": "online"}),
                            qos=1, retain=True)

    def subscribe(self, topic, handler=None):
        if handler:
            self.handlers[topic] = handler
        rc, mid = self.client.subscribe(topic, qos=1)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise FarmError("cannot subscribe to %s: %s" % (topic, mqtt.error_string(rc)))
        self.wait(lambda: mid in self.subacks, REQUEST_TIMEOUT_S, "SUBACK for " + topic)
        if any(rc.value >= 0x80 for rc in self.subacks.pop(mid)):
            raise FarmError("the broker refused the subscription to %s" % topic)

    def publish(self, topic, fields, properties=None, wait_ack=True):
        payload = msgpack.packb(dict(v=PROTO_VERSION, **fields), use_bin_type=True)
        info = self.client.publish(topic, payload, qos=1, retain=False, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise FarmError("cannot publish to %s: %s" % (topic, mqtt.error_string(info.rc)))
        if wait_ack:
            self.wait(lambda: info.mid in self.acked, REQUEST_TIMEOUT_S, "PUBACK on " + topic)
            self.acked.discard(info.mid)

    def board_cmd_props(self):
        """A board command names its sender (section 2): workers run only the holder's."""
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("icefarm-client", self.name)
        return props

    def send_request(self, verb, **fields):
        """Publishes a control request (section 5) and returns its correlation data."""
        corr = os.urandom(16)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = corr
        props.UserProperty = [("icefarm-client", self.name), ("icefarm-conn", self.client_id)]
        props.MessageExpiryInterval = int(REQUEST_TIMEOUT_S) + 1
        self.publish("icefarm/ctl/req/" + verb, fields, properties=props, wait_ack=False)
        return corr

    def request(self, verb, timeout=REQUEST_TIMEOUT_S, **fields):
        corr = self.send_request(verb, **fields)
        self.wait(lambda: corr in self.replies, timeout,
                  "control's answer to %s (is icefarm-ctl running?)" % verb)
        reply = self.replies.pop(corr)
        if not isinstance(reply.get("ok"), bool) or not isinstance(reply.get("code"), int):
            raise FarmError("malformed reply to %s: %r" % (verb, reply))
        return reply

    def close(self):
        try:
            # A clean DISCONNECT drops the Will: clear the presence ourselves.
            self.client.publish(self.presence_topic, b"", qos=1, retain=True)
            self.client.disconnect()
            self.client.loop(0.1)
        except Exception:
            pass


class Run:
    """The evaluation of a set of files on a set of reserved boards."""

    def __init__(self, farm, kind, files, per_message):
        self.farm, self.kind = farm, kind
        self.batch_id = "%s-%x-%d" % (farm.name, int(time.time() * 1000), os.getpid())
        self.files = files                     # [(path, bytes)]; evaluation id = index
        self.per_message = per_message
        self.boards = {}                       # serial -> {ready, dead, ids}
        self.assigned = {}                     # evaluation id -> serial
        self.results = {}                      # evaluation id -> (serial, value)
        self.anomalies = []

    def add_boards(self, serials):
        """Balanced: files go round robin over the boards; subscribes to each board."""
        self.boards = {s: {"ready": False, "dead": None, "ids": []} for s in serials}
        for i in range(len(self.files)):
            serial = serials[i % len(serials)]
            self.boards[serial]["ids"].append(str(i))
            self.assigned[str(i)] = serial
        for serial in serials:
            self.farm.subscribe("icefarm/%s/event" % serial, self.on_board_event)
            self.farm.subscribe("icefarm/%s/state" % serial, self.on_board_state)

    # -- events --
    def on_board_state(self, topic, data):    # icefarm/<serial>/state (section 7.5)
        board = self.boards.get(topic.split("/")[1])
        if board and data and data.get("state") == "reserved" and data.get("kind") == self.kind:
            board["ready"] = True

    def on_board_event(self, topic, data):    # icefarm/<serial>/event (section 8.2)
        serial = topic.split("/")[1]
        board = self.boards.get(serial)
        if board is None or data is None:
            return
        event = data.get("event")
        if event == "initialized":
            board["ready"] = True
        elif event == "results" and data.get("batch_id") == self.batch_id:
            self.take_results(serial, data.get("results"))
        elif event == "error" and data.get("client", self.farm.name) != self.farm.name:
            pass  # the board refused another client's command, not ours
        elif event in ("failure", "error"):
            self.board_lost(serial, "%s: %s" % (event, data.get("reason", "")))

    def on_client_event(self, topic, data):   # icefarm/client/<name>/event (section 9)
        serial = (data or {}).get("serial")
        if serial not in self.boards:
            return
        event = data.get("event")
        if event == "reservation ending soon":
            self.farm.send_request("extend", serials=[serial])  # keep it while we work
        elif event in ("reservation end", "failure") and not self.board_done(serial):
            self.board_lost(serial, event)

    def take_results(self, serial, results):
        if not isinstance(results, list):
            self.anomalies.append("results event from %s without a results array" % serial)
            return
        for pair in results:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                self.anomalies.append("malformed result entry from %s: %r" % (serial, pair))
                continue
            ev_id, value = pair
            if self.assigned.get(ev_id) != serial:
                self.anomalies.append("result for unknown evaluation %r from %s" % (ev_id, serial))
            elif ev_id in self.results:
                self.anomalies.append("second result for evaluation %r from %s" % (ev_id, serial))
            else:
                self.results[ev_id] = (serial, value)

    def board_lost(self, serial, why):
        board = self.boards[serial]
        if board["dead"] is None:
            board["dead"] = why
            warn("board %s: %s" % (serial, why))

    def board_done(self, serial):
        return all(i in self.results for i in self.boards[serial]["ids"])

    def settled(self):
        return all(self.board_done(s) or b["dead"] for s, b in self.boards.items())

    # -- the run --
    def wait_ready(self, timeout):
        self.farm.wait(lambda: all(b["ready"] or b["dead"] for b in self.boards.values()),
                       timeout, "the boards to load the %s firmware" % self.kind)
        dead = {s: b["dead"] for s, b in self.boards.items() if b["dead"]}
        if dead:
            raise FarmError("board(s) failed before they were usable: %s" %
                            ", ".join("%s (%s)" % kv for kv in dead.items()))

    def send(self):
        for serial, board in self.boards.items():
            ids = board["ids"]
            for k in range(0, len(ids), self.per_message):
                chunk = ids[k:k + self.per_message]
                files = {i: self.files[int(i)][1] for i in chunk}
                self.farm.publish("icefarm/%s/cmd" % serial,
                                  {"op": "evaluate", "batch_id": self.batch_id, "files": files},
                                  properties=self.farm.board_cmd_props())

    def collect(self, timeout):
        try:
            self.farm.wait(self.settled, timeout, "results")
        except FarmError as exc:
            warn(str(exc))


def value_fields(value):
    """A result value (section 8.2) as JSON fields."""
    if isinstance(value, bool):
        return {"error": "unexpected value %r" % value}
    if isinstance(value, int):
        return {"pulses": value}
    if isinstance(value, float):
        return {"fitness": value}
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], list):
        return {"fitness": value[0], "waveform": value[1]}
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        return {"error": value["error"]}
    return {"error": "unexpected value %r" % (value,)}


def report(run, as_json):
    """Prints one line (or JSON object) per file; returns the number of problems."""
    rows, problems = [], 0
    for i, (path, _) in enumerate(run.files):
        got = run.results.get(str(i))
        if got is None:
            serial = run.assigned[str(i)]
            fields = {"error": "no result (%s)" % (run.boards[serial]["dead"] or "timed out")}
        else:
            serial, value = got
            fields = value_fields(value)
        problems += "error" in fields
        rows.append(dict(file=path, serial=serial, **fields))
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            value = r.get("pulses", r.get("fitness"))
            print("%s %s %s" % (r["file"], r["serial"],
                                value if "error" not in r else "ERROR: " + r["error"]))
    sys.stdout.flush()
    for a in run.anomalies:
        warn("protocol anomaly: " + a)
    return problems + len(run.anomalies)


def default_name():
    try:
        user = getpass.getuser()
    except Exception:
        user = "user"
    return "%s@%s" % (user, socket.gethostname())


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog=PROG, description="Reserve icefarm boards, evaluate bitstreams, print one result per file.")
    ap.add_argument("files", nargs="+", metavar="FILE", help="bitstreams, exactly 104090 bytes each")
    ap.add_argument("--broker", default=os.environ.get("ICEFARM_BROKER", "mqtt://127.0.0.1:1883"),
                    help="mqtt://HOST:PORT (default: $ICEFARM_BROKER or mqtt://127.0.0.1:1883)")
    ap.add_argument("--name", default=os.environ.get("ICEFARM_NAME") or default_name(),
                    help="client name (default: $ICEFARM_NAME or USER@HOST); end-all ends every lease of it")
    ap.add_argument("--boards", type=int, default=0,
                    help="boards to reserve (default: as many as are free, at most 4 and one per file)")
    ap.add_argument("--kind", default="pulsecount", help="pulsecount (default) or variance")
    ap.add_argument("--per-message", type=int, default=8,
                    help="bitstreams per evaluate message (1..%d, default 8)" % MAX_FILES_PER_MESSAGE)
    ap.add_argument("--wait", type=float, default=0, help="seconds to wait for free boards (default 0)")
    ap.add_argument("--timeout", type=float, default=120,
                    help="seconds to wait for the boards and for the results (default 120)")
    ap.add_argument("--json", action="store_true", help="print a JSON list instead of lines")
    a = ap.parse_args(argv)

    if not valid_name(a.name, 127):
        ap.error("invalid --name %r (1..127 bytes, no '/', '+', '#', no leading '$')" % a.name)
    if not 1 <= a.per_message <= MAX_FILES_PER_MESSAGE:
        ap.error("--per-message must be 1..%d" % MAX_FILES_PER_MESSAGE)
    if a.boards < 0 or a.wait < 0 or a.timeout <= 0:
        ap.error("--boards, --wait and --timeout must not be negative")
    files = []
    for path in a.files:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            ap.error("cannot read %s: %s" % (path, exc.strerror))
        if len(data) != BITSTREAM_SIZE:
            ap.error("%s is %d bytes; an iCE40UP5K bitstream is exactly %d bytes"
                     % (path, len(data), BITSTREAM_SIZE))
        files.append((path, data))

    farm, reserved, status = None, False, 1
    try:
        farm = Farm(a.broker, a.name)
        farm.connect()
        farm.subscribe(farm.reply_topic)
        run = Run(farm, a.kind, files, a.per_message)
        # Before reserving, so that no word about our leases can be missed (section 9).
        farm.subscribe("icefarm/client/%s/event" % a.name, run.on_client_event)
        # A threshold of all our files flushes every result as soon as it is measured
        # (section 15.3); the 1 s interval is only a safety net.
        args = {"flush_interval_seconds": 1, "flush_at_bitstreams_remaining": len(files)}
        nboards = a.boards
        if not nboards:
            # No --boards: up to 4, but no more than are free right now (section 6.1).
            free = farm.request("available", kind=a.kind)
            nboards = min(len(files), 4, free.get("amount", 0) if free["ok"] else 0) or min(len(files), 4)
        reply = farm.request("reserve", timeout=REQUEST_TIMEOUT_S + a.wait, amount=nboards,
                             kind=a.kind, args=args, wait_ms=int(a.wait * 1000))
        if not reply["ok"]:
            raise FarmError("reserve refused (%d): %s" % (reply["code"], reply.get("error", "")))
        reserved = True
        serials = [e["serial"] for e in reply.get("serials", [])]
        if len(serials) != nboards:
            raise FarmError("asked for %d boards, got %d" % (nboards, len(serials)))
        print("%s: reserved %s" % (PROG, " ".join(serials)), file=sys.stderr, flush=True)
        run.add_boards(serials)
        run.wait_ready(a.timeout)
        run.send()
        run.collect(a.timeout)
        problems = report(run, a.json)
        if problems:
            warn("%d of %d file(s) without a valid result" % (problems, len(files)))
        else:
            print("%s: %d result(s) for %d file(s), nothing lost" % (PROG, len(run.results), len(files)),
                  file=sys.stderr, flush=True)
            status = 0
    except FarmError as exc:
        warn("error: %s" % exc)
    except KeyboardInterrupt:
        warn("interrupted")
        status = 130
    finally:
        if farm is not None and reserved:
            try:
                reply = farm.request("end_all")
                if not reply["ok"]:
                    raise FarmError(reply.get("error", "refused"))
                print("%s: ended %d lease(s)" % (PROG, len(reply.get("serials", []))),
                      file=sys.stderr, flush=True)
            except FarmError as exc:
                warn("end_all failed: %s (the leases will expire on their own)" % exc)
                status = status or 1
        if farm is not None:
            farm.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
