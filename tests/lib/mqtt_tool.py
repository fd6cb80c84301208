#!/usr/bin/python3
"""Raw MQTT and checksum helpers for the end-to-end tests (paho-mqtt 1.x or 2.x, msgpack).

  mqtt_tool.py watch BROKER_URL OUT TOPIC...
      Subscribes (QoS 1) and appends one JSON line per message to OUT:
      {"topic": T, "payload": <msgpack decoded; bin as "<N bytes>"; empty as null>}.
      Creates OUT.ready once the broker acknowledged every subscription. Runs
      until killed.
  mqtt_tool.py pub BROKER_URL TOPIC JSON [CLIENT]
      Publishes JSON, msgpack-encoded, at QoS 1 and waits for the PUBACK; with
      CLIENT, over MQTT 5 with the user property icefarm-client=CLIENT (board
      commands need it: PROTOCOL.md 8.1).
  mqtt_tool.py wait OUT SECONDS EVENT [SERIAL]
      Waits until OUT holds a message whose payload has event == EVENT (and
      serial == SERIAL if given); exit 0, or 1 after SECONDS.
  mqtt_tool.py pulses FILE...
      Prints "FILE PULSES" per file: zlib.crc32(content) % 100000 (wrk/sim/sim.h).
  mqtt_tool.py evaluate BROKER_URL SERIAL BATCH N SEED
      Publishes one evaluate of N bitstreams (ids "0".."N-1", bytes from SEED) to
      icefarm/SERIAL/cmd as client MQTT_NAME (else MQTT_USER) and prints {id: the
      sim's expected pulse count} as JSON.

In a secured farm set MQTT_USER, MQTT_PASSWORD and MQTT_CAFILE (mqtts:// URLs).
"""
import json
import sys
import threading
import time
import zlib
from urllib.parse import urlparse


def connect(url, protocol=None):
    import paho.mqtt.client as mqtt

    u = urlparse(url)
    protocol = protocol or mqtt.MQTTv311
    try:  # paho 2.x
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, protocol=protocol)
    except AttributeError:  # paho 1.x
        c = mqtt.Client(protocol=protocol)
    import os

    if os.environ.get("MQTT_USER"):
        c.username_pw_set(os.environ["MQTT_USER"], os.environ.get("MQTT_PASSWORD"))
    if u.scheme == "mqtts":
        c.tls_set(ca_certs=os.environ.get("MQTT_CAFILE") or None)
    c.connect(u.hostname or "127.0.0.1", u.port or (8883 if u.scheme == "mqtts" else 1883), keepalive=30)
    return c


def jsonable(o):
    if isinstance(o, (bytes, bytearray)):
        return "<%d bytes>" % len(o)
    if isinstance(o, dict):
        return {str(jsonable(k)): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    return o


def decode(payload):
    import msgpack

    if not payload:
        return None
    try:
        return jsonable(msgpack.unpackb(payload, raw=False, strict_map_key=False))
    except Exception as e:  # noqa: BLE001 - the line says what went wrong
        return {"undecodable": str(e), "len": len(payload)}


def watch(url, out, topics):
    lock = threading.Lock()
    f = open(out, "a", buffering=1)
    pending = set()

    def on_connect(c, userdata, flags, rc):
        for t in topics:
            res, mid = c.subscribe(t, qos=1)
            pending.add(mid)

    def on_subscribe(c, userdata, mid, granted_qos):
        pending.discard(mid)
        if not pending:
            open(out + ".ready", "w").close()

    def on_message(c, userdata, msg):
        line = json.dumps({"topic": msg.topic, "payload": decode(msg.payload), "t": time.time()})
        with lock:
            f.write(line + "\n")
            f.flush()

    c = connect(url)
    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.loop_forever()


def pub(url, topic, text, client=None):
    import msgpack
    import paho.mqtt.client as mqtt

    props = None
    if client:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("icefarm-client", client)
    c = connect(url, mqtt.MQTTv5 if client else None)
    c.loop_start()
    info = c.publish(topic, msgpack.packb(json.loads(text), use_bin_type=True), qos=1, properties=props)
    info.wait_for_publish()
    c.loop_stop()
    c.disconnect()


def evaluate(url, serial, batch, n, seed):
    import random

    import msgpack

    rnd = random.Random(seed)
    files = {str(i): bytes(rnd.getrandbits(8) for _ in range(104090)) for i in range(n)}
    import os

    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    c = connect(url, mqtt.MQTTv5)
    c.loop_start()
    payload = msgpack.packb({"v": 1, "op": "evaluate", "batch_id": batch, "files": files}, use_bin_type=True)
    # Board commands carry the holder's name (PROTOCOL.md 8.1): MQTT_NAME, else MQTT_USER.
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("icefarm-client", os.environ.get("MQTT_NAME") or os.environ.get("MQTT_USER") or "")]
    c.publish("icefarm/%s/cmd" % serial, payload, qos=1, properties=props).wait_for_publish()
    c.loop_stop()
    c.disconnect()
    print(json.dumps({i: zlib.crc32(b) % 100000 for i, b in files.items()}))


def events(path):
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line being written right now
    return out


def wait(path, seconds, event, serial=None):
    deadline = time.time() + seconds
    while True:
        for m in events(path):
            p = m.get("payload")
            if isinstance(p, dict) and p.get("event") == event and (serial is None or p.get("serial") == serial):
                return 0
        if time.time() >= deadline:
            return 1
        time.sleep(0.1)


def main(argv):
    if len(argv) >= 4 and argv[1] == "watch":
        watch(argv[2], argv[3], argv[4:])
        return 0
    if len(argv) in (5, 6) and argv[1] == "pub":
        pub(argv[2], argv[3], argv[4], argv[5] if len(argv) == 6 else None)
        return 0
    if len(argv) in (5, 6) and argv[1] == "wait":
        return wait(argv[2], float(argv[3]), argv[4], argv[5] if len(argv) == 6 else None)
    if len(argv) == 7 and argv[1] == "evaluate":
        evaluate(argv[2], argv[3], argv[4], int(argv[5]), int(argv[6]))
        return 0
    if len(argv) >= 3 and argv[1] == "pulses":
        for p in argv[2:]:
            with open(p, "rb") as f:
                print(p, zlib.crc32(f.read()) % 100000)
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
